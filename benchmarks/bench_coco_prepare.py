"""Time and disk per 1,000 images of COCO's preparation: class masks from the instances JSON,
image labels and lists (the ``prepare`` stage), then the presets' superpixels (Felzenszwalb
merged to 64 regions, the ``superpixels`` stage).

Plain script, no asserts on timings::

    python benchmarks/bench_coco_prepare.py [--images 200] [--workers 2]

It writes a fake COCO 2014 download in a temporary folder: ``--images`` 640 x 480 JPEGs
(COCO's typical size) with smooth colour fields, ``--objects`` polygon annotations each
(COCO averages about 7 per image) and an ``instances_train2014.json``; then times
``sslib.data.prepare.prepare`` and ``sslib.superpixels.precompute`` on them and prints
seconds and megabytes, scaled to 1,000 images (COCO train2014 has 82,783: multiply by 83).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_superpixels import textured_image
from sslib import superpixels as sp
from sslib.config import DataConfig, SuperpixelConfig, defaults
from sslib.data.coco_masks import CATEGORY_TO_CLASS
from sslib.io import write_json
from sslib.formats import save_jpeg


def fake_download(root: Path, n: int, objects: int, h: int, w: int, seed: int) -> list[Path]:
    """``root/{train,val}2014/*.jpg`` + ``root/annotations/instances_*.json`` (polygons): ``n``
    train images and 5 % as many val images (at least 2); returns the train images' paths."""
    rng = np.random.default_rng(seed)
    cats = sorted(CATEGORY_TO_CLASS)
    n_val = max(2, n // 20)
    subsets = {"train2014": {"images": [], "annotations": []}, "val2014": {"images": [], "annotations": []}}
    anns_total, paths = 0, []
    for i in range(n + n_val):
        sub = "train2014" if i < n else "val2014"
        images, anns = subsets[sub]["images"], subsets[sub]["annotations"]
        name = f"COCO_{sub[:-4]}2014_{i:012d}"
        path = root / sub / f"{name}.jpg"
        save_jpeg(path, textured_image(rng, h, w))
        if sub == "train2014":
            paths.append(path)
        images.append({"id": i + 1, "file_name": f"{name}.jpg", "height": h, "width": w})
        for _ in range(objects):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 150)
            t = np.sort(rng.uniform(0, 2 * np.pi, 12))
            poly = np.stack([np.clip(cx + r * np.cos(t), 0, w), np.clip(cy + r * np.sin(t), 0, h)], 1)
            anns_total += 1
            anns.append({"id": anns_total, "image_id": i + 1, "category_id": int(rng.choice(cats)),
                         "iscrowd": 0, "segmentation": [poly.ravel().round(2).tolist()],
                         "area": float(np.pi * r * r), "bbox": [0, 0, 1, 1]})
    for sub, d in subsets.items():
        write_json(root / "annotations" / f"instances_{sub}.json", {**d, "categories": []})
    return paths  # the train images


def _mb(folder: Path, pattern: str = "*") -> float:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file()) / 2 ** 20


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--objects", type=int, default=7)
    ap.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from sslib.data.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        root, prepared, spx = Path(tmp) / "coco2014", Path(tmp) / "prepared", Path(tmp) / "superpixels"
        paths = fake_download(root, args.images, args.objects, *args.size, args.seed)
        per = 1000 / args.images
        print(f"{args.images} images of {args.size[0]} x {args.size[1]}, {args.objects} objects each, "
              f"{args.workers} workers; per 1,000 images:")
        print(f"  download (train JPEGs)      {_mb(root / 'train2014') * per:8.1f} MB")
        t0 = time.perf_counter()
        cfg = defaults(DataConfig, dataset="coco", root=str(root), prepared_dir=str(prepared), sbd_root="")
        prepare(cfg, progress=False, workers=args.workers)
        t1 = time.perf_counter()
        per_all = 1000 / len(list(root.rglob("*.jpg")))  # prepare does train and val
        print(f"  prepare (masks, labels)     {(t1 - t0) * per_all:8.1f} s   {_mb(prepared) * per_all:8.1f} MB")
        sp_cfg = defaults(SuperpixelConfig, method="felzenszwalb", out_dir=str(spx), felzenszwalb={"max_regions": 64})
        items = [(p.stem, p) for p in paths]
        t0 = time.perf_counter()
        stats = sp.precompute(items, spx, sp_cfg, workers=args.workers, progress=False)
        t1 = time.perf_counter()
        print(f"  superpixels (F-H + merge)   {(t1 - t0) * per:8.1f} s   {_mb(spx) * per:8.1f} MB"
              f"   (mean {stats['n_superpixels_mean']:.1f} regions per image)")


if __name__ == "__main__":
    main()
