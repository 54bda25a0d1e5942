"""The ablation table (sslib.ablation) on metrics files written by the test."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sslib import ablation
from sslib.io import DataError

MIOU = {("base", 0): 0.30, ("base", 1): 0.34, ("base", 2): 0.32,
        ("ssc", 0): 0.40, ("ssc", 1): 0.42, ("ssc", 2): 0.47,
        ("noisy", 0): 0.20, ("noisy", 1): 0.31, ("noisy", 2): 0.50}


#: the reconstruction of the variant with a decoder, (psnr dB, ssim) per seed
RECONSTRUCTION = {0: (20.0, 0.50), 1: (22.0, 0.60), 2: (24.5, 0.85)}


def _write(root, v, s, miou):
    """metrics.json as the eval_cam stage writes it: background false-positive rate
    0.40 + s/100 at the best threshold, 0.70 + s/50 at the fixed one (train split); only
    ``ssc`` has a decoder (``reconstruction``)."""
    d = root / v / f"seed{s}"
    d.mkdir(parents=True)
    res = {"threshold": 0.3, "miou": miou, "mean_precision": 0.5, "mean_recall": 0.6 + s / 100,
           "background_fp_rate": 0.40 + s / 100, "mean_over_activation": 0.99, "pixel_accuracy": 0.8,
           "iou": {"background": miou + 0.1, "a": miou - 0.1}}
    m = {"variant": v, "seed": s,
         "train": {"best": res, "fixed": {**res, "threshold": 0.2, "miou": miou / 2,
                                          "background_fp_rate": 0.70 + s / 50}},
         "val": {"best": res, "fixed": res}}
    if v == "ssc":
        psnr, ssim = RECONSTRUCTION[s]
        m["val"]["reconstruction"] = {"psnr": psnr, "ssim": ssim}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "sweep.csv").write_text(f"threshold,train_miou,val_miou\n0.1,{miou / 2},{miou}\n0.2,{miou},{miou}\n")


@pytest.fixture
def root(tmp_path):
    for (v, s), m in MIOU.items():
        _write(tmp_path, v, s, m)
    return tmp_path


def test_table_means_and_std_over_seeds(root):
    runs = ablation.runs_frame(["base", "ssc", "noisy"], [0, 1, 2], ["train", "val"], root)
    assert len(runs) == 18
    t = ablation.ablation_table(runs, "train", order=["ssc", "base", "noisy"])
    assert t.columns[0] == "variant" and t["variant"].tolist() == ["ssc", "base", "noisy"]
    ssc = t.iloc[0]
    x = np.array([40.0, 42.0, 47.0])
    assert ssc["miou_best_mean"] == pytest.approx(x.mean()) and ssc["miou_best_std"] == pytest.approx(x.std(ddof=1))
    assert ssc["miou_fixed_mean"] == pytest.approx(x.mean() / 2) and ssc["recall"] == pytest.approx(61.0)
    assert ssc["seeds"] == 3
    assert not any("time" in c for c in t.columns)  # machine-dependent: kept in reports/timings/
    assert t.columns.tolist() == ["variant", "miou_best_mean", "miou_best_std", "best_threshold", "miou_fixed_mean",
                                  "miou_fixed_std", "precision", "recall", "bg_fp_mean", "bg_fp_std",
                                  "bg_fp_fixed_mean", "bg_fp_fixed_std", "seeds"]
    # bg_fp: 40, 41, 42 % over the seeds; bg_fp_fixed: 70, 72, 74 %
    assert ssc["bg_fp_mean"] == pytest.approx(41.0) and ssc["bg_fp_std"] == pytest.approx(1.0)
    assert ssc["bg_fp_fixed_mean"] == pytest.approx(72.0) and ssc["bg_fp_fixed_std"] == pytest.approx(2.0)
    assert ssc["precision"] == pytest.approx(50.0)


def test_runs_frame_reads_background_fp_rate_and_reconstruction(root):
    runs = ablation.runs_frame(["base", "ssc"], [0, 1, 2], ["train", "val"], root)
    assert runs.columns.tolist() == ["variant", "seed", "split", "miou_best", "best_threshold", "miou_fixed",
                                     "precision", "recall", "bg_fp", "bg_fp_fixed", "psnr", "ssim"]
    r = runs.set_index(["variant", "seed", "split"])
    assert r.loc[("base", 2, "train"), "bg_fp"] == pytest.approx(0.42)
    assert r.loc[("base", 2, "train"), "bg_fp_fixed"] == pytest.approx(0.74)
    assert r.loc[("ssc", 1, "val"), "psnr"] == 22.0 and r.loc[("ssc", 1, "val"), "ssim"] == 0.6
    assert r.loc[("base", slice(None), slice(None)), ["psnr", "ssim"]].isna().all().all()  # no decoder


def test_missing_or_null_scores_are_nan(tmp_path):
    """A metrics.json written before background_fp_rate existed, or with a null (nan) score,
    or with a reconstruction under the split, still reads."""
    d = tmp_path / "old" / "seed0"
    d.mkdir(parents=True)
    res = {"threshold": 0.3, "miou": 0.3, "mean_precision": None, "mean_recall": 0.6}
    rec = {"psnr": 18.5, "ssim": 0.4}
    (d / "metrics.json").write_text(json.dumps({"train": {"best": res, "fixed": res},
                                                "val": {"best": res, "fixed": res, "reconstruction": rec}}))
    runs = ablation.runs_frame(["old"], [0], ["train", "val"], tmp_path).set_index("split")
    assert runs[["precision", "bg_fp", "bg_fp_fixed"]].isna().all().all()
    assert np.isnan(runs.loc["train", "psnr"]) and runs.loc["val", "psnr"] == 18.5 and runs.loc["val", "ssim"] == 0.4


def test_compare_says_whether_the_difference_is_inside_the_seed_spread(root):
    runs = ablation.runs_frame(["base", "ssc", "noisy"], [0, 1, 2], ["train"], root)
    c = ablation.compare(runs, "train", "base").set_index("variant")
    assert c.loc["ssc", "diff"] == pytest.approx(43.0 - 32.0) and not c.loc["ssc", "overlap"]
    assert c.loc["noisy", "overlap"] and c.loc["base", "diff"] == 0
    with pytest.raises(ValueError, match="'nope'"):
        ablation.compare(runs, "train", "nope")


def test_sweeps_and_per_class(root):
    sw = ablation.sweep_frame(["base", "ssc"], [0, 1, 2], root)
    assert set(sw["split"]) == {"train", "val"} and len(sw) == 2 * 3 * 2 * 2
    m = ablation.mean_sweep(sw, "train", order=["ssc", "base"])
    assert m.columns.tolist() == ["threshold", "ssc", "base"]
    assert m.loc[m["threshold"] == 0.2, "ssc"].item() == pytest.approx(np.mean([0.40, 0.42, 0.47]))
    pc = ablation.per_class_frame(["ssc"], [0], "train", root)
    assert pc.set_index("class")["iou"].to_dict() == pytest.approx({"background": 50.0, "a": 30.0})


def test_missing_run_is_named(root):
    with pytest.raises(DataError, match="other/seed0/metrics.json: missing"):
        ablation.runs_frame(["other"], [0], ["train"], root)
    with pytest.raises(DataError, match="base/seed7/sweep.csv: missing"):
        ablation.sweep_frame(["base"], [7], root)


def test_markdown_and_csv(tmp_path):
    df = pd.DataFrame({"variant": ["a", "+b"], "x": [1.234, float("nan")], "ok": [True, False]})
    assert ablation.to_markdown(df) == "| variant | x | ok |\n|---|---|---|\n| a | 1.2 | yes |\n| +b |  | no |\n"
    ablation.write_table(tmp_path / "t.csv", df, digits=2)
    assert (tmp_path / "t.csv").read_text() == "variant,x,ok\na,1.23,True\n+b,,False\n"


# --------------------------------------------------------------------------- the report
def _runs(miou: dict[tuple[str, int], float], threshold: float = 0.3) -> pd.DataFrame:
    """A runs frame as :func:`ablation.runs_frame` returns it, train and val equal; only
    ``ssc`` has a reconstruction (:data:`RECONSTRUCTION`)."""
    nan = float("nan")
    return pd.DataFrame([{"variant": v, "seed": s, "split": split, "miou_best": m, "best_threshold": threshold,
                          "miou_fixed": m / 2, "precision": 0.5, "recall": 0.6, "bg_fp": 0.4 + s / 100,
                          "bg_fp_fixed": 0.7, "psnr": RECONSTRUCTION[s][0] if v == "ssc" else nan,
                          "ssim": RECONSTRUCTION[s][1] if v == "ssc" else nan}
                         for split in ("train", "val") for (v, s), m in miou.items()])


CONTRAST = pd.DataFrame({"variant": ["base", "base", "ssc", "noisy"], "seed": [0, 1, 0, 0],
                         "inside": [0.5, 0.7, 0.8, 0.45], "background": [0.3, 0.5, 0.2, 0.41]})


def test_full_table_adds_val_miou_and_contrast_columns():
    runs = _runs(MIOU)
    runs.loc[runs["split"] == "val", "miou_best"] += 0.1
    t = ablation.full_table(runs, CONTRAST, "train", "val", order=["ssc", "base", "noisy"])
    assert t.columns.tolist() == [
        "variant", "miou_best_mean", "miou_best_std", "best_threshold", "miou_fixed_mean", "miou_fixed_std",
        "precision", "recall", "bg_fp_mean", "bg_fp_std", "bg_fp_fixed_mean", "bg_fp_fixed_std", "seeds",
        "val_miou_best_mean", "val_miou_best_std", "cam_inside", "cam_background", "psnr", "ssim"]
    assert "over_activation" not in " ".join(t.columns)
    ssc = t.set_index("variant").loc["ssc"]
    assert ssc["miou_best_mean"] == pytest.approx(43.0) and ssc["val_miou_best_mean"] == pytest.approx(53.0)
    assert ssc["val_miou_best_std"] == pytest.approx(np.std([40.0, 42.0, 47.0], ddof=1))
    base = t.set_index("variant").loc["base"]
    assert base["cam_inside"] == pytest.approx(60.0) and base["cam_background"] == pytest.approx(40.0)
    m = ablation.contrast_means(CONTRAST)
    assert m.loc["noisy", "inside"] == pytest.approx(45.0) and m.index.tolist() == ["base", "noisy", "ssc"]
    # reconstruction: mean over ssc's seeds; nan for the variants without a decoder
    assert ssc["psnr"] == pytest.approx((20.0 + 22.0 + 24.5) / 3) and ssc["ssim"] == pytest.approx(0.65)
    assert t.set_index("variant").loc[["base", "noisy"], ["psnr", "ssim"]].isna().all().all()
    assert base["bg_fp_mean"] == pytest.approx(41.0) and base["bg_fp_fixed_mean"] == pytest.approx(70.0)


def test_full_table_reconstruction_from_the_val_split_only():
    runs = _runs(MIOU)
    runs.loc[runs["split"] == "train", ["psnr", "ssim"]] = float("nan")  # written on val only
    ssc = ablation.full_table(runs, CONTRAST, "train", "val").set_index("variant").loc["ssc"]
    assert ssc["psnr"] == pytest.approx((20.0 + 22.0 + 24.5) / 3)
    no_rec = _runs(MIOU).drop(columns=["psnr", "ssim"])  # a runs frame without the columns
    t = ablation.full_table(no_rec, CONTRAST, "train", "val")
    assert t[["psnr", "ssim"]].isna().all().all()


def test_verdict_in_words_both_ways():
    assert ablation.verdict("base", 0.0, True, "base") == "reference"
    assert ablation.verdict("ssc", 11.04, False, "base") == "+11.0: above base on every seed"
    assert ablation.verdict("cam", -0.4, False, "base") == "-0.4: below base on every seed"
    assert ablation.verdict("x", -0.01, True, "base") == "-0.0: inside the seed spread (no evidence either way)"
    assert ablation.verdict("x", 2.0, True, "base") == "+2.0: inside the seed spread (no evidence either way)"


def test_comparison_per_split_with_overlap_and_verdict():
    runs = _runs(MIOU)
    runs.loc[(runs["split"] == "val") & (runs["variant"] == "noisy"), "miou_best"] += 0.5  # 70..100: above
    c = ablation.comparison(runs, ["train", "val", "val"], "base")  # each split once
    assert c.columns.tolist() == ["split", "variant", "diff", "min", "max", "ref_min", "ref_max", "overlap",
                                  "verdict"]
    assert c["split"].tolist() == ["train"] * 3 + ["val"] * 3
    assert c["variant"].tolist() == ["base", "ssc", "noisy"] * 2
    v = c.set_index(["split", "variant"])["verdict"]
    assert v["train", "base"] == "reference" and v["train", "ssc"] == "+11.0: above base on every seed"
    assert v["train", "noisy"] == "+1.7: inside the seed spread (no evidence either way)"
    assert v["val", "noisy"] == "+51.7: above base on every seed"
    lower = _runs({("base", 0): 0.5, ("base", 1): 0.6, ("low", 0): 0.1, ("low", 1): 0.2})
    assert ablation.comparison(lower, ["train"], "base").set_index("variant").loc["low", "verdict"] == \
        "-40.0: below base on every seed"
    # touching ranges overlap
    touch = _runs({("base", 0): 0.5, ("base", 1): 0.6, ("t", 0): 0.6, ("t", 1): 0.7})
    assert ablation.comparison(touch, ["train"], "base").set_index("variant").loc["t", "overlap"]


def test_uniform_caveat_only_when_every_best_threshold_is_the_largest():
    ths = [0.05, 0.5, 0.95]
    means = ablation.contrast_means(CONTRAST)
    assert ablation.uniform_caveat(_runs(MIOU, threshold=0.5), ths, means) == ""
    mixed = _runs(MIOU, threshold=0.95)
    mixed.loc[0, "best_threshold"] = 0.5
    assert ablation.uniform_caveat(mixed, ths, means) == ""
    text = ablation.uniform_caveat(_runs(MIOU, threshold=0.95), ths, means)
    assert text.startswith("\n**Every run's best threshold is the largest swept (0.95), and the mean CAM on "
                           "ground-truth background is 20-41 % of its maximum (on the object 45-80 %)")
    assert text.endswith("no evidence for or against SSC.**\n")


def test_report_markdown_holds_the_table_caveat_and_comparison():
    runs = _runs(MIOU)
    table = ablation.full_table(runs, CONTRAST, "train", "val", order=["base", "ssc", "noisy"])
    cmp = ablation.comparison(runs, ["train", "val"], "base")
    md = ablation.report_markdown(table, cmp, dataset="synthetic", seeds=[0, 1, 2], scales=[1.0, 0.5], flip=True,
                                  fixed_threshold=0.2, train_split="train", val_split="val", reference="base",
                                  caveat="\n**CAVEAT**\n")
    lines = md.splitlines()
    assert lines[0] == "# Ablation (generated by `dvc repro ablation`; do not edit)"
    assert lines[2].startswith("Data set `synthetic`; seeds [0, 1, 2]; CAM scales [1.0, 0.5] + flip. Percent")
    legend = [ln for ln in lines if ln.startswith("* `")]
    assert [ln.split(":")[0] for ln in legend] == [
        "* `mIoU best`", "* `precision` / `recall`", "* `bg FP` / `bg FP @0.2`", "* `val mIoU`",
        "* `CAM on object` / `CAM on bg`", "* `PSNR` (dB) / `SSIM`"]
    assert "at the fixed threshold 0.2." in legend[0] and "on ground-truth background (val)" in legend[4]
    assert "share of ground-truth background pixels predicted as some class" in legend[2]
    assert "0.97-1.0 in every run" in legend[2]  # why the share of false positives on background left
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| variant"))
    assert lines[header] == ("| variant | mIoU best | ± std | best thr | mIoU @0.2 | ± std | precision | recall | "
                             "bg FP | ± std | bg FP @0.2 | ± std | seeds | val mIoU | ± std | CAM on object | "
                             "CAM on bg | PSNR | SSIM |")
    # base: bg_fp 40, 41, 42 -> 41.0 ± 1.0; fixed 70 ± 0; no decoder
    assert lines[header + 2] == ("| base | 32.0 | 2.0 | 0.30 | 16.0 | 1.0 | 50.0 | 60.0 | 41.0 | 1.0 | 70.0 | 0.0 | "
                                 "3 | 32.0 | 2.0 | 60.0 | 40.0 | - | - |")
    assert lines[header + 3].endswith("| 80.0 | 20.0 | 22.2 | 0.650 |")  # ssc: CAM contrast, PSNR, SSIM
    assert "over-act" not in md
    assert ablation.to_markdown(cmp[["split", "variant", "diff", "min", "max", "verdict"]]) in md
    assert "\n**CAVEAT**\n" in md and md.index("**CAVEAT**") < md.index("## Against `base`")
    assert "| train | ssc | 11.0 | 40.0 | 47.0 | +11.0: above base on every seed |" in md
    plain = ablation.report_markdown(table, cmp, dataset="voc", seeds=[0], scales=[1.0], flip=False,
                                     fixed_threshold=0.25, train_split="train_aug", val_split="val",
                                     reference="base")
    assert "CAM scales [1.0]. Percent" in plain and "mIoU @0.25" in plain and "`train_aug`" in plain
    assert "**" not in plain


def test_contrast_frame_reads_each_runs_cam_contrast(tmp_path):
    for s, (inside, bg) in enumerate([(0.8, 0.2), (0.6, 0.3)]):
        d = tmp_path / "v" / f"seed{s}"
        d.mkdir(parents=True)
        res = {"threshold": 0.3, "miou": 0.3}
        c = {"inside": inside, "background": bg, "ratio": inside / bg}
        (d / "metrics.json").write_text(json.dumps({"val": {"best": res, "fixed": res, "cam_contrast": c}}))
    d = tmp_path / "old" / "seed0"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"val": {"best": {}, "fixed": {}}}))  # written before cam_contrast
    df = ablation.contrast_frame(["v", "old"], [0, 1][:1], "val", tmp_path)
    assert df.loc[0, "inside"] == 0.8 and df.loc[0, "ratio"] == pytest.approx(4.0) and df.loc[1, ["inside"]].isna().all()
    both = ablation.contrast_frame(["v"], [0, 1], "val", tmp_path)
    means = ablation.contrast_means(both)
    assert means.loc["v", "inside"] == pytest.approx(70.0) and means.loc["v", "background"] == pytest.approx(25.0)
