"""The CAM training loop on a tiny synthetic project: resume, non-finite losses, DDP, outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sslib import config, superpixels, train_cam
from sslib.config import deep_merge
from sslib.data import build_dataset, synthetic
from sslib.data.prepare import prepare

TINY = {
    "synthetic": {"n_train": 4, "n_val": 2, "image_size": 48, "max_objects": 2},
    "superpixels": {"workers": 1, "slic": {"n_segments": 20}},
    "augment": {"resize_long": [32, 48], "crop_size": 32},
    "model": {"frozen_stages": 2, "bn_eval": True},
    "train": {"variants": ["ssc"], "seeds": [0], "epochs": 3, "batch_size": 2, "lr": 0.01},
    "ssc": {"warmup_epochs": 1, "rec_loss": "l1"},
}


def _write_params(root: Path, update: dict) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(deep_merge(TINY, update), sort_keys=False))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder with a tiny synthetic data set, its labels and superpixels."""
    root = tmp_path_factory.mktemp("project")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params = config.load(_write_params(root, {}))
        synthetic.generate(params.synthetic, progress=False)
        prepare(params.data, progress=False)
        items = []
        for split in ("train", "val"):
            ds = build_dataset(params.data, split, with_mask=False)
            items += [(n, ds.image_path(n)) for n in ds.names]
        superpixels.precompute(items, params.superpixels.out_dir, params.superpixels, workers=1, progress=False)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    yield project
    (project / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))


def _params(root: Path, **update) -> config.Params:
    return config.load(_write_params(root, update))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    out = {f"net.{k}": v for k, v in ck["net"].items()}
    out.update({f"decoder.{k}": v for k, v in (ck["decoder"] or {}).items()})
    return out


