"""Pseudo-label quality of stored CAMs: a background-threshold sweep, as in IRN's ``eval_cam``.

For a background threshold t, an image's CAM label map is

    pred = 0 (background)           where max_k cam_k <= t
    pred = keys[argmax_k cam_k] + 1 elsewhere

(the background "map" is the constant t, and it wins ties), over the high-resolution,
per-class max-normalised maps of the present classes (:mod:`sslib.cam`). Each threshold's
confusion matrix against the ground truth (255 ignored) is accumulated over the split,
and :func:`sslib.metrics.scores` turns it into mIoU, per-class IoU, precision, recall and
the background false-positive rate (the share of ground-truth background claimed by a
class). :func:`activation_contrast` says how localised the CAMs are, threshold-free: their
mean on the class's own pixels and on ground-truth background.

:func:`sweep_confusion` handles all thresholds of one image in one ``bincount``: a pixel
with maximum m and best class k is predicted k for every t < m and background for
t >= m.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .cam import cam_path, load_cam
from .config import thresholds_from
from .io import DataError, write_text
from .formats import IGNORE_INDEX
from .metrics import scores

__all__ = ["thresholds_from", "strongest_class", "threshold_labels", "cam_labels", "sweep_confusion", "evaluate_split",
           "sweep_and_contrast", "summarize_sweep", "image_contrast", "activation_contrast", "contrast_summary", "write_sweep_csv"]

#: the scalar scores of :func:`summarize_sweep`'s ``best`` / ``fixed`` entries
SUMMARY_SCALARS = ("miou", "mean_precision", "mean_recall", "background_fp_rate", "mean_over_activation",
                   "pixel_accuracy")
#: its per-class scores (dicts by class name)
SUMMARY_PER_CLASS = ("iou", "precision", "recall", "over_activation")


def strongest_class(high_res: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """Each pixel's largest CAM and its class: (K, ...) maps, (K,) 0-based class ids ->
    ``(value, label)`` of shape (...), label 1..C (0 with K = 0, where every value is 0)."""
    if high_res.shape[0] == 0:
        zeros = torch.zeros(high_res.shape[1:], dtype=torch.long, device=high_res.device)
        return zeros.float(), zeros
    m, k = high_res.float().max(0)
    return m, keys.to(high_res.device)[k] + 1


def threshold_labels(value: Tensor, label: Tensor, threshold: float | Tensor) -> Tensor:
    """The background-threshold rule, written once: ``label`` where ``value > threshold``,
    else 0 (background; the constant background "map" wins ties).

    ``value``, ``label``: (...) from :func:`strongest_class`. ``threshold``: a number, or a
    (T,) tensor for T thresholds at once, giving (T, ...).
    """
    t = torch.as_tensor(threshold, dtype=value.dtype, device=value.device)
    t = t.reshape(t.shape + (1,) * value.dim())
    return torch.where(value > t, label, torch.zeros_like(label))


def cam_labels(high_res: Tensor, keys: Tensor, threshold: float) -> Tensor:
    """(K, H, W) maps in [0, 1] and (K,) 0-based class ids -> (H, W) int64 label map (0 = bg).

    With K = 0 (no present class) everything is background.
    """
    return threshold_labels(*strongest_class(high_res, keys), threshold)


def sweep_confusion(high_res: Tensor, keys: Tensor, gt: Tensor, thresholds: Sequence[float],
                    num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Confusion matrices of one image at every threshold.

    Args:
        high_res: (K, H, W) float maps; keys: (K,) 0-based class ids.
        gt: (H, W) int ground truth, 0 = background, 1..C, ``ignore_index`` ignored.
        thresholds: T background thresholds.
        num_classes: C + 1 (with background).

    Returns:
        (T, C+1, C+1) int64 on ``gt``'s device; rows gt, columns prediction.
    """
    dev = gt.device
    n = num_classes
    valid = gt != ignore_index
    g = gt[valid].long()
    th = torch.as_tensor(list(thresholds), dtype=torch.float32, device=dev)
    t = len(th)
    value, label = strongest_class(high_res.to(dev), keys)
    pred = threshold_labels(value[valid], label[valid], th)         # (T, P)
    idx = torch.arange(t, device=dev)[:, None] * (n * n) + g[None, :] * n + pred
    return torch.bincount(idx.flatten(), minlength=t * n * n).reshape(t, n, n)


def _stored_cams(cam_dir: str | Path, dataset, split: str, progress: bool):
    """``(mask (H, W) ndarray, CAM dict)`` of each image of ``dataset``, its CAM read from
    ``cam_path(cam_dir, split, name)`` (:func:`sslib.cam.load_cam`); an image without a
    mask, a missing or a malformed CAM file raises DataError naming it."""
    from tqdm.auto import tqdm

    for i in tqdm(range(len(dataset)), desc=f"eval {split}", unit="img", disable=not progress):
        s = dataset[i]
        if "mask" not in s:
            raise DataError(f"{s['name']}: split {split!r} has no ground-truth mask for this image")
        mask = np.asarray(s["mask"])
        yield mask, load_cam(cam_path(cam_dir, split, s["name"]), size=mask.shape)


