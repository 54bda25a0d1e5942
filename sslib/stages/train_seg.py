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
:func:`sslib.training.fit`, and the run's shape around it (the start, the reports, the entry
points) :mod:`sslib.stages._training`, both shared with ``train_cam`` and ``train_irn``. The BECO step's
random draws (which images are mixed, which classes pasted) come from a generator seeded
by (seed, step), so an interrupted run resumes to the weights of an uninterrupted one.

Shell::

    python -m sslib.stages.train_seg --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.stages.train_seg --variant ssc --seed 0
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import paths, training
from ..config import Params
from ..distributed import DistInfo
from ..io import DataError
from ..training import StepContext
from . import _training, common

__all__ = ["run", "train_seg", "loss_names", "init_record"]


def loss_names(method: str) -> tuple[str, ...]:
    """The loss terms a step logs after the total: ``ce`` (one network) or BECO's four."""
    return ("ce",) if method == "ce" else ("ce1", "ce2", "cot1", "cot2")


def _run(params: Params, variant: str, seed: int) -> _training.TrainingRun:
    """Run (``variant``, ``seed``) and its files: ``paths.seg_dir(...)``, ``paths.seg_checkpoint(...)``,
    ``paths.seg_model(...)``, ``paths.seg_reports(...)``."""
    return _training.TrainingRun("train_seg", variant, seed, paths.seg_dir(params, variant, seed),
                                 paths.seg_checkpoint(params, variant, seed), paths.seg_model(params, variant, seed),
                                 paths.seg_reports(variant, seed))


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
    meta = paths.pseudo_label_dir(params, variant, seed) / common.META
    return {"variant": variant, "seed": seed, "train": _training.train_settings(params.train_seg),
            "data": _training.data_settings(params.data), "pseudo_labels": _training.file_md5(meta)}


def _build(params: Params, num_classes: int, device: torch.device, world_size: int):
    """The network(s) and one SGD over them (groups hold ``base_lr`` and ``min_lr``)."""
    from ..models import DeepLabV2

    t = params.train_seg
    nets, groups = {}, []
    for i in range(1 if t.method == "ce" else 2):
        net = DeepLabV2(num_classes, t.backbone, weights=t.backbone_weights, output_stride=t.output_stride)
        if world_size > 1 and device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = net.to(device, memory_format=torch.channels_last)  # 20 % faster CPU step (docs/measurements.md)
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

    t, job = params.train_seg, _run(params, variant, seed)
    dist = job.start(t.batch_size, check=lambda dist: _check_beco_batch(t, dist))
    k = len(dataset_classes(params.data)) + 1
    dataset = _dataset(params, variant, seed)
    _check_files(params, variant, seed, dataset.names)
    fingerprint = _fingerprint(params, variant, seed)
    torch.manual_seed(seed)
    nets, opt = _build(params, k, dist.device, dist.world_size)
    step = _ce_step(t.confidence) if t.method == "ce" else _beco_step(t.beco, seed)
    names = loss_names(t.method)
    settings = job.fit_settings(t, fingerprint, names, progress=progress, stop_after_epochs=stop_after_epochs)
    result = training.fit(settings, dataset, nets, {"opt": opt}, step)
    model = {"backbone": t.backbone, "output_stride": t.output_stride, "num_classes": k}
    return job.finish(result, dist, t.epochs, names,
                      lambda: {"nets": [training.unwrap(n).state_dict() for n in nets.values()], "model": model,
                               "method": t.method, "variant": variant, "seed": seed},
                      settings={"method": t.method, "confidence": t.confidence},
                      about={**model, "init": init_record(params)})


def _check_beco_batch(t, dist: DistInfo) -> None:
    """BECO mixes pairs of images: each process's share of the batch must be even."""
    if t.method == "beco" and (t.batch_size // dist.world_size) % 2:
        from ..config import ConfigError

        raise ConfigError(f"train_seg.batch_size: BECO mixes pairs within each process's batch; "
                          f"{t.batch_size} over {dist.world_size} processes is odd per process")


def run(params: Params, variant: str, seed: int, progress: bool = True) -> dict:
    """Train one run in this process, or under ``torchrun`` when ``runs.devices > 1``."""
    return _training.run("train_seg", train_seg, paths.seg_reports, params, variant, seed, progress)


def main(argv: list[str] | None = None) -> int:
    return _training.main("train_seg", __doc__, train_seg, argv)


if __name__ == "__main__":
    sys.exit(main())
