"""The downstream table: from CAMs to pseudo labels, per variant, mean and spread over seeds.

Reads the per-run metrics of the stages after the CAMs, each ``<root>/<variant>/seed<seed>/metrics.json``:

* ``eval_cam``: the CAMs' mIoU on the train split at the run's best background threshold;
* ``make_ir_labels``: the IR labels' confident pixels, their ``precision`` and ``coverage``;
* ``make_pseudo_labels``: the pseudo labels' mIoU, precision, recall and background
  false-positive rate, and the confidence mask's ``precision`` and ``coverage``;

and turns them into

* :func:`runs_frame`: one row per (variant, seed);
* :func:`table`: one row per variant, mean and sample std (ddof 1) over seeds, and the
  gain of the pseudo labels over the CAMs (per seed, then mean and std);
* :func:`gain_verdict`: whether the pseudo labels beat the CAMs on every seed;
* :func:`report_markdown`: the text of ``reports/pseudo_labels.md``.

The ``pseudo_label_table`` stage (:mod:`sslib.stages.pseudo_label_table`) says where the
metrics are.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from .ablation import to_markdown
from .io import DataError

__all__ = ["runs_frame", "table", "gain_verdict", "report_markdown", "COLUMNS"]

#: the per-run columns (fractions in the frame, percent in the table) and what they are
COLUMNS = {
    "cam_miou": "CAM mIoU (best threshold)",
    "ir_precision": "IR label: precision of the confident pixels",
    "ir_coverage": "IR label: share of the ground truth that is confident",
    "pl_miou": "pseudo-label mIoU",
    "pl_precision": "pseudo label: mean precision over classes",
    "pl_recall": "pseudo label: mean recall over classes",
    "pl_bg_fp": "pseudo label: background false-positive rate",
    "mask_precision": "confidence mask: precision of the kept pixels",
    "mask_coverage": "confidence mask: share of the ground truth kept",
}


def _read(root: Path, stage: str, variant: str, seed: int, split: str) -> dict:
    path = Path(root) / variant / f"seed{seed}" / "metrics.json"
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run `dvc repro {stage}@{variant}-{seed}`)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if split not in m:
        raise DataError(f"{path}: no results for split {split!r}")
    return m[split]


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def runs_frame(variants: Sequence[str], seeds: Sequence[int], split: str, roots: Mapping[str, str | Path]) -> pd.DataFrame:
    """One row per (variant, seed): ``variant, seed`` and :data:`COLUMNS` (fractions).

    Args:
        split: the train split's name (all three stages measure it).
        roots: stage -> its reports folder (``eval_cam``, ``make_ir_labels``, ``make_pseudo_labels``).
    """
    rows = []
    for v in variants:
        for s in seeds:
            cam = _read(roots["eval_cam"], "eval_cam", v, s, split)["best"]
            ir = _read(roots["make_ir_labels"], "make_ir_labels", v, s, split)
            pl = _read(roots["make_pseudo_labels"], "make_pseudo_labels", v, s, split)
            rows.append({"variant": v, "seed": s, "cam_miou": _num(cam["miou"]),
                         "ir_precision": _num(ir["precision"]), "ir_coverage": _num(ir["coverage"]),
                         "pl_miou": _num(pl["miou"]), "pl_precision": _num(pl["mean_precision"]),
                         "pl_recall": _num(pl["mean_recall"]), "pl_bg_fp": _num(pl["background_fp_rate"]),
                         "mask_precision": _num(pl["confident"]["precision"]),
                         "mask_coverage": _num(pl["confident"]["coverage"])})
    return pd.DataFrame(rows)


def table(runs: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per variant: ``<column>_mean`` / ``<column>_std`` (percent) for every
    :data:`COLUMNS` entry and for ``gain`` (pseudo-label minus CAM mIoU, per seed), then
    ``gain_min`` / ``gain_max`` over the seeds and ``seeds``."""
    r = runs.copy()
    for k in COLUMNS:
        r[k] = r[k].astype(float) * 100
    r["gain"] = r["pl_miou"] - r["cam_miou"]
    g = r.groupby("variant", sort=False)
    cols: dict[str, pd.Series] = {}
    for k in (*COLUMNS, "gain"):
        cols[f"{k}_mean"], cols[f"{k}_std"] = g[k].mean(), g[k].std(ddof=1)
    cols["gain_min"], cols["gain_max"], cols["seeds"] = g["gain"].min(), g["gain"].max(), g["seed"].count()
    out = pd.DataFrame(cols)
    if order is not None:
        out = out.reindex([v for v in order if v in out.index])
    return out.rename_axis("variant").reset_index()


