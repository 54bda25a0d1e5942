"""Data sets behind one interface: PASCAL VOC 2012 (+SBD train_aug), COCO 2014, synthetic.

>>> ds = build_dataset(params.data, "train", transform=build_train_transform(params.augment))
>>> ds[0]["image"].shape, ds[0]["label"].shape      # (3, crop, crop), (C,)

See :mod:`sslib.data.base` for the sample dict, :mod:`sslib.data.voc` and
:mod:`sslib.data.coco` for the on-disk layouts, and :mod:`sslib.data.prepare` for the
label cache every data set reads.

The data sets are the entries of :data:`sslib.registry.DATASETS` (``data.dataset`` chooses
one). An entry's factory builds a split, ``build(data_cfg, split, **kw) -> SegDataset``
(``kw``: ``prepared_dir``, ``transform``, ``superpixel_dir``, ``with_mask``), and it declares:

* ``classes``: ``classes(data_cfg) -> tuple`` of its foreground class names (mask ids 1..C);
* ``prepare``: ``prepare(data_cfg, progress, workers) -> plan``, the ``prepare`` stage's
  plan of the label cache and split lists (:mod:`sslib.data.prepare`);
* ``uses_sbd``: whether ``data.sbd_root`` (SBD, for VOC's train_aug) means anything for it;
* ``generated``: whether the ``synthesize`` stage makes it (then ``data.root`` must be
  ``synthetic.out_dir`` and the data report reads the generator's statistics).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import ConfigError, DataConfig
from ..registry import DATASETS, UnknownEntry, register_dataset
from .base import LabelMapDataset, SegDataset
from .coco import COCO_CLASSES, COCODataset
from .transforms import EvalTransform, ScaleCropTransform, TrainTransform, build_train_transform
from .voc import VOC_CLASSES, VOCDataset, synthetic_classes, voc_palette

__all__ = [
    "SegDataset", "LabelMapDataset", "ScaleCropTransform", "VOCDataset", "COCODataset", "build_dataset", "dataset_classes", "dataset_entry", "split_name",
    "resolve_split",
    "TrainTransform", "EvalTransform", "build_train_transform", "VOC_CLASSES", "COCO_CLASSES",
    "voc_palette",
]


def _plan_voc_layout(data_cfg: DataConfig, progress: bool = True, workers: int | None = None):
    from .prepare import plan_voc

    return plan_voc(data_cfg, dataset_classes(data_cfg))


def _plan_coco(data_cfg: DataConfig, progress: bool = True, workers: int | None = None):
    from .prepare import plan_coco

    return plan_coco(data_cfg, progress, workers)


def _voc_layout(data_cfg: DataConfig, split: str, **kw) -> SegDataset:
    return VOCDataset(data_cfg.root, split, classes=dataset_classes(data_cfg), **kw)


def _coco(data_cfg: DataConfig, split: str, **kw) -> SegDataset:
    return COCODataset(data_cfg.root, split, **kw)


register_dataset("synthetic", classes=lambda cfg: synthetic_classes(cfg.root), prepare=_plan_voc_layout,
                 uses_sbd=False, generated=True)(_voc_layout)
register_dataset("voc", classes=lambda cfg: VOC_CLASSES, prepare=_plan_voc_layout, uses_sbd=True,
                 generated=False)(_voc_layout)
register_dataset("coco", classes=lambda cfg: COCO_CLASSES, prepare=_plan_coco, uses_sbd=False,
                 generated=False)(_coco)


def dataset_entry(data_cfg: DataConfig):
    """The :data:`sslib.registry.DATASETS` entry of ``data.dataset`` (ConfigError naming the key if unknown)."""
    try:
        return DATASETS.get(data_cfg.dataset, "data.dataset")
    except UnknownEntry as e:
        raise ConfigError(str(e)) from None


def dataset_classes(data_cfg: DataConfig) -> tuple[str, ...]:
    """Foreground class names of the configured data set (C of them; mask ids 1..C)."""
    return tuple(dataset_entry(data_cfg).get("classes")(data_cfg))


def build_dataset(data_cfg: DataConfig, split: str, *, transform: Callable | None = None,
                  superpixel_dir: str | Path | None = None, with_mask: bool = True) -> SegDataset:
    """The split ``split`` of the data set ``data_cfg.dataset`` (an entry of :data:`sslib.registry.DATASETS`).

    Raises :class:`sslib.io.DataError` if the list, an image, or the label cache is missing.
    """
    kw = dict(prepared_dir=data_cfg.prepared_dir, transform=transform,
              superpixel_dir=superpixel_dir, with_mask=with_mask)
    return dataset_entry(data_cfg).factory(data_cfg, split, **kw)


def split_name(data_cfg: DataConfig, key: str) -> str:
    """``"train"`` / ``"val"`` -> ``data.train_split`` / ``data.val_split`` (e.g. ``train_aug``)."""
    if key not in ("train", "val"):
        raise ValueError(f"split key must be 'train' or 'val', got {key!r}")
    return data_cfg.train_split if key == "train" else data_cfg.val_split


def resolve_split(data_cfg: DataConfig, split: str) -> str:
    """:func:`split_name` for ``"train"`` / ``"val"``; any other name (a split list of the
    data set) as it is."""
    return split_name(data_cfg, split) if split in ("train", "val") else split
