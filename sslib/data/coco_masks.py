"""COCO 2014 class masks from the instance annotations, as the WSSS repositories make them.

COCO ships no semantic masks, only ``annotations/instances_{train,val}2014.json``. The
masks every WSSS pipeline evaluates against (ReCAM's and BECO's ``annToMask``) are made
from them like this, and :func:`class_mask` does the same:

* start from an all-background (0) map of the image's size;
* paint every non-crowd annotation of the image (``iscrowd == 0``) in the order of the
  JSON file, later annotations on top of earlier ones; crowd regions stay background;
* the value of an annotation is its class: the 80 used COCO category ids (1..90 minus
  12, 26, 29, 30, 45, 66, 68, 69, 71, 83) renumbered to 1..80 in order
  (:data:`COCO_CATEGORY_IDS`, the order of :data:`sslib.data.coco.COCO_CLASSES`).

Polygons, uncompressed and compressed RLE are decoded with ``pycocotools.mask`` (as
``COCO.annToMask``); pycocotools is an optional dependency (``pip install -e ".[coco]"``),
needed only here. Masks are named after the image's file (``COCO_train2014_000000000009.png``),
not its numeric id, so they sit beside the images under the same names.

:func:`write_class_masks` writes the masks of one instances file: every listed image must
exist on disk (else a :class:`~sslib.io.DataError` naming it and the JSON file), every
PNG is written atomically, a mask that already exists and reads back at its image's size
is kept (so an interrupted run resumes), and the work is spread over processes with a
progress bar; ``meta.json`` beside the masks records the instances file they came from
(path, size, modification time), and masks of another file are made again. A truncated
or malformed JSON file and an unknown category id stop it with
the file (and the id) named.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

from ..io import DataError, write_json
from ..formats import read_png_labels, save_png
from ..pool import auto_workers, map_tasks

__all__ = ["COCO_CATEGORY_IDS", "CATEGORY_TO_CLASS", "instances_file", "load_instances", "image_entries",
           "class_mask", "write_class_masks", "require_pycocotools"]

#: the 80 category ids COCO uses, in order: class k (1..80) is ``COCO_CATEGORY_IDS[k - 1]``
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in
                                           (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
CATEGORY_TO_CLASS: dict[int, int] = {cid: k for k, cid in enumerate(COCO_CATEGORY_IDS, start=1)}


class ImageEntry(NamedTuple):
    """One image of an instances file and its non-crowd annotations (JSON order)."""

    name: str               # file name without extension
    height: int
    width: int
    annotations: tuple      # ({"category_id", "segmentation"}, ...)


def require_pycocotools():
    """``pycocotools.mask``, or an ImportError that says how to install it."""
    try:
        from pycocotools import mask
    except ImportError:
        raise ImportError("pycocotools is needed to make COCO class masks from the instance annotations: "
                          "pip install -e \".[coco]\" (or pip install pycocotools)") from None
    return mask


def instances_file(root: str | Path, subset: str) -> Path:
    """``<root>/annotations/instances_<subset>.json`` (``subset``: train2014 / val2014)."""
    return Path(root) / "annotations" / f"instances_{subset}.json"


def load_instances(path: str | Path) -> dict[str, Any]:
    """Read an instances JSON; a missing, truncated or malformed file raises DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: COCO instances file not found")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a complete JSON file ({e}); download it again") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: not a COCO instances file (needs the lists 'images' and 'annotations')")
    return data


