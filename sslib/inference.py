"""Segmentation inference: multi-scale (and flipped) logits fused into one map, and labels.

:func:`multiscale_logits` runs a network on an image at several scales (optionally also
horizontally flipped), brings every member's logits to the image's size and fuses them
pixel-wise, by max (BECO's ``test_msc``) or mean; :func:`predict` takes the argmax.
:func:`image_logits` does that for one uint8 image, first resized to a fixed square when
asked (SSC resizes every val image to 512 x 512) with the fused logits brought back to the
image's size; :func:`confusion` scores labels against a ground truth on the device.

How this relates to BECO (``models/train_beco.py``, ``test_step`` with ``test_msc``):

* BECO's forward is ``forward_cat_test``: the logits of its two networks averaged. That
  averaging happens before any fusion; here the caller passes such a forward, e.g.
  ``lambda x: (net1(x) + net2(x)) / 2``.
* BECO takes the network's stride-8 logits of the image at scale 1.0, then those of the
  image resized by ``F.interpolate(scale_factor=p)`` for p in (0.5, 0.75, 1.0, 1.25, 1.5)
  (so 1.0 is in the stack twice, and the resized sizes are ``floor(H * p)``), resizes each
  of the five to the stride-8 grid of the 1.0 logits, stacks the six and takes the
  pixel-wise max on that grid. ``test.py`` then upsamples the fused logits bilinearly to
  the image (and takes a softmax for the CRF). That is max-then-upsample.
* Here every member is upsampled to the image (H, W) first and then fused:
  upsample-then-max, sizes ``round(H * s)``, each scale listed once. Bilinear
  upsampling is a per-pixel convex combination of neighbours, and a max of convex
  combinations is not the convex combination of the maxes (upsampling the max is >=
  the max of the upsampled maps, equal only where one member wins over all the
  neighbours), so max fusion does not match BECO exactly. Mean fusion would commute with
  one linear resize, but BECO's members go through two resizes (to the stride-8 grid,
  then to the image) and composed bilinear resizes are not one bilinear resize, so it
  does not match exactly either (and BECO counts 1.0 twice: pass
  ``scales=(1.0, 0.5, 0.75, 1.0, 1.25, 1.5)`` to weight it so).

Shapes: images (N, C, H, W) float (C is 3 for RGB); logits (N, K, h, w) at any stride;
fused logits (N, K, H, W); labels (N, H, W) int64. Everything runs on the tensors' device;
gradients are not switched off (wrap calls in ``torch.inference_mode()``).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["multiscale_logits", "predict", "image_logits", "confusion", "FUSIONS", "DEFAULT_SCALES"]

#: the scales BECO's test_msc runs (besides its extra pass at 1.0)
DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
#: the pixel-wise fusions :func:`multiscale_logits` knows
FUSIONS = ("max", "mean")

Forward = Callable[[Tensor], Tensor]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (align_corners=False) of (N, C, h, w) to (N, C, *size); no-op if equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _scaled_size(h: int, w: int, s: float) -> tuple[int, int]:
    """(round(h * s), round(w * s)) with Python's round, at least 1 pixel each."""
    return max(1, round(h * s)), max(1, round(w * s))


def _check_args(image: Tensor, scales: Sequence[float], fusion: str) -> None:
    """ValueError naming the argument if image, scales or fusion is unusable."""
    if image.ndim != 4:
        raise ValueError(f"multiscale_logits: image must be (N, C, H, W), got shape {tuple(image.shape)}")
    if len(scales) == 0:
        raise ValueError("multiscale_logits: scales must not be empty")
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise ValueError(f"multiscale_logits: scales must be positive finite numbers, got {s!r}")
    if fusion not in FUSIONS:
        raise ValueError(f"multiscale_logits: fusion must be one of {FUSIONS}, got {fusion!r}")


def _member(forward: Forward, x: Tensor, size: tuple[int, int], flip: bool) -> Tensor:
    """forward(x) (of x flipped left-right, flipped back, if flip) resized to size: (N, K, *size)."""
    logits = forward(x.flip(-1)).flip(-1) if flip else forward(x)
    if logits.ndim != 4 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"multiscale_logits: forward must return (N, K, h, w) logits with "
                         f"N = {x.shape[0]}, got shape {tuple(logits.shape)}")
    return _resize(logits, size)


