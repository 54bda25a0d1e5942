"""Train the CAM network of one ablation variant and seed (the ``train_cam`` stage).

One run, top to bottom:

1. data: the training split with IRN/SSC augmentation and its superpixels; every
   sample's random draws are seeded by (seed, epoch, index), so a run is the same
   whether it is resumed, split over DDP ranks, or loaded by worker processes;
2. models: :class:`~sslib.models.CAMNet` (ResNet-50, DRS) and, with reconstruction,
   the :class:`~sslib.models.Decoder` and the reconstruction loss;
3. optimisers: SGD with a poly schedule (classifier at ``classifier_lr_mult`` x lr),
   Adam with the same schedule for the decoder;
4. loss = cls + beta_rec * rec + beta_align * align (alignment after the warm-up epochs);
5. per epoch: an atomic checkpoint (``checkpoint.pt``, holding the loss history); at the
   end ``model.pt``, then the reports ``losses.csv`` (DVC plots) and ``metrics.json``.

The reports are written only when the run has finished, so an interrupted or failed run
never replaces the last good ones. Wall-clock times (machine-dependent) go to
``reports/timings/train_cam/<variant>-seed<seed>.json``, not into the reports that must
reproduce. A new run removes the previous ``model.pt`` when it starts, so a later
``eval_cam`` cannot pick up an old model beside a new, unfinished checkpoint.

An interrupted run started again with the same settings resumes from its last
checkpoint and ends with the same weights as an uninterrupted run (CPU, same seed).
A NaN or infinite loss stops the run with a message; the last good checkpoint stays.

Losses are accumulated on the device and read back every ``LOG_EVERY`` steps (for the
progress bar and the finiteness check) and at the end of each epoch, not every step.

Run it from a notebook (:func:`run`, which launches ``torchrun`` when
``runs.devices > 1``) or from the shell::

    python -m sslib.stages.train_cam --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.stages.train_cam --variant ssc --seed 0
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import distributed, paths
from ..config import ConfigError, Params, VariantConfig, to_dict, variant_config
from ..io import atomic_path, remove_stale_temps, write_json, write_text
from . import common

__all__ = ["run", "train_cam", "NonFiniteLossError", "poly_lr", "LOG_EVERY"]

#: steps between reading the running losses back from the device
LOG_EVERY = 10
_FIELDS = ["epoch", "step", "lr", "loss", "cls", "rec", "align"]


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite."""


def timings_path(variant: str, seed: int) -> Path:
    """Wall-clock seconds of one run: ``{"epoch_s": [...], "train_time_s", "images_per_s"}``."""
    return paths.timings("train_cam", paths.run_name(variant, seed))


def poly_lr(base: float, step: int, max_step: int, power: float) -> float:
    """Poly schedule: ``base * (1 - step / max_step) ** power``."""
    return base * (1.0 - min(step, max_step) / max_step) ** power


