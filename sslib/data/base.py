"""The one data-set interface shared by VOC 2012, COCO 2014 and the synthetic set.

A :class:`SegDataset` is a list of image names plus three look-ups that a concrete
layout provides (:meth:`~SegDataset.image_path`, :meth:`~SegDataset.mask_path`, and
the class names). Image-level labels never come from the masks at training time: they
come from the label cache ``<prepared_dir>/labels.json`` written by
:mod:`sslib.data.prepare`.

A sample (``ds[i]``) is a dict:

=============== =====================================================================
``name``        str, the image name (file stem)
``image``       (H, W, 3) uint8 numpy array; with a transform, what it returns (the
                standard transforms give a float32 tensor (3, h, w), normalised)
``label``       float32 tensor (C,), multi-hot over the C foreground classes
``mask``        int64 tensor (H, W): 0 background, 1..C classes, 255 ignore (only if
                the image has a mask and ``with_mask``)
``superpixels`` int64 tensor (H, W) of superpixel ids (only with ``superpixel_dir``)
=============== =====================================================================
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io import DataError
from ..formats import read_png_labels, read_rgb

__all__ = [
    "SegDataset", "LabelMapDataset", "LABELS_NAME", "PREPARE_HINT", "list_stems", "find_split_list",
    "check_images_exist", "load_label_cache", "multi_hot",
]

#: the label cache inside ``prepared_dir``
LABELS_NAME = "labels.json"
PREPARE_HINT = "run `dvc repro prepare` or `python -m sslib.stages.prepare`"
_SHOW = 5  # how many offending entries an error message lists


# --------------------------------------------------------------------------- helpers
def list_stems(folder: str | Path, suffix: str) -> set[str]:
    """Stems of the files ``folder/*<suffix>`` from one directory listing (empty if absent)."""
    try:
        with os.scandir(folder) as it:
            return {e.name[: -len(suffix)] for e in it if e.name.endswith(suffix)}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def find_split_list(candidates: Sequence[Path], how_to_create: str) -> Path:
    """The first existing list file among ``candidates``; DataError naming them all otherwise."""
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise DataError(f"split list not found (looked for {tried}); {how_to_create}")


def check_images_exist(names: Iterable[str], image_dir: Path, suffix: str, list_path: str | Path,
                       present: set[str] | None = None) -> None:
    """Every name has ``image_dir/<name><suffix>``; else DataError naming the list and entries.

    One directory listing (or ``present``, the stems from an earlier
    :func:`list_stems`) and a set look-up per name, no per-file ``stat`` (COCO: 80k images).
    """
    if present is None:
        present = list_stems(image_dir, suffix)
    missing = [n for n in names if n not in present]
    if missing:
        shown = ", ".join(f"{n!r} (expected {image_dir / (n + suffix)})" for n in missing[:_SHOW])
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        raise DataError(f"{list_path}: {len(missing)} listed image(s) not found: {shown}{more}")


def multi_hot(indices: Iterable[int], num_classes: int) -> np.ndarray:
    """(C,) float32 vector with ones at ``indices`` (0-based foreground class indices)."""
    out = np.zeros(num_classes, np.float32)
    out[list(indices)] = 1.0
    return out


def load_label_cache(prepared_dir: str | Path, classes: Sequence[str],
                     names: Sequence[str]) -> np.ndarray:
    """Image-level labels of ``names`` from ``<prepared_dir>/labels.json``.

    Returns an (N, C) float32 multi-hot array in the order of ``names``. Raises
    DataError (with how to rebuild it) if the cache is missing, unreadable, made for
    other classes, or lacks some of the names.
    """
    path = Path(prepared_dir) / LABELS_NAME
    if not path.is_file():
        raise DataError(f"{path}: label cache not found; {PREPARE_HINT}")
    try:
        cache = json.loads(path.read_text())
        cached_classes, labels = cache["classes"], cache["labels"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: unreadable label cache ({type(e).__name__}: {e}); {PREPARE_HINT}") from None
    if list(cached_classes) != list(classes):
        raise DataError(f"{path}: label cache was made for other classes "
                        f"({len(cached_classes)} classes, first {cached_classes[:3]}) than this data set "
                        f"({len(classes)}, first {list(classes[:3])}); {PREPARE_HINT}")
    missing = [n for n in names if n not in labels]
    if missing:
        raise DataError(f"{path}: no labels for {len(missing)} image(s), e.g. {missing[:_SHOW]}; "
                        f"the cache is stale, {PREPARE_HINT}")
    out = np.zeros((len(names), len(classes)), np.float32)
    for i, n in enumerate(names):
        out[i, labels[n]] = 1.0
    return out


# --------------------------------------------------------------------------- the interface
class SegDataset(Dataset):
    """Images + image-level labels (+ masks, + superpixels) of one split.

    Subclasses set :attr:`classes` and implement :meth:`image_path` and
    :meth:`mask_path`; they call :meth:`_setup` once names are validated.

    Args:
        transform: called on the sample dict (numpy image, numpy mask / superpixels)
            and returning the dict; see :mod:`sslib.data.transforms`.
        superpixel_dir: folder of ``<name>.png`` superpixel maps (16-bit ids).
        with_mask: include ``mask`` for images that have one.
    """

    names: list[str]
    classes: tuple[str, ...]

    def _setup(self, names: list[str], labels: np.ndarray, *, transform: Callable | None,
               superpixel_dir: str | Path | None, with_mask: bool) -> None:
        self.names = list(names)
        self._labels = labels  # (N, C) float32
        self.transform = transform
        self.superpixel_dir = Path(superpixel_dir) if superpixel_dir is not None else None
        self.with_mask = with_mask

    @property
    def num_classes(self) -> int:
        """C, the number of foreground classes (mask values 1..C)."""
        return len(self.classes)

    def image_path(self, name: str) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError

    def mask_path(self, name: str) -> Path | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def label(self, i: int) -> np.ndarray:
        """(C,) float32 multi-hot label of image ``i`` (no image read)."""
        return self._labels[i]

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes)"

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.names[i]
        image = read_rgb(self.image_path(name))
        hw = image.shape[:2]
        sample: dict[str, Any] = {"name": name, "image": image}
        if self.with_mask and (mpath := self.mask_path(name)) is not None:
            mask = read_png_labels(mpath)
            if mask.shape != hw:
                raise DataError(f"{mpath}: mask has shape {mask.shape}, its image {hw}")
            sample["mask"] = mask.astype(np.int64)
        if self.superpixel_dir is not None:
            from sslib import superpixels  # lazy: optional dependency of the data sets

            sample["superpixels"] = superpixels.load(self.superpixel_dir / f"{name}.png", hw)
        if self.transform is not None:
            sample = self.transform(sample)
        for key in ("mask", "superpixels"):
            if key in sample and not torch.is_tensor(sample[key]):
                sample[key] = torch.from_numpy(np.asarray(sample[key], np.int64))
        sample["label"] = torch.from_numpy(self._labels[i].copy())
        return sample


class LabelMapDataset(Dataset):
    """The samples of ``base`` with one more (H, W) label map, read per image, then ``transform``.

    Args:
        base: a :class:`SegDataset` built without a transform.
        key: the sample key of the map (e.g. ``"ir_label"``).
        path: image name -> the map's file.
        read: ``(path, (H, W)) -> (H, W)`` integer array; raises DataError naming the file
            when it is missing or of another size than the image.
        transform: called on the sample dict (with the map as a numpy array) last.
    """

    def __init__(self, base: SegDataset, key: str, path: Callable[[str], Path],
                 read: Callable[[Path, tuple[int, int]], np.ndarray], transform: Callable | None = None):
        if base.transform is not None:
            raise ValueError("LabelMapDataset: build the base data set without a transform")
        self.base, self.key, self.path, self.read, self.transform = base, key, path, read, transform

    @property
    def names(self) -> list[str]:
        return self.base.names

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.base[i]
        sample[self.key] = np.asarray(self.read(self.path(sample["name"]), sample["image"].shape[:2]), np.int64)
        return self.transform(sample) if self.transform is not None else sample
