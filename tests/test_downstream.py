"""The downstream table (sslib.downstream) on hand-written metrics files of 2 variants x 3
seeds in the formats eval_cam, make_ir_labels and make_pseudo_labels write: the per-run
frame, means and sample standard deviations, the gain verdicts, missing or bad files, the
markdown, and the pseudo_label_table stage reading the stages' own report paths."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sslib import config, downstream, paths
from sslib.io import DataError
from sslib.stages import pseudo_label_table

SEEDS = [0, 1, 2]
VARIANTS = ["baseline", "ssc"]
#: per variant, per column: the three seeds' values (fractions)
RUNS = {
    "baseline": {"cam_miou": [0.40, 0.42, 0.44], "ir_precision": [0.80, 0.82, 0.87], "ir_coverage": [0.5, 0.5, 0.5],
                 "pl_miou": [0.45, 0.46, 0.50], "pl_precision": [0.6, 0.7, 0.8], "pl_recall": [0.55, 0.65, 0.60],
                 "pl_bg_fp": [0.1, 0.2, 0.3], "mask_precision": [0.90, 0.93, 0.96], "mask_coverage": [0.30, 0.33, 0.36]},
    "ssc": {"cam_miou": [0.50, 0.52, 0.54], "ir_precision": [0.9, 0.9, 0.9], "ir_coverage": [0.6, 0.6, 0.6],
            "pl_miou": [0.48, 0.50, 0.52], "pl_precision": [0.7, 0.7, 0.7], "pl_recall": [0.7, 0.7, 0.7],
            "pl_bg_fp": [0.05, 0.05, 0.05], "mask_precision": [0.95, 0.95, 0.95], "mask_coverage": [0.4, 0.4, 0.4]},
}
#: the same by hand, in percent: (mean, sample std)
EXPECTED = {
    "baseline": {"cam_miou": (42, 2), "ir_precision": (83, math.sqrt(13)), "ir_coverage": (50, 0),
                 "pl_miou": (47, math.sqrt(7)), "pl_precision": (70, 10), "pl_recall": (60, 5), "pl_bg_fp": (20, 10),
                 "mask_precision": (93, 3), "mask_coverage": (33, 3), "gain": (5, 1)},
    "ssc": {"cam_miou": (52, 2), "ir_precision": (90, 0), "ir_coverage": (60, 0), "pl_miou": (50, 2),
            "pl_precision": (70, 0), "pl_recall": (70, 0), "pl_bg_fp": (5, 0), "mask_precision": (95, 0),
            "mask_coverage": (40, 0), "gain": (-2, 0)},
}


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _stage_metrics(v: str, i: int, runs: dict = RUNS, split: str = "train") -> dict[str, dict]:
    """What each stage writes for run (v, seed i), with the extra keys the table ignores."""
    r = {k: vals[i] for k, vals in runs[v].items()}
    seed = SEEDS[i]
    best = {"threshold": 0.3, "miou": r["cam_miou"], "mean_precision": 0.1, "background_fp_rate": 0.9}
    return {
        "eval_cam": {"variant": v, "seed": seed, split: {"best": best, "fixed": {**best, "miou": 0.0}},
                     "val": {"best": {**best, "miou": 0.99}}},
        "make_ir_labels": {"variant": v, "seed": seed, split: {"precision": r["ir_precision"], "coverage": r["ir_coverage"],
                                                               "confident_share": 0.5, "images": 3}},
        "make_pseudo_labels": {"variant": v, "seed": seed, split: {
            "miou": r["pl_miou"], "mean_precision": r["pl_precision"], "mean_recall": r["pl_recall"],
            "pixel_accuracy": 0.9, "background_fp_rate": r["pl_bg_fp"],
            "confident": {"precision": r["mask_precision"], "coverage": r["mask_coverage"]},
            "iou": {"background": 0.9}, "images": 3}},
    }


def _write_all(roots: dict[str, Path], runs: dict = RUNS, split: str = "train") -> None:
    for v in runs:
        for i, seed in enumerate(SEEDS):
            for stage, obj in _stage_metrics(v, i, runs, split).items():
                _write(Path(roots[stage]) / v / f"seed{seed}" / "metrics.json", obj)


@pytest.fixture
def roots(tmp_path) -> dict[str, Path]:
    r = {"eval_cam": tmp_path / "eval", "make_ir_labels": tmp_path / "ir", "make_pseudo_labels": tmp_path / "pl"}
    _write_all(r)
    return r


# --------------------------------------------------------------------------- the frame
def test_runs_frame_has_one_row_per_run(roots):
    f = downstream.runs_frame(VARIANTS, SEEDS, "train", roots)
    assert list(f.columns) == ["variant", "seed", *downstream.COLUMNS]
    assert list(zip(f["variant"], f["seed"])) == [(v, s) for v in VARIANTS for s in SEEDS]
    for v in VARIANTS:
        rows = f[f["variant"] == v]
        for k, vals in RUNS[v].items():
            assert rows[k].tolist() == vals, (v, k)  # fractions, as written


def test_runs_frame_reads_the_named_split_only(tmp_path):
    r = {"eval_cam": tmp_path / "e", "make_ir_labels": tmp_path / "i", "make_pseudo_labels": tmp_path / "p"}
    _write_all(r, split="train_aug")
    f = downstream.runs_frame(["ssc"], [0], "train_aug", r)
    assert f["cam_miou"].tolist() == [0.50]  # not the val split's 0.99 nor the fixed threshold's 0.0
    with pytest.raises(DataError, match=re.escape(f"{r['eval_cam'] / 'ssc' / 'seed0' / 'metrics.json'}: "
                                                  "no results for split 'train'")):
        downstream.runs_frame(["ssc"], [0], "train", r)


def test_null_values_become_nan(roots):
    path = roots["make_pseudo_labels"] / "ssc" / "seed1" / "metrics.json"
    m = json.loads(path.read_text())
    m["train"]["confident"]["precision"] = None  # no confident pixel: nan, written as null
    path.write_text(json.dumps(m))
    f = downstream.runs_frame(["ssc"], SEEDS, "train", roots)
    assert f["mask_precision"].isna().tolist() == [False, True, False]


# --------------------------------------------------------------------------- the table
def test_table_means_and_sample_stds_in_percent(roots):
    tab = downstream.table(downstream.runs_frame(VARIANTS, SEEDS, "train", roots), order=VARIANTS)
    assert tab["variant"].tolist() == VARIANTS
    keys = [*downstream.COLUMNS, "gain"]
    assert list(tab.columns) == ["variant", *(f"{k}_{s}" for k in keys for s in ("mean", "std")),
                                 "gain_min", "gain_max", "seeds"]
    for _, row in tab.iterrows():
        for k, (mean, std) in EXPECTED[row["variant"]].items():
            assert row[f"{k}_mean"] == pytest.approx(mean, abs=1e-9), (row["variant"], k)
            assert row[f"{k}_std"] == pytest.approx(std, abs=1e-9), (row["variant"], k)
        assert row["seeds"] == 3
    b, s = tab.iloc[0], tab.iloc[1]
    assert (b["gain_min"], b["gain_max"]) == (pytest.approx(4), pytest.approx(6))  # gains 5, 4, 6
    assert (s["gain_min"], s["gain_max"]) == (pytest.approx(-2), pytest.approx(-2))


def test_table_order(roots):
    runs = downstream.runs_frame(VARIANTS, SEEDS, "train", roots)
    assert downstream.table(runs, order=["ssc", "baseline"])["variant"].tolist() == ["ssc", "baseline"]
    assert downstream.table(runs, order=["ssc"])["variant"].tolist() == ["ssc"]
    assert downstream.table(runs)["variant"].tolist() == VARIANTS  # as they come
    assert runs["cam_miou"].tolist()[0] == 0.40  # the frame is not changed in place


def test_gain_verdicts_from_per_seed_gains(tmp_path):
    mixed = {**RUNS, "ssc": {**RUNS["ssc"], "pl_miou": [0.48, 0.50, 0.57]}}  # gains -2, -2, +3
    r = {"eval_cam": tmp_path / "e", "make_ir_labels": tmp_path / "i", "make_pseudo_labels": tmp_path / "p"}
    _write_all(r, mixed)
    tab = downstream.table(downstream.runs_frame(VARIANTS, SEEDS, "train", r), order=VARIANTS)
    b, s = tab.iloc[0], tab.iloc[1]
    assert downstream.gain_verdict(b) == "+5.0: better than its CAMs on every seed"
    assert s["gain_mean"] == pytest.approx(-1 / 3) and s["gain_std"] == pytest.approx(math.sqrt(25 / 3))
    assert downstream.gain_verdict(s) == "-0.3: better on some seeds, worse on others"
    _write_all(r)
    s = downstream.table(downstream.runs_frame(VARIANTS, SEEDS, "train", r)).iloc[1]
    assert downstream.gain_verdict(s) == "-2.0: worse than its CAMs on every seed"


@pytest.mark.parametrize("gmin, gmax, mean, want", [
    (0.5, 2.0, 1.25, "+1.2: better than its CAMs on every seed"),
    (-3.0, -0.1, -1.5, "-1.5: worse than its CAMs on every seed"),
    (-1.0, 2.0, 0.5, "+0.5: better on some seeds, worse on others"),
    (0.0, 2.0, 1.0, "+1.0: better on some seeds, worse on others"),   # a zero gain is no gain
    (-2.0, 0.0, -1.0, "-1.0: better on some seeds, worse on others"),
])
def test_gain_verdict_rows(gmin, gmax, mean, want):
    assert downstream.gain_verdict({"gain_min": gmin, "gain_max": gmax, "gain_mean": mean}) == want


# --------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("stage", ["eval_cam", "make_ir_labels", "make_pseudo_labels"])
def test_a_missing_metrics_file_names_it_and_the_stage_to_run(roots, stage):
    path = roots[stage] / "ssc" / "seed1" / "metrics.json"
    path.unlink()
    with pytest.raises(DataError, match=re.escape(f"{path}: missing (run `dvc repro pipeline/{stage}/dvc.yaml:{stage}@ssc-1`)")):
        downstream.runs_frame(VARIANTS, SEEDS, "train", roots)


def test_a_metrics_file_that_is_not_json_is_named(roots):
    path = roots["make_ir_labels"] / "baseline" / "seed2" / "metrics.json"
    path.write_text('{"train": {"precision": 0.')
    with pytest.raises(DataError, match=re.escape(f"{path}: not valid JSON")):
        downstream.runs_frame(VARIANTS, SEEDS, "train", roots)


# --------------------------------------------------------------------------- markdown
SETTINGS = {"make_ir_labels": {"fg_threshold": 0.3}, "model.backbone": "efficientnet_lite0"}


def test_report_markdown_rows_read_mean_plus_minus_std(roots):
    tab = downstream.table(downstream.runs_frame(VARIANTS, SEEDS, "train", roots), order=VARIANTS)
    md = downstream.report_markdown(tab, dataset="synthetic", split="train", seeds=SEEDS, settings=SETTINGS)
    lines = md.splitlines()
    header = ("| variant | CAM mIoU | IR prec. | IR cov. | pseudo-label mIoU | precision | recall | bg FP | "
              "mask prec. | mask cov. | seeds |")
    assert header in lines
    assert ("| baseline | 42.0 ± 2.0 | 83.0 ± 3.6 | 50.0 ± 0.0 | 47.0 ± 2.6 | 70.0 ± 10.0 | 60.0 ± 5.0 | "
            "20.0 ± 10.0 | 93.0 ± 3.0 | 33.0 ± 3.0 | 3 |") in lines
    assert ("| ssc | 52.0 ± 2.0 | 90.0 ± 0.0 | 60.0 ± 0.0 | 50.0 ± 2.0 | 70.0 ± 0.0 | 70.0 ± 0.0 | "
            "5.0 ± 0.0 | 95.0 ± 0.0 | 40.0 ± 0.0 | 3 |") in lines
    assert lines.index(header) < [i for i, x in enumerate(lines) if x.startswith("| baseline |")][0]
    assert "| baseline | +5.0: better than its CAMs on every seed |" in lines
    assert "| ssc | -2.0: worse than its CAMs on every seed |" in lines
    assert "Data set `synthetic`, split `train` against its ground truth; seeds [0, 1, 2]." in md
    assert "* `make_ir_labels`: {'fg_threshold': 0.3}" in lines and "* `model.backbone`: efficientnet_lite0" in lines


def test_report_markdown_of_one_seed_shows_the_value_without_a_spread(roots):
    tab = downstream.table(downstream.runs_frame(["baseline"], [1], "train", roots))
    assert math.isnan(tab.iloc[0]["cam_miou_std"]) and tab.iloc[0]["seeds"] == 1
    md = downstream.report_markdown(tab, dataset="synthetic", split="train", seeds=[1], settings={})
    row = next(x for x in md.splitlines() if x.startswith("| baseline | 42.0"))
    assert "±" not in row and "| 46.0 |" in row  # pl_miou of seed 1
    assert "| baseline | +4.0: better than its CAMs on every seed |" in md


# --------------------------------------------------------------------------- the stage
def test_the_stage_reads_the_stages_report_folders(tmp_path, monkeypatch):
    """Metrics written where eval_cam, make_ir_labels and make_pseudo_labels write them
    (sslib.paths) make reports/pseudo_labels.csv and .md."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(paths.SCRATCH_ENV, raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"runs": {"downstream": {"variants": VARIANTS, "seeds": SEEDS}}}))
    params = config.load(tmp_path / "params.yaml")
    for v in VARIANTS:
        for i, seed in enumerate(SEEDS):
            m = _stage_metrics(v, i)
            _write(paths.eval_reports(v, seed) / paths.METRICS, m["eval_cam"])
            _write(paths.ir_label_reports(v, seed) / paths.METRICS, m["make_ir_labels"])
            _write(paths.pseudo_label_reports(v, seed) / paths.METRICS, m["make_pseudo_labels"])
    r = pseudo_label_table.run(params)
    assert (r.variants, r.seeds, r.split) == (VARIANTS, SEEDS, "train")
    assert paths.pseudo_label_table("md").read_text() == r.markdown
    csv = pd.read_csv(paths.pseudo_label_table())
    assert csv["variant"].tolist() == VARIANTS
    assert csv["gain_mean"].tolist() == [pytest.approx(5), pytest.approx(-2)]
    assert csv["ir_precision_std"].tolist() == [pytest.approx(round(math.sqrt(13), 4)), 0]
    assert "* `make_pseudo_labels`: {" in r.markdown and "`model.backbone`" in r.markdown
    assert pseudo_label_table.main([]) == 0


