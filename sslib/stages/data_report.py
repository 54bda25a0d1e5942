"""The data set at a glance (the ``data_report`` stage).

Reads ``data`` (the prepared data set: image lists, label cache) and ``superpixels.out_dir``
and writes :func:`sslib.paths.data_stats` (``reports/data_stats.json``, DVC metrics): the
data set, its number of classes, images and mean classes per image of the train and val
splits, the numeric statistics of the superpixels' ``meta.json`` (when it exists) and,
for the synthetic set, how strongly each class is tied to its background context
(:func:`sslib.data.synthetic.context_stats`). The figures are the notebook's
(``notebooks/02_data_report.py``). Shell::

    python -m sslib.stages.data_report [--params params.yaml]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
import numpy as np
import pandas as pd

from .. import paths
from ..config import Params
from ..io import DataError, write_json
from . import common

__all__ = ["splits", "datasets", "labels", "class_counts", "sample_rows", "superpixel_meta", "synthetic_meta",
           "stats", "run", "main"]


def splits(params: Params) -> list[str]:
    """The split names reported: ``data.train_split`` and ``data.val_split``."""
    from ..data import split_name

    return list(dict.fromkeys(split_name(params.data, key) for key in ("train", "val")))


def datasets(params: Params, superpixels: bool = True) -> dict:
    """``{split: data set}`` of :func:`splits` (samples with their superpixels, unless
    ``superpixels`` is False)."""
    from ..data import build_dataset

    sp_dir = params.superpixels.out_dir if superpixels else None
    return {s: build_dataset(params.data, s, superpixel_dir=sp_dir) for s in splits(params)}


def labels(dataset) -> np.ndarray:
    """(N, C) int multi-hot image-level labels of ``dataset`` (no image read)."""
    if not len(dataset):
        return np.zeros((0, dataset.num_classes), np.int64)
    return np.stack([dataset.label(i) for i in range(len(dataset))]).round().astype(np.int64)


def class_counts(datasets: dict) -> pd.DataFrame:
    """Images containing each class (rows: the classes) in each split (columns)."""
    first = next(iter(datasets.values()))
    return pd.DataFrame({s: labels(ds).sum(0) for s, ds in datasets.items()}, index=list(first.classes))


def sample_rows(datasets: dict, n_samples: int = 6) -> list[tuple[str, dict]]:
    """``n_samples // 2`` evenly spaced samples of each split, as ``("<split>/<name>", sample)``
    rows for :func:`sslib.viz.sample_grid`."""
    rows = []
    for split, ds in datasets.items():
        for i in np.linspace(0, len(ds) - 1, n_samples // 2, dtype=int):
            item = ds[int(i)]
            rows.append((f"{split}/{item['name']}", item))
    return rows


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def superpixel_meta(params: Params) -> dict | None:
    """The superpixels' ``meta.json`` (:func:`sslib.superpixels.precompute`), or None."""
    from ..superpixels import META_NAME

    return _read_json(Path(params.superpixels.out_dir) / META_NAME)


def synthetic_meta(params: Params) -> dict | None:
    """The synthetic set's ``meta.json`` (:func:`sslib.data.synthetic.read_meta`); None for
    another data set."""
    from ..data import dataset_entry, synthetic as syn

    if not dataset_entry(params.data).get("generated", False):
        return None

    return syn.read_meta(params.data.root)


def stats(params: Params, sets: dict | None = None) -> dict:
    """The statistics written to ``data_stats.json`` (see the module doc); ``sets``:
    :func:`datasets` (built when None)."""
    sets = sets if sets is not None else datasets(params, superpixels=False)
    classes = next(iter(sets.values())).classes
    out = {
        "dataset": params.data.dataset,
        "num_classes": len(classes),
        "images": {s: len(ds) for s, ds in sets.items()},
        "classes_per_image": {s: float(np.mean(labels(ds).sum(1))) for s, ds in sets.items()},
    }
    sp = superpixel_meta(params)
    if sp is not None:
        out["superpixels"] = {k: v for k, v in sp.items() if isinstance(v, (int, float))}
    meta = synthetic_meta(params)
    if meta is not None:
        from ..data import synthetic as syn

        out["synthetic"] = syn.context_stats(meta)
    return out


def run(params: Params) -> dict:
    """Compute :func:`stats` and write them to :func:`sslib.paths.data_stats`; returns them."""
    result = stats(params)
    write_json(paths.data_stats(), result)
    return result


def main(argv: list[str] | None = None) -> int:
    return common.cli("data_report", __doc__, lambda params, args: run(params), argv)


if __name__ == "__main__":
    sys.exit(main())