def _sweep_add(total: Tensor, mask: np.ndarray, cam: dict, thresholds: Sequence[float]) -> None:
    gt = torch.as_tensor(mask, device=total.device)
    total += sweep_confusion(torch.from_numpy(cam["high_res"]), torch.from_numpy(cam["keys"]), gt,
                             thresholds, total.shape[-1])


def evaluate_split(cam_dir: str | Path, dataset, split: str, thresholds: Sequence[float], *,
                   progress: bool = True, device: str | torch.device = "cpu") -> Tensor:
    """Accumulated (T, C+1, C+1) confusion matrices of the stored CAMs of split ``split``.

    ``dataset`` yields ``name`` and ``mask`` (H, W) (e.g. ``build_dataset(cfg, split)``);
    CAMs are read from ``cam_path(cam_dir, split, name)``. A missing or malformed CAM file
    raises DataError naming it; an image without a mask, too.
    """
    n = len(dataset.classes) + 1
    total = torch.zeros(len(thresholds), n, n, dtype=torch.long, device=device)
    for mask, cam in _stored_cams(cam_dir, dataset, split, progress):
        _sweep_add(total, mask, cam, thresholds)
    return total


def sweep_and_contrast(cam_dir: str | Path, dataset, split: str, thresholds: Sequence[float], *,
                       progress: bool = True) -> tuple[Tensor, dict[str, float | None]]:
    """:func:`evaluate_split` and :func:`contrast_summary` in one pass over the CAM files
    (each is read and upsampled once: what ``eval_cam`` needs per split)."""
    n = len(dataset.classes) + 1
    total = torch.zeros(len(thresholds), n, n, dtype=torch.long)
    inside, outside = [], []
    for mask, cam in _stored_cams(cam_dir, dataset, split, progress):
        _sweep_add(total, mask, cam, thresholds)
        a, b = image_contrast(cam["high_res"], cam["keys"], mask)
        inside.append(a)
        outside.append(b)
    return total, {k: _num(v) for k, v in _contrast(inside, outside).items()}


def summarize_sweep(conf: Tensor, thresholds: Sequence[float], class_names: Sequence[str],
                    fixed_threshold: float) -> dict[str, Any]:
    """Metrics of a sweep: mIoU per threshold, the best threshold's scores and a fixed one's.

    Args:
        conf: (T, C+1, C+1) confusion matrices.
        class_names: C + 1 names, background first.
        fixed_threshold: one of ``thresholds``, the same for every variant.

    Returns:
        JSON-ready dict: ``thresholds``, ``miou_per_threshold``, ``best`` and ``fixed``
        (each ``{"threshold", "miou", "mean_precision", "mean_recall",
        "background_fp_rate", "mean_over_activation", "pixel_accuracy", "iou",
        "precision", "recall", "over_activation"}``, per-class dicts by class name; see
        :func:`sslib.metrics.scores` for the definitions, None for nan).
    """
    ths = [float(t) for t in thresholds]
    if not any(abs(t - fixed_threshold) < 1e-6 for t in ths):
        raise ValueError(f"fixed threshold {fixed_threshold} is not among the swept thresholds {ths}")
    per = [scores(c, class_names) for c in conf.cpu()]
    mious = [p["miou"] for p in per]
    best = int(np.nanargmax(mious))
    fixed = min(range(len(ths)), key=lambda i: abs(ths[i] - fixed_threshold))

    def pick(i: int) -> dict[str, Any]:
        p = per[i]
        out = {"threshold": ths[i]}
        for k in SUMMARY_SCALARS:
            out[k] = _num(p[k])
        for k in SUMMARY_PER_CLASS:
            out[k] = {name: _num(x) for name, x in zip(class_names, p[k])}
        return out

    return {"thresholds": ths, "miou_per_threshold": [_num(m) for m in mious],
            "best": pick(best), "fixed": pick(fixed)}


def _num(x: float) -> float | None:
    """Rounded float, None for nan and infinities (JSON has neither)."""
    x = float(x)
    return None if not np.isfinite(x) else round(x, 5)