def _members(forward: Forward, image: Tensor, scales: Sequence[float], flip: bool):
    """Yield each member's (N, K, H, W) logits: every scale, and its flipped copy if flip."""
    h, w = image.shape[-2:]
    for s in scales:
        x = image if s == 1 else _resize(image, _scaled_size(h, w, s))
        yield _member(forward, x, (h, w), False)
        if flip:
            yield _member(forward, x, (h, w), True)


def multiscale_logits(forward: Forward, image: Tensor,
                      scales: Sequence[float] = DEFAULT_SCALES, fusion: str = "max",
                      flip: bool = False) -> Tensor:
    """Fuse a network's logits over image scales (and left-right flips) at the image's size.

    For each scale s the image is resized bilinearly (align_corners=False) to
    ``(round(H * s), round(W * s))`` (not resized at s == 1), ``forward`` is run and its
    logits are resized bilinearly to (H, W). With ``flip`` the flipped image of each scale
    is run too and its logits are flipped back: one more member per scale. The members
    are fused pixel-wise (a running max or sum, so memory stays at two maps).

    Args:
        forward: maps (N, C, h, w) images to (N, K, h', w') logits at any stride (for
            BECO, the average of its two networks' logits).
        image: (N, C, H, W) float images, normalised as forward expects.
        scales: the scales, each > 0 (a scale listed twice counts twice in the mean).
        fusion: ``"max"`` (pixel-wise max over the members, BECO's) or ``"mean"``.
        flip: also run each scale's horizontally flipped image.

    Returns:
        (N, K, H, W) fused logits, on the image's device, in forward's dtype.

    Raises:
        ValueError: image not 4-D, scales empty or not all positive, fusion unknown, or
            forward's output not (N, K, h, w) (the argument is named).
    """
    _check_args(image, scales, fusion)
    fused, count = None, 0
    for logits in _members(forward, image, scales, flip):
        if fused is None:
            fused = logits.clone() if fusion == "mean" else logits
        elif logits.shape != fused.shape:
            raise ValueError(f"multiscale_logits: forward returned {logits.shape[1]} classes at one "
                             f"scale and {fused.shape[1]} at another")
        elif fusion == "max":
            fused = torch.maximum(fused, logits)
        else:
            fused += logits
        count += 1
    return fused if fusion == "max" else fused / count


def predict(logits: Tensor) -> Tensor:
    """Labels of (N, K, H, W) logits: the argmax over K, (N, H, W) int64 (first on ties)."""
    if logits.ndim != 4:
        raise ValueError(f"predict: logits must be (N, K, H, W), got shape {tuple(logits.shape)}")
    return logits.argmax(dim=1)


def image_logits(forward: Forward, image, device: torch.device, *, scales: Sequence[float] = (1.0,),
                 fusion: str = "max", flip: bool = False, resize: int = 0) -> Tensor:
    """(K, H, W) float32 fused logits of one (H, W, 3) uint8 image, on ``device``, without gradients.

    With ``resize`` > 0 the image is first resized to ``resize x resize`` (PIL bilinear on the
    uint8 image, as SSC's val transform), the multi-scale pass runs on that, and the fused
    logits are resized bilinearly back to (H, W). 0: the image at its own size.
    """
    import numpy as np

    from .data.transforms import normalize

    image = np.asarray(image, np.uint8)
    h, w = image.shape[:2]
    if resize:
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize((resize, resize), Image.Resampling.BILINEAR))
    x = torch.from_numpy(np.ascontiguousarray(normalize(image).transpose(2, 0, 1)))[None].to(device)
    with torch.no_grad():
        logits = multiscale_logits(forward, x, tuple(scales), fusion=fusion, flip=flip)
        if resize:
            logits = _resize(logits.float(), (h, w))
    return logits[0].float()


def confusion(pred: Tensor, target: Tensor, k: int, ignore: int = 255) -> Tensor:
    """(K, K) int64 confusion (rows ground truth, columns prediction) of (H, W) labels on their
    device; ``ignore`` pixels of ``target`` are left out."""
    keep = target != ignore
    idx = target[keep].long() * k + pred[keep].long()
    return torch.bincount(idx, minlength=k * k).reshape(k, k)