def test_trains_and_writes_outputs(in_project):
    params = _params(in_project, train={"out_dir": "runs/a"})
    m = train_cam.train_cam(params, "ssc", 0, progress=False)
    assert m["epochs"] == 3 and m["steps"] == 6
    assert not any("time" in k or "per_s" in k for k in m)  # machine-dependent: kept apart
    timings = json.loads((in_project / "reports/timings/train_cam/ssc-seed0.json").read_text())
    assert len(timings["epoch_s"]) == 3 and timings["train_time_s"] > 0 and timings["images_per_s"] > 0
    run = in_project / "runs/a/ssc/seed0"
    assert (run / "model.pt").is_file() and (run / "checkpoint.pt").is_file()
    rows = (in_project / "reports/train_cam/ssc/seed0/losses.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["epoch", "step", "lr", "loss"] and len(rows) == 4
    header = rows[0].split(",")
    align = [float(r.split(",")[header.index("align")]) for r in rows[1:]]
    assert align[0] == 0.0 and all(a > 0 for a in align[1:])  # warm-up: 1 epoch without alignment
    metrics = json.loads((in_project / "reports/train_cam/ssc/seed0/metrics.json").read_text())
    assert metrics["final"] == m["final"] and all(map(lambda x: x == x, m["final"].values()))
    ck = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    assert ck["variant"] == "ssc" and len(ck["classes"]) == 6 and ck["decoder"] is not None


def test_interrupted_run_resumes_to_the_same_weights(in_project):
    straight = _params(in_project, train={"out_dir": "runs/straight"})
    train_cam.train_cam(straight, "+crm", 1, progress=False)
    report = in_project / "reports/train_cam/+crm/seed1"
    finished = {f: (report / f).read_bytes() for f in ("losses.csv", "metrics.json")}
    resumed = _params(in_project, train={"out_dir": "runs/resumed"})
    assert train_cam.train_cam(resumed, "+crm", 1, progress=False, stop_after_epochs=1) == {"stopped_at_epoch": 1}
    assert not (in_project / "runs/resumed/+crm/seed1/model.pt").exists()
    # an unfinished run leaves the last finished run's reports as they were
    assert {f: (report / f).read_bytes() for f in finished} == finished
    train_cam.train_cam(resumed, "+crm", 1, progress=False)
    a = _weights(in_project / "runs/straight/+crm/seed1/model.pt")
    b = _weights(in_project / "runs/resumed/+crm/seed1/model.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_new_run_removes_the_old_model_and_killed_writes(in_project):
    """A run that starts removes the previous run's model.pt (eval_cam must not evaluate it
    beside a new, unfinished checkpoint) and the temporary file a SIGKILL during a checkpoint
    write left behind; a finished run's checkpoint holds no wall-clock time."""
    p = _params(in_project, train={"out_dir": "runs/stale", "epochs": 2})
    train_cam.train_cam(p, "cam", 0, progress=False)
    run = in_project / "runs/stale/cam/seed0"
    leftover = run / ".checkpoint.pt.tmp-k1ll3d.pt"
    leftover.write_bytes(b"half a checkpoint")
    p2 = _params(in_project, train={"out_dir": "runs/stale", "epochs": 2, "lr": 0.02})
    assert train_cam.train_cam(p2, "cam", 0, progress=False, stop_after_epochs=1) == {"stopped_at_epoch": 1}
    assert not (run / "model.pt").exists() and not leftover.exists()
    assert sorted(f.name for f in run.iterdir()) == ["checkpoint.pt"]
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert not any("time" in k for k in ck) and ck["epoch"] == 1


def test_same_run_twice_writes_the_same_files(in_project):
    """What must reproduce does: checkpoint, model and reports are byte-identical across runs."""
    files = {}
    for i in range(2):
        p = _params(in_project, train={"out_dir": f"runs/twice{i}", "epochs": 1})
        train_cam.train_cam(p, "cam", 0, progress=False)
        rep = in_project / "reports/train_cam/cam/seed0"
        files[i] = {f: (in_project / f"runs/twice{i}/cam/seed0" / f).read_bytes() for f in ("model.pt", "checkpoint.pt")}
        files[i].update({f: (rep / f).read_bytes() for f in ("losses.csv", "metrics.json")})
    assert files[0] == files[1]


def test_changed_settings_do_not_resume_a_foreign_checkpoint(in_project, capsys):
    p = _params(in_project, train={"out_dir": "runs/foreign", "epochs": 2})
    train_cam.train_cam(p, "baseline", 0, progress=False, stop_after_epochs=1)
    p2 = _params(in_project, train={"out_dir": "runs/foreign", "epochs": 2, "lr": 0.02})
    train_cam.train_cam(p2, "baseline", 0, progress=False)
    assert "other settings" in capsys.readouterr().err


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(in_project, monkeypatch):
    import sslib.losses as losses

    real, calls = losses.classification_loss, {"n": 0}

    def poisoned(scores, labels):
        calls["n"] += 1
        out = real(scores, labels)
        return out * float("nan") if calls["n"] > 2 else out  # epoch 1 (2 steps) is fine

    monkeypatch.setattr(losses, "classification_loss", poisoned)
    p = _params(in_project, train={"out_dir": "runs/nan"})
    with pytest.raises(train_cam.NonFiniteLossError, match=r"epoch 2.*after epoch 1\) is kept"):
        train_cam.train_cam(p, "cam", 0, progress=False)
    ck = torch.load(in_project / "runs/nan/cam/seed0/checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["net"].values() if v.is_floating_point())


@pytest.mark.slow
def test_two_process_ddp_step_equals_single_process(in_project):
    """One optimisation step on a global batch of 4: 2 gloo processes x 2 images == 1 x 4."""
    update = {"train": {"epochs": 1, "batch_size": 4, "variants": ["ssc"]}, "ssc": {"warmup_epochs": 0}}
    _write_params(in_project, deep_merge(update, {"train": {"out_dir": "runs/single"}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "sslib.train_cam", "--variant", "ssc", "--seed", "0"],
                   cwd=in_project, env=env, check=True, capture_output=True)
    _write_params(in_project, deep_merge(update, {"train": {"out_dir": "runs/ddp", "devices": 2}}))
    from sslib.distributed import torchrun_command

    cmd = torchrun_command("sslib.train_cam", ["--variant", "ssc", "--seed", "0"], nproc_per_node=2)
    r = subprocess.run(cmd, cwd=in_project, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a = _weights(in_project / "runs/single/ssc/seed0/model.pt")
    b = _weights(in_project / "runs/ddp/ssc/seed0/model.pt")
    for k in a:
        if k.startswith("net."):  # SGD: the weights after the step agree
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
    # Adam's first step is lr * sign(grad) where the gradient is ~0, which amplifies rounding;
    # compare its first moment ((1 - beta1) * grad) instead: the gradients agree
    ca, cb = (torch.load(in_project / f"runs/{r}/ssc/seed0/checkpoint.pt", map_location="cpu",
                         weights_only=True)["dec_opt"]["state"] for r in ("single", "ddp"))
    assert ca.keys() == cb.keys() and len(ca) > 0
    for k in ca:
        torch.testing.assert_close(ca[k]["exp_avg"], cb[k]["exp_avg"], rtol=1e-4, atol=1e-8)
    # and the step did move the weights away from their (seeded) initial values
    params = config.load(in_project / "params.yaml")
    torch.manual_seed(0)
    init = train_cam._build(params, config.variant_config(params, "ssc"), 6, torch.device("cpu"))
    start = {f"net.{k}": v for k, v in init.net.state_dict().items()}
    start.update({f"decoder.{k}": v for k, v in init.decoder.state_dict().items()})
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], start[k])]
    assert any(k.startswith("net.classifier") or "classifier" in k for k in moved), moved[:5]
    assert any(k.startswith("decoder.") for k in moved)
    metrics = json.loads((in_project / "reports/train_cam/ssc/seed0/metrics.json").read_text())
    assert metrics["world_size"] == 2


def test_eval_cam_makes_and_evaluates_the_cams_of_a_trained_run(in_project):
    from sslib import eval_cam
    from sslib.cam import cam_path, load_cam

    params = _params(in_project, train={"out_dir": "runs/e", "epochs": 1},
                     cam={"out_dir": "cams", "scales": [1.0, 0.5], "batch_size": 3})
    with pytest.raises(eval_cam.DataError, match="runs/e/cam/seed0/model.pt: no trained model"):
        eval_cam.eval_cam(params, "cam", 0, progress=False)
    train_cam.train_cam(params, "cam", 0, progress=False)
    m = eval_cam.eval_cam(params, "cam", 0, progress=False)
    for split in ("train", "val"):
        ds = build_dataset(params.data, split)
        for name in ds.names:
            c = load_cam(cam_path(in_project / "cams/cam/seed0", split, name), size=(48, 48))
            assert sorted(c["keys"].tolist()) == sorted(torch.nonzero(ds[ds.names.index(name)]["label"])[:, 0].tolist())
        best, fixed = m[split]["best"], m[split]["fixed"]
        assert 0 <= fixed["miou"] <= best["miou"] <= 1 and fixed["threshold"] == 0.2
        assert set(best["iou"]) == {"background", *ds.classes}
    rep = in_project / "reports/eval_cam/cam/seed0"
    assert json.loads((rep / "metrics.json").read_text()) == m
    rows = (rep / "sweep.csv").read_text().splitlines()
    assert rows[0] == "threshold,train_miou,val_miou" and len(rows) == 20
    assert max(float(r.split(",")[2]) for r in rows[1:]) == pytest.approx(m["val"]["best"]["miou"], abs=1e-5)
    timings = json.loads((in_project / "reports/timings/eval_cam/cam-seed0.json").read_text())
    assert timings["cam_time_s"] > 0 and not any("time" in k for k in m)
