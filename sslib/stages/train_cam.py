"""Train the CAM network of one ablation variant and seed (the ``train_cam`` stage).

One run, top to bottom:

1. data: the training split with IRN/SSC augmentation and its superpixels; every
   sample's random draws are seeded by (seed, epoch, index), so a run is the same
   whether it is resumed, split over DDP ranks, or loaded by worker processes;
2. models: :class:`~sslib.models.CAMNet` (``model.backbone``, ``ssc.expansion``) and, with reconstruction,
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

This module holds what is particular to CAM training (data, models and optimisers, the
fingerprint of the settings, the SSC step, the metrics and the model file of a finished
run); the loop itself (sampling, poly lr, resume, checkpoints, DDP, AMP, timings) is
:func:`sslib.training.fit`, and the run's shape around it (the start, the reports, the
entry points) :mod:`sslib.stages._training`, both shared with the other training stages.

Run it from a notebook (:func:`run`, which launches ``torchrun`` when
``runs.devices > 1``) or from the shell::

    python -m sslib.stages.train_cam --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.stages.train_cam --variant ssc --seed 0
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .. import paths, training
from ..config import Params, VariantConfig, chosen, to_dict, variant_config
from ..training import LOG_EVERY, NonFiniteLossError, StepContext, poly_lr
from . import _training

__all__ = ["run", "train_cam", "NonFiniteLossError", "poly_lr", "LOG_EVERY"]

#: the loss terms a step logs (after the total, ``loss``)
LOSS_NAMES = ("cls", "rec", "align")


def _run(params: Params, variant: str, seed: int) -> _training.TrainingRun:
    """Run (``variant``, ``seed``) and its files: ``paths.train_dir(...)``, ``paths.checkpoint(...)``,
    ``paths.model(...)``, ``paths.train_reports(...)``."""
    return _training.TrainingRun("train_cam", variant, seed, paths.train_dir(params, variant, seed),
                                 paths.checkpoint(params, variant, seed), paths.model(params, variant, seed),
                                 paths.train_reports(variant, seed))


# --------------------------------------------------------------------------- data, models, settings
def _dataset(params: Params, v: VariantConfig) -> Dataset:
    """The training split with the IRN/SSC augmentation, and its superpixels when ``v`` aligns."""
    from ..data import build_dataset, build_train_transform

    return build_dataset(params.data, params.data.train_split, transform=build_train_transform(params.augment),
                         superpixel_dir=params.superpixels.out_dir if v.alignment else None, with_mask=False)


@dataclass
class _Parts:
    net: nn.Module
    decoder: nn.Module | None
    rec_loss: nn.Module | None
    opt: torch.optim.Optimizer
    dec_opt: torch.optim.Optimizer | None

    def modules(self) -> dict[str, nn.Module | None]:
        """What is trained and checkpointed (the reconstruction loss is neither)."""
        return {"net": self.net, "decoder": self.decoder}

    def optimizers(self) -> dict[str, torch.optim.Optimizer | None]:
        return {"opt": self.opt, "dec_opt": self.dec_opt}


def _fingerprint(params: Params, variant: str, seed: int, v: VariantConfig) -> dict:
    """What a checkpoint must agree with to be resumed (not the output paths or worker count)."""
    inputs = {}  # the data a run reads, by the files that summarise it
    for f in (Path(params.data.prepared_dir) / "labels.json", Path(params.superpixels.out_dir) / "meta.json"):
        inputs[str(f)] = _training.file_md5(f)
    return {"variant": variant, "seed": seed, "settings": to_dict(v),
            "train": _training.train_settings(params.train_cam), "model": to_dict(params.model),
            "augment": to_dict(params.augment), "data": _training.data_settings(params.data), "inputs": inputs}


def _build(params: Params, v: VariantConfig, num_classes: int, device: torch.device) -> _Parts:
    """CAMNet with SGD (classifier at ``classifier_lr_mult`` x lr) and, with reconstruction, the
    decoder with Adam and the reconstruction loss. Every param group holds its ``base_lr``."""
    from ..models import CAMNet, Decoder, build_reconstruction_loss

    t, m = params.train_cam, params.model
    expansion, settings = chosen(v, "expansion")
    net = CAMNet(num_classes, backbone=m.backbone, expansion=(expansion.name, settings), weights=m.backbone_weights,
                 frozen_stages=m.frozen_stages, bn_eval=m.bn_eval)
    net = net.to(device, memory_format=torch.channels_last)  # 30 % faster CPU step (docs/measurements.md)
    backbone, classifier = net.param_groups()
    opt = torch.optim.SGD([
        {"params": backbone, "lr": t.lr, "base_lr": t.lr},
        {"params": classifier, "lr": t.lr * t.classifier_lr_mult, "base_lr": t.lr * t.classifier_lr_mult},
    ], lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    decoder = rec_loss = dec_opt = None
    if v.reconstruction:
        decoder = Decoder(num_classes, width=m.decoder_width).to(device)
        rec_loss = build_reconstruction_loss(v.rec_loss, m.vgg_weights, m.loss_network).to(device)
        dec_opt = torch.optim.Adam([{"params": list(decoder.parameters()), "base_lr": t.decoder_lr}],
                                   lr=t.decoder_lr, betas=tuple(t.decoder_betas))
    return _Parts(net, decoder, rec_loss, opt, dec_opt)


# --------------------------------------------------------------------------- the SSC step
def _ssc_step(v: VariantConfig, rec_loss: nn.Module | None):
    """The step of variant ``v``: cls + beta_rec * rec + beta_align * align (after the warm-up)."""
    from ..losses import alignment_loss, classification_loss

    def step(batch: dict[str, Any], ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """batch: image (N, 3, H, W), label (N, C) multi-hot, superpixels (N, H, W) when aligning.
        Returns the loss () and its parts [cls, rec, align] (3,)."""
        net, decoder = ctx.modules["net"], ctx.modules["decoder"]
        image = batch["image"].to(ctx.device, non_blocking=True)
        label = batch["label"].to(ctx.device, non_blocking=True)
        zero = image.new_zeros(())
        with ctx.autocast():
            scores, cams = net(image)  # (N, C), (N, C, H/16, W/16)
            cams = cams.contiguous()   # the decoder runs faster in the default layout
            l_cls = classification_loss(scores.float(), label)
            l_rec = zero
            if decoder is not None:
                l_rec = rec_loss(decoder(cams).float(), image)
        l_align = zero
        if v.alignment and ctx.epoch >= v.warmup_epochs:
            sp = batch["superpixels"].to(ctx.device, non_blocking=True)
            # labels from the loader (CPU): only present maps are computed, without a device sync
            l_align = alignment_loss(cams.float(), sp, batch["label"], v.align_threshold, v.align_erosion)
            if ctx.dist.world_size > 1:  # DDP averages per-rank means: reweight to the global mean
                l_align = l_align * _share_of_maps(label, ctx.dist.world_size)
        loss = l_cls + v.beta_rec * l_rec + v.beta_align * l_align
        return loss, torch.stack([l_cls, l_rec, l_align])

    return step


def _share_of_maps(label: torch.Tensor, world: int) -> torch.Tensor:
    """world * (present maps here) / (present maps on all ranks): a device tensor, no sync."""
    import torch.distributed as tdist

    local = label.sum().float()
    total = local.clone()
    tdist.all_reduce(total)
    return local * world / total.clamp_min(1.0)


# --------------------------------------------------------------------------- the run
def train_cam(params: Params, variant: str, seed: int, *, progress: bool = True,
              stop_after_epochs: int | None = None) -> dict:
    """Train variant ``variant`` with seed ``seed``; resume from its checkpoint if there is one.

    Writes ``paths.train_dir(...)/checkpoint.pt`` each epoch and, when all epochs are done,
    ``model.pt`` ({"net", "decoder", "classes", "variant", "seed", "settings", "model", "expansion"});
    rank 0 also writes ``paths.train_reports(...)/losses.csv`` and ``metrics.json``.

    Args:
        stop_after_epochs: end (as if interrupted) after this many epochs of this call;
            for tests of resuming.

    Returns:
        The metrics dict (also written to metrics.json), or ``{"stopped_at_epoch": e}``.

    Raises:
        NonFiniteLossError: a loss became NaN/inf (with ``train_cam.stop_on_nonfinite``).
    """
    from ..data import dataset_classes

    t, v, job = params.train_cam, variant_config(params, variant), _run(params, variant, seed)
    fingerprint = _fingerprint(params, variant, seed, v)
    dist = job.start(t.batch_size)
    classes = dataset_classes(params.data)
    dataset = _dataset(params, v)
    torch.manual_seed(seed)
    parts = _build(params, v, len(classes), dist.device)
    settings = job.fit_settings(t, fingerprint, LOSS_NAMES, progress=progress, stop_after_epochs=stop_after_epochs)
    result = training.fit(settings, dataset, parts.modules(), parts.optimizers(), _ssc_step(v, parts.rec_loss))
    return job.finish(result, dist, t.epochs, LOSS_NAMES, lambda: _model_file(params, variant, seed, parts, classes))


def _model_file(params: Params, variant: str, seed: int, parts: _Parts, classes: list[str]) -> dict:
    """What model.pt holds."""
    return {"net": parts.net.state_dict(), "decoder": parts.decoder.state_dict() if parts.decoder is not None else None,
            "classes": list(classes), "variant": variant, "seed": seed,
            "settings": to_dict(variant_config(params, variant)), "model": to_dict(params.model),
            "expansion": parts.net.expansion}


# --------------------------------------------------------------------------- entry points
def run(params: Params, variant: str, seed: int, progress: bool = True) -> dict:
    """Train one run in this process, or under ``torchrun`` when ``runs.devices > 1``."""
    return _training.run("train_cam", train_cam, paths.train_reports, params, variant, seed, progress)


def main(argv: list[str] | None = None) -> int:
    return _training.main("train_cam", __doc__, train_cam, argv)


if __name__ == "__main__":
    sys.exit(main())
