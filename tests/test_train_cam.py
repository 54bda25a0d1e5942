"""The CAM training loop on a tiny synthetic project: resume, non-finite losses, DDP, outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sslib import config, paths
from sslib.config import deep_merge
from sslib.data import build_dataset
from sslib.stages import train_cam

TINY = {
    "synthetic": {"n_train": 4, "n_val": 2, "image_size": 48, "max_objects": 2},
    "superpixels": {"workers": 1, "slic": {"n_segments": 20}},
    "augment": {"resize_long": [32, 48], "crop_size": 32},
    "model": {"frozen_stages": 2, "bn_eval": True},
    "runs": {"variants": ["ssc"], "seeds": [0], "downstream": {"variants": ["ssc"], "seeds": [0]}},
    "train_cam": {"epochs": 3, "batch_size": 2, "lr": 0.01},
    "ssc": {"warmup_epochs": 1, "rec_loss": "l1"},
}


@pytest.fixture(scope="module")
def project(tiny_project):
    """A project folder with a tiny synthetic data set, its labels and superpixels."""
    return tiny_project(TINY, superpixels=True)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    out = {f"net.{k}": v for k, v in ck["net"].items()}
    out.update({f"decoder.{k}": v for k, v in (ck["decoder"] or {}).items()})
    return out


def test_trains_and_writes_outputs(in_project):
    params = in_project.params(train_cam={"out_dir": "runs/a"})
    m = train_cam.train_cam(params, "ssc", 0, progress=False)
    assert m["epochs"] == 3 and m["steps"] == 6
    assert not any("time" in k or "per_s" in k for k in m)  # machine-dependent: kept apart
    timings = json.loads(paths.timings("train_cam", paths.run_name("ssc", 0)).read_text())
    assert len(timings["epoch_s"]) == 3 and timings["train_time_s"] > 0 and timings["images_per_s"] > 0
    assert paths.train_dir(params, "ssc", 0) == Path("runs/a/ssc/seed0")
    assert paths.model(params, "ssc", 0).is_file() and paths.checkpoint(params, "ssc", 0).is_file()
    rep = paths.train_reports("ssc", 0)
    rows = (rep / paths.LOSSES).read_text().splitlines()
    assert rows[0] == "epoch,step,lr,loss,cls,rec,align" and len(rows) == 4
    header = rows[0].split(",")
    align = [float(r.split(",")[header.index("align")]) for r in rows[1:]]
    assert align[0] == 0.0 and all(a > 0 for a in align[1:])  # warm-up: 1 epoch without alignment
    metrics = json.loads((rep / paths.METRICS).read_text())
    assert metrics == m and list(m) == ["variant", "seed", "epochs", "steps", "final", "device", "world_size"]
    assert list(m["final"]) == ["loss", "cls", "rec", "align"] and all(x == x for x in m["final"].values())
    ck = torch.load(paths.model(params, "ssc", 0), map_location="cpu", weights_only=True)
    assert list(ck) == ["net", "decoder", "classes", "variant", "seed", "settings", "model", "expansion"]
    assert ck["variant"] == "ssc" and len(ck["classes"]) == 6 and ck["decoder"] is not None
    assert ck["expansion"] == {"name": params.ssc.expansion, "settings": {"delta": params.ssc.expansions["drs"].delta}}


def test_interrupted_run_resumes_to_the_same_weights(in_project):
    straight = in_project.params(train_cam={"out_dir": "runs/straight"})
    train_cam.train_cam(straight, "+crm", 1, progress=False)
    report = paths.train_reports("+crm", 1)
    finished = {f: (report / f).read_bytes() for f in (paths.LOSSES, paths.METRICS)}
    resumed = in_project.params(train_cam={"out_dir": "runs/resumed"})
    assert train_cam.train_cam(resumed, "+crm", 1, progress=False, stop_after_epochs=1) == {"stopped_at_epoch": 1}
    assert not paths.model(resumed, "+crm", 1).exists()
    # an unfinished run leaves the last finished run's reports as they were
    assert {f: (report / f).read_bytes() for f in finished} == finished
    train_cam.train_cam(resumed, "+crm", 1, progress=False)
    a = _weights(paths.model(straight, "+crm", 1))
    b = _weights(paths.model(resumed, "+crm", 1))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the resumed run's reports are the uninterrupted run's
    assert {f: (report / f).read_bytes() for f in finished} == finished


def test_new_run_removes_the_old_model_and_killed_writes(in_project):
    """A run that starts removes the previous run's model.pt (eval_cam must not evaluate it
    beside a new, unfinished checkpoint) and the temporary file a SIGKILL during a checkpoint
    write left behind; a finished run's checkpoint holds no wall-clock time."""
    p = in_project.params(train_cam={"out_dir": "runs/stale", "epochs": 2})
    train_cam.train_cam(p, "cam", 0, progress=False)
    run = paths.train_dir(p, "cam", 0)
    leftover = run / ".checkpoint.pt.tmp-k1ll3d.pt"
    leftover.write_bytes(b"half a checkpoint")
    p2 = in_project.params(train_cam={"out_dir": "runs/stale", "epochs": 2, "lr": 0.02})
    assert train_cam.train_cam(p2, "cam", 0, progress=False, stop_after_epochs=1) == {"stopped_at_epoch": 1}
    assert not paths.model(p2, "cam", 0).exists() and not leftover.exists()
    assert sorted(f.name for f in run.iterdir()) == [paths.CHECKPOINT]
    ck = torch.load(paths.checkpoint(p2, "cam", 0), map_location="cpu", weights_only=True)
    assert not any("time" in k for k in ck) and ck["epoch"] == 1


