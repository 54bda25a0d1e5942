"""The CAM -> pseudo-label table over the downstream runs (the ``pseudo_label_table`` stage).

Reads, for every run of ``runs.downstream`` (variants x seeds), the metrics of
``eval_cam``, ``make_ir_labels`` and ``make_pseudo_labels`` on the train split and writes,
through :mod:`sslib.downstream`:

* :func:`sslib.paths.pseudo_label_table` ``"csv"`` (``reports/pseudo_labels.csv``): one row
  per variant, mean and std over seeds of the CAM mIoU, the IR labels' precision and
  coverage, the pseudo labels' mIoU, precision, recall and background false-positive rate,
  the confidence masks' precision and coverage, and the gain over the CAMs;
* ``reports/pseudo_labels.md``: the same with the verdict per variant (does the random walk
  improve on the CAMs on every seed?) and the settings.

The figure is the notebook's (``notebooks/29_pseudo_label_table.py``): :func:`examples`
recomputes the boundary maps of a few images with each variant's boundary network.

Shell::

    python -m sslib.stages.pseudo_label_table
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
from .make_pseudo_labels import needs_boundary_net, refiner_settings

__all__ = ["TableResult", "run", "examples", "main"]


@dataclass
class TableResult:
    variants: list[str]
    seeds: list[int]
    split: str
    #: :func:`sslib.downstream.runs_frame`: a row per run (fractions)
    runs: pd.DataFrame
    #: :func:`sslib.downstream.table`: the rows of pseudo_labels.csv (percent)
    table: pd.DataFrame
    markdown: str


def _roots() -> dict[str, object]:
    return {"eval_cam": paths.eval_root(), "make_ir_labels": paths.reports("make_ir_labels") / "make_ir_labels",
            "make_pseudo_labels": paths.reports("make_pseudo_labels") / "make_pseudo_labels"}


def run(params: Params) -> TableResult:
    """Read the downstream runs' metrics; write the table and its markdown; return them."""
    d = params.runs.downstream
    variants, seeds, split = list(d.variants), list(d.seeds), params.data.train_split
    roots = _roots()
    if not needs_boundary_net(params):  # no IR labels were made
        roots.pop("make_ir_labels")
    runs = downstream.runs_frame(variants, seeds, split, roots)
    tab = downstream.table(runs, order=variants)
    settings = {}
    if needs_boundary_net(params):
        settings["make_ir_labels"] = {k: v for k, v in to_dict(params.make_ir_labels).items() if k != "out_dir"}
        settings["train_irn"] = {k: v for k, v in to_dict(params.train_irn).items()
                                 if k not in ("out_dir", "num_workers", "amp", "stop_on_nonfinite")}
    settings["make_pseudo_labels"] = refiner_settings(params)
    settings["model.backbone"] = params.model.backbone
    md = downstream.report_markdown(tab, dataset=params.data.dataset, split=split, seeds=seeds, settings=settings)
    ablation.write_table(paths.pseudo_label_table(), tab)
    write_text(paths.pseudo_label_table("md"), md)
    return TableResult(variants, seeds, split, runs, tab, md)


def examples(params: Params, n_images: int = 3, seed: int | None = None) -> list[list[tuple[str, np.ndarray]]]:
    """Rows for :func:`sslib.viz.panel_grid`: for each downstream variant (seed ``seed``,
    default the first downstream seed) and each of ``n_images`` evenly spaced train images:
    the image, the ground truth, the CAM (largest over the present classes), the boundary
    map and the IR label (for a refiner with a boundary network), the pseudo label, and the
    pseudo label over the confident pixels."""
    import torch

    from .. import viz
    from ..cam import cam_path, load_cam
    from ..data import EvalTransform, build_dataset
    from ..models import load_boundary_net
    from ..pseudo_labels import load_confidence_mask, load_ir_label

    d = params.runs.downstream
    seed = d.seeds[0] if seed is None else seed
    split = params.data.train_split
    walk = needs_boundary_net(params)  # the boundary map and IR label exist only then
    settings = chosen(params.make_pseudo_labels, "refiner")[1]
    ds = build_dataset(params.data, split)
    tensors = build_dataset(params.data, split, transform=EvalTransform(), with_mask=False)
    idx = np.linspace(0, len(ds) - 1, n_images, dtype=int)
    rows = []
    for v in d.variants:
        net = load_boundary_net(paths.irn_model(params, v, seed)) if walk else None
        for i in idx:
            s = ds[int(i)]
            name, image = s["name"], s["image"]
            hw = image.shape[:2]
            cam = load_cam(cam_path(paths.cam_dir(params, v, seed), split, name), hw)
            heat = cam["high_res"].max(0) if len(cam["keys"]) else np.zeros(hw, np.float32)
            label = load_ir_label(paths.pseudo_label_file(params, v, seed, name), hw)
            mask = load_confidence_mask(paths.confidence_mask_file(params, v, seed, name), hw)
            row = [(f"{v} seed {seed}: {name}", image), ("ground truth", viz.label_image(s["mask"])),
                   ("CAM", viz.heat_overlay(image, heat))]
            if walk:
                with torch.no_grad():
                    b = net.boundary(tensors[int(i)]["image"][None], pad_to=settings.pad_to or None)
                b = torch.nn.functional.interpolate(b, scale_factor=4, mode="bilinear")[0, 0, :hw[0], :hw[1]].numpy()
                ir = load_ir_label(paths.ir_label_dir(params, v, seed) / f"{name}.png", hw)
                row += [("boundary", b), ("IR label", viz.label_image(ir))]
            rows.append(row + [("pseudo label", viz.label_image(label)),
                               ("confident (kept)", viz.confidence_overlay(image, label, mask))])
    return rows


def main(argv: list[str] | None = None) -> int:
    def call(params, args):
        r = run(params)
        return {"variants": r.variants, "seeds": r.seeds, "table": str(paths.pseudo_label_table()),
                "markdown": str(paths.pseudo_label_table("md"))}

    return common.cli("pseudo_label_table", __doc__, call, argv)


if __name__ == "__main__":
    sys.exit(main())
