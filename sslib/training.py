"""The training scaffold shared by every stage that trains networks (CAM, IRN, segmentation).

A stage supplies what is particular to it; :func:`fit` does the rest, the same way for
every stage: ``fit(settings, dataset, modules, optimizers, step)``.

**The stage supplies**

- ``settings``: a :class:`FitSettings` (the stage's name, the run, seed, epochs, global
  batch, schedule, AMP, the checkpoint and timings paths, the fingerprint, the loss names);

- ``dataset``: a map-style data set of dicts of tensors (its transform draws its random
  numbers from torch's global RNG, which :func:`fit` seeds per sample);
- ``modules``: name -> :class:`torch.nn.Module` (or ``None``: absent in this variant), built
  on ``distributed.init().device`` after the stage seeded torch's global RNG;
- ``optimizers``: name -> optimizer (or ``None``). Every param group holds ``base_lr``;
  before each step, :func:`fit` sets ``lr = poly_lr(base_lr, step, max_step, poly_power)``
  in every group of every optimizer (never below a group's ``min_lr``, if it holds one).
  The first optimizer's first group's lr is logged;
- ``step(batch, ctx) -> (loss, parts)``: the forward pass of one batch, this rank's share
  of a global batch (``batch_size // world_size`` samples, collated on the CPU).
  ``ctx`` is a :class:`StepContext` (the modules, DDP-wrapped under DDP; the epoch and
  step; the :class:`~sslib.distributed.DistInfo`; the AMP autocast). It returns ``loss``,
  a () tensor to back-propagate, and ``parts``, a (len(loss_names),) tensor of the loss
  terms to log. :func:`fit` zeroes the gradients, back-propagates and steps every optimizer.
  For a resumed run to end as an uninterrupted one, the step draws no random numbers from
  torch's global RNG (a resumed process's RNG is not where the interrupted one's was);
- ``settings.fingerprint``: a plain dict of every setting a checkpoint must agree with to
  be resumed.

**fit does**

- sampling: global batch ``b`` of epoch ``e`` is positions ``[b*B, (b+1)*B)`` of a
  permutation seeded by (seed, e); rank ``r`` of ``W`` takes the r-th of W equal slices;
  incomplete last batches are dropped (as in IRN). Every sample's random draws are seeded
  by (seed, epoch, index), so a run is the same resumed, split over DDP ranks, or loaded
  by worker processes;
- DDP: each module is wrapped in ``DistributedDataParallel`` when ``world_size > 1``
  (gradients are averaged over the ranks); AMP: bfloat16 autocast on CUDA when asked;
- losses accumulated on the device, read back every :data:`LOG_EVERY` steps (progress bar,
  finiteness check) and at the end of each epoch (averaged over ranks);
- per epoch (rank 0): an atomic checkpoint whose bytes depend on the run alone
  (``{"epoch", "step", "fingerprint", "history", <module or optimizer name>: state dict
  or None}``, read with ``weights_only=True``) and the epoch times in a timings JSON;
- resume: a checkpoint at ``settings.checkpoint_path`` of an unfinished run with an equal
  fingerprint is loaded, and the run ends with the same weights as an uninterrupted one;
  an unreadable, foreign or finished run's checkpoint is ignored (message on stderr);
- a NaN or infinite loss raises :class:`NonFiniteLossError`; the last checkpoint stays.

``settings.name`` is the stage, also its params section: messages read ``<name>: ...`` and
name ``<name>.batch_size`` / ``<name>.lr``.

History rows (the checkpoint's and :attr:`FitResult.history`) are
``{"epoch", "step", "lr", "loss", *loss_names}``; :func:`write_losses` writes them as CSV.
What a finished run writes besides (the model, reports) is the stage's.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from . import distributed
from .config import ConfigError
from .distributed import DistInfo
from .io import atomic_path, write_json, write_text

__all__ = ["fit", "FitSettings", "FitResult", "StepContext", "StepFn", "NonFiniteLossError", "poly_lr", "set_lr",
           "check_batch_size", "EpochSampler", "SeededSamples", "write_losses", "save", "unwrap",
           "LOG_EVERY"]

#: steps between reading the running losses back from the device
LOG_EVERY = 10
_RESERVED = ("epoch", "step", "fingerprint", "history")


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite."""