def test_same_run_twice_writes_the_same_files(in_project):
    """What must reproduce does: checkpoint, model and reports are byte-identical across runs."""
    files = {}
    for i in range(2):
        p = in_project.params(train_cam={"out_dir": f"runs/twice{i}", "epochs": 1})
        train_cam.train_cam(p, "cam", 0, progress=False)
        rep, run = paths.train_reports("cam", 0), paths.train_dir(p, "cam", 0)
        files[i] = {f: (run / f).read_bytes() for f in (paths.MODEL, paths.CHECKPOINT)}
        files[i].update({f: (rep / f).read_bytes() for f in (paths.LOSSES, paths.METRICS)})
    assert files[0] == files[1]


def test_changed_settings_do_not_resume_a_foreign_checkpoint(in_project, capsys):
    p = in_project.params(train_cam={"out_dir": "runs/foreign", "epochs": 2})
    train_cam.train_cam(p, "baseline", 0, progress=False, stop_after_epochs=1)
    p2 = in_project.params(train_cam={"out_dir": "runs/foreign", "epochs": 2, "lr": 0.02})
    train_cam.train_cam(p2, "baseline", 0, progress=False)
    assert "train_cam: runs/foreign/baseline/seed0/checkpoint.pt was written with other settings" \
        in capsys.readouterr().err


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(in_project, monkeypatch):
    import sslib.losses as losses

    real, calls = losses.classification_loss, {"n": 0}

    def poisoned(scores, labels):
        calls["n"] += 1
        out = real(scores, labels)
        return out * float("nan") if calls["n"] > 2 else out  # epoch 1 (2 steps) is fine

    monkeypatch.setattr(losses, "classification_loss", poisoned)
    p = in_project.params(train_cam={"out_dir": "runs/nan"})
    with pytest.raises(train_cam.NonFiniteLossError, match=r"epoch 2.*after epoch 1\) is kept.*train_cam\.lr"):
        train_cam.train_cam(p, "cam", 0, progress=False)
    ck = torch.load(paths.checkpoint(p, "cam", 0), map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["net"].values() if v.is_floating_point())
    assert not paths.model(p, "cam", 0).exists()


@pytest.mark.slow
def test_two_process_ddp_step_equals_single_process(in_project):
    """One optimisation step on a global batch of 4: 2 gloo processes x 2 images == 1 x 4."""
    update = {"train_cam": {"epochs": 1, "batch_size": 4}, "runs": {"variants": ["ssc"]},
              "ssc": {"warmup_epochs": 0}}
    in_project.write_params(deep_merge(update, {"train_cam": {"out_dir": "runs/single"}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "sslib.stages.train_cam", "--variant", "ssc", "--seed", "0"],
                         cwd=in_project, env=env, check=True, capture_output=True, text=True)
    in_project.write_params(deep_merge(update, {"train_cam": {"out_dir": "runs/ddp"}, "runs": {"devices": 2}}))
    from sslib.distributed import torchrun_command

    cmd = torchrun_command("sslib.stages.train_cam", ["--variant", "ssc", "--seed", "0"], nproc_per_node=2)
    r = subprocess.run(cmd, cwd=in_project, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    single, ddp = (in_project.params(train_cam={"out_dir": f"runs/{d}"}) for d in ("single", "ddp"))
    a, b = _weights(paths.model(single, "ssc", 0)), _weights(paths.model(ddp, "ssc", 0))
    for k in a:
        if k.startswith("net."):  # SGD: the weights after the step agree
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
    # Adam's first step is lr * sign(grad) where the gradient is ~0, which amplifies rounding;
    # compare its first moment ((1 - beta1) * grad) instead: the gradients agree
    ca, cb = (torch.load(paths.checkpoint(p, "ssc", 0), map_location="cpu",
                         weights_only=True)["dec_opt"]["state"] for p in (single, ddp))
    assert ca.keys() == cb.keys() and len(ca) > 0
    for k in ca:
        torch.testing.assert_close(ca[k]["exp_avg"], cb[k]["exp_avg"], rtol=1e-4, atol=1e-8)
    # and the step did move the weights away from their (seeded) initial values
    params = in_project.load()
    torch.manual_seed(0)
    init = train_cam._build(params, config.variant_config(params, "ssc"), 6, torch.device("cpu"))
    start = {f"net.{k}": v for k, v in init.net.state_dict().items()}
    start.update({f"decoder.{k}": v for k, v in init.decoder.state_dict().items()})
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], start[k])]
    assert any(k.startswith("net.classifier") or "classifier" in k for k in moved), moved[:5]
    assert any(k.startswith("decoder.") for k in moved)
    metrics = json.loads((paths.train_reports("ssc", 0) / paths.METRICS).read_text())
    assert metrics["world_size"] == 2
    # the logged losses are the global batch's means too (alignment reweighted by each rank's maps)
    single_metrics = json.loads(one.stdout.strip().splitlines()[-1])
    assert single_metrics["world_size"] == 1 and single_metrics["final"]["align"] > 0
    for k, x in single_metrics["final"].items():
        assert metrics["final"][k] == pytest.approx(x, rel=1e-4, abs=1e-6), k


