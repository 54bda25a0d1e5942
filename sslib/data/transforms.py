"""Training and evaluation transforms on the sample dict (IRN / SSC augmentation).

Both take a sample with ``image`` ((H, W, 3) uint8 numpy) and optionally ``mask`` and
``superpixels`` ((H, W) integer arrays), and return the same dict with

* ``image``: float32 tensor (3, h, w), ImageNet-normalised;
* ``mask``: int64 tensor (h, w) (0 background, 1..C, 255 ignore);
* ``superpixels``: int64 tensor (h, w) of ids;
* ``ir_label``: int64 tensor (h, w) of an IR label (class ids, 255 ignored);

other keys are passed through. :class:`TrainTransform` applies, jointly to all three
(the same draws): a random resize of the long side, a horizontal flip, normalisation,
and a random ``crop x crop`` crop that pads images smaller than the crop (image with
0 after normalisation as in IRN, mask with 255, superpixels with one new id of their
own). Superpixel ids are then relabelled to consecutive ``0..K-1``.

All random draws use torch's global generator (``torch.randint`` / ``torch.rand``), so
``torch.manual_seed`` and DataLoader worker seeding make them reproducible.

:class:`ScaleCropTransform` is IRN's augmentation for the boundary network
(``VOC12AffinityDataset``): the image rescaled by a random factor, normalised, flipped,
cropped (padding: image 0, labels 255), and the label maps then downscaled to the
boundary map's grid (x0.25, nearest, as IRN's ``pil_rescale``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import AugmentConfig
from ..formats import IGNORE_INDEX

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "normalize", "TrainTransform",
    "EvalTransform", "ScaleCropTransform", "build_train_transform",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
#: maps whose crop padding is IGNORE_INDEX (the others are superpixel ids)
LABEL_MAPS = ("mask", "ir_label", "pseudo_label", "confidence")


def normalize(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) float32, ``(x / 255 - mean) / std`` per channel."""
    return (np.asarray(image, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _randint(lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive) from torch's global generator."""
    return int(torch.randint(lo, hi + 1, ()).item())


def _resize(arr: np.ndarray, hw: tuple[int, int], resample: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image or an (H, W) integer map to ``hw`` with PIL."""
    h, w = hw
    if arr.ndim == 3:
        return np.asarray(Image.fromarray(arr).resize((w, h), resample))
    out = Image.fromarray(arr.astype(np.int32)).resize((w, h), resample)  # mode "I": ids > 255 ok
    return np.asarray(out).astype(np.int64)


def _crop_window(size: int, crop: int) -> tuple[int, int, int]:
    """(source start, destination start, length) along one axis for a random crop/pad."""
    if size >= crop:
        return _randint(0, size - crop), 0, crop
    return 0, _randint(0, crop - size), size


def _to_tensors(sample: dict[str, Any], image: np.ndarray, maps: dict[str, np.ndarray]) -> dict[str, Any]:
    out = dict(sample)
    out["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))
    for key, arr in maps.items():
        out[key] = torch.from_numpy(np.ascontiguousarray(arr, np.int64))
    return out


def _maps(sample: dict[str, Any]) -> dict[str, np.ndarray]:
    """The (H, W) integer maps of a sample (mask, superpixels) as int64 numpy arrays."""
    return {k: np.asarray(sample[k]).astype(np.int64) for k in ("mask", "superpixels", *LABEL_MAPS[1:])
            if k in sample}


def _check_sizes(sample: dict[str, Any], maps: dict[str, np.ndarray], hw: tuple[int, int]) -> None:
    """ValueError naming the sample and the map unless every map is (H, W) = ``hw``."""
    for k, m in maps.items():
        if m.shape != hw:
            raise ValueError(f"{sample.get('name', '?')}: {k} has shape {m.shape}, image {hw}")


def _rescale(image: np.ndarray, maps: dict[str, np.ndarray], hw: tuple[int, int]):
    """The image (bicubic) and the maps (nearest) resized to ``hw`` (unchanged if already)."""
    if hw == image.shape[:2]:
        return image, maps
    return (_resize(image, hw, Image.Resampling.BICUBIC),
            {k: _resize(m, hw, Image.Resampling.NEAREST) for k, m in maps.items()})


def _maybe_flip(image: np.ndarray, maps: dict[str, np.ndarray], hflip: bool):
    """A horizontal flip of the image and the maps with probability 0.5 (when ``hflip``)."""
    if hflip and torch.rand(()).item() < 0.5:
        return image[:, ::-1], {k: m[:, ::-1] for k, m in maps.items()}
    return image, maps


def _random_crop(image: np.ndarray, maps: dict[str, np.ndarray], c: int):
    """A random ``c x c`` crop of the normalised image and the maps, padding what is smaller
    (image with 0, label maps with IGNORE_INDEX, other maps with one new id)."""
    (sy, dy, ny), (sx, dx, nx) = _crop_window(image.shape[0], c), _crop_window(image.shape[1], c)
    src, dst = np.s_[sy:sy + ny, sx:sx + nx], np.s_[dy:dy + ny, dx:dx + nx]
    out_img = np.zeros((c, c, 3), np.float32)
    out_img[dst] = image[src]
    out_maps = {}
    for k, m in maps.items():
        pad = IGNORE_INDEX if k in LABEL_MAPS else int(m.max()) + 1  # superpixels: a new id
        out = np.full((c, c), pad, np.int64)
        out[dst] = m[src]
        out_maps[k] = out
    return out_img, out_maps


class TrainTransform:
    """Random long-side resize, horizontal flip, normalisation, random crop with padding.

    Args:
        resize_long: (lo, hi): the long side is resized to an integer drawn from [lo, hi]
            (image bicubic, mask and superpixels nearest).
        crop_size: side of the square output.
        hflip: flip horizontally with probability 0.5.

    Output: image float32 (3, crop, crop), mask / superpixels int64 (crop, crop).
    """

    def __init__(self, resize_long: tuple[int, int] | list[int], crop_size: int, hflip: bool = True):
        lo, hi = (int(v) for v in resize_long)
        if not 0 < lo <= hi:
            raise ValueError(f"resize_long must be (lo, hi) with 0 < lo <= hi, got {resize_long}")
        if crop_size <= 0:
            raise ValueError(f"crop_size must be > 0, got {crop_size}")
        self.resize_long, self.crop_size, self.hflip = (lo, hi), int(crop_size), bool(hflip)

    def __repr__(self) -> str:
        return (f"TrainTransform(resize_long={self.resize_long}, crop_size={self.crop_size}, "
                f"hflip={self.hflip})")

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = np.asarray(sample["image"], np.uint8)
        maps = _maps(sample)
        h, w = image.shape[:2]
        _check_sizes(sample, maps, (h, w))

        # 1. random resize of the long side
        scale = _randint(*self.resize_long) / max(h, w)
        image, maps = _rescale(image, maps, (max(1, round(h * scale)), max(1, round(w * scale))))
        # 2. horizontal flip
        image, maps = _maybe_flip(image, maps, self.hflip)
        # 3. normalise (before padding, so the image padding is 0 = the mean colour)
        # 4. random crop, padding what is smaller than the crop
        c = self.crop_size
        out_img, out_maps = _random_crop(normalize(image), maps, c)
        if "superpixels" in out_maps:  # consecutive ids 0..K-1 of what is left after the crop
            _, inv = np.unique(out_maps["superpixels"], return_inverse=True)
            out_maps["superpixels"] = inv.reshape(c, c).astype(np.int64)
        return _to_tensors(sample, out_img, out_maps)


class ScaleCropTransform:
    """IRN's boundary-network augmentation: random rescale, normalise, flip, random crop.

    Args:
        scale_range: (lo, hi): both sides are scaled by a factor drawn uniformly from
            [lo, hi) (image bicubic, label maps nearest; sizes rounded as IRN's
            ``pil_rescale``).
        crop_size: side of the square output; smaller images are padded at a random
            offset (image with 0 after normalisation, label maps with 255).
        hflip: flip horizontally with probability 0.5.
        label_scale: the label maps are finally rescaled by this factor (nearest, PIL;
            IRN: 0.25, the boundary map's stride-4 grid); 1 = not.

    Input: ``image`` (H, W, 3) uint8 and label maps (``mask``, ``ir_label``) (H, W).
    Output: image float32 (3, crop, crop); label maps int64
    (round(crop * label_scale), round(crop * label_scale)).
    """

    def __init__(self, scale_range: tuple[float, float] | list[float], crop_size: int, hflip: bool = True,
                 label_scale: float = 1.0):
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        if crop_size <= 0 or not 0 < label_scale <= 1:
            raise ValueError(f"crop_size must be > 0 and label_scale in (0, 1], got {crop_size}, {label_scale}")
        self.scale_range, self.crop_size, self.hflip = (lo, hi), int(crop_size), bool(hflip)
        self.label_scale = float(label_scale)

    def __repr__(self) -> str:
        return (f"ScaleCropTransform(scale_range={self.scale_range}, crop_size={self.crop_size}, "
                f"hflip={self.hflip}, label_scale={self.label_scale})")

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = np.asarray(sample["image"], np.uint8)
        maps = {k: v for k, v in _maps(sample).items() if k in LABEL_MAPS}
        h, w = image.shape[:2]
        _check_sizes(sample, maps, (h, w))
        lo, hi = self.scale_range
        scale = lo + float(torch.rand(())) * (hi - lo)
        image, maps = _rescale(image, maps, (max(1, int(np.round(h * scale))), max(1, int(np.round(w * scale)))))
        image, maps = _maybe_flip(normalize(image), maps, self.hflip)
        c = self.crop_size
        out_img, out_maps = _random_crop(image, maps, c)
        small = (int(np.round(c * self.label_scale)),) * 2
        if small != (c, c):
            out_maps = {k: _resize(m, small, Image.Resampling.NEAREST) for k, m in out_maps.items()}
        return _to_tensors(sample, out_img, out_maps)


class EvalTransform:
    """Normalisation only (full resolution): image (3, H, W) float32, maps int64 tensors."""

    def __repr__(self) -> str:
        return "EvalTransform()"

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return _to_tensors(sample, normalize(sample["image"]), _maps(sample))


def build_train_transform(aug_cfg: AugmentConfig) -> TrainTransform:
    """:class:`TrainTransform` from the ``augment`` section of params.yaml."""
    return TrainTransform(tuple(aug_cfg.resize_long), aug_cfg.crop_size, aug_cfg.hflip)
