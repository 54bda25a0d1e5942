"""Train the segmentation network of one downstream run on its pseudo labels (the ``train_seg`` stage).

One run, top to bottom (BECO's ``main.py`` with SSC's configuration):

1. data: the train split's images with the run's pseudo labels and confidence masks (the
   ``make_pseudo_labels`` stage's PNGs; a missing one stops the run before training, a
   mis-sized or unreadable one when it is first drawn, with :class:`sslib.io.DataError`
   naming the file), augmented as BECO does (:class:`sslib.data.ScaleCropTransform`:
   rescale by ``train_seg.scale_range``, flip, ``crop_size`` crop; padding is ignored);
2. model: :class:`sslib.models.DeepLabV2` on ``train_seg.backbone`` with ImageNet weights
   (``backbone_weights``; never a COCO-pretrained DeepLab), BatchNorm training
   (SyncBatchNorm under DDP on CUDA); two networks with ``method: beco``;
3. optimiser: SGD over every parameter (the head at ``lr * head_lr_mult``), momentum,
   weight decay, the poly schedule down to ``min_lr`` (BECO's PolyLR);
4. loss, on the logits upsampled to the crop:

   * ``method: ce``: cross-entropy on the pseudo label, only inside the confidence mask
     with ``confidence: true`` (:func:`sslib.losses.seg_cross_entropy`);
   * ``method: beco``: BECO's co-training (:mod:`sslib.beco`): ClassMix of image pairs
     (offline labels during ``beco.warm_up_epochs``; after it, online labels of the two
     networks' averaged logits, confident above ``beco.online_threshold``, and a boundary
     band x(1 + ``boundary_weight``) around the pasted regions), each network's CE inside
     the mask plus the other network's argmax outside it. Not done: BECO's photometric
     augmentation of the mixed images (``mix_aug``: albumentations colour transforms);

5. per epoch an atomic checkpoint; at the end ``model.pt`` (``{"nets", "model", "method",
   "variant", "seed"}``, read by :func:`sslib.models.load_seg_nets`), then ``losses.csv``
   and ``metrics.json`` under :func:`sslib.paths.seg_reports` (with the initialisation).

The loop (sampling, poly lr, resume, NaN stop, checkpoints, DDP, AMP, timings) is
:func:`sslib.training.fit`, shared with ``train_cam`` and ``train_irn``. The BECO step's
random draws (which images are mixed, which classes pasted) come from a generator seeded
by (seed, step), so an interrupted run resumes to the weights of an uninterrupted one.

Shell::

    python -m sslib.stages.train_seg --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.stages.train_seg --variant ssc --seed 0
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import distributed, paths, training
from ..config import Params, to_dict
from ..io import DataError, remove_stale_temps, write_json
from ..training import NonFiniteLossError, StepContext
from . import common

__all__ = ["run", "train_seg", "loss_names", "init_record"]


def loss_names(method: str) -> tuple[str, ...]:
    """The loss terms a step logs after the total: ``ce`` (one network) or BECO's four."""
    return ("ce",) if method == "ce" else ("ce1", "ce2", "cot1", "cot2")


def timings_path(variant: str, seed: int) -> Path:
    return paths.timings("train_seg", paths.run_name(variant, seed))


def init_record(params: Params) -> str:
    """What the backbone started from, for the metrics (``imagenet: <file>`` or ``random``)."""
    w = params.train_seg.backbone_weights
    if w == "none":
        return "random"
    return "imagenet: packaged efficientnet-lite0 file" if w == "packaged" else f"imagenet: {Path(w).name}"


def _dataset(params: Params, variant: str, seed: int) -> Dataset:
    """Train images with ``pseudo_label`` and ``confidence`` (crop, crop) int64 maps, augmented."""
    from ..data import LabelMapDataset, ScaleCropTransform, build_dataset, dataset_classes
    from ..pseudo_labels import load_confidence_mask, load_pseudo_label

    t = params.train_seg
    k = len(dataset_classes(params.data)) + 1
    base = build_dataset(params.data, params.data.train_split, with_mask=False)
    labels = LabelMapDataset(base, "pseudo_label", lambda n: paths.pseudo_label_file(params, variant, seed, n),
                             lambda p, hw: load_pseudo_label(p, hw, k))
    return LabelMapDataset(labels, "confidence", lambda n: paths.confidence_mask_file(params, variant, seed, n),
                           load_confidence_mask, ScaleCropTransform(t.scale_range, t.crop_size, t.hflip))