def poly_lr(base: float, step: int, max_step: int, power: float) -> float:
    """Poly schedule: ``base * (1 - step / max_step) ** power`` (0 from ``max_step`` on)."""
    return base * (1.0 - min(step, max_step) / max_step) ** power


def set_lr(optimizers: Sequence[torch.optim.Optimizer | None], step: int, max_step: int, power: float) -> None:
    """Set every param group's ``lr`` to ``poly_lr(group["base_lr"], step, max_step, power)``,
    or at least the group's ``min_lr`` where it holds one (BECO's PolyLR floor)."""
    for opt in optimizers:
        if opt is not None:
            for g in opt.param_groups:
                g["lr"] = max(poly_lr(g["base_lr"], step, max_step, power), g.get("min_lr", 0.0))


# --------------------------------------------------------------------------- data
class SeededSamples(Dataset):
    """Index ``(epoch, i)`` -> sample ``i`` with its random draws seeded by (seed, epoch, i)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch * 10_007 + i) % (2 ** 63))
            return self.dataset[i]


class EpochSampler(Sampler):
    """This rank's share of each global batch of a seeded permutation of the data set.

    Global batch b of epoch e holds positions [b*B, (b+1)*B) of ``randperm(n)`` drawn with
    seed (seed, e); rank r of W takes the r-th of W equal slices of it (B % W == 0).
    Incomplete last batches are dropped, as in IRN. Yields ``(epoch, index)`` keys of
    :class:`SeededSamples`; set :attr:`epoch` before iterating.
    """

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1):
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


def check_batch_size(name: str, batch_size: int, world_size: int, n: int | None = None) -> None:
    """Raise ConfigError ``<name>.batch_size: ...`` unless the global batch splits evenly over
    the processes and (given the data set size ``n``) makes at least one step per epoch."""
    if batch_size % world_size:
        raise ConfigError(f"{name}.batch_size: {batch_size} does not split over {world_size} processes")
    if n is not None and n < batch_size:
        raise ConfigError(f"{name}.batch_size: {batch_size} is larger than the training split ({n} images)")


def _loader(dataset: Dataset, sampler: EpochSampler, num_workers: int, device: torch.device) -> DataLoader:
    return DataLoader(SeededSamples(dataset, sampler.seed), batch_size=sampler.batch // sampler.world,
                      sampler=sampler, num_workers=num_workers, drop_last=True,
                      persistent_workers=False, pin_memory=device.type == "cuda")


# --------------------------------------------------------------------------- the run's settings
@dataclass(frozen=True)
class FitSettings:
    """Everything :func:`fit` needs besides the data, the modules, the optimisers and the step."""

    #: the stage, also its params section (``train_cam``): the prefix of messages
    name: str
    seed: int
    epochs: int
    #: the global batch (over all processes); must split over them
    batch_size: int
    #: the checkpoint written each epoch (and resumed), and the epoch times' JSON
    checkpoint_path: Path
    timings_path: Path
    #: a plain dict of every setting a checkpoint must agree with to be resumed
    fingerprint: dict
    #: the names of the step's ``parts``, in order
    loss_names: tuple[str, ...]
    #: which run, for messages and the progress bar (``"ssc seed 0"``)
    run: str = ""
    poly_power: float = 0.9
    num_workers: int = 0
    #: bfloat16 autocast (on CUDA only)
    amp: bool = False
    stop_on_nonfinite: bool = True
    progress: bool = True
    #: end (as if interrupted) after this many epochs of this call (tests of resuming)
    stop_after_epochs: int | None = None
    #: the names of the scores :func:`fit`'s ``after_epoch`` returns (more history columns)
    epoch_metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint_path", Path(self.checkpoint_path))
        object.__setattr__(self, "timings_path", Path(self.timings_path))
        object.__setattr__(self, "loss_names", tuple(self.loss_names))
        object.__setattr__(self, "epoch_metrics", tuple(self.epoch_metrics))


# --------------------------------------------------------------------------- the step's view
@dataclass(frozen=True)
class StepContext:
    """What a step function gets besides the batch."""

    #: the stage's modules by name, wrapped in DistributedDataParallel when world_size > 1
    modules: Mapping[str, nn.Module | None]
    dist: DistInfo
    #: 0-based epoch and global step (``epoch * steps + i``)
    epoch: int
    step: int
    #: bfloat16 autocast is on (CUDA, asked for)
    amp: bool

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def autocast(self) -> ContextManager:
        """bfloat16 autocast on CUDA when AMP was asked for, else a no-op context."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()


