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
* :func:`report_markdown`: the text of ``reports/pseudo_labels.md``;

and, with the ``eval_seg`` metrics (segmentation mIoU on val), the paper's three columns:

* :func:`paper_frame`: one row per (variant, seed): CAM, pseudo-label and segmentation mIoU;
* :func:`paper_table`: one row per variant, mean and std over seeds, the segmentation's
  gain over its pseudo labels, and the paper's number where the data set is the paper's;
* :func:`paper_markdown`: the text of ``reports/paper_table.md``.

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

__all__ = ["runs_frame", "table", "gain_verdict", "report_markdown", "COLUMNS", "PAPER_SEG_MIOU",
           "paper_frame", "paper_table", "paper_markdown"]

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
        raise DataError(f"{path}: missing (run `dvc repro pipeline/{stage}/dvc.yaml:{stage}@{variant}-{seed}`)") from None
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
        roots: stage -> its reports folder (``eval_cam``, ``make_ir_labels``, ``make_pseudo_labels``;
            without ``make_ir_labels`` the IR-label columns are NaN).
    """
    rows = []
    for v in variants:
        for s in seeds:
            cam = _read(roots["eval_cam"], "eval_cam", v, s, split)["best"]
            ir = (_read(roots["make_ir_labels"], "make_ir_labels", v, s, split) if "make_ir_labels" in roots
                  else {"precision": float("nan"), "coverage": float("nan")})  # no IR labels (refiner cams)
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


# --------------------------------------------------------------------------- the paper's table
#: the paper's segmentation mIoU (val) of SSC, per data set (Chen et al., TIP 2024)
PAPER_SEG_MIOU = {"voc": 72.7, "coco": 47.0}
#: the paper table's per-run columns
PAPER_COLUMNS = {"cam_miou": "CAM mIoU (train)", "pl_miou": "pseudo-label mIoU (train)",
                 "seg_miou": "segmentation mIoU (val)"}


def _seg_miou(root: Path, variant: str, seed: int) -> tuple[float, float, dict | None]:
    """(final mIoU, mIoU without the CRF, ``{"epoch", "epochs", "last"}`` when the model was
    selected on val, else None) of an ``eval_seg`` run."""
    path = Path(root) / variant / f"seed{seed}" / "metrics.json"
    try:
        m = json.loads(path.read_text())
        sel = None
        if "selection" in m:
            sel = {"epoch": int(m["selection"]["epoch"]), "epochs": int(m["selection"]["epochs"]),
                   "last": _num(m["last"]["miou"])}
        return _num(m["final"]["miou"]), _num(m["no_crf"]["miou"]), sel
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run `dvc repro pipeline/eval_seg/dvc.yaml:eval_seg@{variant}-{seed}`)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not an eval_seg metrics file ({type(e).__name__}: {e})") from None


def paper_frame(variants: Sequence[str], seeds: Sequence[int], train_split: str,
                roots: Mapping[str, str | Path]) -> pd.DataFrame:
    """One row per (variant, seed): ``cam_miou``, ``pl_miou`` (train split), ``seg_miou`` and
    ``seg_miou_no_crf`` (val split), fractions; when a run's model was selected on val
    (``eval_seg.selection: best_on_val``), also ``seg_miou_last`` (the last epoch's model) and
    ``selected_epoch`` / ``epochs``.

    Args:
        roots: stage -> its reports folder (``eval_cam``, ``make_pseudo_labels``, ``eval_seg``).
    """
    rows = []
    for v in variants:
        for s in seeds:
            cam = _read(roots["eval_cam"], "eval_cam", v, s, train_split)["best"]
            pl = _read(roots["make_pseudo_labels"], "make_pseudo_labels", v, s, train_split)
            seg, seg_raw, sel = _seg_miou(roots["eval_seg"], v, s)
            row = {"variant": v, "seed": s, "cam_miou": _num(cam["miou"]), "pl_miou": _num(pl["miou"]),
                   "seg_miou": seg, "seg_miou_no_crf": seg_raw}
            if sel is not None:
                row.update(seg_miou_last=sel["last"], selected_epoch=sel["epoch"], epochs=sel["epochs"])
            rows.append(row)
    return pd.DataFrame(rows)


def paper_table(runs: pd.DataFrame, dataset: str, order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per variant: ``<col>_mean`` / ``<col>_std`` (percent, std ddof 1) of CAM,
    pseudo-label and segmentation mIoU (and without the CRF), ``seg_gain`` (segmentation
    minus pseudo-label mIoU per seed: mean, std, min, max), ``seeds``, and ``paper_seg_miou``
    (the paper's number for ``dataset``, NaN when the data set is not the paper's)."""
    r = runs.copy()
    cols = [*PAPER_COLUMNS, "seg_miou_no_crf", *(["seg_miou_last"] if "seg_miou_last" in r else [])]
    for k in cols:
        r[k] = r[k].astype(float) * 100
    r["seg_gain"] = r["seg_miou"] - r["pl_miou"]
    g = r.groupby("variant", sort=False)
    out: dict[str, pd.Series] = {}
    for k in (*cols, "seg_gain"):
        out[f"{k}_mean"], out[f"{k}_std"] = g[k].mean(), g[k].std(ddof=1)
    out["seg_gain_min"], out["seg_gain_max"], out["seeds"] = g["seg_gain"].min(), g["seg_gain"].max(), g["seed"].count()
    df = pd.DataFrame(out)
    df["paper_seg_miou"] = PAPER_SEG_MIOU.get(dataset, float("nan"))
    if order is not None:
        df = df.reindex([v for v in order if v in df.index])
    return df.rename_axis("variant").reset_index()


def _sign_verdict(lo: float, hi: float, mean: float, better: str, worse: str) -> str:
    if lo > 0:
        return f"{mean:+.1f}: {better} on every seed"
    if hi < 0:
        return f"{mean:+.1f}: {worse} on every seed"
    return f"{mean:+.1f}: mixed (better on some seeds, worse on others)"


def variant_comparison(runs: pd.DataFrame, a: str, b: str, column: str) -> str:
    """``b`` minus ``a`` in ``column`` (percent), per seed paired, with its spread: a verdict line."""
    r = runs.set_index(["variant", "seed"])[column].astype(float) * 100
    if a not in r.index.get_level_values(0) or b not in r.index.get_level_values(0):
        return "n/a"
    d = (r.loc[b] - r.loc[a]).dropna()
    if d.empty:
        return "n/a"
    spread = f"per seed {', '.join(f'{x:+.1f}' for x in d)}"
    return _sign_verdict(d.min(), d.max(), d.mean(), f"{b} better", f"{b} worse") + f" ({spread})"


def _selection_line(runs: pd.DataFrame, val_split: str) -> str:
    """The words for a table whose segmentation models were selected on the split they are scored on."""
    picked = runs.dropna(subset=["seg_miou_last"])
    epochs = ", ".join(f"{r.variant} seed {r.seed}: epoch {int(r.selected_epoch)} of {int(r.epochs)}"
                       for r in picked.itertuples())
    return (f"* **Model selection on `{val_split}`**: each run's segmentation model is the epoch whose `{val_split}` "
            f"mIoU was best during training (`eval_seg.selection: best_on_val`, as SSC's code keeps its best "
            f"checkpoint), so `segmentation mIoU` was selected on the split it is scored on and is optimistic; "
            f"`last epoch` scores the last epoch's model the same way ({epochs}).")


def paper_markdown(tab: pd.DataFrame, runs: pd.DataFrame, *, dataset: str, train_split: str, val_split: str,
                   seeds: Sequence[int], settings: Mapping[str, object]) -> str:
    """The text of ``paper_table.md``: the three columns per variant (mean ± std over
    ``seeds``), the paper's number (or "not run here"), and the verdicts: segmentation
    against its pseudo labels, and each variant against the first."""
    paper = PAPER_SEG_MIOU.get(dataset)
    shown = pd.DataFrame({
        "variant": tab["variant"],
        "CAM mIoU (train)": [_pm(r, "cam_miou") for _, r in tab.iterrows()],
        "pseudo-label mIoU (train)": [_pm(r, "pl_miou") for _, r in tab.iterrows()],
        "segmentation mIoU (val)": [_pm(r, "seg_miou") for _, r in tab.iterrows()],
        "without CRF": [_pm(r, "seg_miou_no_crf") for _, r in tab.iterrows()],
        **({"last epoch (val)": [_pm(r, "seg_miou_last") for _, r in tab.iterrows()]}
           if "seg_miou_last_mean" in tab else {}),
        "seeds": tab["seeds"],
        "paper (val)": [f"{paper:.1f}" if paper is not None and v == "ssc" else
                        ("not run here" if v == "ssc" else "") for v in tab["variant"]],
    })
    verdicts = pd.DataFrame({"variant": tab["variant"], "segmentation - pseudo labels (mIoU)": [
        _sign_verdict(r["seg_gain_min"], r["seg_gain_max"], r["seg_gain_mean"], "better than its labels",
                      "worse than its labels") for _, r in tab.iterrows()]})
    first = tab["variant"].iloc[0]
    vs = [(v, variant_comparison(runs, first, v, "seg_miou"), variant_comparison(runs, first, v, "pl_miou"))
          for v in tab["variant"].iloc[1:]]
    paper_line = (f"The paper's SSC: {paper:.1f} mIoU on {dataset.upper()} val (ResNet-101 DeepLabV2 with BECO)."
                  if paper is not None else
                  f"The paper's numbers (72.7 VOC val, 47.0 COCO val) are not comparable: data set `{dataset}` "
                  "is not the paper's (not run here).")
    lines = [
        "# The paper's table (generated by `dvc repro paper_table`; do not edit)\n",
        f"Data set `{dataset}`: CAMs and pseudo labels on `{train_split}`, segmentation on `{val_split}`, each "
        f"against its ground truth; seeds {list(seeds)}. Percent; mean ± sample std over the seeds.\n",
        "* `CAM mIoU`: each run's CAMs at its best background threshold (`eval_cam`).",
        "* `pseudo-label mIoU`: the random-walk pseudo labels (`make_pseudo_labels`).",
        "* `segmentation mIoU`: the network trained on them, multi-scale (and dense CRF when on) (`eval_seg`); "
        "`without CRF`: the same before the CRF.",
        f"* {paper_line}",
        *([_selection_line(runs, val_split)] if "seg_miou_last" in runs else []),
        "",
        to_markdown(shown),
        "\n## Does the segmentation network improve on its labels?\n",
        "Per seed, segmentation mIoU (val) minus pseudo-label mIoU (train); a gain counts when it has the same "
        "sign on every seed. The splits differ, as in the paper's table.\n",
        to_markdown(verdicts),
        f"\n## Variants against `{first}`\n",
        "Paired by seed; a difference counts only when it has the same sign on every seed.\n",
        to_markdown(pd.DataFrame({"variant": [v for v, _, _ in vs],
                                  "segmentation mIoU": [x for _, x, _ in vs],
                                  "pseudo-label mIoU": [y for _, _, y in vs]})) if vs else "(one variant only)",
        "\n## Settings\n",
        "\n".join(f"* `{k}`: {v}" for k, v in settings.items()),
        "",
    ]
    return "\n".join(lines)
