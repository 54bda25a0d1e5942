"""The ablation table: every variant's CAM quality, mean and spread over seeds.

Reads what the ``eval_cam`` stage wrote, ``reports/eval_cam/<variant>/seed<seed>/``
``metrics.json`` and ``sweep.csv``, and turns it into

* :func:`runs_frame`: one row per (variant, seed, split) with mIoU at the run's best
  threshold and at the fixed threshold, precision, recall, the background
  false-positive rate at both thresholds, and the decoder's reconstruction PSNR / SSIM
  where the run has one;
* :func:`ablation_table`: one row per variant (mean and sample std over seeds), the
  rows of ``reports/ablation.csv`` / ``.md``;
* :func:`compare`: each variant against a reference (``baseline``): the difference of
  the means and whether the seeds' ranges overlap (small synthetic runs are noisy: a
  difference inside the seed spread is no evidence);
* :func:`sweep_frame` / :func:`mean_sweep`: mIoU against threshold, per run and as the
  mean over seeds per variant (one column per variant: a DVC plot with a line each);
* the report: :func:`full_table` (the train-split table with the val mIoU, the CAMs'
  activation contrast and the reconstruction quality, the rows of ``ablation.csv``),
  :func:`comparison` (each split against the reference, with a :func:`verdict` in words), :func:`uniform_caveat` (the
  warning printed when every best threshold is the largest swept) and
  :func:`report_markdown` (the text of ``ablation.md``).

The share of a class's false positives that lie on background (``over_activation`` in
metrics.json) is not in the table: it was 0.97-1.0 in every run and told no variants
apart; the background false-positive rate (``bg_fp``) measures the spill instead.

Every function takes the results folder (``root``: the ``eval_cam`` stage's reports, with
``<variant>/seed<seed>/`` under it) or frames; the ``ablation`` stage
(:mod:`sslib.stages.ablation`) says where they are.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .io import DataError, write_text

__all__ = ["runs_frame", "ablation_table", "compare", "sweep_frame", "mean_sweep", "per_class_frame",
           "contrast_frame", "contrast_means", "full_table", "verdict", "comparison", "uniform_caveat",
           "report_markdown", "write_table", "to_markdown"]


def _metrics_path(root: Path, variant: str, seed: int) -> Path:
    return Path(root) / variant / f"seed{seed}" / "metrics.json"


def _read_metrics(root: Path, variant: str, seed: int) -> dict:
    path = _metrics_path(root, variant, seed)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run `dvc repro pipeline/eval_cam/dvc.yaml:eval_cam@{variant}-{seed}`)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def _value(d: dict, key: str) -> float:
    """``d[key]`` as a float; nan when missing or None (JSON's nan)."""
    x = d.get(key)
    return float("nan") if x is None else float(x)


def _reconstruction(m: dict, split: str) -> dict:
    """The split's ``reconstruction`` dict (``psnr``, ``ssim``; eval_cam writes it for the val
    split of a run with a decoder), else ``{}``."""
    rec = m[split].get("reconstruction")
    return rec if isinstance(rec, dict) else {}


def runs_frame(variants: Sequence[str], seeds: Sequence[int], splits: Sequence[str],
               root: str | Path) -> pd.DataFrame:
    """One row per (variant, seed, split), read from ``<root>/<variant>/seed<seed>/metrics.json``.

    Columns (fractions): ``miou_best``, ``best_threshold``, ``miou_fixed``,
    ``precision``, ``recall`` (means over classes at the best threshold), ``bg_fp`` /
    ``bg_fp_fixed`` (``background_fp_rate``: the share of ground-truth background
    pixels predicted as some class, at the best / fixed threshold), ``psnr`` (dB) and
    ``ssim`` of the decoder's reconstruction (the split's ``reconstruction`` dict; nan
    without one: no decoder, or not the val split). A missing score is nan.
    """
    rows = []
    for v in variants:
        for s in seeds:
            m = _read_metrics(Path(root), v, s)
            for split in splits:
                if split not in m:
                    raise DataError(f"{_metrics_path(Path(root), v, s)}: no results for split {split!r}")
                b, f = m[split]["best"], m[split]["fixed"]
                rec = _reconstruction(m, split)
                rows.append({"variant": v, "seed": s, "split": split, "miou_best": b["miou"],
                             "best_threshold": b["threshold"], "miou_fixed": f["miou"],
                             "precision": _value(b, "mean_precision"), "recall": _value(b, "mean_recall"),
                             "bg_fp": _value(b, "background_fp_rate"),
                             "bg_fp_fixed": _value(f, "background_fp_rate"),
                             "psnr": _value(rec, "psnr"), "ssim": _value(rec, "ssim")})
    return pd.DataFrame(rows)


def ablation_table(runs: pd.DataFrame, split: str, order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per variant (first column ``variant``): mean and std (ddof 1) over seeds.

    Columns: ``miou_best_mean/std`` (percent), ``best_threshold``, ``miou_fixed_mean/std``
    (percent), ``precision``, ``recall`` (means, percent), ``bg_fp_mean/std`` and
    ``bg_fp_fixed_mean/std`` (background false-positive rate at the best / fixed
    threshold, percent), ``seeds``. No ``over_activation``: the share of false positives
    on background was 0.97-1.0 in every run and did not discriminate. No times: they are
    machine-dependent (``reports/timings/``).
    """
    r = runs[runs["split"] == split].copy()
    for k in ("miou_best", "miou_fixed", "precision", "recall", "bg_fp", "bg_fp_fixed"):
        r[k] = r[k].astype(float) * 100
    g = r.groupby("variant", sort=False)
    out = pd.DataFrame({
        "miou_best_mean": g["miou_best"].mean(), "miou_best_std": g["miou_best"].std(ddof=1),
        "best_threshold": g["best_threshold"].mean(),
        "miou_fixed_mean": g["miou_fixed"].mean(), "miou_fixed_std": g["miou_fixed"].std(ddof=1),
        "precision": g["precision"].mean(), "recall": g["recall"].mean(),
        "bg_fp_mean": g["bg_fp"].mean(), "bg_fp_std": g["bg_fp"].std(ddof=1),
        "bg_fp_fixed_mean": g["bg_fp_fixed"].mean(), "bg_fp_fixed_std": g["bg_fp_fixed"].std(ddof=1),
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


def sweep_frame(variants: Sequence[str], seeds: Sequence[int], root: str | Path) -> pd.DataFrame:
    """Long frame of every run's sweep (``<root>/<variant>/seed<seed>/sweep.csv``):
    ``variant, seed, split, threshold, miou``."""
    frames = []
    for v in variants:
        for s in seeds:
            path = Path(root) / v / f"seed{s}" / "sweep.csv"
            if not path.is_file():
                raise DataError(f"{path}: missing (run `dvc repro pipeline/eval_cam/dvc.yaml:eval_cam@{v}-{s}`)")
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


def per_class_frame(variants: Sequence[str], seeds: Sequence[int], split: str, root: str | Path,
                    which: str = "best") -> pd.DataFrame:
    """Long frame ``variant, seed, class, iou`` (percent) at each run's ``best``/``fixed`` threshold."""
    rows = []
    for v in variants:
        for s in seeds:
            m = _read_metrics(Path(root), v, s)
            for cls, iou in m[split][which]["iou"].items():
                rows.append({"variant": v, "seed": s, "class": cls, "iou": None if iou is None else iou * 100})
    return pd.DataFrame(rows)


def contrast_frame(variants: Sequence[str], seeds: Sequence[int], split: str, root: str | Path) -> pd.DataFrame:
    """One row per run: ``variant, seed, inside, background, ratio`` (fractions), the
    ``cam_contrast`` that eval_cam wrote for ``split`` (:func:`sslib.evaluate.activation_contrast`);
    nan where a file has none."""
    rows = []
    for v in variants:
        for s in seeds:
            c = _read_metrics(Path(root), v, s)[split].get("cam_contrast") or {}
            rows.append({"variant": v, "seed": s, **{k: _value(c, k) for k in ("inside", "background", "ratio")}})
    return pd.DataFrame(rows)


def contrast_means(contrast: pd.DataFrame) -> pd.DataFrame:
    """Per variant (index, sorted): mean ``inside`` and ``background`` over seeds, in percent.

    ``contrast``: one row per run with ``variant``, ``inside``, ``background`` (fractions,
    as :func:`sslib.evaluate.activation_contrast` returns them).
    """
    return contrast.groupby("variant")[["inside", "background"]].mean() * 100


def full_table(runs: pd.DataFrame, contrast: pd.DataFrame, train_split: str, val_split: str,
               order: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of ``ablation.csv``: :func:`ablation_table` on ``train_split``, then
    ``val_miou_best_mean/std`` (``val_split``), ``cam_inside`` / ``cam_background``
    (:func:`contrast_means` of ``contrast``, percent) and ``psnr`` (dB) / ``ssim`` (the
    decoder's reconstruction on ``val_split``, mean over the seeds that have one; nan
    for a variant without a decoder, or when ``runs`` has no such columns)."""
    table = ablation_table(runs, train_split, order=order)
    val = ablation_table(runs, val_split, order=order).set_index("variant")
    table["val_miou_best_mean"] = table["variant"].map(val["miou_best_mean"])
    table["val_miou_best_std"] = table["variant"].map(val["miou_best_std"])
    means = contrast_means(contrast)
    table["cam_inside"] = table["variant"].map(means["inside"])
    table["cam_background"] = table["variant"].map(means["background"])
    rec = runs[runs["split"] == val_split].reindex(columns=["variant", "psnr", "ssim"])
    rec = rec.astype({"psnr": float, "ssim": float}).groupby("variant")[["psnr", "ssim"]].mean()
    for k in ("psnr", "ssim"):
        table[k] = table["variant"].map(rec[k]).astype(float)
    return table


def verdict(variant: str, diff: float, overlap: bool, reference: str) -> str:
    """One comparison in words: ``reference``, ``+1.1: above <reference> on every seed``
    (or ``below``), or ``-0.1: inside the seed spread (no evidence either way)``."""
    if variant == reference:
        return "reference"
    side = "above" if diff > 0 else "below"
    if overlap:
        return f"{diff:+.1f}: inside the seed spread (no evidence either way)"
    return f"{diff:+.1f}: {side} {reference} on every seed"


def comparison(runs: pd.DataFrame, splits: Sequence[str], reference: str, metric: str = "miou_best") -> pd.DataFrame:
    """:func:`compare` on each split (each once, in order), stacked: ``split, variant, diff,
    min, max, ref_min, ref_max, overlap, verdict`` (:func:`verdict`)."""
    cmp = pd.concat({split: compare(runs, split, reference, metric).set_index("variant")
                     for split in dict.fromkeys(splits)}, names=["split"]).reset_index()
    cmp["verdict"] = [verdict(v, d, o, reference) for v, d, o in zip(cmp["variant"], cmp["diff"], cmp["overlap"])]
    return cmp


def uniform_caveat(runs: pd.DataFrame, thresholds: Sequence[float], contrast_means: pd.DataFrame) -> str:
    """The warning of ``ablation.md`` when every run's best threshold (any split) is the
    largest swept, ``""`` otherwise.

    Then no threshold separates object from background: the CAMs are nearly uniform, and
    ``contrast_means`` (:func:`contrast_means`: percent per variant) shows by how much.
    """
    top = float(thresholds[-1])
    if not (runs["best_threshold"] >= top - 1e-6).all():
        return ""
    bg, inside = contrast_means["background"], contrast_means["inside"]
    return (
        f"\n**Every run's best threshold is the largest swept ({top:g}), and the mean CAM on ground-truth "
        f"background is {bg.min():.0f}-{bg.max():.0f} % of its maximum "
        f"(on the object {inside.min():.0f}-{inside.max():.0f} %): the CAMs are spread over "
        "the whole image, not localised, so these mIoU values measure how much of each image an object "
        "covers rather than where the CAM puts it. Differences between variants here are no evidence for or "
        "against SSC.**\n")


#: the column titles of ``ablation.md`` (``{fixed}``: the fixed threshold); defined in its legend
_SHOWN = {"miou_best_mean": "mIoU best", "miou_best_std": "± std", "best_threshold": "best thr",
          "miou_fixed_mean": "mIoU @{fixed}", "miou_fixed_std": "± std", "precision": "precision",
          "recall": "recall", "bg_fp_mean": "bg FP", "bg_fp_std": "± std", "bg_fp_fixed_mean": "bg FP @{fixed}",
          "bg_fp_fixed_std": "± std", "seeds": "seeds", "val_miou_best_mean": "val mIoU",
          "val_miou_best_std": "± std", "cam_inside": "CAM on object", "cam_background": "CAM on bg",
          "psnr": "PSNR", "ssim": "SSIM"}


def _legend(fixed: str, train_split: str, val_split: str) -> str:
    """The definitions of ``ablation.md``'s columns (``fixed``: the fixed threshold, formatted)."""
    return "\n".join([
        f"* `mIoU best`: mIoU on `{train_split}` (pseudo-label quality) at each run's best background threshold "
        f"(`best thr`); `mIoU @{fixed}`: at the fixed threshold {fixed}.",
        "* `precision` / `recall`: mean over the classes (background included) at the best threshold; a class's "
        "precision is the share of the pixels predicted as that class that are that class.",
        f"* `bg FP` / `bg FP @{fixed}`: background false-positive rate, the share of ground-truth background "
        f"pixels predicted as some class, at the best / at the fixed threshold (activation spilling out of the "
        "objects, what SSC targets; lower is better). The share of a class's false positives that lie on "
        "background is not shown: it was 0.97-1.0 in every run and told no variants apart.",
        f"* `val mIoU`: mIoU on `{val_split}` at its best threshold.",
        "* `CAM on object` / `CAM on bg`: mean max-normalised CAM on the class's own pixels / on ground-truth "
        f"background ({val_split}), over every (image, present class) pair.",
        f"* `PSNR` (dB) / `SSIM`: the decoder's reconstruction of the `{val_split}` images, mean over the seeds "
        "(not percent; `-`: the variant has no decoder).",
        "",
    ])


def report_markdown(table: pd.DataFrame, comparison: pd.DataFrame, *, dataset: str, seeds: Sequence[int],
                    scales: Sequence[float], flip: bool, fixed_threshold: float, train_split: str,
                    val_split: str, reference: str, caveat: str = "") -> str:
    """The text of ``ablation.md``: how the numbers were made and what each column is,
    ``table`` (:func:`full_table`) with readable column titles, ``caveat``
    (:func:`uniform_caveat`), and ``comparison`` (:func:`comparison`) against ``reference``."""
    fixed = f"{fixed_threshold:g}"
    shown = table.copy()
    shown["best_threshold"] = shown["best_threshold"].map(lambda t: f"{t:.2f}")
    for k, digits in (("psnr", 1), ("ssim", 3)):
        if k in shown:
            shown[k] = shown[k].map(lambda x, d=digits: "-" if pd.isna(x) else f"{x:.{d}f}")
    shown.columns = [_SHOWN.get(c, c).format(fixed=fixed) for c in shown.columns]
    md = [
        "# Ablation (generated by `dvc repro ablation`; do not edit)\n",
        f"Data set `{dataset}`; seeds {list(seeds)}; CAM scales {list(scales)}"
        f"{' + flip' if flip else ''}. Percent unless said otherwise; mean and sample std (`± std`) over "
        "the seeds.\n",
        _legend(fixed, train_split, val_split),
        to_markdown(shown),
        caveat,
        f"\n## Against `{reference}` (mIoU at the best threshold)\n",
        "A difference counts only if the two variants' ranges over the seeds do not overlap.\n",
        to_markdown(comparison[["split", "variant", "diff", "min", "max", "verdict"]]),
    ]
    return "\n".join(md)


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
