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


def _write(root, v, s, miou):
    d = root / v / f"seed{s}"
    d.mkdir(parents=True)
    res = {"threshold": 0.3, "miou": miou, "mean_precision": 0.5, "mean_recall": 0.6 + s / 100,
           "mean_over_activation": 0.9, "pixel_accuracy": 0.8,
           "iou": {"background": miou + 0.1, "a": miou - 0.1}}
    m = {"variant": v, "seed": s,
         "train": {"best": res, "fixed": {**res, "threshold": 0.2, "miou": miou / 2}},
         "val": {"best": res, "fixed": res}}
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
    pc = ablation.per_class_frame(["ssc"], [0], "train", root=root)
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


def test_activation_contrast_means_over_image_class_pairs(tmp_path):
    from sslib.cam import cam_path, save_cam

    class Data:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"name": f"im{i}", "mask": np.array([[0, 0], [1, 2]]) if i == 0 else np.array([[0, 2], [2, 2]])}

    save_cam(cam_path(tmp_path, "val", "im0"), np.array([0, 1]), np.zeros((2, 1, 1)),
             np.array([[[0.2, 0.4], [1.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]))
    save_cam(cam_path(tmp_path, "val", "im1"), np.array([1]), np.zeros((1, 1, 1)),
             np.array([[[0.5, 0.9], [0.6, 0.3]]]))
    c = ablation.activation_contrast(tmp_path, Data(), "val")
    # pairs: (im0, class 0): inside 1.0, bg 0.3; (im0, class 1): 1.0, 0.0; (im1, class 1): 0.6, 0.5
    assert c["inside"] == pytest.approx((1.0 + 1.0 + 0.6) / 3, abs=1e-3)
    assert c["background"] == pytest.approx((0.3 + 0.0 + 0.5) / 3, abs=1e-3)
    assert c["ratio"] == pytest.approx(c["inside"] / c["background"])
