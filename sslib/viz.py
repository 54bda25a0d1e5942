"""Small drawing helpers shared by the notebooks (numpy in, numpy RGB out; no plotting state)."""
from __future__ import annotations

import numpy as np

__all__ = ["heat_overlay", "label_image", "denormalize"]


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """(H, W, 3) uint8 image blended with a (H, W) heat map in [0, 1] drawn with ``cmap``."""
    import matplotlib

    rgb = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3] * 255
    return (image.astype(np.float32) * (1 - alpha) + rgb * alpha).round().clip(0, 255).astype(np.uint8)


def label_image(labels: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """(H, W) class ids (0 = background, 255 = ignore) -> (H, W, 3) uint8 in the VOC palette."""
    if palette is None:
        from .io import voc_palette

        palette = voc_palette()
    return palette[np.asarray(labels).astype(np.uint8)]


def denormalize(image, tanh: bool = False) -> np.ndarray:
    """(3, H, W) ImageNet-normalised tensor/array (with ``tanh``: a decoder output in
    [-1, 1]) -> (H, W, 3) uint8."""
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD

    x = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, np.float32)
    x = x.transpose(1, 2, 0)
    x = (x + 1) / 2 if tanh else x * IMAGENET_STD + IMAGENET_MEAN
    return (x * 255).round().clip(0, 255).astype(np.uint8)