def test_eval_cam_makes_and_evaluates_the_cams_of_a_trained_run(in_project):
    from sslib.cam import cam_path, load_cam
    from sslib.io import DataError
    from sslib.stages import eval_cam

    params = in_project.params(train_cam={"out_dir": "runs/e", "epochs": 1},
                     eval_cam={"out_dir": "cams", "scales": [1.0, 0.5], "batch_size": 3})
    with pytest.raises(DataError, match="runs/e/cam/seed0/model.pt: no trained model"):
        eval_cam.eval_cam(params, "cam", 0, progress=False)
    train_cam.train_cam(params, "cam", 0, progress=False)
    net, decoder, classes = eval_cam.load_run(params, "cam", 0)
    assert decoder is None and len(classes) == 6 and not net.training
    m = eval_cam.run(params, "cam", 0, progress=False)  # runs.devices == 1: in this process
    for split in ("train", "val"):
        ds = build_dataset(params.data, split)
        for name in ds.names:
            c = load_cam(cam_path(paths.cam_dir(params, "cam", 0), split, name), size=(48, 48))
            assert sorted(c["keys"].tolist()) == sorted(torch.nonzero(ds[ds.names.index(name)]["label"])[:, 0].tolist())
        best, fixed = m[split]["best"], m[split]["fixed"]
        assert 0 <= fixed["miou"] <= best["miou"] <= 1 and fixed["threshold"] == 0.2
        assert set(best["iou"]) == {"background", *ds.classes}
    rep = paths.eval_reports("cam", 0)
    assert rep == Path("reports/eval_cam/cam/seed0")
    assert json.loads((rep / paths.METRICS).read_text()) == m
    rows = (rep / paths.SWEEP).read_text().splitlines()
    assert rows[0] == "threshold,train_miou,val_miou" and len(rows) == 20
    assert max(float(r.split(",")[2]) for r in rows[1:]) == pytest.approx(m["val"]["best"]["miou"], abs=1e-5)
    timings = json.loads(paths.timings("eval_cam", paths.run_name("cam", 0)).read_text())
    assert timings["cam_time_s"] > 0 and not any("time" in k for k in m)


def test_eval_cam_under_two_gloo_processes_makes_the_single_process_cams(in_project):
    """CAM inference sharded by rank (torchrun, 2 gloo processes: images 0, 2, ... and 1, 3, ...)
    writes every CAM file of the single-process run, with the same maps (to the stored
    float16 precision), and rank 0's sweep gives the same metrics."""
    from sslib.cam import cam_path, load_cam
    from sslib.distributed import torchrun_command
    from sslib.stages import eval_cam

    train = {"out_dir": "runs/shard", "epochs": 1}
    single = in_project.params(train_cam=train, eval_cam={"out_dir": "cams/single", "batch_size": 1})
    train_cam.train_cam(single, "cam", 0, progress=False)
    m1 = eval_cam.eval_cam(single, "cam", 0, progress=False)
    in_project.write_params({"train_cam": train, "eval_cam": {"out_dir": "cams/ddp", "batch_size": 1},
                               "runs": {"devices": 2}})
    cmd = torchrun_command("sslib.stages.eval_cam", ["--variant", "cam", "--seed", "0"], nproc_per_node=2)
    r = subprocess.run(cmd, cwd=in_project, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = in_project.params(train_cam=train, eval_cam={"out_dir": "cams/ddp", "batch_size": 1})
    files = {d: sorted(p.relative_to(paths.cam_dir(q, "cam", 0)) for p in paths.cam_dir(q, "cam", 0).rglob("*.npz"))
             for d, q in (("single", single), ("ddp", ddp))}
    assert files["single"] == files["ddp"] and len(files["single"]) == 6  # 4 train + 2 val images
    for rel in files["single"]:
        split, name = rel.parent.as_posix(), rel.stem
        a, b = (load_cam(cam_path(paths.cam_dir(q, "cam", 0), split, name)) for q in (single, ddp))
        assert a["keys"].tolist() == b["keys"].tolist(), rel
        # stored as float16: the processes' other thread counts may round a value one step apart
        np.testing.assert_allclose(b["high_res"], a["high_res"], atol=2 ** -10, err_msg=str(rel))
    m2 = json.loads((paths.eval_reports("cam", 0) / paths.METRICS).read_text())
    for split in ("train", "val"):
        assert m2[split]["best"]["miou"] == pytest.approx(m1[split]["best"]["miou"], abs=1e-6)
        assert m2[split]["best"]["threshold"] == m1[split]["best"]["threshold"]