# --------------------------------------------------------------------------- the paper's table
#: segmentation mIoU (final, without CRF) per variant and seed (fractions)
SEG = {"baseline": ([0.50, 0.47, 0.53], [0.45, 0.45, 0.45]), "ssc": ([0.47, 0.52, 0.51], [0.5, 0.5, 0.5])}


def _seg_metrics(v: str, i: int) -> dict:
    final, raw = SEG[v][0][i], SEG[v][1][i]
    return {"variant": v, "seed": SEEDS[i], "miou": final, "crf": True,
            "final": {"miou": final, "per_class": {}}, "no_crf": {"miou": raw, "per_class": {}}}


def _write_seg(root: Path) -> None:
    for v in SEG:
        for i, seed in enumerate(SEEDS):
            _write(root / v / f"seed{seed}" / "metrics.json", _seg_metrics(v, i))


def test_paper_table_means_stds_gains_and_the_papers_number(roots, tmp_path):
    _write_seg(tmp_path / "seg")
    runs = downstream.paper_frame(VARIANTS, SEEDS, "train", {**roots, "eval_seg": tmp_path / "seg"})
    assert runs.shape[0] == 6 and runs.loc[4, "seg_miou"] == 0.52 and runs.loc[4, "seg_miou_no_crf"] == 0.5
    tab = downstream.paper_table(runs, "voc").set_index("variant")
    # baseline: seg 50, 47, 53 -> mean 50, std 3; pl 45, 46, 50 -> gains 5, 1, 3
    assert tab.loc["baseline", "seg_miou_mean"] == pytest.approx(50)
    assert tab.loc["baseline", "seg_miou_std"] == pytest.approx(3)
    assert tab.loc["baseline", "cam_miou_mean"] == pytest.approx(42)
    assert (tab.loc["baseline", "seg_gain_mean"], tab.loc["baseline", "seg_gain_min"],
            tab.loc["baseline", "seg_gain_max"]) == (pytest.approx(3), pytest.approx(1), pytest.approx(5))
    # ssc: seg 47, 52, 51; pl 48, 50, 52 -> gains -1, 2, -1
    assert tab.loc["ssc", "seg_gain_mean"] == pytest.approx(0) and tab.loc["ssc", "seg_miou_no_crf_std"] == 0
    assert (tab["paper_seg_miou"] == 72.7).all()
    assert downstream.paper_table(runs, "synthetic")["paper_seg_miou"].isna().all()
    assert downstream.paper_table(runs, "coco")["paper_seg_miou"].eq(47.0).all()