# --------------------------------------------------------------------------- data
class _SeededSamples(Dataset):
    """Index ``(epoch, i)`` -> sample ``i`` with its random draws seeded by (seed, epoch, i)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch * 10_007 + i) % (2 ** 63))
            return self.dataset[i]


class _EpochSampler(Sampler):
    """This rank's share of each global batch of a seeded permutation of the training split.

    Global batch b of epoch e holds positions [b*B, (b+1)*B) of ``randperm(n)`` drawn with
    seed (seed, e); rank r of W takes the r-th of W equal slices of it (B % W == 0).
    Incomplete last batches are dropped, as in IRN.
    """

    def __init__(self, n: int, batch: int, seed: int, rank: int, world: int):
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.epoch = 0

    def steps_per_epoch(self) -> int:
        return self.n // self.batch

    def __len__(self) -> int:
        return self.steps_per_epoch() * (self.batch // self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        per_rank = self.batch // self.world
        for b in range(self.steps_per_epoch()):
            chunk = perm[b * self.batch:(b + 1) * self.batch]
            for i in chunk[self.rank * per_rank:(self.rank + 1) * per_rank]:
                yield self.epoch, i


# --------------------------------------------------------------------------- the run
@dataclass
class _Parts:
    net: nn.Module
    decoder: nn.Module | None
    rec_loss: nn.Module | None
    opt: torch.optim.Optimizer
    dec_opt: torch.optim.Optimizer | None


def _fingerprint(params: Params, variant: str, seed: int, v: VariantConfig) -> dict:
    """What a checkpoint must agree with to be resumed (not the output paths or worker count)."""
    t = to_dict(params.train_cam)
    for k in ("out_dir", "num_workers"):
        t.pop(k)
    inputs = {}  # the data a run reads, by the files that summarise it
    for f in (Path(params.data.prepared_dir) / "labels.json", Path(params.superpixels.out_dir) / "meta.json"):
        inputs[str(f)] = hashlib.md5(f.read_bytes()).hexdigest() if f.is_file() else None
    return {"variant": variant, "seed": seed, "settings": to_dict(v), "train": t,
            "model": to_dict(params.model), "augment": to_dict(params.augment),
            "data": {k: getattr(params.data, k) for k in ("dataset", "root", "train_split")},
            "inputs": inputs}


def _build(params: Params, v: VariantConfig, num_classes: int, device: torch.device) -> _Parts:
    from ..models import CAMNet, Decoder, build_reconstruction_loss

    t, m = params.train_cam, params.model
    net = CAMNet(num_classes, drs_delta=v.drs_delta, weights=m.backbone_weights,
                 frozen_stages=m.frozen_stages, bn_eval=m.bn_eval).to(device)
    backbone, classifier = net.param_groups()
    opt = torch.optim.SGD([
        {"params": backbone, "lr": t.lr, "base_lr": t.lr},
        {"params": classifier, "lr": t.lr * t.classifier_lr_mult, "base_lr": t.lr * t.classifier_lr_mult},
    ], lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    decoder = rec_loss = dec_opt = None
    if v.reconstruction:
        decoder = Decoder(num_classes).to(device)
        rec_loss = build_reconstruction_loss(v.rec_loss, m.vgg_weights).to(device)
        dec_opt = torch.optim.Adam([{"params": list(decoder.parameters()), "base_lr": t.decoder_lr}],
                                   lr=t.decoder_lr, betas=tuple(t.decoder_betas))
    return _Parts(net, decoder, rec_loss, opt, dec_opt)


def _set_lr(opts: list[torch.optim.Optimizer | None], step: int, max_step: int, power: float) -> None:
    for opt in opts:
        if opt is not None:
            for g in opt.param_groups:
                g["lr"] = poly_lr(g["base_lr"], step, max_step, power)


def _unwrap(m: nn.Module | None) -> nn.Module | None:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def _state(parts: _Parts, epoch: int, step: int, fingerprint: dict, history: list[dict]) -> dict:
    """The checkpoint: tensors and plain values only (read with ``weights_only=True``), and no
    wall-clock time, so the same run writes the same bytes."""
    return {"epoch": epoch, "step": step, "fingerprint": fingerprint, "history": history,
            "net": _unwrap(parts.net).state_dict(), "opt": parts.opt.state_dict(),
            "decoder": _unwrap(parts.decoder).state_dict() if parts.decoder is not None else None,
            "dec_opt": parts.dec_opt.state_dict() if parts.dec_opt is not None else None}


def _save(obj: Any, path: Path) -> None:
    """torch.save, atomically. Through a file object: given a path, torch names the archive
    inside after the (random) temporary file, and the same weights would give other bytes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def _load_checkpoint(path: Path, fingerprint: dict, epochs: int) -> dict | None:
    """The checkpoint at ``path`` if it is an unfinished run with this run's settings, else None.

    A finished run's checkpoint is not resumed: asking for the run again (DVC does so
    only when something it depends on changed) trains it again.
    """
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a checkpoint is written atomically; unreadable means foreign
        print(f"train_cam: ignoring unreadable checkpoint {path} ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    if ck.get("fingerprint") != fingerprint:
        print(f"train_cam: {path} was written with other settings; starting afresh", file=sys.stderr)
        return None
    if ck.get("epoch", 0) >= epochs:
        print(f"train_cam: {path} is a finished run; training again from the start", file=sys.stderr)
        return None
    return ck


def train_cam(params: Params, variant: str, seed: int, *, progress: bool = True,
              stop_after_epochs: int | None = None) -> dict:
    """Train variant ``variant`` with seed ``seed``; resume from its checkpoint if there is one.

    Writes ``paths.train_dir(...)/checkpoint.pt`` each epoch and, when all epochs are done,
    ``model.pt`` ({"net", "decoder", "classes", "variant", "seed", "settings"}); rank 0
    also writes ``paths.train_reports(...)/losses.csv`` and ``metrics.json``.

    Args:
        stop_after_epochs: end (as if interrupted) after this many epochs of this call;
            for tests of resuming.

    Returns:
        The metrics dict (also written to metrics.json), or ``{"stopped_at_epoch": e}``.

    Raises:
        NonFiniteLossError: a loss became NaN/inf (with ``train.stop_on_nonfinite``).
    """
    from tqdm.auto import tqdm

    from ..data import build_dataset, build_train_transform, dataset_classes
    from ..losses import alignment_loss, classification_loss

    dist = distributed.init()
    t, v = params.train_cam, variant_config(params, variant)
    if t.batch_size % dist.world_size:
        raise ConfigError(f"train.batch_size: {t.batch_size} does not split over {dist.world_size} processes")
    device = dist.device
    out, rep = paths.train_dir(params, variant, seed), paths.train_reports(variant, seed)
    fingerprint = _fingerprint(params, variant, seed, v)
    if dist.is_main:  # before the other ranks can write: what a killed run left, and the old model
        remove_stale_temps(out)
        (out / paths.MODEL).unlink(missing_ok=True)

    classes = dataset_classes(params.data)
    dataset = build_dataset(params.data, params.data.train_split,
                            transform=build_train_transform(params.augment),
                            superpixel_dir=params.superpixels.out_dir if v.alignment else None,
                            with_mask=False)
    sampler = _EpochSampler(len(dataset), t.batch_size, seed, dist.rank, dist.world_size)
    steps = sampler.steps_per_epoch()
    if steps == 0:
        raise ConfigError(f"train.batch_size: {t.batch_size} is larger than the training split "
                          f"({len(dataset)} images)")
    max_step = steps * t.epochs
    loader = DataLoader(_SeededSamples(dataset, seed), batch_size=t.batch_size // dist.world_size,
                        sampler=sampler, num_workers=t.num_workers, drop_last=True,
                        persistent_workers=False, pin_memory=device.type == "cuda")

    torch.manual_seed(seed)
    parts = _build(params, v, len(classes), device)
    ck = _load_checkpoint(out / paths.CHECKPOINT, fingerprint, t.epochs)
    start_epoch, history, epoch_s = 0, [], []
    if ck is not None:
        parts.net.load_state_dict(ck["net"])
        parts.opt.load_state_dict(ck["opt"])
        if parts.decoder is not None:
            parts.decoder.load_state_dict(ck["decoder"])
            parts.dec_opt.load_state_dict(ck["dec_opt"])
        start_epoch, history = ck["epoch"], ck["history"]
        epoch_s = _read_epoch_times(timings_path(variant, seed), start_epoch)
        if dist.is_main:
            print(f"train_cam: resuming {variant} seed {seed} after epoch {start_epoch}", file=sys.stderr)
    if dist.world_size > 1:
        ddp = dict(device_ids=[device.index] if device.type == "cuda" else None)
        parts.net = nn.parallel.DistributedDataParallel(parts.net, **ddp)
        if parts.decoder is not None:
            parts.decoder = nn.parallel.DistributedDataParallel(parts.decoder, **ddp)

    use_amp = t.amp and device.type == "cuda"
    amp_ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    parts.net.train()
    if parts.decoder is not None:
        parts.decoder.train()

    end_epoch = t.epochs if stop_after_epochs is None else min(t.epochs, start_epoch + stop_after_epochs)
    bar = tqdm(total=(t.epochs - start_epoch) * steps, desc=f"train_cam {variant} seed {seed}",
               unit="step", disable=not (progress and dist.is_main))
    for epoch in range(start_epoch, end_epoch):
        sampler.epoch = epoch
        use_align = v.alignment and epoch >= v.warmup_epochs
        sums = torch.zeros(4, device=device)  # loss, cls, rec, align (this epoch, this rank)
        t0, seen = time.perf_counter(), 0
        for i, batch in enumerate(loader):
            step = epoch * steps + i
            _set_lr([parts.opt, parts.dec_opt], step, max_step, t.poly_power)
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            zero = image.new_zeros(())
            with amp_ctx():
                scores, cams = parts.net(image)
                l_cls = classification_loss(scores.float(), label)
                l_rec = zero
                if parts.decoder is not None:
                    rec = parts.decoder(cams)
                    l_rec = parts.rec_loss(rec.float(), image)
            l_align = zero
            if use_align:
                sp = batch["superpixels"].to(device, non_blocking=True)
                # labels from the loader (CPU): only present maps are computed, without a device sync
                l_align = alignment_loss(cams.float(), sp, batch["label"], v.align_threshold, v.align_erosion)
                if dist.world_size > 1:  # DDP averages per-rank means: reweight to the global mean
                    l_align = l_align * _share_of_maps(label, dist.world_size)
            loss = l_cls + v.beta_rec * l_rec + v.beta_align * l_align
            parts.opt.zero_grad(set_to_none=True)
            if parts.dec_opt is not None:
                parts.dec_opt.zero_grad(set_to_none=True)
            loss.backward()
            parts.opt.step()
            if parts.dec_opt is not None:
                parts.dec_opt.step()
            sums += torch.stack([loss.detach(), l_cls.detach(), l_rec.detach(), l_align.detach()]).float()
            seen += image.shape[0] * dist.world_size
            bar.update()
            if (i + 1) % LOG_EVERY == 0 or i + 1 == steps:
                mean = (sums / (i + 1)).tolist()  # the one read-back every LOG_EVERY steps
                if t.stop_on_nonfinite and not all(math.isfinite(x) for x in mean):
                    raise NonFiniteLossError(_nonfinite_message(variant, seed, epoch, mean, out / paths.CHECKPOINT))
                bar.set_postfix(loss=f"{mean[0]:.3f}", cls=f"{mean[1]:.3f}", rec=f"{mean[2]:.3f}",
                                align=f"{mean[3]:.4f}", ips=f"{seen / (time.perf_counter() - t0):.1f}")
        epoch_s.append(time.perf_counter() - t0)
        if dist.world_size > 1:
            import torch.distributed as tdist

            tdist.all_reduce(sums)
            sums /= dist.world_size
        mean = (sums / steps).tolist()
        if t.stop_on_nonfinite and not all(math.isfinite(x) for x in mean):
            raise NonFiniteLossError(_nonfinite_message(variant, seed, epoch, mean, out / paths.CHECKPOINT))
        history.append(dict(zip(_FIELDS, [epoch + 1, (epoch + 1) * steps, parts.opt.param_groups[0]["lr"],
                                           *mean])))
        if dist.is_main:
            _save(_state(parts, epoch + 1, (epoch + 1) * steps, fingerprint, history), out / paths.CHECKPOINT)
            _write_timings(timings_path(variant, seed), epoch_s, steps * t.batch_size)
    bar.close()
    if end_epoch < t.epochs:
        return {"stopped_at_epoch": end_epoch}

    metrics = {"variant": variant, "seed": seed, "epochs": t.epochs, "steps": max_step,
               "final": {k: history[-1][k] for k in ("loss", "cls", "rec", "align")},
               "device": str(device), "world_size": dist.world_size}
    if dist.is_main:
        _save({"net": _unwrap(parts.net).state_dict(),
               "decoder": _unwrap(parts.decoder).state_dict() if parts.decoder is not None else None,
               "classes": list(classes), "variant": variant, "seed": seed, "settings": to_dict(v),
               "model": to_dict(params.model)}, out / paths.MODEL)
        _write_losses(rep / paths.LOSSES, history)  # the reports last: only a finished run replaces them
        write_json(rep / paths.METRICS, metrics)
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return metrics


def _share_of_maps(label: torch.Tensor, world: int) -> torch.Tensor:
    """world * (present maps here) / (present maps on all ranks): a device tensor, no sync."""
    import torch.distributed as tdist

    local = label.sum().float()
    total = local.clone()
    tdist.all_reduce(total)
    return local * world / total.clamp_min(1.0)


def _nonfinite_message(variant: str, seed: int, epoch: int, mean: list[float], checkpoint: Path) -> str:
    kept = (f"the last good checkpoint ({checkpoint}, after epoch {epoch}) is kept" if epoch
            else "no checkpoint was written")
    return (f"train_cam {variant} seed {seed}: a loss became NaN or infinite in epoch {epoch + 1} "
            f"(mean loss, cls, rec, align = {[round(x, 4) for x in mean]}); stopped, {kept}. "
            f"Lower train.lr (or the loss weights) or check the data.")


def _read_epoch_times(path: Path, epochs: int) -> list[float]:
    """The first ``epochs`` epoch times of an interrupted run's timings file ([] if unreadable)."""
    try:
        times = json.loads(path.read_text())["epoch_s"][:epochs]
        return [float(x) for x in times] if len(times) == epochs else []
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _write_timings(path: Path, epoch_s: list[float], images_per_epoch: int) -> None:
    total = sum(epoch_s)
    write_json(path, {"epoch_s": [round(x, 3) for x in epoch_s], "train_time_s": round(total, 2),
                      "images_per_s": round(images_per_epoch * len(epoch_s) / max(total, 1e-9), 2)})


def _write_losses(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in _FIELDS})
    write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- entry points
def run(params: Params, variant: str, seed: int, progress: bool = True) -> dict:
    """Train one run in this process, or under ``torchrun`` when ``runs.devices > 1``."""
    return common.run_here_or_torchrun("train_cam", params, variant, seed,
                                       lambda: train_cam(params, variant, seed, progress=progress),
                                       paths.train_reports(variant, seed) / paths.METRICS)


def main(argv: list[str] | None = None) -> int:
    return common.cli("train_cam", __doc__, lambda p, a: train_cam(p, a.variant, a.seed, progress=distributed.is_rank0()),
                      argv, common.add_run_args, errors=(NonFiniteLossError,))


if __name__ == "__main__":
    sys.exit(main())
