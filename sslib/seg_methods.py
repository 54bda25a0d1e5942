"""How the segmentation network is trained on the pseudo labels: the
:data:`sslib.registry.SEG_METHODS` table (``train_seg.method`` chooses one,
``train_seg.methods.<name>`` holds its settings).

An entry's factory builds the training step, ``make_step(settings, seed) -> step``, with
``step(batch, ctx) -> (loss, parts)`` as :func:`sslib.training.fit` calls it (``batch``:
``image`` (N, 3, S, S), ``pseudo_label`` and ``confidence`` (N, S, S); ``ctx.modules`` the
networks by name; ``parts`` the detached terms in ``loss_names`` order). The entry declares:

* ``nets``: the names of the DeepLabV2 networks it trains (built in this order, each with
  its own parameter groups in the one SGD; ``model.pt`` keeps them in this order);
* ``loss_names``: the terms a step logs after the total (``losses.csv``);
* ``batch_multiple``: each process's batch must be a multiple of it (checked on load for
  the whole batch, at the start for each process's share);
* ``inference_nets``: the indices of the networks whose logits ``eval_seg`` averages
  (None: all).

The built-in entries:

* ``ce``: one network, cross-entropy on the pseudo label, only inside the confidence mask
  with ``confidence: true`` (:func:`sslib.losses.seg_cross_entropy`);
* ``beco``: BECO's co-training of two networks (:mod:`sslib.beco`): ClassMix of image pairs
  (offline labels during ``warm_up_epochs``; after it, online labels of the two networks'
  averaged logits, confident above ``online_threshold``, and a boundary band x(1 +
  ``boundary_weight``) around the pasted regions), each network's CE inside the mask plus
  the other network's argmax outside it. Pixels labelled 255 (crop padding, ignored
  pixels) are in no term and no mean, and get no online label. The step's random draws come from a generator
  seeded by (seed, step), so a resumed run draws what an uninterrupted one does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .config import num
from .registry import SEG_METHODS, register_seg_method

__all__ = ["CESettings", "BecoSettings", "ce", "beco", "upsample", "targets", "net_names", "loss_names", "inference_nets"]


@dataclass
class CESettings:
    """Cross-entropy on the pseudo labels (``train_seg.methods.ce``)."""

    confidence: bool


@dataclass
class BecoSettings:
    """BECO's co-training (``train_seg.methods.beco``), its config's values."""

    warm_up_epochs: int = num(ge=0)
    mix_prob: float = num(ge=0, le=1)
    ignore_bg: bool
    boundary_size: int = num(ge=1)
    boundary_weight: float = num(ge=0)
    online_threshold: float = num(gt=0, lt=1)


def net_names(method: str) -> tuple[str, ...]:
    """The networks the segmentation method ``method`` trains, by name."""
    return tuple(SEG_METHODS.get(method).get("nets"))


def loss_names(method: str) -> tuple[str, ...]:
    """The loss terms a step of ``method`` logs after the total."""
    return tuple(SEG_METHODS.get(method).get("loss_names"))


def inference_nets(method: str, nets: list) -> list:
    """The networks of ``nets`` (a trained run's, in ``nets`` order) whose logits inference averages."""
    which = SEG_METHODS.get(method).get("inference_nets")
    return list(nets) if which is None else [nets[i] for i in which]


def upsample(logits: torch.Tensor, size) -> torch.Tensor:
    """(N, K, h, w) -> (N, K, H, W) float32, bilinear (``align_corners=False``)."""
    return F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)


def targets(batch: dict[str, Any], device: torch.device):
    """``(image, pseudo_label, confident)`` of a batch on ``device``. Crop padding has pseudo label
    255 and confidence 255 (not confident); the losses leave every pixel labelled 255 out."""
    image = batch["image"].to(device, non_blocking=True)
    label = batch["pseudo_label"].to(device, non_blocking=True)
    conf = batch["confidence"].to(device, non_blocking=True) == 1
    return image, label, conf


@register_seg_method("ce", settings=CESettings, nets=("net",), loss_names=("ce",), batch_multiple=1,
                     inference_nets=None)
def ce(settings: CESettings, seed: int):
    """One network, cross-entropy on the pseudo labels (inside the confidence mask if asked)."""
    from .losses import seg_cross_entropy

    confidence = settings.confidence

    def step(batch: dict[str, Any], ctx) -> tuple[torch.Tensor, torch.Tensor]:
        """batch: image (N, 3, S, S), pseudo_label / confidence (N, S, S). Returns (loss, [ce])."""
        image, label, conf = targets(batch, ctx.device)
        with ctx.autocast():
            logits = ctx.modules["net"](image)
        loss = seg_cross_entropy(upsample(logits, label.shape[-2:]), label, conf if confidence else None)
        return loss, loss.detach().reshape(1)

    return step


@register_seg_method("beco", settings=BecoSettings, nets=("net1", "net2"), loss_names=("ce1", "ce2", "cot1", "cot2"),
                     batch_multiple=2, inference_nets=None)
def beco(settings: BecoSettings, seed: int):
    """BECO's co-training step of the two networks (see the module doc)."""
    from .beco import beco_loss, class_mix, online_labels
    from .formats import IGNORE_INDEX

    cfg = settings
    names = loss_names("beco")

    def step(batch: dict[str, Any], ctx) -> tuple[torch.Tensor, torch.Tensor]:
        image, label, conf = targets(batch, ctx.device)
        n1, n2 = ctx.modules["net1"], ctx.modules["net2"]
        size = label.shape[-2:]
        gen = torch.Generator(device=ctx.device)
        gen.manual_seed(seed * 1_000_003 + ctx.step)
        online = None
        if ctx.epoch >= cfg.warm_up_epochs:
            n1.eval(), n2.eval()
            with torch.no_grad(), ctx.autocast():
                mean = (upsample(n1(image), size) + upsample(n2(image), size)) / 2  # BECO: softmax of the mean logits
            n1.train(), n2.train()
            online = online_labels(mean.softmax(1), cfg.online_threshold, valid=label != IGNORE_INDEX)
        mixed = class_mix(image, label, conf.float(), p=cfg.mix_prob, ignore_bg=cfg.ignore_bg, online=online,
                          boundary_size=cfg.boundary_size, generator=gen)
        with ctx.autocast():
            l1, l2 = n1(mixed["image"]), n2(mixed["image"])
        w = cfg.boundary_weight
        losses = beco_loss(upsample(l1, size), upsample(l2, size), mixed["label"], mixed["mask"], mixed["band"],
                           w_band=(w, w))
        return losses["total"], torch.stack([losses[k].detach() for k in names])

    return step
