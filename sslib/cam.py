"""CAM inference: multi-scale, flipped CAMs of a trained network, stored per image (npz).

As IRN's ``make_cam`` (which SSC uses unchanged):

* every scale s of ``scales`` (default 1.0, 0.5, 1.5, 2.0) resizes the image to
  round(s * H) x round(s * W); the image and its horizontal flip go through the network
  together; the CAM logits are clamped at 0 (ReLU) and the flipped map is flipped back
  and added;
* the maps of all scales are resized (bilinear) and summed, to two sizes: the *strided*
  map at stride 4, ``((H - 1) // 4 + 1, (W - 1) // 4 + 1)`` (what IRN's random walk
  reads), and the *high-resolution* map, resized to ``16 * ceil(H / 16)`` x
  ``16 * ceil(W / 16)`` and cropped to H x W at the top left (IRN's alignment of the
  stride-16 grid);
* images of equal size are batched (:func:`make_cams`);
* only the classes present in the image-level label are kept, each divided by its own
  maximum (+ 1e-5), so each map lies in [0, 1].

Differences from IRN: images are resized on the tensor (bilinear, antialiased when
shrinking) rather than with PIL's bicubic, and maps are stored as float16 (the [0, 1]
range loses at most 2^-12 = 2.44e-4).

Speed: the images go through the network in channels_last memory format (with the
network's weights in it too, as :func:`sslib.models.load_trained` returns them; the maps
agree with the contiguous layout to float rounding). On the 2-core CPU this and small
batches (``eval_cam.batch_size`` 2: a batch of 2 images and their flips keeps the
activations in cache) halve the CAM time of the synthetic default (Lite0 at 256 px: 65
ms per forwarded image at batch 16, contiguous; 27 ms at batch 4, channels_last).

A stored CAM file ``<out_dir>/<split>/<name>.npz`` holds

=========== ==========================================================================
``keys``    (K,) int16: 0-based foreground class ids of the present classes
``cam``     (K, h4, w4) float16: the strided map, per-class max normalised
``high_res``(K, H, W) float16: the full-resolution map, per-class max normalised
=========== ==========================================================================

and is read back with :func:`load_cam` (which checks it and names the file if not).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .io import DataError
from .formats import save_npz

__all__ = [
    "strided_size", "multiscale_cams", "normalize_present", "save_cam", "load_cam",
    "cam_path", "make_cams", "shard",
]


def strided_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``((H - 1) // stride + 1, (W - 1) // stride + 1)``: a map of stride ``stride``."""
    return (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


@torch.no_grad()
def multiscale_cams(net: nn.Module, images: Tensor, scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
                    flip: bool = True) -> tuple[Tensor, Tensor]:
    """Multi-scale (and flipped) CAMs of a batch of equally sized images.

    Args:
        net: a network returning ``(scores, cams)`` with cams (B, C, h, w) logits, in eval mode.
        images: (N, 3, H, W) normalised images on the network's device.
        scales: image scale factors.
        flip: also run each image flipped and add the flipped-back map.

    Returns:
        ``(strided, high_res)``: (N, C, ceil(H/4), ceil(W/4)) and (N, C, H, W) float32 sums
        over scales of the ReLU'd maps (not normalised).
    """
    n, _, h, w = images.shape
    s4 = strided_size((h, w), 4)
    up = tuple(16 * s for s in strided_size((h, w), 16))
    strided = high = None
    for s in scales:
        x = images if s == 1 else _resize(images, (round(h * s), round(w * s)))
        if flip:
            x = torch.cat([x, x.flip(-1)])
        x = x.contiguous(memory_format=torch.channels_last)
        cams = F.relu(net(x)[1].float())
        if flip:
            cams = cams[:n] + cams[n:].flip(-1)
        a = _resize(cams, s4)
        b = _resize(cams, up)[..., :h, :w]
        strided = a if strided is None else strided + a
        high = b if high is None else high + b
    return strided, high


def normalize_present(maps: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """Present classes of one image, each divided by its maximum (+ 1e-5).

    Args:
        maps: (C, h, w) non-negative maps.
        label: (C,) multi-hot.

    Returns:
        ``(keys, maps)``: (K,) int64 class ids and (K, h, w) maps in [0, 1].
    """
    keys = torch.nonzero(label > 0.5)[:, 0].to(maps.device)
    m = maps[keys]
    return keys, m / (m.amax(dim=(1, 2), keepdim=True) + 1e-5)


def cam_path(out_dir: str | Path, split: str, name: str) -> Path:
    """``<out_dir>/<split>/<name>.npz``."""
    return Path(out_dir) / split / f"{name}.npz"


def save_cam(path: str | Path, keys: Tensor | np.ndarray, cam: Tensor | np.ndarray,
             high_res: Tensor | np.ndarray) -> None:
    """Write one image's CAMs atomically (npz, float16 maps, int16 keys; no pickle)."""
    arrays = {"keys": np.asarray(_np(keys), dtype=np.int16),
              "cam": np.asarray(_np(cam), dtype=np.float16),
              "high_res": np.asarray(_np(high_res), dtype=np.float16)}
    save_npz(path, **arrays)


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def load_cam(path: str | Path, size: tuple[int, int] | None = None,
             label: np.ndarray | Tensor | None = None) -> dict[str, np.ndarray]:
    """Read a CAM file written by :func:`save_cam`; DataError naming the file if it is bad.

    Args:
        size: the image's (H, W); if given, ``high_res`` must have it.
        label: the image's (C,) multi-hot label; if given, the file's classes must be its
            present classes (else the CAMs belong to another image or labelling).

    Returns:
        ``{"keys": (K,) int64, "cam": (K, h4, w4) float32, "high_res": (K, H, W) float32}``.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {"keys": z["keys"].astype(np.int64), "cam": z["cam"].astype(np.float32),
                   "high_res": z["high_res"].astype(np.float32)}
    except FileNotFoundError:
        raise DataError(f"{path}: CAM file missing (run the eval_cam stage)") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable CAM file ({type(e).__name__}: {e})") from None
    k = len(out["keys"])
    if out["cam"].ndim != 3 or out["high_res"].ndim != 3 or out["cam"].shape[0] != k or out["high_res"].shape[0] != k:
        raise DataError(f"{path}: inconsistent CAM file (keys {k}, cam {out['cam'].shape}, "
                        f"high_res {out['high_res'].shape})")
    if size is not None and out["high_res"].shape[1:] != tuple(size):
        raise DataError(f"{path}: high_res is {out['high_res'].shape[1:]}, the image is {tuple(size)}")
    if size is not None and out["cam"].shape[1:] != strided_size(tuple(size), 4):
        raise DataError(f"{path}: cam is {out['cam'].shape[1:]}, expected {strided_size(tuple(size), 4)}")
    if label is not None:
        want = np.flatnonzero(_np(label) > 0.5)
        if not np.array_equal(np.sort(out["keys"]), want):
            raise DataError(f"{path}: CAM classes {out['keys'].tolist()} are not the image's label "
                            f"{want.tolist()} (rerun the eval_cam stage)")
    return out


def shard(n: int, rank: int, world: int) -> list[int]:
    """Indices ``rank, rank + world, ...`` of ``range(n)``: this rank's share of the images."""
    return list(range(rank, n, world))


def _same_size_batches(dataset, idx: list[int], batch_size: int):
    """Yield lists of samples of equal image size, at most ``batch_size`` long, in ``idx`` order."""
    batch: list[dict] = []
    for i in idx:
        s = dataset[i]
        if batch and (len(batch) == batch_size or s["image"].shape != batch[0]["image"].shape):
            yield batch
            batch = []
        batch.append(s)
    if batch:
        yield batch


def make_cams(net: nn.Module, dataset, out_dir: str | Path, split: str, *,
              scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0), flip: bool = True,
              batch_size: int = 1, device: torch.device | str = "cpu", rank: int = 0, world: int = 1,
              progress: bool = True, indices: Iterable[int] | None = None) -> int:
    """Compute and store the CAMs of this rank's share of ``dataset``.

    Consecutive images of equal size go through the network together, up to
    ``batch_size`` per forward (VOC's images differ in size, so there this is mostly 1,
    as in IRN; the synthetic set's are all equal). Batching does not change the maps
    (BatchNorm is in eval mode).

    Args:
        net: the CAM network in eval mode on ``device``.
        dataset: samples with ``name``, ``image`` (3, H, W) normalised and ``label`` (C,)
            (e.g. ``build_dataset(..., transform=EvalTransform())``).
        out_dir, split: files go to ``<out_dir>/<split>/<name>.npz``.
        rank, world: this process takes images ``rank::world`` (DDP ranks or workers).
        indices: explicit image indices instead of the shard.

    Returns:
        The number of files written.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    idx = list(indices) if indices is not None else shard(len(dataset), rank, world)
    device = torch.device(device)
    with tqdm(total=len(idx), desc=f"CAMs {split}", unit="img", disable=not progress) as bar:
        for batch in _same_size_batches(dataset, idx, batch_size):
            images = torch.stack([s["image"] for s in batch]).to(device)
            strided, high = multiscale_cams(net, images, scales, flip)
            for j, s in enumerate(batch):
                keys, cam = normalize_present(strided[j], s["label"])
                _, hr = normalize_present(high[j], s["label"])
                save_cam(cam_path(out_dir, split, s["name"]), keys, cam, hr)
            bar.update(len(batch))
    return len(idx)
