"""Tiny data sets in the VOC 2012, SBD and COCO 2014 layouts, written by the tests themselves.

Images are 20 x 30 (H x W) by default; each pixel's colour encodes its mask class
(:data:`COLOURS`), so a test can tell from the image which class a pixel belongs to.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io

from sslib.config import DataConfig, defaults
from sslib.data.voc import voc_palette
from sslib.io import write_json, write_text
from sslib.formats import save_jpeg, save_png

H, W = 20, 30
#: a distinct colour per class id (0..80); 255 (ignore) is drawn grey
COLOURS = np.array([[(37 * k) % 256, (91 * k + 40) % 256, (151 * k + 80) % 256] for k in range(256)], np.uint8)
COLOURS[255] = (128, 128, 128)


def make_mask(classes: list[int], h: int = H, w: int = W, border: bool = True) -> np.ndarray:
    """(h, w) uint8 mask: background 0, one vertical band per class id, optional 255 outline."""
    m = np.zeros((h, w), np.uint8)
    bands = np.array_split(np.arange(w), 2 * len(classes) + 1)
    for i, k in enumerate(classes):
        cols = bands[2 * i + 1]
        m[2:h - 2, cols] = k
        if border:
            m[1, cols] = 255
    return m


def image_for(mask: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 image whose colours encode the mask classes."""
    return COLOURS[mask]


def write_lists(folder: Path, lists: dict[str, list[str]]) -> None:
    for split, names in lists.items():
        write_text(folder / f"{split}.txt", "".join(f"{n}\n" for n in names))


def make_voc(root: Path, masks: dict[str, np.ndarray], lists: dict[str, list[str]],
             images_only: dict[str, np.ndarray] | None = None) -> Path:
    """VOC2012 layout: JPEGImages/*.jpg for ``masks`` and ``images_only`` (images without a
    VOC mask, e.g. SBD-only ones), SegmentationClass/*.png palette PNGs for ``masks``,
    ImageSets/Segmentation/<split>.txt."""
    for name, m in {**masks, **(images_only or {})}.items():
        save_jpeg(root / "JPEGImages" / f"{name}.jpg", image_for(m))
    for name, m in masks.items():
        save_png(root / "SegmentationClass" / f"{name}.png", m, palette=voc_palette())
    write_lists(root / "ImageSets" / "Segmentation", lists)
    return root


def make_synthetic(root: Path, classes: list[str], masks: dict[str, np.ndarray],
                   lists: dict[str, list[str]]) -> Path:
    make_voc(root, masks, lists)
    write_json(root / "meta.json", {"classes": classes})
    return root


def write_mat(path: Path, seg: np.ndarray) -> None:
    """An SBD ``cls/<name>.mat``: struct GTcls with field Segmentation (the class map)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.array(sorted(set(np.unique(seg).tolist()) - {0, 255}), np.uint8)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg.astype(np.uint8),
                                      "Boundaries": np.zeros(20, object),
                                      "CategoriesPresent": present}})


def make_sbd(sbd: Path, masks: dict[str, np.ndarray], lists: dict[str, list[str]]) -> Path:
    """SBD's ``dataset`` folder: cls/<name>.mat and train.txt / val.txt."""
    for name, m in masks.items():
        write_mat(sbd / "cls" / f"{name}.mat", m)
    write_lists(sbd, lists)
    return sbd


def make_coco(root: Path, train: dict[str, np.ndarray], val: dict[str, np.ndarray],
              val_under_jpegimages: bool = True) -> Path:
    """COCO 2014 WSSS layout; val images go under JPEGImages/val2014/ (the alternative layout)."""
    for sub, masks in (("train2014", train), ("val2014", val)):
        img_dir = root / ("JPEGImages/" if sub == "val2014" and val_under_jpegimages else "") / sub
        for name, m in masks.items():
            save_jpeg(img_dir / f"{name}.jpg", image_for(m))
            save_png(root / "SegmentationClass" / sub / f"{name}.png", m)
    write_lists(root / "ImageSets", {"train": list(train), "val": list(val)})
    return root