def image_entries(data: dict[str, Any], path: str | Path) -> list[ImageEntry]:
    """The images of an instances file, sorted by name, each with its non-crowd annotations.

    Raises DataError naming ``path`` for an image entry without ``id``/``file_name``/size, an
    annotation of an unknown image, or an unknown category id.
    """
    anns: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        try:
            image_id, cid, crowd = a["image_id"], a["category_id"], a.get("iscrowd", 0)
        except (KeyError, TypeError):
            raise DataError(f"{path}: annotation {a.get('id') if isinstance(a, dict) else a!r} lacks "
                            "image_id or category_id") from None
        if cid not in CATEGORY_TO_CLASS:
            raise DataError(f"{path}: annotation {a.get('id')} has category id {cid!r}, not one of COCO's "
                            f"80 ({COCO_CATEGORY_IDS[0]}..{COCO_CATEGORY_IDS[-1]} without the 10 unused ids)")
        if not crowd:
            anns.setdefault(image_id, []).append({"category_id": cid, "segmentation": a.get("segmentation", [])})
    out, ids = [], set()
    for im in data["images"]:
        try:
            name, h, w = Path(im["file_name"]).stem, int(im["height"]), int(im["width"])
            ids.add(im["id"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: image entry {im!r} lacks id, file_name, height or width") from None
        out.append(ImageEntry(name, h, w, tuple(anns.get(im["id"], ()))))
    unknown = sorted(set(anns) - ids)
    if unknown:
        raise DataError(f"{path}: annotations refer to image ids {unknown[:5]} that the file does not list")
    return sorted(out, key=lambda e: e.name)


def class_mask(entry: ImageEntry) -> np.ndarray:
    """(H, W) uint8 class mask of one image: 0 background, 1..80 (see the module docstring)."""
    mask_api = require_pycocotools()
    h, w = entry.height, entry.width
    out = np.zeros((h, w), np.uint8)
    for a in entry.annotations:
        seg = a["segmentation"]
        if isinstance(seg, list):                                  # polygons
            rle = mask_api.merge(mask_api.frPyObjects(seg, h, w)) if seg else None
        elif isinstance(seg.get("counts"), list):                  # uncompressed RLE
            rle = mask_api.frPyObjects(seg, h, w)
        else:                                                      # compressed RLE
            rle = seg
        if rle is not None:
            with warnings.catch_warnings():  # pycocotools 2.0.x on NumPy 2: a copy-keyword DeprecationWarning
                warnings.simplefilter("ignore", DeprecationWarning)
                hit = mask_api.decode(rle).astype(bool)
            out[hit] = CATEGORY_TO_CLASS[a["category_id"]]
    return out


def _mask_ok(path: Path, size: tuple[int, int]) -> bool:
    try:
        return path.is_file() and read_png_labels(path).shape == size
    except DataError:
        return False


def _stamp(path: Path) -> dict[str, Any]:
    """What the masks were made from: the instances file's path, size and modification time."""
    st = path.stat()
    return {"instances": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_one(task: tuple[ImageEntry, Path, bool]) -> bool:
    """Write one mask unless a good one exists (and may be kept); True if it was written."""
    entry, path, keep = task
    if keep and _mask_ok(path, (entry.height, entry.width)):
        return False
    save_png(path, class_mask(entry))
    return True


def write_class_masks(instances: str | Path, image_dir: str | Path, out_dir: str | Path, *,
                      workers: int | None = None, progress: bool = True,
                      names: Iterable[str] | None = None,
                      entries: list[ImageEntry] | None = None) -> dict[str, int]:
    """Write ``<out_dir>/<name>.png`` for every image of ``instances`` (or only ``names``).

    Args:
        instances: an ``instances_<subset>.json``.
        image_dir: the folder of its images; each listed image must be ``<name>.jpg`` there.
        workers: processes (None: :func:`sslib.pool.auto_workers`, one per core, at most 8,
            from :data:`sslib.pool.PARALLEL_MIN_IMAGES` images on; 1: here).
        names: only these images (default: all of the file).
        entries: :func:`image_entries` of ``instances`` if already read (COCO's train file
            takes seconds and gigabytes to parse).

    Returns:
        ``{"images": n, "written": n, "kept": n}``.
    """
    require_pycocotools()
    from .base import list_stems
    from .coco import IMAGE_SUFFIX

    instances, image_dir, out_dir = Path(instances), Path(image_dir), Path(out_dir)
    if entries is None:
        entries = image_entries(load_instances(instances), instances)
    if names is not None:
        wanted = set(names)
        entries = [e for e in entries if e.name in wanted]
    on_disk = list_stems(image_dir, IMAGE_SUFFIX)
    missing = [e.name for e in entries if e.name not in on_disk]
    if missing:
        raise DataError(f"{instances}: {len(missing)} listed image(s) are not in {image_dir}: "
                        + ", ".join(f"{image_dir / n}{IMAGE_SUFFIX}" for n in missing[:5]))
    meta, stamp = out_dir / "meta.json", _stamp(instances)
    try:
        keep = json.loads(meta.read_text()) == stamp   # masks of another instances file are remade
    except (OSError, ValueError):
        keep = False
    tasks = [(e, out_dir / f"{e.name}.png", keep) for e in entries]
    if workers is None:
        workers = auto_workers(len(tasks))
    done = map_tasks(_write_one, tasks, workers, chunksize=max(1, min(64, len(tasks) // (max(workers, 1) * 8))),
                     use_executor=True, desc=f"COCO masks {instances.stem}", progress=progress)
    written = sum(done)
    write_json(meta, stamp)
    return {"images": len(tasks), "written": written, "kept": len(tasks) - written}