def _check_files(params: Params, variant: str, seed: int, names: list[str]) -> None:
    """Raise DataError naming the first missing pseudo label or confidence mask, before training."""
    for what, file in (("pseudo label", paths.pseudo_label_file), ("confidence mask", paths.confidence_mask_file)):
        missing = [n for n in names if not file(params, variant, seed, n).is_file()]
        if missing:
            raise DataError(f"{file(params, variant, seed, missing[0])}: {what} file missing ({len(missing)} of "
                            f"{len(names)} missing; run the make_pseudo_labels stage for {variant} seed {seed})")


def _fingerprint(params: Params, variant: str, seed: int) -> dict:
    """What a checkpoint must agree with to be resumed (not the output paths or worker count)."""
    t = to_dict(params.train_seg)
    for k in ("out_dir", "num_workers"):
        t.pop(k)
    meta = paths.pseudo_label_dir(params, variant, seed) / common.META
    return {"variant": variant, "seed": seed, "train": t,
            "data": {k: getattr(params.data, k) for k in ("dataset", "root", "train_split")},
            "pseudo_labels": hashlib.md5(meta.read_bytes()).hexdigest() if meta.is_file() else None}


def _build(params: Params, num_classes: int, device: torch.device, world_size: int):
    """The network(s) and one SGD over them (groups hold ``base_lr`` and ``min_lr``)."""
    from ..models import DeepLabV2

    t = params.train_seg
    nets, groups = {}, []
    for i in range(1 if t.method == "ce" else 2):
        net = DeepLabV2(num_classes, t.backbone, weights=t.backbone_weights, output_stride=t.output_stride)
        if world_size > 1 and device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = net.to(device, memory_format=torch.channels_last)  # 20 % faster CPU step (README, speed)
        backbone, head = net.param_groups()
        groups += [{"params": backbone, "lr": t.lr, "base_lr": t.lr, "min_lr": t.min_lr},
                   {"params": head, "lr": t.lr * t.head_lr_mult, "base_lr": t.lr * t.head_lr_mult,
                    "min_lr": t.min_lr}]
        nets["net" if t.method == "ce" else f"net{i + 1}"] = net
    opt = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return nets, opt


def _up(logits: torch.Tensor, size) -> torch.Tensor:
    """(N, K, h, w) -> (N, K, H, W) float32, bilinear (``align_corners=False``)."""
    return F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)


def _targets(batch: dict[str, Any], device: torch.device):
    image = batch["image"].to(device, non_blocking=True)
    label = batch["pseudo_label"].to(device, non_blocking=True)
    conf = batch["confidence"].to(device, non_blocking=True) == 1          # padding (255) is not confident
    return image, label, conf


