"""The shared training scaffold (sslib.training) alone, on a toy model and a toy data set.

(Its DDP path, two gloo processes, is tested through the CAM stage in test_train_cam.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from sslib import training
from sslib.config import ConfigError

EPOCHS, BATCH = 3, 4


class Toy(Dataset):
    """10 samples; each draws noise from torch's global RNG (as an augmentation does)."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": torch.full((3,), i / 10) + torch.randn(3), "y": torch.tensor([float(i % 2)])}


def _toy() -> tuple[dict, dict]:
    """Two modules, an SGD with two param groups and an Adam (every group holds base_lr)."""
    torch.manual_seed(0)
    net, head = nn.Linear(3, 4), nn.Linear(4, 1)
    opt = torch.optim.SGD([{"params": [net.weight], "lr": 0.1, "base_lr": 0.1},
                           {"params": [net.bias], "lr": 0.2, "base_lr": 0.2}], momentum=0.9)
    head_opt = torch.optim.Adam([{"params": list(head.parameters()), "base_lr": 0.01}], lr=0.01)
    return {"net": net, "head": head}, {"opt": opt, "head_opt": head_opt}


def _step(batch: dict, ctx: training.StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    with ctx.autocast():
        h = ctx.modules["net"](batch["x"].to(ctx.device))
        pred = ctx.modules["head"](torch.relu(h))
    mse = ((pred.float() - batch["y"].to(ctx.device)) ** 2).mean()
    reg = h.float().pow(2).mean()
    return mse + 0.01 * reg, torch.stack([mse, reg])


def _fit(folder: Path, step=_step, fingerprint: dict | None = None, built=None, **kw) -> tuple[training.FitResult, dict]:
    modules, optimizers = built or _toy()
    kw = {"seed": 0, "epochs": EPOCHS, "batch_size": BATCH, "progress": False, **kw}
    settings = training.FitSettings("toy", run="run 0", checkpoint_path=folder / "checkpoint.pt",
                                    timings_path=folder / "timings.json", fingerprint=fingerprint or {"v": 1},
                                    loss_names=("mse", "reg"), **kw)
    r = training.fit(settings, Toy(), modules, optimizers, step)
    return r, modules


def _weights(modules: dict) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}


