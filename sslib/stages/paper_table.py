"""The paper's table over the downstream runs (the ``paper_table`` stage).

Reads, for every run of ``runs.downstream`` (variants x seeds), the CAM mIoU (``eval_cam``,
train split, best threshold), the pseudo-label mIoU (``make_pseudo_labels``, train split) and
the segmentation mIoU (``eval_seg``, val split) and writes, through :mod:`sslib.downstream`:

* :func:`sslib.paths.paper_table` ``"csv"`` (``reports/paper_table.csv``): one row per
  variant, mean and std over seeds of the three (and of the segmentation without CRF), the
  segmentation's gain over its pseudo labels, and the paper's number where it applies;
* ``reports/paper_table.md``: the same as text, with the verdicts (does the network improve
  on its labels on every seed? does each variant beat the first on every seed?).

The figure (segmentation predictions across variants) is the notebook's
(``notebooks/39_paper_table.py``), from :func:`examples`.

Shell::

    python -m sslib.stages.paper_table
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import ablation, downstream, paths
from ..config import Params, chosen, to_dict
from ..io import write_text
from . import common

__all__ = ["PaperTable", "run", "examples", "main"]


@dataclass
class PaperTable:
    variants: list[str]
    seeds: list[int]
    #: :func:`sslib.downstream.paper_frame`: a row per run (fractions)
    runs: pd.DataFrame
    #: :func:`sslib.downstream.paper_table`: the rows of paper_table.csv (percent)
    table: pd.DataFrame
    markdown: str


def _roots() -> dict[str, object]:
    return {"eval_cam": paths.eval_root(),
            "make_pseudo_labels": paths.reports("make_pseudo_labels") / "make_pseudo_labels",
            "eval_seg": paths.reports("eval_seg") / "eval_seg"}


def run(params: Params) -> PaperTable:
    """Read the downstream runs' metrics; write the table and its markdown; return them."""
    d = params.runs.downstream
    variants, seeds = list(d.variants), list(d.seeds)
    runs = downstream.paper_frame(variants, seeds, params.data.train_split, _roots())
    tab = downstream.paper_table(runs, params.data.dataset, order=variants)
    drop = ("out_dir", "num_workers", "amp", "stop_on_nonfinite", "workers")
    t = {}
    for k, v in to_dict(params.train_seg).items():  # the chosen method's settings in place of the table
        if k in ("methods", "crops"):  # the chosen entry's settings in place of the table
            settings = chosen(params.train_seg, "method" if k == "methods" else "crop")[1]
            t.update(to_dict(settings) if settings is not None else {})
        elif k not in drop:
            t[k] = v
    settings = {"train_seg": t, "eval_seg": {k: v for k, v in to_dict(params.eval_seg).items() if k not in drop},
                "model.backbone (CAMs)": params.model.backbone}
    md = downstream.paper_markdown(tab, runs, dataset=params.data.dataset, train_split=params.data.train_split,
                                   val_split=params.data.val_split, seeds=seeds, settings=settings)
    ablation.write_table(paths.paper_table(), tab)
    write_text(paths.paper_table("md"), md)
    return PaperTable(variants, seeds, runs, tab, md)


def examples(params: Params, n_images: int = 4, seed: int | None = None) -> list[list[tuple[str, np.ndarray]]]:
    """Rows for :func:`sslib.viz.panel_grid`: for each of ``n_images`` evenly spaced val images,
    the image, the ground truth, and each downstream variant's prediction (seed ``seed``,
    default the first downstream seed; the ``eval_seg`` PNGs)."""
    from .. import viz
    from ..data import build_dataset
    from ..formats import read_png_labels

    d = params.runs.downstream
    seed = d.seeds[0] if seed is None else seed
    ds = build_dataset(params.data, params.data.val_split)
    rows = []
    for i in np.linspace(0, len(ds) - 1, n_images, dtype=int):
        s = ds[int(i)]
        row = [(s["name"], s["image"]), ("ground truth", viz.label_image(s["mask"]))]
        for v in d.variants:
            pred = read_png_labels(paths.seg_prediction_file(params, v, seed, s["name"]))
            row.append((f"{v} seed {seed}", viz.label_image(pred)))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    def call(params, args):
        r = run(params)
        return {"variants": r.variants, "seeds": r.seeds, "table": str(paths.paper_table()),
                "markdown": str(paths.paper_table("md"))}

    return common.cli("paper_table", __doc__, call, argv)


if __name__ == "__main__":
    sys.exit(main())
