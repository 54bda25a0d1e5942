"""Data sets behind one interface: PASCAL VOC 2012 (+SBD train_aug), COCO 2014, synthetic.

>>> ds = build_dataset(params.data, "train", transform=build_train_transform(params.augment))
>>> ds[0]["image"].shape, ds[0]["label"].shape      # (3, crop, crop), (C,)

See :mod:`sslib.data.base` for the sample dict, :mod:`sslib.data.voc` and
:mod:`sslib.data.coco` for the on-disk layouts, and :mod:`sslib.data.prepare` for the
label cache every data set reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import DataConfig
from .base import LabelMapDataset, SegDataset
from .coco import COCO_CLASSES, COCODataset
from .transforms import EvalTransform, ScaleCropTransform, TrainTransform, build_train_transform
from .voc import VOC_CLASSES, VOCDataset, synthetic_classes, voc_palette

__all__ = [
    "SegDataset", "LabelMapDataset", "ScaleCropTransform", "VOCDataset", "COCODataset", "build_dataset", "dataset_classes", "split_name",
    "resolve_split",
    "TrainTransform", "EvalTransform", "build_train_transform", "VOC_CLASSES", "COCO_CLASSES",
    "voc_palette",
]


def dataset_classes(data_cfg: DataConfig) -> tuple[str, ...]:
    """Foreground class names of the configured data set (C of them; mask ids 1..C)."""
    if data_cfg.dataset == "voc":
        return VOC_CLASSES
    if data_cfg.dataset == "synthetic":
        return synthetic_classes(data_cfg.root)
    if data_cfg.dataset == "coco":
        return COCO_CLASSES
    raise ValueError(f"unknown data set {data_cfg.dataset!r} (expected voc, synthetic or coco)")


def build_dataset(data_cfg: DataConfig, split: str, *, transform: Callable | None = None,
                  superpixel_dir: str | Path | None = None, with_mask: bool = True) -> SegDataset:
    """The split ``split`` of the data set ``data_cfg.dataset`` ("voc", "synthetic", "coco").

    Raises :class:`sslib.io.DataError` if the list, an image, or the label cache is missing.
    """
    kw = dict(prepared_dir=data_cfg.prepared_dir, transform=transform,
              superpixel_dir=superpixel_dir, with_mask=with_mask)
    if data_cfg.dataset == "coco":
        return COCODataset(data_cfg.root, split, **kw)
    return VOCDataset(data_cfg.root, split, classes=dataset_classes(data_cfg), **kw)


def split_name(data_cfg: DataConfig, key: str) -> str:
    """``"train"`` / ``"val"`` -> ``data.train_split`` / ``data.val_split`` (e.g. ``train_aug``)."""
    if key not in ("train", "val"):
        raise ValueError(f"split key must be 'train' or 'val', got {key!r}")
    return data_cfg.train_split if key == "train" else data_cfg.val_split


def resolve_split(data_cfg: DataConfig, split: str) -> str:
    """:func:`split_name` for ``"train"`` / ``"val"``; any other name (a split list of the
    data set) as it is."""
    return split_name(data_cfg, split) if split in ("train", "val") else split
