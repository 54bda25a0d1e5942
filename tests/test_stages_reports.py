"""The report stages (data_report, ablation, inspect_cams) on a tiny project made here:
a synthetic set, its labels and superpixels, fake eval_cam results and CAM files, and
small random CAM networks."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sslib import config, paths, superpixels
from sslib.cam import cam_path, save_cam, strided_size
from sslib.data import build_dataset, synthetic

TINY = {
    "synthetic": {"n_train": 3, "n_val": 2, "image_size": 32, "max_objects": 2},
    "superpixels": {"workers": 1, "slic": {"n_segments": 20}},
    "runs": {"variants": ["cam", "ssc"], "seeds": [0, 1], "downstream": {"variants": ["ssc"], "seeds": [0]}},
    "eval_cam": {"thresholds": [0.1, 0.3, 0.1], "fixed_threshold": 0.2},
}
MIOU = {("cam", 0): 0.30, ("cam", 1): 0.32, ("ssc", 0): 0.40, ("ssc", 1): 0.41}
BG_FP = {("cam", 0): 0.60, ("cam", 1): 0.64, ("ssc", 0): 0.30, ("ssc", 1): 0.34}  # at the best threshold


def _write_results(params: config.Params) -> None:
    """What the eval_cam stage writes for every run: metrics.json, sweep.csv and the val CAMs
    (``ssc`` has a decoder: a ``reconstruction`` entry)."""
    classes = ["background", *build_dataset(params.data, "train").classes]
    for (v, s), miou in MIOU.items():
        res = {"threshold": 0.3, "miou": miou, "mean_precision": 0.5, "mean_recall": 0.6,
               "background_fp_rate": BG_FP[v, s], "mean_over_activation": 0.99, "iou": {c: miou for c in classes}}
        fixed = {**res, "threshold": 0.2, "background_fp_rate": 0.9}
        metrics = {"variant": v, "seed": s, **{split: {"best": res, "fixed": fixed, "cam_contrast": {
            "inside": 0.9, "background": 0.1, "ratio": 9.0}} for split in ("train", "val")}}
        if v == "ssc":
            metrics["val"]["reconstruction"] = {"psnr": 20.0 + s, "ssim": 0.5 + s / 10}
        rep = paths.eval_reports(v, s)
        rep.mkdir(parents=True)
        (rep / paths.METRICS).write_text(json.dumps(metrics))
        (rep / paths.SWEEP).write_text(
            "threshold,train_miou,val_miou\n" + "".join(f"{t},{miou * t},{miou}\n" for t in (0.1, 0.2, 0.3)))
        val = build_dataset(params.data, "val")
        for i in range(len(val)):
            item = val[i]
            mask = item["mask"].numpy()
            keys = np.flatnonzero(item["label"].numpy())
            high = np.stack([(mask == k + 1) * 0.8 + 0.1 for k in keys]) if len(keys) else np.zeros((0, *mask.shape))
            save_cam(cam_path(paths.cam_dir(params, v, s), "val", item["name"]), keys,
                     np.zeros((len(keys), *strided_size(mask.shape, 4))), high)


def _write_models(params: config.Params) -> None:
    """Random CAM networks as the train_cam stage saves them (ssc with a decoder)."""
    from sslib.models import CAMNet, Decoder, DRSSettings

    classes = list(build_dataset(params.data, "train").classes)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = CAMNet(len(classes), expansion=("drs", DRSSettings(0.5)), weights="none", frozen_stages=0, bn_eval=False).state_dict()
    for v in params.runs.variants:  # the same weights (what differs here is the decoder)
        decoder = Decoder(len(classes)).state_dict() if v == "ssc" else None
        path = paths.model(params, v, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"net": net, "decoder": decoder, "classes": classes,
                    "expansion": {"name": "drs", "settings": {"delta": 0.5}}}, path)


def _write_runs(params: config.Params) -> None:
    _write_results(params)
    _write_models(params)


@pytest.fixture(scope="module")
def project(tiny_project):
    return tiny_project(TINY, superpixels=True, then=_write_runs)


@pytest.fixture
def params(in_project) -> config.Params:
    return in_project.load()


# --------------------------------------------------------------------------- data_report
def test_data_report_writes_the_statistics(params):
    from sslib.stages import data_report

    stats = data_report.run(params)
    assert json.loads(paths.data_stats().read_text()) == stats
    assert stats["dataset"] == "synthetic" and stats["num_classes"] == len(synthetic.CLASSES)
    assert stats["images"] == {"train": 3, "val": 2}
    labels = json.loads((Path(params.data.prepared_dir) / "labels.json").read_text())["labels"]
    for split in ("train", "val"):
        names = build_dataset(params.data, split).names
        assert stats["classes_per_image"][split] == pytest.approx(np.mean([len(labels[n]) for n in names]))
        assert isinstance(stats["classes_per_image"][split], float)
    sp = json.loads((Path(params.superpixels.out_dir) / superpixels.META_NAME).read_text())
    assert stats["superpixels"]["count"] == 5 == sp["count"] and "method" not in stats["superpixels"]
    assert stats["synthetic"]["images"] == 5 and "share_in_preferred" in stats["synthetic"]

    sets = data_report.datasets(params)
    counts = data_report.class_counts(sets)
    assert counts.index.tolist() == list(synthetic.CLASSES) and counts.columns.tolist() == ["train", "val"]
    for split in ("train", "val"):
        want = np.bincount([k for n in sets[split].names for k in labels[n]], minlength=len(synthetic.CLASSES))
        assert counts[split].tolist() == want.tolist()
    rows = data_report.sample_rows(sets, 4)
    assert [t for t, _ in rows] == [f"{s}/{sets[s].names[i]}" for s in ("train", "val") for i in (0, -1)]
    assert "superpixels" in rows[0][1]
    assert data_report.main(["--params", "params.yaml"]) == 0


# --------------------------------------------------------------------------- ablation
def test_ablation_writes_table_markdown_and_sweeps(params, capsys):
    from sslib.stages import ablation as stage

    r = stage.run(params)  # "baseline" is not among the variants
    assert "reference 'baseline' is not among the variants; comparing with 'cam'" in capsys.readouterr().out
    assert r.reference == "cam" and r.variants == ["cam", "ssc"] and r.splits == ["train", "val"]
    table = pd.read_csv(paths.ablation_table())
    assert table["variant"].tolist() == ["cam", "ssc"]
    assert table["miou_best_mean"].tolist() == pytest.approx([31.0, 40.5])
    # the stored CAMs are 0.9 on their class's pixels and 0.1 elsewhere (float16)
    assert table["cam_inside"].tolist() == pytest.approx([90.0, 90.0], abs=0.1)
    assert table["cam_background"].tolist() == pytest.approx([10.0, 10.0], abs=0.1)
    assert table["bg_fp_mean"].tolist() == pytest.approx([62.0, 32.0])
    assert table["bg_fp_fixed_mean"].tolist() == pytest.approx([90.0, 90.0])
    assert np.isnan(table["psnr"][0]) and table["psnr"][1] == pytest.approx(20.5)  # cam has no decoder
    assert np.isnan(table["ssim"][0]) and table["ssim"][1] == pytest.approx(0.55)
    assert not any("over_activation" in c for c in table.columns)
    md = paths.ablation_markdown().read_text()
    assert md == r.markdown and "## Against `cam`" in md
    assert "| bg FP | ± std | bg FP @0.2 | ± std |" in md and md.count("| - | - |") == 1  # cam: no PSNR / SSIM
    assert "| train | ssc | 9.5 | 40.0 | 41.0 | +9.5: above cam on every seed |" in md
    assert "Every run's best threshold is the largest swept (0.3)" in md  # every run's best is 0.3
    for key in ("train", "val"):
        sweep = pd.read_csv(paths.ablation_sweep(key))
        assert sweep.columns.tolist() == ["threshold", "cam", "ssc"] and len(sweep) == 3
    assert pd.read_csv(paths.ablation_sweep("val"))["ssc"].tolist() == pytest.approx([0.405] * 3)
    assert set(r.sweeps["split"]) == {"train", "val"} and set(r.per_class["variant"]) == {"cam", "ssc"}
    assert len(r.contrast) == 4 and r.comparison["split"].tolist() == ["train"] * 2 + ["val"] * 2

    assert stage.run(params, "ssc").reference == "ssc"
    assert "below ssc on every seed" in paths.ablation_markdown().read_text()
    rows = stage.examples(params, n_images=2, seed=1)
    val = build_dataset(params.data, "val")
    assert len(rows) == 2 and [t for t, _ in rows[0].overlays] == ["cam", "ssc"]
    assert rows[0].overlays[0][1].shape == val[0]["mask"].shape
    assert stage.main(["--reference", "ssc"]) == 0


# --------------------------------------------------------------------------- inspect_cams
def test_inspect_cams_records(params):
    from sslib.stages import inspect_cams

    val = build_dataset(params.data, "val")
    records = inspect_cams.run(params, "val", names=[val.names[1]], seed=0)
    assert [r.name for r in records] == [val.names[1]] and records[0].split == "val"
    rec = records[0]
    item = val[1]
    present = np.flatnonzero(item["label"].numpy())
    assert rec.image.shape == (32, 32, 3) and rec.mask.shape == (32, 32) and rec.boundaries.dtype == bool
    assert rec.classes == [val.classes[k] for k in present]
    assert [v.variant for v in rec.variants] == ["cam", "ssc"]
    cam, ssc = rec.variants
    assert cam.reconstruction is None and ssc.reconstruction.shape == (32, 32, 3)
    assert [c for c, _ in ssc.cams] == rec.classes and ssc.cams[0][1].shape == (32, 32)
    assert [a[0] for a in ssc.aligned] == rec.classes
    _, averaged, target, reliable = ssc.aligned[0]
    assert averaged.shape == target.shape == reliable.shape == (16, 16) and reliable.dtype == bool
    assert (target >= averaged - 1e-6).all()  # the target is the max of the averaged map and the reliable CAM

    assert inspect_cams.select([], val.names, "val", 2) == [0, 1]  # evenly spaced by default
    assert inspect_cams.select([val.names[1], val.names[0]], val.names, "val", 2) == [1, 0]
    with pytest.raises(ValueError, match=r"names: not in split 'val': \['nope'\]"):
        inspect_cams.run(params, "val", names=["nope", val.names[0]])
    assert inspect_cams.resolve_split(params, "train") == params.data.train_split
    assert inspect_cams.resolve_split(params, "other") == "other"
