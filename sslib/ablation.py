"""The ablation table: every variant's CAM quality, mean and spread over seeds.

Reads what the ``eval_cam`` stage wrote, ``reports/eval_cam/<variant>/seed<seed>/``
``metrics.json`` and ``sweep.csv``, and turns it into

* :func:`runs_frame`: one row per (variant, seed, split) with mIoU at the run's best
  threshold and at the fixed threshold, precision, recall, over-activation;
* :func:`ablation_table`: one row per variant (mean and sample std over seeds), the
  rows of ``reports/ablation.csv`` / ``.md``;
* :func:`compare`: each variant against a reference (``baseline``): the difference of
  the means and whether the seeds' ranges overlap (small synthetic runs are noisy: a
  difference inside the seed spread is no evidence);
* :func:`sweep_frame` / :func:`mean_sweep`: mIoU against threshold, per run and as the
  mean over seeds per variant (one column per variant: a DVC plot with a line each).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import paths
from .io import DataError, write_text

__all__ = ["runs_frame", "ablation_table", "compare", "sweep_frame", "mean_sweep", "per_class_frame",
           "activation_contrast", "write_table", "to_markdown", "eval_root"]


def eval_root() -> Path:
    """``reports/eval_cam``: where the ``eval_cam`` stage wrote its per-run results."""
    return paths.reports("eval_cam") / "eval_cam"


def _metrics_path(root: Path, variant: str, seed: int) -> Path:
    return Path(root) / variant / f"seed{seed}" / "metrics.json"


def _read_metrics(root: Path, variant: str, seed: int) -> dict:
    path = _metrics_path(root, variant, seed)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run `dvc repro eval_cam@{variant}-{seed}`)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def runs_frame(variants: Sequence[str], seeds: Sequence[int], splits: Sequence[str],
               root: str | Path | None = None) -> pd.DataFrame:
    """One row per (variant, seed, split): ``miou_best``, ``best_threshold``,
    ``miou_fixed``, ``precision``, ``recall``, ``over_activation`` (at the best
    threshold). ``root`` defaults to :func:`eval_root`."""
    root = root or eval_root()
    rows = []
    for v in variants:
        for s in seeds:
            m = _read_metrics(Path(root), v, s)
            for split in splits:
                if split not in m:
                    raise DataError(f"{_metrics_path(Path(root), v, s)}: no results for split {split!r}")
                b, f = m[split]["best"], m[split]["fixed"]
                rows.append({"variant": v, "seed": s, "split": split, "miou_best": b["miou"],
                             "best_threshold": b["threshold"], "miou_fixed": f["miou"],
                             "precision": b["mean_precision"], "recall": b["mean_recall"],
                             "over_activation": b["mean_over_activation"]})
    return pd.DataFrame(rows)


def ablation_table(runs: pd.DataFrame, split: str, order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per variant (first column ``variant``): mean and std (ddof 1) over seeds.

    Columns: ``miou_best_mean/std`` (percent), ``best_threshold``, ``miou_fixed_mean/std``
    (percent), ``precision``, ``recall``, ``over_activation`` (means, percent),
    ``seeds``. No times: they are machine-dependent (``reports/timings/``).
    """
    r = runs[runs["split"] == split].copy()
    for k in ("miou_best", "miou_fixed", "precision", "recall", "over_activation"):
        r[k] = r[k].astype(float) * 100
    g = r.groupby("variant", sort=False)
    out = pd.DataFrame({
        "miou_best_mean": g["miou_best"].mean(), "miou_best_std": g["miou_best"].std(ddof=1),
        "best_threshold": g["best_threshold"].mean(),
        "miou_fixed_mean": g["miou_fixed"].mean(), "miou_fixed_std": g["miou_fixed"].std(ddof=1),
        "precision": g["precision"].mean(), "recall": g["recall"].mean(),
        "over_activation": g["over_activation"].mean(), "over_activation_std": g["over_activation"].std(ddof=1),
        "seeds": g["seed"].count(),
    })
    if order is not None:
        out = out.reindex([v for v in order if v in out.index])
    return out.rename_axis("variant").reset_index()


