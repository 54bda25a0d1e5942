"""Train IRN's class-boundary network of one downstream run (the ``train_irn`` stage).

One run, top to bottom (IRN's ``step/train_irn.py`` without the displacement branch):

1. data: the train split's images with the run's IR labels (the ``make_ir_labels``
   stage's PNGs; a missing one stops the run before training, an unreadable or mis-sized
   one when it is first drawn, with :class:`sslib.io.DataError` naming it), augmented as IRN does
   (:class:`sslib.data.ScaleCropTransform`: rescale by ``train_irn.scale_range``, flip,
   ``crop_size`` crop) and the label downscaled x0.25 (nearest) to the boundary grid;
2. model: :class:`sslib.models.BoundaryNet` on a backbone of the CAM network's architecture
   with ImageNet weights (``model.backbone`` with ``model.backbone_weights``, not the trained
   CAM network's weights, as IRN), frozen, fixed statistics; only
   the edge branch trains;
3. optimiser: SGD on the edge branch with ``lr``, ``weight_decay``, ``momentum`` and the
   poly schedule (IRN's PolyOptimizer; see ``train_irn.momentum`` in params.yaml);
4. loss: IRN's affinity loss on the pairs within ``radius`` of the reduced label
   (:func:`sslib.affinity.affinity_loss`: ``(bg_pos / 2 + fg_pos / 2 + neg) / 2``);
5. per epoch an atomic checkpoint; at the end ``model.pt`` ({"net", "model", "variant",
   "seed"}, read by :func:`sslib.models.load_boundary_net`), then ``losses.csv`` and
   ``metrics.json`` under :func:`sslib.paths.irn_reports`.

The loop (sampling, poly lr, resume, the NaN stop, checkpoints, DDP, AMP, timings) is
:func:`sslib.training.fit`, and the run's shape around it (the start, the reports, the entry
points) :mod:`sslib.stages._training`, both shared with ``train_cam``. As there, an interrupted run
resumes from its checkpoint and ends with the weights of an uninterrupted one; the
reports are written only when the run has finished.

Shell::

    python -m sslib.stages.train_irn --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.stages.train_irn --variant ssc --seed 0
"""
from __future__ import annotations

import sys
from typing import Any

import torch
from torch.utils.data import Dataset

from .. import paths, training
from ..config import Params
from ..training import StepContext
from . import _training

__all__ = ["run", "train_irn", "LOSS_NAMES"]

#: the loss terms a step logs (after the total, ``loss``)
LOSS_NAMES = ("bg_pos", "fg_pos", "neg")
#: the boundary map's stride: the IR label is reduced by 1 / LABEL_STRIDE
LABEL_STRIDE = 4


def _run(params: Params, variant: str, seed: int) -> _training.TrainingRun:
    """Run (``variant``, ``seed``) and its files: ``paths.irn_dir(...)``, ``paths.irn_checkpoint(...)``,
    ``paths.irn_model(...)``, ``paths.irn_reports(...)``."""
    return _training.TrainingRun("train_irn", variant, seed, paths.irn_dir(params, variant, seed),
                                 paths.irn_checkpoint(params, variant, seed), paths.irn_model(params, variant, seed),
                                 paths.irn_reports(variant, seed))


def _dataset(params: Params, variant: str, seed: int) -> Dataset:
    """Train images with their IR labels (``ir_label``: (crop/4, crop/4) int64), IRN-augmented."""
    from ..data import LabelMapDataset, ScaleCropTransform, build_dataset
    from ..pseudo_labels import load_ir_label

    t = params.train_irn
    base = build_dataset(params.data, params.data.train_split, with_mask=False)
    labels = paths.ir_label_dir(params, variant, seed)
    return LabelMapDataset(base, "ir_label", lambda name: labels / f"{name}.png", load_ir_label,
                           ScaleCropTransform(t.scale_range, t.crop_size, t.hflip, label_scale=1 / LABEL_STRIDE))


