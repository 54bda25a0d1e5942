"""PASCAL VOC 2012 (with SBD's train_aug) and the synthetic set, which uses VOC's layout.

Expected layout (``data.root`` is the ``VOC2012`` folder)::

    VOC2012/JPEGImages/<name>.jpg
    VOC2012/SegmentationClass/<name>.png          palette PNGs: indices 0 background,
                                                  1..20 classes, 255 boundary / ignore
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt   one name per line
    VOC2012/SegmentationClassAug/<name>.png       optional, a ready-made train_aug set

The synthetic set has the same layout plus ``<root>/meta.json`` whose ``"classes"``
lists its foreground class names.

Look-up order (the first hit wins):

* split list ``<split>``: ``<prepared_dir>/lists/<split>.txt``, then
  ``<root>/ImageSets/Segmentation/<split>.txt``;
* mask of an image: ``<prepared_dir>/SegmentationClassAug/``, then
  ``<root>/SegmentationClassAug/``, then ``<root>/SegmentationClass/``.

``train_aug`` (10,582 images) is built by :mod:`sslib.data.prepare` from SBD when
``data.sbd_root`` is set.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..io import DataError
from ..formats import read_lines, voc_palette
from .base import SegDataset, check_images_exist, find_split_list, list_stems, load_label_cache

__all__ = [
    "VOC_CLASSES", "VOCDataset", "voc_palette", "synthetic_classes", "split_list_candidates",
    "mask_dirs", "IMAGE_DIR", "IMAGE_SUFFIX", "MASK_SUFFIX",
]

#: the 20 VOC foreground classes, in the order of their mask ids 1..20
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
IMAGE_DIR = "JPEGImages"
IMAGE_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"


def synthetic_classes(root: str | Path) -> tuple[str, ...]:
    """Foreground class names of the synthetic set, from ``<root>/meta.json`` ("classes")."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: synthetic data set metadata not found; run `dvc repro synthesize`")
    try:
        classes = json.loads(path.read_text())["classes"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: no class list ({type(e).__name__}: {e})") from None
    if not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path}: 'classes' must be a non-empty list of names")
    return tuple(classes)


def split_list_candidates(root: str | Path, prepared_dir: str | Path, split: str) -> list[Path]:
    """Where the list of ``split`` is looked for, in order."""
    return [Path(prepared_dir) / "lists" / f"{split}.txt",
            Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"]


def mask_dirs(root: str | Path, prepared_dir: str | Path) -> list[Path]:
    """Folders searched for ``<name>.png`` masks, in order."""
    return [Path(prepared_dir) / "SegmentationClassAug", Path(root) / "SegmentationClassAug",
            Path(root) / "SegmentationClass"]


def _how_to_create(split: str) -> str:
    if split == "train_aug":
        return ("train_aug is built by the prepare stage from SBD: set data.sbd_root to SBD's "
                "`dataset` folder, then run `dvc repro prepare` or `python -m sslib.stages.prepare`")
    return ("create it with one image name per line (no extension), or run `dvc repro prepare` / "
            "`python -m sslib.stages.prepare`")


class VOCDataset(SegDataset):
    """A split of VOC 2012 (or of the synthetic set, with its own ``classes``).

    Args:
        root: the ``VOC2012`` folder (or the synthetic set's root).
        split: list name, e.g. ``train``, ``val``, ``train_aug``.
        prepared_dir: output of the prepare stage (label cache, lists, SegmentationClassAug).
        classes: foreground class names (mask ids 1..C); VOC's 20 by default.
        transform, superpixel_dir, with_mask: see :class:`~sslib.data.base.SegDataset`.
    """

    def __init__(self, root: str | Path, split: str, *, prepared_dir: str | Path,
                 classes: tuple[str, ...] = VOC_CLASSES, transform: Callable | None = None,
                 superpixel_dir: str | Path | None = None, with_mask: bool = True) -> None:
        self.root, self.split, self.prepared_dir = Path(root), split, Path(prepared_dir)
        self.classes = tuple(classes)
        self.image_dir = self.root / IMAGE_DIR
        self.list_path = find_split_list(split_list_candidates(root, prepared_dir, split),
                                         _how_to_create(split))
        names = read_lines(self.list_path)
        check_images_exist(names, self.image_dir, IMAGE_SUFFIX, self.list_path)
        labels = load_label_cache(prepared_dir, self.classes, names)
        self._mask_index: list[tuple[Path, set[str]]] | None = None
        self._setup(names, labels, transform=transform, superpixel_dir=superpixel_dir,
                    with_mask=with_mask)
        if with_mask:
            self._masks()  # list the mask folders now, once, not in every DataLoader worker

    def _masks(self) -> list[tuple[Path, set[str]]]:
        if self._mask_index is None:
            self._mask_index = [(d, list_stems(d, MASK_SUFFIX))
                                for d in mask_dirs(self.root, self.prepared_dir)]
        return self._mask_index

    def image_path(self, name: str) -> Path:
        """``<root>/JPEGImages/<name>.jpg``."""
        return self.image_dir / f"{name}{IMAGE_SUFFIX}"

    def mask_path(self, name: str) -> Path | None:
        """The first ``<dir>/<name>.png`` in :func:`mask_dirs` order, or None."""
        for folder, stems in self._masks():
            if name in stems:
                return folder / f"{name}{MASK_SUFFIX}"
        return None