def image_contrast(high_res: np.ndarray, keys: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean CAM of each present class on its own pixels and on ground-truth background.

    Args:
        high_res: (K, H, W) max-normalised maps; keys: (K,) 0-based class ids.
        mask: (H, W) ground truth, 0 = background, ``k + 1`` = class k, anything else
            (e.g. 255) on neither side.

    Returns:
        ``(inside, background)``, each (P,) float64 over the P <= K classes that have
        pixels of their own in ``mask`` (none if ``mask`` has no background pixel).
    """
    high = np.asarray(high_res, np.float64)
    mask = np.asarray(mask)
    own = mask[None] == np.asarray(keys).reshape(-1, 1, 1) + 1             # (K, H, W)
    bg = mask == 0                                                        # (H, W)
    n_own = own.sum((1, 2))
    keep = (n_own > 0) & bool(bg.any())
    inside = (high * own).sum((1, 2))[keep] / n_own[keep]
    background = high[:, bg].mean(1)[keep] if keep.any() else np.zeros(0)
    return inside, background


def activation_contrast(cam_dir: str | Path, dataset, split: str) -> dict[str, float]:
    """How localised stored CAMs are: their mean value on the class's own pixels and on
    ground-truth background, averaged over every (image, present class) pair
    (:func:`image_contrast`).

    ``dataset`` yields ``name`` and ``mask`` (H, W); CAMs are read from
    ``cam_path(cam_dir, split, name)``. A CAM that fires on its object and not around it
    has ``inside`` near 1 and ``background`` near 0; a CAM that is nearly uniform over
    the image has both near 1 (then no background threshold separates object from
    background, and the best threshold is the largest swept).

    Returns:
        ``{"inside", "background", "ratio"}`` (ratio = inside / background, inf when
        background is 0); all nan when no image has a present class next to background.
    """
    inside, outside = [], []
    for mask, cam in _stored_cams(cam_dir, dataset, split, progress=False):
        a, b = image_contrast(cam["high_res"], cam["keys"], mask)
        inside.append(a)
        outside.append(b)
    return _contrast(inside, outside)


def _contrast(inside: list[np.ndarray], outside: list[np.ndarray]) -> dict[str, float]:
    """:func:`activation_contrast`'s means of the per-image (P,) arrays of :func:`image_contrast`."""
    a_all, b_all = np.concatenate([np.zeros(0), *inside]), np.concatenate([np.zeros(0), *outside])
    if not a_all.size:
        return {"inside": float("nan"), "background": float("nan"), "ratio": float("nan")}
    a, b = float(a_all.mean()), float(b_all.mean())
    return {"inside": a, "background": b, "ratio": a / b if b > 0 else float("inf")}


def contrast_summary(cam_dir: str | Path, dataset, split: str) -> dict[str, float | None]:
    """:func:`activation_contrast`, JSON-ready: rounded, None for nan / inf (metrics.json's
    ``cam_contrast``)."""
    return {k: _num(v) for k, v in activation_contrast(cam_dir, dataset, split).items()}


def psnr_ssim(rec: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of a reconstruction against its image.

    Args:
        rec, image: (H, W, 3) float in [0, 1].

    Returns:
        ``(10 * log10(1 / mse), SSIM)``; SSIM is scikit-image's (7x7 windows, the colour
        channels averaged, data range 1). PSNR is inf for identical images.
    """
    from skimage.metrics import structural_similarity

    rec, image = np.asarray(rec, np.float64), np.asarray(image, np.float64)
    mse = float(np.mean((rec - image) ** 2))
    psnr = float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))
    return psnr, float(structural_similarity(image, rec, channel_axis=2, data_range=1.0))


def reconstruction_quality(net: torch.nn.Module, decoder: torch.nn.Module, dataset,
                           device: torch.device | str = "cpu", progress: bool = False) -> dict[str, float | None]:
    """How well the decoder rebuilds each image from its CAM logits: mean PSNR and SSIM.

    ``dataset`` yields ImageNet-normalised ``image`` (3, H, W) at full resolution; the
    network's CAMs of each image (scale 1, no flip) go through ``decoder``, its output
    ((3, 16h, 16w), in [-1, 1]) is cropped to (H, W) and compared in [0, 1] RGB with the
    image (:func:`psnr_ssim`).

    Returns:
        ``{"psnr", "ssim"}``: means over the images, rounded (None if the set is empty).
    """
    from tqdm.auto import tqdm

    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    values = []
    for i in tqdm(range(len(dataset)), desc="reconstruction", disable=not progress):
        x = dataset[i]["image"].to(device)
        h, w = x.shape[-2:]
        with torch.no_grad():
            rec = decoder(net(x[None].contiguous(memory_format=torch.channels_last))[1])[0, :, :h, :w]
        rgb = lambda t: t.clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # noqa: E731
        values.append(psnr_ssim(rgb((rec + 1) / 2), rgb(x * std + mean)))
    if not values:
        return {"psnr": None, "ssim": None}
    psnr, ssim = np.mean(values, axis=0)
    return {"psnr": _num(psnr), "ssim": _num(ssim)}


def write_sweep_csv(path: str | Path, summaries: dict[str, dict[str, Any]]) -> None:
    """``threshold,<split>_miou,...``: one row per threshold (a DVC plot file)."""
    splits = list(summaries)
    ths = summaries[splits[0]]["thresholds"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["threshold", *(f"{s}_miou" for s in splits)])
    for i, t in enumerate(ths):
        w.writerow([f"{t:g}", *("" if summaries[s]["miou_per_threshold"][i] is None
                                else f"{summaries[s]['miou_per_threshold'][i]:.5f}" for s in splits)])
    write_text(path, buf.getvalue())
