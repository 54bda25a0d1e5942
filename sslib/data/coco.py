"""MS COCO 2014 in the usual WSSS layout (PNG class masks, 80 classes).

Expected layout (``data.root`` is this folder)::

    <root>/train2014/COCO_train2014_000000000009.jpg   images (or <root>/JPEGImages/train2014/)
    <root>/val2014/COCO_val2014_000000000042.jpg       (or <root>/JPEGImages/val2014/)
    <root>/SegmentationClass/train2014/<name>.png      8-bit greyscale class masks:
    <root>/SegmentationClass/val2014/<name>.png        0 background, 1..80 the classes in
                                                       the standard COCO order, 255 ignore
    <root>/ImageSets/train.txt                         one name per line, no extension
    <root>/ImageSets/val.txt

or COCO as downloaded: the image folders and ``<root>/annotations/instances_train2014.json``
/ ``instances_val2014.json``. From those the prepare stage makes the masks
(:mod:`sslib.data.coco_masks`) under ``<prepared_dir>/SegmentationClass/<subset>/`` and the
lists ``train`` / ``val`` (every image of the file) under ``<prepared_dir>/lists/``; masks
are looked for in ``<root>/SegmentationClass/<subset>`` first, then there.

Split ``train`` (and any split whose name starts with ``train``, e.g. a subset list
``train_1k``) reads the ``train2014`` folders; ``val`` (``val*``) reads ``val2014``.
Lists are looked for in ``<prepared_dir>/lists/<split>.txt`` first, then
``<root>/ImageSets/<split>.txt``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..io import DataError
from ..formats import read_lines
from .base import SegDataset, check_images_exist, find_split_list, list_stems, load_label_cache

__all__ = [
    "COCO_CLASSES", "COCODataset", "subset_of", "image_dir", "mask_dir", "mask_dirs",
    "split_list_candidates", "IMAGE_SUFFIX", "MASK_SUFFIX",
]

#: the 80 COCO classes in the standard order (mask ids 1..80)
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
IMAGE_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"


def subset_of(split: str) -> str:
    """``train2014`` for splits named ``train*``, ``val2014`` for ``val*``."""
    for prefix in ("train", "val"):
        if split.startswith(prefix):
            return f"{prefix}2014"
    raise DataError(f"COCO split {split!r}: the name must start with 'train' or 'val' "
                    "(that selects the train2014 or val2014 folders)")


def image_dir(root: str | Path, split: str) -> Path:
    """``<root>/<subset>`` or ``<root>/JPEGImages/<subset>``, whichever exists."""
    sub = subset_of(split)
    candidates = [Path(root) / sub, Path(root) / "JPEGImages" / sub]
    for d in candidates:
        if d.is_dir():
            return d
    raise DataError(f"COCO image folder not found: looked for {candidates[0]} and {candidates[1]}")


def mask_dir(root: str | Path, split: str) -> Path:
    """``<root>/SegmentationClass/<subset>``: masks that come with the data."""
    return Path(root) / "SegmentationClass" / subset_of(split)


def mask_dirs(root: str | Path, prepared_dir: str | Path, split: str) -> list[Path]:
    """Folders searched for ``<name>.png`` masks, in order: the data's own, then the ones the
    prepare stage made from the instance annotations."""
    return [mask_dir(root, split), Path(prepared_dir) / "SegmentationClass" / subset_of(split)]


def split_list_candidates(root: str | Path, prepared_dir: str | Path, split: str) -> list[Path]:
    """Where the list of ``split`` is looked for, in order."""
    return [Path(prepared_dir) / "lists" / f"{split}.txt", Path(root) / "ImageSets" / f"{split}.txt"]


class COCODataset(SegDataset):
    """A split of COCO 2014 (80 classes).

    Args:
        root: the COCO folder described in the module docstring.
        split: ``train``, ``val`` (or another list whose name starts with one of them).
        prepared_dir: output of the prepare stage (label cache, lists).
        transform, superpixel_dir, with_mask: see :class:`~sslib.data.base.SegDataset`.
    """

    classes = COCO_CLASSES

    def __init__(self, root: str | Path, split: str, *, prepared_dir: str | Path,
                 transform: Callable | None = None, superpixel_dir: str | Path | None = None,
                 with_mask: bool = True) -> None:
        self.root, self.split, self.prepared_dir = Path(root), split, Path(prepared_dir)
        self.list_path = find_split_list(
            split_list_candidates(root, prepared_dir, split),
            f"create it with one image name per line (no extension), e.g. from the file names in "
            f"{Path(root) / subset_of(split)}")
        self.image_dir = image_dir(root, split)
        self.mask_dirs = mask_dirs(root, prepared_dir, split)
        names = read_lines(self.list_path)
        check_images_exist(names, self.image_dir, IMAGE_SUFFIX, self.list_path)
        labels = load_label_cache(prepared_dir, self.classes, names)
        self._mask_stems: list[tuple[Path, set[str]]] | None = None
        self._setup(names, labels, transform=transform, superpixel_dir=superpixel_dir,
                    with_mask=with_mask)
        if with_mask:
            self._masks()

    def _masks(self) -> list[tuple[Path, set[str]]]:
        if self._mask_stems is None:
            self._mask_stems = [(d, list_stems(d, MASK_SUFFIX)) for d in self.mask_dirs]
        return self._mask_stems

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}{IMAGE_SUFFIX}"

    def mask_path(self, name: str) -> Path | None:
        """The first ``<dir>/<name>.png`` in :func:`mask_dirs` order, or None."""
        return next((d / f"{name}{MASK_SUFFIX}" for d, stems in self._masks() if name in stems), None)