def test_paper_markdown_verdicts_and_not_run_here(roots, tmp_path):
    _write_seg(tmp_path / "seg")
    runs = downstream.paper_frame(VARIANTS, SEEDS, "train", {**roots, "eval_seg": tmp_path / "seg"})
    md = downstream.paper_markdown(downstream.paper_table(runs, "synthetic"), runs, dataset="synthetic",
                                   train_split="train", val_split="val", seeds=SEEDS, settings={"k": 1})
    assert "| baseline | 42.0 ± 2.0 | 47.0 ± 2.6 | 50.0 ± 3.0 | 45.0 ± 0.0 | 3 |" in md
    assert "not run here" in md and "72.7 VOC val" in md
    assert "| baseline | +3.0: better than its labels on every seed |" in md
    assert "| ssc | +0.0: mixed (better on some seeds, worse on others) |" in md
    # ssc - baseline per seed: seg -3, +5, -2 (mixed); pl +3, +4, +2 (better on every seed)
    assert "| ssc | +0.0: mixed (better on some seeds, worse on others) (per seed -3.0, +5.0, -2.0) |" in md
    assert "+3.0: ssc better on every seed (per seed +3.0, +4.0, +2.0)" in md
    voc = downstream.paper_markdown(downstream.paper_table(runs, "voc"), runs, dataset="voc", train_split="train_aug",
                                    val_split="val", seeds=SEEDS, settings={})
    assert "| 72.7 |" in voc and "not run here" not in voc


def test_a_missing_segmentation_metrics_file_names_the_stage(roots, tmp_path):
    with pytest.raises(DataError, match=r"seg/baseline/seed0/metrics.json: missing \(run `dvc repro pipeline/eval_seg/dvc.yaml:eval_seg@baseline-0`\)"):
        downstream.paper_frame(VARIANTS, SEEDS, "train", {**roots, "eval_seg": tmp_path / "seg"})