def _ce_step(confidence: bool):
    """One network, cross-entropy on the pseudo labels (inside the confidence mask if asked)."""
    from ..losses import seg_cross_entropy

    def step(batch: dict[str, Any], ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """batch: image (N, 3, S, S), pseudo_label / confidence (N, S, S). Returns (loss, [ce])."""
        image, label, conf = _targets(batch, ctx.device)
        with ctx.autocast():
            logits = ctx.modules["net"](image)
        loss = seg_cross_entropy(_up(logits, label.shape[-2:]), label, conf if confidence else None)
        return loss, loss.detach().reshape(1)

    return step


def _beco_step(cfg, seed: int):
    """BECO's co-training step of the two networks (see the module docstring)."""
    from ..beco import beco_loss, class_mix, online_labels

    def step(batch: dict[str, Any], ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        image, label, conf = _targets(batch, ctx.device)
        n1, n2 = ctx.modules["net1"], ctx.modules["net2"]
        size = label.shape[-2:]
        gen = torch.Generator(device=ctx.device)
        gen.manual_seed(seed * 1_000_003 + ctx.step)
        online = None
        if ctx.epoch >= cfg.warm_up_epochs:
            n1.eval(), n2.eval()
            with torch.no_grad(), ctx.autocast():
                mean = (_up(n1(image), size) + _up(n2(image), size)) / 2     # BECO: softmax of the mean logits
            n1.train(), n2.train()
            online = online_labels(mean.softmax(1), cfg.online_threshold)
        mixed = class_mix(image, label, conf.float(), p=cfg.mix_prob, ignore_bg=cfg.ignore_bg, online=online,
                          boundary_size=cfg.boundary_size, generator=gen)
        with ctx.autocast():
            l1, l2 = n1(mixed["image"]), n2(mixed["image"])
        w = cfg.boundary_weight
        losses = beco_loss(_up(l1, size), _up(l2, size), mixed["label"], mixed["mask"], mixed["band"], w_band=(w, w))
        return losses["total"], torch.stack([losses[k].detach() for k in loss_names("beco")])

    return step


def train_seg(params: Params, variant: str, seed: int, *, progress: bool = True,
              stop_after_epochs: int | None = None) -> dict:
    """Train the segmentation network(s) of run (``variant``, ``seed``); resume its checkpoint if any.

    Writes ``paths.seg_checkpoint(...)`` each epoch and ``paths.seg_model(...)`` at the end;
    rank 0 also writes ``paths.seg_reports(...)/losses.csv`` and ``metrics.json``.

    Returns:
        The metrics dict, or ``{"stopped_at_epoch": e}`` when ``stop_after_epochs`` ended it.

    Raises:
        DataError: a pseudo label or confidence mask is missing, unreadable or mis-sized (named).
        WeightsError: the backbone's ImageNet weights file is missing or does not fit (named).
        NonFiniteLossError: a loss became NaN/inf (with ``train_seg.stop_on_nonfinite``).
    """
    from ..data import dataset_classes

    dist = distributed.init()
    t = params.train_seg
    training.check_batch_size("train_seg", t.batch_size, dist.world_size)
    if t.method == "beco" and (t.batch_size // dist.world_size) % 2:
        from ..config import ConfigError

        raise ConfigError(f"train_seg.batch_size: BECO mixes pairs within each process's batch; "
                          f"{t.batch_size} over {dist.world_size} processes is odd per process")
    out = paths.seg_dir(params, variant, seed)
    if dist.is_main:
        remove_stale_temps(out)
        paths.seg_model(params, variant, seed).unlink(missing_ok=True)
    k = len(dataset_classes(params.data)) + 1
    dataset = _dataset(params, variant, seed)
    _check_files(params, variant, seed, dataset.names)
    fingerprint = _fingerprint(params, variant, seed)
    torch.manual_seed(seed)
    nets, opt = _build(params, k, dist.device, dist.world_size)
    step = _ce_step(t.confidence) if t.method == "ce" else _beco_step(t.beco, seed)
    names = loss_names(t.method)
    settings = training.FitSettings(
        "train_seg", run=f"{variant} seed {seed}", seed=seed, epochs=t.epochs,
        batch_size=t.batch_size, poly_power=t.poly_power, num_workers=t.num_workers, amp=t.amp,
        stop_on_nonfinite=t.stop_on_nonfinite, checkpoint_path=paths.seg_checkpoint(params, variant, seed),
        timings_path=timings_path(variant, seed), fingerprint=fingerprint, loss_names=names, progress=progress,
        stop_after_epochs=stop_after_epochs)
    result = training.fit(settings, dataset, nets, {"opt": opt}, step)
    if not result.finished:
        return {"stopped_at_epoch": result.stopped_at}
    model = {"backbone": t.backbone, "output_stride": t.output_stride, "num_classes": k}
    metrics = {"variant": variant, "seed": seed, "method": t.method, "confidence": t.confidence,
               "epochs": t.epochs, "steps": result.max_step, **model, "init": init_record(params),
               "final": {key: result.history[-1][key] for key in ("loss", *names)},
               "device": str(result.device), "world_size": result.world_size}
    if dist.is_main:
        training.save({"nets": [training.unwrap(n).state_dict() for n in nets.values()], "model": model,
                       "method": t.method, "variant": variant, "seed": seed}, paths.seg_model(params, variant, seed))
        rep = paths.seg_reports(variant, seed)
        training.write_losses(rep / paths.LOSSES, result.history)
        write_json(rep / paths.METRICS, metrics)
    distributed.barrier()
    return metrics


def run(params: Params, variant: str, seed: int, progress: bool = True) -> dict:
    """Train one run in this process, or under ``torchrun`` when ``runs.devices > 1``."""
    return distributed.run_here_or_torchrun("train_seg", params, variant, seed,
                                            lambda: train_seg(params, variant, seed, progress=progress),
                                            paths.seg_reports(variant, seed) / paths.METRICS)


def main(argv: list[str] | None = None) -> int:
    return common.cli("train_seg", __doc__, lambda p, a: train_seg(p, a.variant, a.seed, progress=distributed.is_rank0()),
                      argv, common.add_run_args, errors=(NonFiniteLossError,))


if __name__ == "__main__":
    sys.exit(main())
