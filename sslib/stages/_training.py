"""What the training stages (``train_cam``, ``train_irn``, ``train_seg``) share around
:func:`sslib.training.fit`.

Each stage trains one run (variant, seed) in the same shape; the stage keeps only its data,
its input checks, its fingerprint, its networks and optimisers, its step, its metrics and
what its model file holds:

1. :meth:`TrainingRun.start`: join torchrun's process group and check that the batch
   splits over the processes (and the stage's own check); then, on rank 0 and before any
   rank can write, remove what a killed run left in the run's folder and the previous
   model, so a later stage cannot pick up an old model beside a new, unfinished checkpoint;
2. the stage's data, checks and fingerprint (:func:`train_settings`, :func:`data_settings`
   and :func:`file_md5` are the parts the fingerprints share); ``torch.manual_seed(seed)``
   and its networks;
3. :func:`sslib.training.fit` with :meth:`TrainingRun.fit_settings` (the section's
   epochs, batch, schedule, workers, AMP and NaN stop; the run's checkpoint and timings);
4. :meth:`TrainingRun.finish`: a run that ``stop_after_epochs`` ended returns
   ``{"stopped_at_epoch": e}``; a finished one its metrics, and rank 0 writes the model, then
   ``losses.csv`` and ``metrics.json`` (last: only a finished run replaces the reports);
   every rank waits for that.

:func:`run` (in this process, or under ``torchrun`` when ``runs.devices > 1``) and
:func:`main` (the shell) are each stage's entry points.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import distributed, paths, training
from ..config import Params, to_dict
from ..distributed import DistInfo
from ..io import remove_stale_temps, write_json
from ..training import FitResult, FitSettings, NonFiniteLossError
from . import common

__all__ = ["TrainingRun", "train_settings", "data_settings", "file_md5", "run", "main"]

#: ``train(params, variant, seed, *, progress) -> metrics``: a stage's training function
TrainFn = Callable[..., dict]


def train_settings(section: Any) -> dict:
    """A training section's settings for the fingerprint: not its output folder or worker count."""
    t = to_dict(section)
    for k in ("out_dir", "num_workers"):
        t.pop(k)
    return t


def data_settings(data_cfg: Any) -> dict:
    """The ``data`` keys a training run's fingerprint holds: the data set, its root and train split."""
    return {k: getattr(data_cfg, k) for k in ("dataset", "root", "train_split")}


def file_md5(path: Path) -> str | None:
    """The md5 of a file that summarises a run's inputs (None when there is none)."""
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


@dataclass(frozen=True)
class TrainingRun:
    """One run of a training stage and the files it writes."""

    stage: str
    variant: str
    seed: int
    #: the run's folder (the checkpoint and the model)
    folder: Path
    checkpoint: Path
    model: Path
    #: the folder of ``losses.csv`` and ``metrics.json``
    reports: Path

    @property
    def timings(self) -> Path:
        """Wall-clock seconds: ``{"epoch_s": [...], "train_time_s", "images_per_s"}``."""
        return paths.timings(self.stage, paths.run_name(self.variant, self.seed))

    def start(self, batch_size: int, check: Callable[[DistInfo], None] | None = None) -> DistInfo:
        """Check the batch splits over the processes (then ``check(dist)``); then (rank 0),
        before any rank can write, remove what a killed run left and the previous model."""
        dist = distributed.init()
        training.check_batch_size(self.stage, batch_size, dist.world_size)
        if check is not None:
            check(dist)
        if dist.is_main:
            remove_stale_temps(self.folder)
            self.model.unlink(missing_ok=True)
        return dist

    def fit_settings(self, section: Any, fingerprint: dict, loss_names: Sequence[str], *, progress: bool,
                     stop_after_epochs: int | None) -> FitSettings:
        """:func:`sslib.training.fit`'s settings from the stage's params section."""
        t = section
        return FitSettings(self.stage, run=f"{self.variant} seed {self.seed}", seed=self.seed, epochs=t.epochs,
                           batch_size=t.batch_size, poly_power=t.poly_power, num_workers=t.num_workers, amp=t.amp,
                           stop_on_nonfinite=t.stop_on_nonfinite, checkpoint_path=self.checkpoint,
                           timings_path=self.timings, fingerprint=fingerprint, loss_names=loss_names,
                           progress=progress, stop_after_epochs=stop_after_epochs)

    def finish(self, result: FitResult, dist: DistInfo, epochs: int, loss_names: Sequence[str],
               model: Callable[[], dict], *, settings: dict | None = None, about: dict | None = None) -> dict:
        """The metrics of a finished run; rank 0 writes ``model()`` to :attr:`model`, then the reports.

        The metrics: ``{"variant", "seed", **settings, "epochs", "steps", **about, "final",
        "device", "world_size"}`` (``final``: the last epoch's ``loss`` and ``loss_names``).
        Returns ``{"stopped_at_epoch": e}`` (and writes nothing) when the run has not finished.
        """
        if not result.finished:
            return {"stopped_at_epoch": result.stopped_at}
        metrics = {"variant": self.variant, "seed": self.seed, **(settings or {}), "epochs": epochs,
                   "steps": result.max_step, **(about or {}),
                   "final": {k: result.history[-1][k] for k in ("loss", *loss_names)},
                   "device": str(result.device), "world_size": result.world_size}
        if dist.is_main:
            training.save(model(), self.model)
            training.write_losses(self.reports / paths.LOSSES, result.history)
            write_json(self.reports / paths.METRICS, metrics)
        distributed.barrier()
        return metrics


def run(stage: str, train: TrainFn, reports: Callable[[str, int], Path], params: Params, variant: str, seed: int,
        progress: bool = True) -> dict:
    """``train`` one run in this process, or under ``torchrun`` when ``runs.devices > 1`` (then
    the metrics are read back from ``reports(variant, seed)/metrics.json``)."""
    return distributed.run_here_or_torchrun(stage, params, variant, seed,
                                            lambda: train(params, variant, seed, progress=progress),
                                            reports(variant, seed) / paths.METRICS)


def main(stage: str, doc: str, train: TrainFn, argv: list[str] | None = None) -> int:
    """The shell: ``--variant V --seed S`` (progress bar on rank 0); a NaN loss is an error."""
    return common.cli(stage, doc, lambda p, a: train(p, a.variant, a.seed, progress=distributed.is_rank0()),
                      argv, common.add_run_args, errors=(NonFiniteLossError,))