def compare(runs: pd.DataFrame, split: str, reference: str, metric: str = "miou_best") -> pd.DataFrame:
    """Each variant against ``reference`` on ``metric`` (percent): difference of the means,
    each side's min..max over seeds, and ``overlap`` (True if the ranges overlap: the
    difference is within the seed spread)."""
    r = runs[runs["split"] == split]
    ref = r[r["variant"] == reference][metric].astype(float) * 100
    if ref.empty:
        raise ValueError(f"reference variant {reference!r} has no runs")
    rows = []
    for v, grp in r.groupby("variant", sort=False):
        x = grp[metric].astype(float) * 100
        rows.append({"variant": v, "diff": x.mean() - ref.mean(), "min": x.min(), "max": x.max(),
                     "ref_min": ref.min(), "ref_max": ref.max(),
                     "overlap": bool(x.min() <= ref.max() and ref.min() <= x.max())})
    return pd.DataFrame(rows)


def sweep_frame(variants: Sequence[str], seeds: Sequence[int], root: str | Path | None = None) -> pd.DataFrame:
    """Long frame of every run's sweep: ``variant, seed, split, threshold, miou``."""
    root = root or eval_root()
    frames = []
    for v in variants:
        for s in seeds:
            path = Path(root) / v / f"seed{s}" / "sweep.csv"
            if not path.is_file():
                raise DataError(f"{path}: missing (run `dvc repro eval_cam@{v}-{s}`)")
            d = pd.read_csv(path)
            d = d.melt(id_vars="threshold", var_name="split", value_name="miou")
            d["split"] = d["split"].str.removesuffix("_miou")
            d["variant"], d["seed"] = v, s
            frames.append(d)
    return pd.concat(frames, ignore_index=True)[["variant", "seed", "split", "threshold", "miou"]]


def mean_sweep(sweeps: pd.DataFrame, split: str, order: Sequence[str] | None = None) -> pd.DataFrame:
    """``threshold`` and one column per variant: mIoU averaged over seeds (fractions)."""
    d = sweeps[sweeps["split"] == split].pivot_table(index="threshold", columns="variant", values="miou",
                                                     aggfunc="mean")
    if order is not None:
        d = d[[v for v in order if v in d.columns]]
    d.columns.name = None
    return d.reset_index()


def per_class_frame(variants: Sequence[str], seeds: Sequence[int], split: str, which: str = "best",
                    root: str | Path | None = None) -> pd.DataFrame:
    """Long frame ``variant, seed, class, iou`` (percent) at each run's ``best``/``fixed`` threshold."""
    root = root or eval_root()
    rows = []
    for v in variants:
        for s in seeds:
            m = _read_metrics(Path(root), v, s)
            for cls, iou in m[split][which]["iou"].items():
                rows.append({"variant": v, "seed": s, "class": cls, "iou": None if iou is None else iou * 100})
    return pd.DataFrame(rows)


def activation_contrast(cam_dir: str | Path, dataset, split: str) -> dict[str, float]:
    """How localised stored CAMs are: their mean value on the class's own pixels and on
    ground-truth background, averaged over every (image, present class) pair.

    ``dataset`` yields ``name`` and ``mask`` (H, W). A CAM that fires on its object and
    not around it has ``inside`` near 1 and ``background`` near 0; a CAM that is nearly
    uniform over the image has both near 1 (then no background threshold separates
    object from background, and the best threshold is the largest swept).

    Returns:
        ``{"inside", "background", "ratio"}`` (ratio = inside / background).
    """
    from .cam import cam_path, load_cam

    inside, outside = [], []
    for i in range(len(dataset)):
        s = dataset[i]
        mask = np.asarray(s["mask"])
        c = load_cam(cam_path(cam_dir, split, s["name"]), size=mask.shape)
        bg = mask == 0
        for k, m in zip(c["keys"], c["high_res"]):
            own = mask == k + 1
            if own.any() and bg.any():
                inside.append(float(m[own].mean()))
                outside.append(float(m[bg].mean()))
    a, b = float(np.mean(inside)), float(np.mean(outside))
    return {"inside": a, "background": b, "ratio": a / b if b > 0 else float("inf")}


def to_markdown(df: pd.DataFrame, digits: int = 1) -> str:
    """A GitHub markdown table (no extra dependency)."""
    def fmt(x) -> str:
        if isinstance(x, (bool, np.bool_)):
            return "yes" if x else "no"
        if isinstance(x, (float, np.floating)):
            return "" if np.isnan(x) else f"{x:.{digits}f}"
        return str(x)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(path: str | Path, df: pd.DataFrame, digits: int = 4) -> None:
    """CSV, atomically, floats rounded to ``digits``."""
    write_text(path, df.round(digits).to_csv(index=False, lineterminator="\n"))