def _same_weights(a: dict, b: dict) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --------------------------------------------------------------------------- sampling, lr
def test_sampler_splits_each_global_batch_over_ranks_and_drops_the_incomplete_one():
    single = list(training.EpochSampler(10, 4, seed=3))
    ranks = [list(training.EpochSampler(10, 4, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert len(single) == 8 and len({i for _, i in single}) == 8  # 2 full batches; 2 samples dropped
    assert all(len(r) == len(training.EpochSampler(10, 4, 3, rank=0, world=2)) == 4 for r in ranks)
    for b in range(2):  # global batch b = rank 0's half, then rank 1's
        assert ranks[0][2 * b:2 * b + 2] + ranks[1][2 * b:2 * b + 2] == single[4 * b:4 * b + 4]
    again = training.EpochSampler(10, 4, seed=3)
    assert list(again) == single
    again.epoch = 1
    assert [i for _, i in again] != [i for _, i in single] and all(e == 1 for e, _ in again)


def test_seeded_samples_depend_on_seed_epoch_and_index_only():
    ds = training.SeededSamples(Toy(), seed=0)
    a = ds[(1, 3)]["x"]
    torch.rand(5)
    state = torch.get_rng_state()
    assert torch.equal(ds[(1, 3)]["x"], a) and torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(ds[(2, 3)]["x"], a) and not torch.equal(training.SeededSamples(Toy(), 1)[(1, 3)]["x"], a)


def test_batch_size_must_split_over_processes_and_fit_the_data():
    with pytest.raises(ConfigError, match="toy.batch_size: 3 does not split over 2 processes"):
        training.check_batch_size("toy", 3, 2)
    with pytest.raises(ConfigError, match=r"toy.batch_size: 12 is larger than the training split \(10 images\)"):
        _fit(Path("unused"), batch_size=12)


def test_poly_lr_values():
    assert training.poly_lr(0.1, 0, 10, 0.9) == 0.1
    assert training.poly_lr(1.0, 5, 10, 1.0) == pytest.approx(0.5)
    assert training.poly_lr(1.0, 5, 10, 2.0) == pytest.approx(0.25)
    assert training.poly_lr(1.0, 10, 10, 0.9) == 0.0 and training.poly_lr(1.0, 12, 10, 0.9) == 0.0


def test_fit_sets_the_poly_lr_of_every_group_of_every_optimizer_each_step(tmp_path):
    modules, optimizers = built = _toy()
    seen = []

    def step(batch, ctx):
        seen.append((ctx.epoch, ctx.step, [g["lr"] for o in optimizers.values() for g in o.param_groups]))
        return _step(batch, ctx)

    r, _ = _fit(tmp_path, step=step, built=built, poly_power=0.9)
    assert (r.steps, r.max_step, r.world_size, r.stopped_at, r.finished) == (2, 6, 1, None, True)
    assert [(e, s) for e, s, _ in seen] == [(s // 2, s) for s in range(6)]
    for _, s, lrs in seen:
        assert lrs == [training.poly_lr(b, s, 6, 0.9) for b in (0.1, 0.2, 0.01)]
    assert [row["lr"] for row in r.history] == [training.poly_lr(0.1, s, 6, 0.9) for s in (1, 3, 5)]
    assert [list(row)[:4] for row in r.history] == [["epoch", "step", "lr", "loss"]] * 3
    assert [(row["epoch"], row["step"]) for row in r.history] == [(1, 2), (2, 4), (3, 6)]


# --------------------------------------------------------------------------- checkpoints, resume
def test_resumed_fit_ends_with_the_uninterrupted_weights(tmp_path, capsys):
    straight, a = _fit(tmp_path / "a")
    stopped, _ = _fit(tmp_path / "b", stop_after_epochs=1)
    assert stopped.stopped_at == 1 and not stopped.finished and len(stopped.history) == 1
    ck = torch.load(tmp_path / "b/checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["step"] == 2 and ck["fingerprint"] == {"v": 1}
    resumed, b = _fit(tmp_path / "b")
    assert "toy: resuming run 0 after epoch 1" in capsys.readouterr().err
    assert _same_weights(a, b) and resumed.history == straight.history and resumed.finished
    # the checkpoint (optimizer states and history included) holds nothing else
    assert (tmp_path / "a/checkpoint.pt").read_bytes() == (tmp_path / "b/checkpoint.pt").read_bytes()
    timings = json.loads((tmp_path / "b/timings.json").read_text())
    assert len(timings["epoch_s"]) == EPOCHS and timings["images_per_s"] > 0


def test_the_same_fit_twice_writes_the_same_checkpoint_bytes(tmp_path):
    _fit(tmp_path / "a")
    _fit(tmp_path / "b")
    a, b = ((tmp_path / d / "checkpoint.pt").read_bytes() for d in "ab")
    assert a == b
    ck = torch.load(tmp_path / "a/checkpoint.pt", weights_only=True)
    assert list(ck) == ["epoch", "step", "fingerprint", "history", "net", "head", "opt", "head_opt"]


def test_a_checkpoint_with_another_fingerprint_is_not_resumed(tmp_path, capsys):
    _fit(tmp_path / "a", fingerprint={"v": 1}, stop_after_epochs=1)
    r, a = _fit(tmp_path / "a", fingerprint={"v": 2})
    assert f"toy: {tmp_path / 'a/checkpoint.pt'} was written with other settings; starting afresh" \
        in capsys.readouterr().err
    fresh, b = _fit(tmp_path / "b", fingerprint={"v": 2})
    assert len(r.history) == EPOCHS and _same_weights(a, b)


def test_unreadable_and_finished_checkpoints_are_not_resumed(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/checkpoint.pt").write_bytes(b"not a checkpoint")
    _, a = _fit(tmp_path / "a")
    assert "toy: ignoring unreadable checkpoint" in capsys.readouterr().err
    r, b = _fit(tmp_path / "a")  # finished: trained again from the start
    assert "is a finished run; training again from the start" in capsys.readouterr().err
    assert len(r.history) == EPOCHS and _same_weights(a, b)


def test_a_nonfinite_loss_stops_the_fit_and_keeps_the_last_checkpoint(tmp_path):
    def poisoned(batch, ctx):
        loss, parts = _step(batch, ctx)
        return (loss * float("nan"), parts) if ctx.step >= 3 else (loss, parts)  # epoch 2, 2nd step

    with pytest.raises(training.NonFiniteLossError,
                       match=r"toy run 0: .* in epoch 2 \(mean loss, mse, reg = .*after epoch 1\) is kept.*toy\.lr"):
        _fit(tmp_path / "a", step=poisoned)
    ck = torch.load(tmp_path / "a/checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["net"].values())

    def infinite(batch, ctx):
        loss, parts = _step(batch, ctx)
        return loss * float("inf"), parts

    with pytest.raises(training.NonFiniteLossError, match="in epoch 1 .*no checkpoint was written"):
        _fit(tmp_path / "b", step=infinite)
    assert not (tmp_path / "b/checkpoint.pt").exists()
    r, _ = _fit(tmp_path / "c", step=poisoned, stop_on_nonfinite=False)  # asked to go on: it does
    assert r.finished and r.history[-1]["loss"] != r.history[-1]["loss"]


def test_write_losses(tmp_path):
    history = [{"epoch": 1, "step": 2, "lr": 0.1, "loss": 1 / 3, "mse": 0.25},
               {"epoch": 2, "step": 4, "lr": 0.05, "loss": 2.0, "mse": float("nan")}]
    training.write_losses(tmp_path / "losses.csv", history)
    assert (tmp_path / "losses.csv").read_text() == \
        "epoch,step,lr,loss,mse\n1,2,0.1,0.333333,0.25\n2,4,0.05,2,nan\n"
