"""The segmentation network's training crops: the :data:`sslib.registry.SEG_CROPS` table
(``train_seg.crop`` chooses one, ``train_seg.crops.<name>`` holds its settings).

An entry's factory is ``make(settings, crop_size, hflip) -> transform``, a transform of the
sample dict as :mod:`sslib.data.transforms`'s (``image`` (H, W, 3) uint8 and the label maps
``pseudo_label`` and ``confidence`` in; image (3, S, S) float32 and (S, S) int64 maps out).
The built-in entries:

* ``scale_crop``: :class:`sslib.data.transforms.ScaleCropTransform`, rescale by a factor
  drawn from ``scale_range``, flip, a random ``crop_size`` crop, padding images smaller
  than the crop (padded pixels are labelled 255 and take part in no loss);
* ``resized_crop``: :class:`ResizedCropTransform`, SSC's: a window covering a share of the
  image's area drawn from ``area`` at an aspect ratio drawn log-uniformly from ``aspect``,
  resized to ``crop_size x crop_size``; never padded. SSC's ``segmentation/main.py`` builds
  it as ``RandomResizedCropMask(size=[512, 512], scale=[0.5, 0.75, 1, 1.5, 1.75, 2.0])``,
  whose window reads only the first two scales: 50-75 % of the area, aspect 3/4-4/3 (a
  1.36-1.67x zoom of a 500 x 375 VOC image).

Random draws use torch's global generator, as the other transforms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import need, num
from ..registry import register_seg_crop
from .transforms import LABEL_MAPS, ScaleCropTransform, _check_sizes, _maps, _maybe_flip, _randint, _resize, \
    _to_tensors, normalize

__all__ = ["ResizedCropTransform", "ScaleCropSettings", "ResizedCropSettings", "scale_crop", "resized_crop",
           "make_crop"]


class ResizedCropTransform:
    """SSC's segmentation crop: a random window of a share of the image's area, resized to the
    crop; never padded.

    Args:
        area: (lo, hi): the window covers a share of the image's area drawn uniformly from
            [lo, hi] (SSC: 0.5 ... 0.75).
        aspect: (lo, hi): its aspect ratio (width / height) is drawn log-uniformly from
            [lo, hi] (SSC: 3/4 ... 4/3).
        crop_size: the window is resized to ``crop_size x crop_size`` (image bilinear, label
            maps nearest).
        hflip: flip horizontally with probability 0.5.
        tries: windows that do not fit in the image are drawn again, up to ``tries`` times;
            then the window takes the share ``lo`` and the aspect in ``[lo, hi]`` closest to
            one that fits (clipped to the image when none does).

    Input: ``image`` (H, W, 3) uint8 and label maps (H, W). Output: image float32
    (3, crop, crop), label maps int64 (crop, crop). Every output pixel comes from the image.
    """

    def __init__(self, area: tuple[float, float] | list[float], aspect: tuple[float, float] | list[float],
                 crop_size: int, hflip: bool = True, tries: int = 10):
        a_lo, a_hi = (float(v) for v in area)
        r_lo, r_hi = (float(v) for v in aspect)
        if not 0 < a_lo <= a_hi <= 1:
            raise ValueError(f"area must be (lo, hi) with 0 < lo <= hi <= 1, got {area}")
        if not 0 < r_lo <= r_hi:
            raise ValueError(f"aspect must be (lo, hi) with 0 < lo <= hi, got {aspect}")
        if crop_size <= 0 or tries < 1:
            raise ValueError(f"crop_size and tries must be > 0, got {crop_size}, {tries}")
        self.area, self.aspect, self.crop_size = (a_lo, a_hi), (r_lo, r_hi), int(crop_size)
        self.hflip, self.tries = bool(hflip), int(tries)

    def __repr__(self) -> str:
        return (f"ResizedCropTransform(area={self.area}, aspect={self.aspect}, crop_size={self.crop_size}, "
                f"hflip={self.hflip})")

    def window(self, h: int, w: int) -> tuple[int, int, int, int]:
        """A random window ``(top, left, height, width)`` inside an ``h x w`` image."""
        (a_lo, a_hi), (r_lo, r_hi) = self.area, self.aspect
        log_lo, log_hi = math.log(r_lo), math.log(r_hi)
        for _ in range(self.tries):
            share = a_lo + float(torch.rand(())) * (a_hi - a_lo)
            ratio = math.exp(log_lo + float(torch.rand(())) * (log_hi - log_lo))
            cw, ch = round(math.sqrt(share * h * w * ratio)), round(math.sqrt(share * h * w / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                return _randint(0, h - ch), _randint(0, w - cw), ch, cw
        # the windows that fit with share a_lo have aspect in [a_lo * w / h, w / (a_lo * h)]
        ratio = min(max(w / h, r_lo), r_hi)
        ratio = min(max(ratio, a_lo * w / h), w / (a_lo * h))
        cw = min(w, max(1, round(math.sqrt(a_lo * h * w * ratio))))
        ch = min(h, max(1, round(math.sqrt(a_lo * h * w / ratio))))
        return _randint(0, h - ch), _randint(0, w - cw), ch, cw

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = np.asarray(sample["image"], np.uint8)
        maps = {k: v for k, v in _maps(sample).items() if k in LABEL_MAPS}
        h, w = image.shape[:2]
        _check_sizes(sample, maps, (h, w))
        top, left, ch, cw = self.window(h, w)
        win = np.s_[top:top + ch, left:left + cw]
        c = (self.crop_size,) * 2
        image = _resize(np.ascontiguousarray(image[win]), c, Image.Resampling.BILINEAR)
        maps = {k: _resize(m[win], c, Image.Resampling.NEAREST) for k, m in maps.items()}
        image, maps = _maybe_flip(normalize(image), maps, self.hflip)
        return _to_tensors(sample, image, maps)


@dataclass
class ScaleCropSettings:
    """``train_seg.crops.scale_crop``: rescale by a factor from ``scale_range``, flip, crop (padded)."""

    scale_range: list[float] = num(gt=0)

    def check(self) -> None:
        need(len(self.scale_range) == 2 and self.scale_range[0] <= self.scale_range[1],
             "train_seg.crops.scale_crop.scale_range", "need [lo, hi] with 0 < lo <= hi")


@dataclass
class ResizedCropSettings:
    """``train_seg.crops.resized_crop``: SSC's window of ``area`` of the image at ``aspect``, resized."""

    area: list[float] = num(gt=0, le=1)
    aspect: list[float] = num(gt=0)

    def check(self) -> None:
        for key, v in (("area", self.area), ("aspect", self.aspect)):
            need(len(v) == 2 and v[0] <= v[1], f"train_seg.crops.resized_crop.{key}", "need [lo, hi] with lo <= hi")


@register_seg_crop("scale_crop", settings=ScaleCropSettings)
def scale_crop(settings: ScaleCropSettings, crop_size: int, hflip: bool) -> ScaleCropTransform:
    """Rescale by U(``scale_range``), flip, a random ``crop_size`` crop, padding what is smaller
    (padding: pseudo label and confidence 255, left out of every loss)."""
    return ScaleCropTransform(settings.scale_range, crop_size, hflip)


@register_seg_crop("resized_crop", settings=ResizedCropSettings)
def resized_crop(settings: ResizedCropSettings, crop_size: int, hflip: bool) -> ResizedCropTransform:
    """SSC's: a window of U(``area``) of the image at a log-uniform ``aspect``, resized to the crop."""
    return ResizedCropTransform(settings.area, settings.aspect, crop_size, hflip)


def make_crop(name: str, settings: Any, crop_size: int, hflip: bool):
    """The transform of the :data:`sslib.registry.SEG_CROPS` entry ``name`` with its ``settings``."""
    from ..registry import SEG_CROPS

    return SEG_CROPS.create(name, settings, crop_size, hflip)