def make_coco_download(root: Path, images: dict[str, dict[str, list[tuple]]]) -> dict[str, np.ndarray]:
    """COCO 2014 as downloaded: ``<root>/<subset>/<name>.jpg`` and
    ``<root>/annotations/instances_<subset>.json``, no lists and no class masks.

    Args:
        images: ``{subset: {name: [(category_id, (x0, y0, x1, y1), iscrowd), ...]}}``, each
            box a rectangle polygon covering rows y0..y1-1 and columns x0..x1-1, in JSON order.

    Returns:
        ``{name: mask}``: the expected class masks, painted by hand (crowd boxes left out,
        later boxes on top, category ids renumbered to 1..80).
    """
    from sslib.data.coco_masks import CATEGORY_TO_CLASS

    expected, ann_id, img_id = {}, 1, 1
    for sub, named in images.items():
        entries, anns = [], []
        for name, boxes in named.items():
            m = np.zeros((H, W), np.uint8)
            for cid, (x0, y0, x1, y1), crowd in boxes:
                if crowd:
                    seg = {"size": [H, W], "counts": _column_rle(H, W, (x0, y0, x1, y1))}
                else:
                    seg = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                    m[y0:y1, x0:x1] = CATEGORY_TO_CLASS.get(cid, 0)
                anns.append({"id": ann_id, "image_id": img_id, "category_id": cid, "iscrowd": int(crowd),
                             "segmentation": seg, "area": float((x1 - x0) * (y1 - y0)), "bbox": [x0, y0, x1 - x0, y1 - y0]})
                ann_id += 1
            save_jpeg(root / sub / f"{name}.jpg", image_for(m))
            entries.append({"id": img_id, "file_name": f"{name}.jpg", "height": H, "width": W})
            expected[name] = m
            img_id += 1
        write_json(root / "annotations" / f"instances_{sub}.json",
                   {"images": entries, "annotations": anns, "categories": []})
    return expected


def _column_rle(h: int, w: int, box: tuple[int, int, int, int]) -> list[int]:
    """COCO's uncompressed RLE (column-major run lengths, starting with zeros) of a box."""
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    flat = m.T.ravel()
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return runs


def data_cfg(tmp: Path, dataset: str = "voc", root: Path | None = None, sbd: Path | None = None,
             **kw) -> DataConfig:
    return defaults(DataConfig, dataset=dataset, root=str(root or tmp / "root"), sbd_root=str(sbd or ""),
                    prepared_dir=str(tmp / "prepared"), **kw)


def write_labels(prepared: Path, classes, labels: dict[str, list[int]]) -> None:
    write_json(prepared / "labels.json", {"classes": list(classes), "labels": labels})


def read_json(path: Path):
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------- tiny projects
class TinyProject:
    """A project folder (``root``) whose params.yaml is ``base`` merged with a test's update:
    what the ``tiny_project`` factory of conftest.py returns. It stands for its folder where a
    path is expected (``project / "params.yaml"``, ``cwd=project``)."""

    def __init__(self, root: Path, base: dict):
        self.root, self.base = root, base

    def __truediv__(self, other) -> Path:
        return self.root / other

    def __fspath__(self) -> str:
        return str(self.root)

    def write_params(self, update: dict | None = None, name: str = "params.yaml", **sections) -> Path:
        """``root/name``: ``base`` deep-merged with ``update`` and then ``sections``."""
        import yaml

        from sslib.config import deep_merge

        path = self.root / name
        path.write_text(yaml.safe_dump(deep_merge(deep_merge(self.base, update or {}), sections), sort_keys=False))
        return path

    def params(self, update: dict | None = None, **sections):
        """:meth:`write_params`, loaded."""
        from sslib import config

        return config.load(self.write_params(update, **sections))

    def load(self, name: str = "params.yaml"):
        """The params file as it is now."""
        from sslib import config

        return config.load(self.root / name)

    def entered(self):
        """A context: the folder is the working directory and the stages write to the
        project's own paths (no scratch folder)."""
        import contextlib

        import pytest

        from sslib import paths

        @contextlib.contextmanager
        def ctx():
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(self.root)
                mp.delenv(paths.SCRATCH_ENV, raising=False)
                yield self
        return ctx()
