"""The ablation table over every variant and seed (the ``ablation`` stage).

Reads what the ``eval_cam`` stage wrote for each run of ``runs.variants`` x ``runs.seeds``
(:func:`sslib.paths.eval_reports`: ``metrics.json``, with how localised the CAMs are,
and ``sweep.csv``; the stored CAMs under :func:`sslib.paths.cam_dir` only for the
notebook's figure) and writes, through
:mod:`sslib.ablation`:

* :func:`sslib.paths.ablation_table` (``reports/ablation.csv``): one row per variant, mean
  and std over seeds (train split: mIoU, precision, recall, background false-positive
  rate; val mIoU; CAM on object / on background, the runs' ``cam_contrast``;
  the decoder's reconstruction PSNR / SSIM);
* :func:`sslib.paths.ablation_markdown` (``reports/ablation.md``): the same table, the
  comparison with the reference variant per split in words, and a caveat when every best
  threshold is the largest swept;
* :func:`sslib.paths.ablation_sweep` for each key of ``eval_cam.splits``: mIoU against
  threshold, mean over seeds, a column per variant (a DVC plot).

The figures are the notebook's (``notebooks/50_ablation.py``): :func:`run` returns the
frames they need, :func:`examples` the CAMs of a few images. Shell::

    python -m sslib.stages.ablation [--params params.yaml] [--reference baseline]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import pandas as pd

from .. import ablation, paths
from ..config import Params, thresholds_from
from ..io import write_text
from . import common

__all__ = ["AblationResult", "run", "reference_of", "examples", "main"]


@dataclass
class AblationResult:
    """What :func:`run` computed (percent in the tables, fractions in ``sweeps``)."""

    variants: list[str]
    seeds: list[int]
    #: the split names of ``eval_cam.splits``; ``train_split`` / ``val_split``: first / last
    splits: list[str]
    train_split: str
    val_split: str
    #: the variant every other one is compared with
    reference: str
    #: :func:`sslib.ablation.runs_frame`: a row per (variant, seed, split)
    runs: pd.DataFrame
    #: :func:`sslib.ablation.full_table`: the rows of ablation.csv
    table: pd.DataFrame
    #: :func:`sslib.ablation.comparison` with ``reference``
    comparison: pd.DataFrame
    #: a row per run: ``variant, seed, inside, background, ratio`` (val split)
    contrast: pd.DataFrame
    #: :func:`sslib.ablation.sweep_frame`: every run's threshold sweep
    sweeps: pd.DataFrame
    #: :func:`sslib.ablation.per_class_frame` on the train split at the best threshold
    per_class: pd.DataFrame
    #: the text of ablation.md
    markdown: str


def reference_of(params: Params, reference: str) -> str:
    """``reference`` if it is among ``runs.variants``, else the first variant (said so)."""
    variants = list(params.runs.variants)
    if reference in variants:
        return reference
    print(f"reference {reference!r} is not among the variants; comparing with {variants[0]!r}")
    return variants[0]


def _splits(params: Params) -> list[str]:
    from ..data import split_name

    return [split_name(params.data, key) for key in params.eval_cam.splits]


def run(params: Params, reference: str = "baseline") -> AblationResult:
    """Read every run's results, write the table, its markdown and the mean sweeps; return
    the frames (see :class:`AblationResult`)."""
    from ..data import split_name

    variants, seeds = list(params.runs.variants), list(params.runs.seeds)
    splits = _splits(params)
    train_split, val_split = splits[0], splits[-1]
    reference = reference_of(params, reference)
    root = paths.eval_root()
    runs = ablation.runs_frame(variants, seeds, splits, root)
    contrast = ablation.contrast_frame(variants, seeds, val_split, root)
    table = ablation.full_table(runs, contrast, train_split, val_split, order=variants)
    cmp = ablation.comparison(runs, [train_split, val_split], reference)
    caveat = ablation.uniform_caveat(runs, thresholds_from(*params.eval_cam.thresholds),
                                     ablation.contrast_means(contrast))
    c = params.eval_cam
    md = ablation.report_markdown(table, cmp, dataset=params.data.dataset, seeds=seeds, scales=c.scales,
                                  flip=c.flip, fixed_threshold=c.fixed_threshold, train_split=train_split,
                                  val_split=val_split, reference=reference, caveat=caveat)
    sweeps = ablation.sweep_frame(variants, seeds, root)
    per_class = ablation.per_class_frame(variants, seeds, train_split, root)

    ablation.write_table(paths.ablation_table(), table)
    write_text(paths.ablation_markdown(), md)
    for key in params.eval_cam.splits:
        ablation.write_table(paths.ablation_sweep(key),
                             ablation.mean_sweep(sweeps, split_name(params.data, key), variants))
    return AblationResult(variants=variants, seeds=seeds, splits=splits, train_split=train_split,
                          val_split=val_split, reference=reference, runs=runs, table=table, comparison=cmp,
                          contrast=contrast, sweeps=sweeps, per_class=per_class, markdown=md)


def examples(params: Params, n_images: int = 4, seed: int = 0):
    """The same ``n_images`` evenly spaced images of the last split of ``eval_cam.splits``
    (val) across the variants of seed ``seed``: a :class:`sslib.viz.CamRow` per image with
    one overlay per variant (the largest of the present classes' CAMs), for
    :func:`sslib.viz.cam_grid`."""
    import numpy as np

    from .. import viz
    from ..data import build_dataset

    split = _splits(params)[-1]
    ds = build_dataset(params.data, split)
    idx = np.linspace(0, len(ds) - 1, n_images, dtype=int)
    dirs = {v: paths.cam_dir(params, v, seed) for v in params.runs.variants}
    return viz.variant_cam_rows(ds, dirs, split, idx)


def main(argv: list[str] | None = None) -> int:
    def add_args(ap):
        ap.add_argument("--reference", default="baseline", help="the variant the others are compared with")

    def call(params, args):
        r = run(params, args.reference)
        return {"reference": r.reference, "variants": r.variants, "seeds": r.seeds,
                "table": str(paths.ablation_table()), "markdown": str(paths.ablation_markdown())}

    return common.cli("ablation", __doc__, call, argv, add_args)


if __name__ == "__main__":
    sys.exit(main())