def gain_verdict(row: Mapping) -> str:
    """``better than its CAMs on every seed``, ``worse ... on every seed`` or ``mixed``
    (the per-seed gains ``gain_min`` / ``gain_max`` of a :func:`table` row, in points)."""
    if row["gain_min"] > 0:
        return f"{row['gain_mean']:+.1f}: better than its CAMs on every seed"
    if row["gain_max"] < 0:
        return f"{row['gain_mean']:+.1f}: worse than its CAMs on every seed"
    return f"{row['gain_mean']:+.1f}: better on some seeds, worse on others"


def _pm(row: Mapping, key: str) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ± {std:.1f}"


def report_markdown(tab: pd.DataFrame, *, dataset: str, split: str, seeds: Sequence[int],
                    settings: Mapping[str, object]) -> str:
    """The text of ``pseudo_labels.md``: the table (mean ± std over ``seeds``), the gain
    verdicts and the settings the labels were made with."""
    shown = pd.DataFrame({
        "variant": tab["variant"],
        "CAM mIoU": [_pm(r, "cam_miou") for _, r in tab.iterrows()],
        "IR prec.": [_pm(r, "ir_precision") for _, r in tab.iterrows()],
        "IR cov.": [_pm(r, "ir_coverage") for _, r in tab.iterrows()],
        "pseudo-label mIoU": [_pm(r, "pl_miou") for _, r in tab.iterrows()],
        "precision": [_pm(r, "pl_precision") for _, r in tab.iterrows()],
        "recall": [_pm(r, "pl_recall") for _, r in tab.iterrows()],
        "bg FP": [_pm(r, "pl_bg_fp") for _, r in tab.iterrows()],
        "mask prec.": [_pm(r, "mask_precision") for _, r in tab.iterrows()],
        "mask cov.": [_pm(r, "mask_coverage") for _, r in tab.iterrows()],
        "seeds": tab["seeds"],
    })
    verdicts = pd.DataFrame({"variant": tab["variant"], "pseudo label - CAM (mIoU)":
                             [gain_verdict(r) for _, r in tab.iterrows()]})
    lines = [
        "# From CAMs to pseudo labels (generated by `dvc repro pseudo_label_table`; do not edit)\n",
        f"Data set `{dataset}`, split `{split}` against its ground truth; seeds {list(seeds)}. Percent; "
        "mean ± sample std over the seeds.\n",
        "* `CAM mIoU`: the CAMs at each run's best background threshold (`eval_cam`).",
        "* `IR prec.` / `IR cov.`: the IR labels' confident (not ignored) pixels: the share that is right, "
        "and the share of the ground truth they cover (`make_ir_labels`).",
        "* `pseudo-label mIoU`, `precision`, `recall` (means over the classes, background included), `bg FP` "
        "(share of ground-truth background labelled as a class): the random-walk pseudo labels "
        "(`make_pseudo_labels`).",
        "* `mask prec.` / `mask cov.`: the pixels BECO's confidence mask keeps: the share that is right, and "
        "the share of the ground truth kept.",
        "",
        to_markdown(shown),
        "\n## Pseudo labels against their own CAMs\n",
        "Per seed, pseudo-label mIoU minus CAM mIoU; a gain counts when it has the same sign on every seed.\n",
        to_markdown(verdicts),
        "\n## Settings\n",
        "\n".join(f"* `{k}`: {v}" for k, v in settings.items()),
        "",
    ]
    return "\n".join(lines)