def _check_labels(params: Params, variant: str, seed: int, names: list[str]) -> None:
    """Raise DataError naming the first missing IR label, before the network is built (an
    unreadable or mis-sized one is named when the sampler first draws it)."""
    from ..io import DataError

    folder = paths.ir_label_dir(params, variant, seed)
    missing = [n for n in names if not (folder / f"{n}.png").is_file()]
    if missing:
        raise DataError(f"{folder / (missing[0] + '.png')}: IR label file missing ({len(missing)} of {len(names)} "
                        f"missing; run the make_ir_labels stage for {variant} seed {seed})")


def _fingerprint(params: Params, variant: str, seed: int) -> dict:
    """What a checkpoint must agree with to be resumed (not the output paths or worker count)."""
    meta = paths.ir_label_dir(params, variant, seed) / "meta.json"
    return {"variant": variant, "seed": seed, "train": _training.train_settings(params.train_irn),
            "model": {k: getattr(params.model, k) for k in ("backbone", "backbone_weights")},
            "data": _training.data_settings(params.data), "ir_labels": _training.file_md5(meta)}


def _build(params: Params, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The boundary network and SGD over its edge branch (every group holds ``base_lr``)."""
    from ..models import BoundaryNet

    t = params.train_irn
    net = BoundaryNet(backbone=params.model.backbone, weights=params.model.backbone_weights)
    net = net.to(device, memory_format=torch.channels_last)  # 39 % faster CPU step (docs/measurements.md)
    _, head = net.param_groups()
    opt = torch.optim.SGD([{"params": head, "lr": t.lr, "base_lr": t.lr}], lr=t.lr, momentum=t.momentum,
                          weight_decay=t.weight_decay)
    return net, opt


def _affinity_step(radius: int):
    """The step: IRN's affinity loss of the boundary logits against the reduced IR labels."""
    from ..affinity import affinity_loss

    def step(batch: dict[str, Any], ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """batch: image (N, 3, S, S), ir_label (N, S/4, S/4). Returns the total () and
        [bg_pos, fg_pos, neg] (3,)."""
        image = batch["image"].to(ctx.device, non_blocking=True)
        label = batch["ir_label"].to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = ctx.modules["net"](image)                       # (N, 1, S/4, S/4)
        losses = affinity_loss(logits.float(), label, radius)
        return losses["total"], torch.stack([losses[k] for k in LOSS_NAMES])

    return step


def train_irn(params: Params, variant: str, seed: int, *, progress: bool = True,
              stop_after_epochs: int | None = None) -> dict:
    """Train the boundary network of run (``variant``, ``seed``); resume its checkpoint if any.

    Writes ``paths.irn_checkpoint(...)`` each epoch and ``paths.irn_model(...)`` at the end;
    rank 0 also writes ``paths.irn_reports(...)/losses.csv`` and ``metrics.json``.

    Returns:
        The metrics dict, or ``{"stopped_at_epoch": e}`` when ``stop_after_epochs`` ended it.

    Raises:
        DataError: an IR label is missing or unreadable (named).
        NonFiniteLossError: a loss became NaN/inf (with ``train_irn.stop_on_nonfinite``).
    """
    t, job = params.train_irn, _run(params, variant, seed)
    dist = job.start(t.batch_size)
    dataset = _dataset(params, variant, seed)
    _check_labels(params, variant, seed, dataset.names)
    fingerprint = _fingerprint(params, variant, seed)
    torch.manual_seed(seed)
    net, opt = _build(params, dist.device)
    settings = job.fit_settings(t, fingerprint, LOSS_NAMES, progress=progress, stop_after_epochs=stop_after_epochs)
    result = training.fit(settings, dataset, {"net": net}, {"opt": opt}, _affinity_step(t.radius))
    return job.finish(result, dist, t.epochs, LOSS_NAMES,
                      lambda: {"net": net.state_dict(), "model": {"backbone": params.model.backbone},
                               "variant": variant, "seed": seed},
                      about={"backbone": params.model.backbone})


def run(params: Params, variant: str, seed: int, progress: bool = True) -> dict:
    """Train one run in this process, or under ``torchrun`` when ``runs.devices > 1``."""
    return _training.run("train_irn", train_irn, paths.irn_reports, params, variant, seed, progress)


def main(argv: list[str] | None = None) -> int:
    return _training.main("train_irn", __doc__, train_irn, argv)


if __name__ == "__main__":
    sys.exit(main())
