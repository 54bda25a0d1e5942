"""Pseudo-label quality of stored CAMs: a background-threshold sweep, as in IRN's ``eval_cam``.

For a background threshold t, an image's CAM label map is

    pred = 0 (background)           where max_k cam_k <= t
    pred = keys[argmax_k cam_k] + 1 elsewhere

(the background "map" is the constant t, and it wins ties), over the high-resolution,
per-class max-normalised maps of the present classes (:mod:`sslib.cam`). Each threshold's
confusion matrix against the ground truth (255 ignored) is accumulated over the split,
and :func:`sslib.metrics.scores` turns it into mIoU, per-class IoU, precision, recall and
over-activation.

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
from .io import IGNORE_INDEX, DataError, write_text
from .metrics import scores

__all__ = ["thresholds_from", "strongest_class", "threshold_labels", "cam_labels", "sweep_confusion", "evaluate_split", "summarize_sweep",
           "write_sweep_csv"]


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


def evaluate_split(cam_dir: str | Path, dataset, split: str, thresholds: Sequence[float], *,
                   progress: bool = True, device: str | torch.device = "cpu") -> Tensor:
    """Accumulated (T, C+1, C+1) confusion matrices of the stored CAMs of split ``split``.

    ``dataset`` yields ``name`` and ``mask`` (H, W) (e.g. ``build_dataset(cfg, split)``);
    CAMs are read from ``cam_path(cam_dir, split, name)``. A missing or malformed CAM file
    raises DataError naming it; an image without a mask, too.
    """
    from tqdm.auto import tqdm

    n = len(dataset.classes) + 1
    total = torch.zeros(len(thresholds), n, n, dtype=torch.long, device=device)
    for i in tqdm(range(len(dataset)), desc=f"eval {split}", unit="img", disable=not progress):
        s = dataset[i]
        if "mask" not in s:
            raise DataError(f"{s['name']}: split {split!r} has no ground-truth mask for this image")
        gt = torch.as_tensor(np.asarray(s["mask"]), device=device)
        c = load_cam(cam_path(cam_dir, split, s["name"]), size=tuple(gt.shape))
        total += sweep_confusion(torch.from_numpy(c["high_res"]), torch.from_numpy(c["keys"]), gt,
                                 thresholds, n)
    return total


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
        "mean_over_activation", "pixel_accuracy", "iou", "precision", "recall",
        "over_activation"}``, per-class dicts by class name).
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
        for k in ("miou", "mean_precision", "mean_recall", "mean_over_activation", "pixel_accuracy"):
            out[k] = _num(p[k])
        for k in ("iou", "precision", "recall", "over_activation"):
            out[k] = {name: _num(x) for name, x in zip(class_names, p[k])}
        return out

    return {"thresholds": ths, "miou_per_threshold": [_num(m) for m in mious],
            "best": pick(best), "fixed": pick(fixed)}


def _num(x: float) -> float | None:
    """Rounded float, None for nan (JSON has no nan)."""
    x = float(x)
    return None if np.isnan(x) else round(x, 5)


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