#: ``step(batch, ctx) -> (loss: (), parts: (len(loss_names),))``
StepFn = Callable[[Any, StepContext], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class FitResult:
    """What :func:`fit` returns (on every rank)."""

    #: one row per epoch done: {"epoch", "step", "lr", "loss", *loss_names} (means over ranks)
    history: list[dict]
    #: optimisation steps per epoch, and over all epochs
    steps: int
    max_step: int
    device: torch.device
    world_size: int
    #: epochs done when ``stop_after_epochs`` ended the call early; None when the run finished
    stopped_at: int | None

    @property
    def finished(self) -> bool:
        return self.stopped_at is None


# --------------------------------------------------------------------------- checkpoints
def unwrap(m: nn.Module | None) -> nn.Module | None:
    """The module inside a DistributedDataParallel wrapper (or ``m`` itself)."""
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def save(obj: Any, path: Path) -> None:
    """torch.save, atomically, with bytes that depend on ``obj``'s contents alone: through a
    file object (given a path, torch names the archive inside after the random temporary
    file) and with strings interned (:func:`_canonical`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(_canonical(obj), f)


def _canonical(obj: Any) -> Any:
    """``obj`` with every string interned (containers rebuilt, tensors as they are).

    Pickle writes an object seen before as a back-reference, so equal strings that are one
    object in one run and two in another (keys of a state dict loaded from a checkpoint
    versus a fresh one's) give other bytes. Interned, equal strings are one object always.
    """
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        out = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        if getattr(obj, "__dict__", None):  # a state dict's _metadata (module versions)
            out.__dict__.update(_canonical(vars(obj)))
        return out
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(_canonical(x) for x in obj)
    return obj


def _state(epoch: int, step: int, fingerprint: dict, history: list[dict], modules: Mapping[str, nn.Module | None],
           optimizers: Mapping[str, torch.optim.Optimizer | None]) -> dict:
    """The checkpoint: tensors and plain values only (read with ``weights_only=True``), and no
    wall-clock time, so the same run writes the same bytes."""
    ck: dict[str, Any] = {"epoch": epoch, "step": step, "fingerprint": fingerprint, "history": history}
    for k, m in modules.items():
        ck[k] = unwrap(m).state_dict() if m is not None else None
    for k, o in optimizers.items():
        ck[k] = o.state_dict() if o is not None else None
    return ck


def _load_checkpoint(name: str, path: Path, fingerprint: dict, epochs: int, keys: dict[str, bool]) -> dict | None:
    """The checkpoint at ``path`` if it is an unfinished run with this run's settings, else None.

    ``keys``: module/optimizer name -> whether it is present (not None) in this run. A
    finished run's checkpoint is not resumed: asking for the run again (DVC does so only
    when something it depends on changed) trains it again.
    """
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a checkpoint is written atomically; unreadable means foreign
        print(f"{name}: ignoring unreadable checkpoint {path} ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    if (not isinstance(ck, dict) or ck.get("fingerprint") != fingerprint
            or any(k not in ck or (ck[k] is not None) != present for k, present in keys.items())):
        print(f"{name}: {path} was written with other settings; starting afresh", file=sys.stderr)
        return None
    if ck.get("epoch", 0) >= epochs:
        print(f"{name}: {path} is a finished run; training again from the start", file=sys.stderr)
        return None
    return ck


def _resume(name: str, run: str, path: Path, fingerprint: dict, epochs: int, modules: Mapping[str, nn.Module | None],
            optimizers: Mapping[str, torch.optim.Optimizer | None], timings_path: Path, dist: DistInfo,
            fields: list[str]) -> tuple[int, list[dict], list[float]]:
    """Load a resumable checkpoint into the modules and optimizers (``fields``: a history row's keys).

    Returns (epochs done, history, epoch times), ``(0, [], [])`` when starting afresh.
    """
    objs = {**modules, **optimizers}
    ck = _load_checkpoint(name, path, fingerprint, epochs, {k: o is not None for k, o in objs.items()})
    if ck is None:
        return 0, [], []
    for k, o in objs.items():
        if o is not None:
            o.load_state_dict(ck[k])
    if dist.is_main:
        print(f"{name}: resuming {run} after epoch {ck['epoch']}", file=sys.stderr)
    history = [{k: row[k] for k in fields} for row in ck["history"]]
    return ck["epoch"], history, _read_epoch_times(timings_path, ck["epoch"])


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


def write_losses(path: Path, history: list[dict]) -> None:
    """The history as CSV (columns: the first row's keys; floats to 6 significant digits)."""
    fields = list(history[0]) if history else ["epoch", "step", "lr", "loss"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in fields})
    write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- the loop
def _wrap(modules: Mapping[str, nn.Module | None], dist: DistInfo) -> dict[str, nn.Module | None]:
    """Each module in train mode, and in DistributedDataParallel when world_size > 1."""
    out: dict[str, nn.Module | None] = {}
    for k, m in modules.items():
        if m is not None:
            m.train()
            if dist.world_size > 1:
                ddp = dict(device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
                m = nn.parallel.DistributedDataParallel(m, **ddp)
        out[k] = m
    return out


@dataclass
class _Loop:
    """One run's fixed parts; :meth:`epoch` trains one epoch."""

    settings: FitSettings
    loader: DataLoader
    sampler: EpochSampler
    modules: dict[str, nn.Module | None]
    optimizers: list[torch.optim.Optimizer]
    step_fn: StepFn
    dist: DistInfo
    max_step: int
    #: autocast is on: asked for, and on CUDA
    amp: bool
    bar: Any

    @property
    def loss_names(self) -> tuple[str, ...]:
        return self.settings.loss_names

    @property
    def steps(self) -> int:
        return self.sampler.steps_per_epoch()

    def epoch(self, epoch: int) -> tuple[list[float], float]:
        """Train epoch ``epoch`` (0-based); returns (mean [loss, *parts] over ranks, seconds)."""
        self.sampler.epoch = epoch
        sums = torch.zeros(1 + len(self.loss_names), device=self.dist.device)  # this epoch, this rank
        t0, seen = time.perf_counter(), 0
        for i, batch in enumerate(self.loader):
            step = epoch * self.steps + i
            set_lr(self.optimizers, step, self.max_step, self.settings.poly_power)
            ctx = StepContext(self.modules, self.dist, epoch, step, self.amp)
            loss, parts = self.step_fn(batch, ctx)
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in self.optimizers:
                opt.step()
            sums += torch.cat([loss.detach().reshape(1), parts.detach().reshape(-1)]).float()
            seen += self.sampler.batch
            self.bar.update()
            if (i + 1) % LOG_EVERY == 0 or i + 1 == self.steps:
                mean = (sums / (i + 1)).tolist()  # the one read-back every LOG_EVERY steps
                self.check(epoch, mean)
                self.bar.set_postfix({k: f"{x:.4g}" for k, x in zip(("loss", *self.loss_names), mean)},
                                     ips=f"{seen / (time.perf_counter() - t0):.1f}")
        seconds = time.perf_counter() - t0
        if self.dist.world_size > 1:
            import torch.distributed as tdist

            tdist.all_reduce(sums)
            sums /= self.dist.world_size
        mean = (sums / self.steps).tolist()
        self.check(epoch, mean)
        return mean, seconds

    def check(self, epoch: int, mean: list[float]) -> None:
        """Raise NonFiniteLossError if a mean loss is NaN/inf (and the run stops on those)."""
        s = self.settings
        if s.stop_on_nonfinite and not all(math.isfinite(x) for x in mean):
            kept = (f"the last good checkpoint ({s.checkpoint_path}, after epoch {epoch}) is kept" if epoch
                    else "no checkpoint was written")
            raise NonFiniteLossError(
                f"{s.name} {s.run}: a loss became NaN or infinite in epoch {epoch + 1} "
                f"(mean {', '.join(('loss', *s.loss_names))} = {[round(x, 4) for x in mean]}); "
                f"stopped, {kept}. Lower {s.name}.lr (or the loss weights) or check the data.")


def _check_names(modules: Mapping[str, Any], optimizers: Mapping[str, Any]) -> None:
    """The names are the checkpoint's keys: distinct, and none of its own."""
    clash = (set(modules) & set(optimizers)) | ((set(modules) | set(optimizers)) & set(_RESERVED))
    if clash:
        raise ValueError(f"module/optimizer names must be distinct and not {_RESERVED}: {sorted(clash)}")


#: ``after_epoch(epoch, history) -> {name: score}``: after epoch ``epoch`` (1-based) is trained,
#: on every rank, with the history of the epochs before it; before the epoch's checkpoint
AfterEpochFn = Callable[[int, list], "dict[str, float]"]


def fit(settings: FitSettings, dataset: Dataset, modules: Mapping[str, nn.Module | None],
        optimizers: Mapping[str, torch.optim.Optimizer | None], step: StepFn,
        after_epoch: AfterEpochFn | None = None) -> FitResult:
    """Train ``modules`` on ``dataset`` for ``settings.epochs`` epochs, resuming a matching checkpoint.

    ``after_epoch`` (e.g. a score on val that keeps the best epoch's weights) returns the
    scores ``settings.epoch_metrics`` names; they join the epoch's history row (and so the
    checkpoint and ``losses.csv``), so a resumed run knows them.

    Raises:
        ConfigError: the batch does not split over the processes or exceeds the data set.
        NonFiniteLossError: a mean loss became NaN/inf (with ``settings.stop_on_nonfinite``).
    """
    s, dist = settings, distributed.init()
    _check_names(modules, optimizers)
    check_batch_size(s.name, s.batch_size, dist.world_size, len(dataset))
    sampler = EpochSampler(len(dataset), s.batch_size, s.seed, dist.rank, dist.world_size)
    steps = sampler.steps_per_epoch()
    fields = ["epoch", "step", "lr", "loss", *s.loss_names, *s.epoch_metrics]  # a history row's keys
    start, history, epoch_s = _resume(s.name, s.run, s.checkpoint_path, s.fingerprint, s.epochs, modules,
                                      optimizers, s.timings_path, dist, fields)
    end = s.epochs if s.stop_after_epochs is None else min(s.epochs, start + s.stop_after_epochs)
    from tqdm.auto import tqdm

    bar = tqdm(total=(s.epochs - start) * steps, desc=f"{s.name} {s.run}".strip(), unit="step",
               disable=not (s.progress and dist.is_main))
    loop = _Loop(s, _loader(dataset, sampler, s.num_workers, dist.device), sampler, _wrap(modules, dist),
                 [o for o in optimizers.values() if o is not None], step, dist, steps * s.epochs,
                 s.amp and dist.device.type == "cuda", bar)
    try:
        for epoch in range(start, end):
            mean, seconds = loop.epoch(epoch)
            epoch_s.append(seconds)
            lr = loop.optimizers[0].param_groups[0]["lr"] if loop.optimizers else 0.0
            scores = after_epoch(epoch + 1, history) if after_epoch is not None else {}
            history.append(dict(zip(fields, [epoch + 1, (epoch + 1) * steps, lr, *mean,
                                             *(float(scores[k]) for k in s.epoch_metrics)])))
            if dist.is_main:
                save(_state(epoch + 1, (epoch + 1) * steps, s.fingerprint, history, modules, optimizers),
                     s.checkpoint_path)
                _write_timings(s.timings_path, epoch_s, steps * s.batch_size)
    finally:
        bar.close()
    return FitResult(history, steps, steps * s.epochs, dist.device, dist.world_size,
                     end if end < s.epochs else None)
