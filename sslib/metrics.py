"""Segmentation metrics from a confusion matrix: IoU, precision, recall, background false positives.

The confusion matrix is the only state: rows are ground truth, columns are predictions,
so accumulating over a data set is just summing matrices::

    conf = np.zeros((K, K), np.int64)
    for pred, gt in pairs:                       # any shapes, pred.shape == gt.shape
        conf += confusion_matrix(pred, gt, K)    # 255 in gt is ignored
    result = scores(conf, class_names)           # plain floats / lists, JSON-ready
    print(result["miou"]); scores_table(result)  # one row per class

With torch tensors the matrix stays on the tensors' device (sum them there, and call
``scores`` once at the end; it moves the matrix to the CPU).

Undefined values are ``float("nan")`` (e.g. the IoU of a class absent from both ground
truth and prediction). ``json.dumps`` / :func:`sslib.io.write_json` write them as
``NaN``, which Python's json (and DVC) read back.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from .formats import IGNORE_INDEX

__all__ = ["confusion_matrix", "scores", "scores_table"]


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")  # no torch import unless the caller already uses it
    return torch is not None and isinstance(x, torch.Tensor)


def confusion_matrix(pred, gt, num_classes: int, ignore_index: int = IGNORE_INDEX):
    """(K, K) int64 confusion matrix: ``conf[g, p]`` = number of pixels with ground truth
    ``g`` predicted as ``p``.

    Args:
        pred, gt: integer arrays of the same (any) shape, both numpy or both torch
            tensors (then on the same device; the counting runs there with
            ``torch.bincount``).
        num_classes: K.
        ignore_index: pixels with ``gt == ignore_index`` are skipped.

    Returns:
        numpy int64 array for numpy inputs, int64 tensor on the inputs' device for torch.

    Raises:
        ValueError: shapes differ, or a non-ignored pixel has a ground truth or prediction
            outside ``[0, K)`` (such pixels are never silently dropped). A prediction of
            ``ignore_index`` on a valid pixel is an error too.
        TypeError: mixed numpy / torch, or non-integer dtypes.
    """
    k = int(num_classes)
    if k < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    tp, tg = _is_torch(pred), _is_torch(gt)
    if tp != tg:
        raise TypeError("confusion_matrix: pred and gt must both be numpy arrays or both torch tensors")
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"confusion_matrix: pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
    if tp:
        return _confusion_torch(pred, gt, k, ignore_index)
    pred, gt = np.asarray(pred), np.asarray(gt)
    for what, a in (("pred", pred), ("gt", gt)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise TypeError(f"confusion_matrix: {what} must hold integers, got dtype {a.dtype}")
    g = gt.reshape(-1).astype(np.int64, copy=False)
    p = pred.reshape(-1).astype(np.int64, copy=False)
    valid = g != ignore_index
    if not valid.all():
        g, p = g[valid], p[valid]
    _check_range(g, p, k, ignore_index, int(g.size), lambda m: (int(m.min()), int(m.max())))
    return np.bincount(g * k + p, minlength=k * k).reshape(k, k).astype(np.int64, copy=False)


def _check_range(g, p, k: int, ignore_index: int, n: int, minmax) -> None:
    """Raise ValueError if a (non-ignored) gt or pred value lies outside [0, k)."""
    if n:
        glo, ghi = minmax(g)
        plo, phi = minmax(p)
        if glo < 0 or ghi >= k:
            bad = glo if glo < 0 else ghi
            raise ValueError(f"confusion_matrix: ground truth value {bad} is outside [0, {k}) "
                             f"and is not ignore_index={ignore_index}")
        if plo < 0 or phi >= k:
            bad = plo if plo < 0 else phi
            raise ValueError(f"confusion_matrix: prediction value {bad} on a non-ignored pixel "
                             f"is outside [0, {k})")


def _confusion_torch(pred, gt, k: int, ignore_index: int):
    import torch

    if pred.device != gt.device:
        raise ValueError(f"confusion_matrix: pred on {pred.device}, gt on {gt.device}")
    for what, a in (("pred", pred), ("gt", gt)):
        if a.is_floating_point() or a.is_complex():
            raise TypeError(f"confusion_matrix: {what} must hold integers, got dtype {a.dtype}")
    g = gt.reshape(-1).to(torch.int64)
    p = pred.reshape(-1).to(torch.int64)
    valid = g != ignore_index
    g, p = g[valid], p[valid]

    def minmax(t):
        mm = torch.stack([t.min(), t.max()]).tolist()  # one device sync
        return int(mm[0]), int(mm[1])

    _check_range(g, p, k, ignore_index, int(g.numel()), minmax)
    return torch.bincount(g * k + p, minlength=k * k).reshape(k, k).to(torch.int64)


def _nan_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")


def _checked(conf, class_names: Sequence[str] | None, background: int | None) -> tuple[np.ndarray, list[str]]:
    """:func:`scores`' arguments checked: the (K, K) int64 numpy matrix and the K class names."""
    if _is_torch(conf):
        conf = conf.detach().cpu().numpy()
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"scores: expected a square (K, K) matrix, got shape {conf.shape}")
    if not np.issubdtype(conf.dtype, np.integer):
        raise TypeError(f"scores: confusion matrix must hold integer counts, got {conf.dtype}")
    conf = conf.astype(np.int64)
    k = conf.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"scores: {len(names)} class names for a {k}x{k} matrix")
    if background is not None and not 0 <= background < k:
        raise ValueError(f"scores: background index {background} outside [0, {k})")
    return conf, names


def scores(conf, class_names: Sequence[str] | None = None, background: int | None = 0) -> dict[str, Any]:
    """Per-class and mean scores of a (K, K) confusion matrix (rows gt, columns pred).

    For class k with tp = conf[k, k], fp = column sum - tp, fn = row sum - tp:

    * ``iou[k]`` = tp / (tp + fp + fn); nan if k is absent from both gt and prediction.
    * ``precision[k]`` = tp / (tp + fp) (nan if never predicted);
      ``recall[k]`` = tp / (tp + fn) (nan if absent from gt).
    * ``miou`` = mean IoU over the classes that occur in gt or prediction;
      ``mean_precision`` / ``mean_recall`` likewise over defined values.
    * ``pixel_accuracy`` = trace / total.
    * ``background_fp_rate`` = (ground-truth background pixels predicted as any
      foreground class) / (all ground-truth background pixels)
      = 1 - conf[background, background] / conf[background, :].sum(): how much of the
      background the CAMs spill onto (the over-activation SSC targets; 0 is none, 1 is
      every background pixel). nan when there is no background pixel, or ``background``
      is None. Together with ``precision`` (how much of what is predicted k is k) it
      tells variants apart.
    * ``over_activation[k]`` = conf[background, k] / fp: the share of k's false positives
      that lie on background. Kept for backward compatibility; it does not discriminate
      (0.97-1.0 in every run, since most pixels a CAM can wrongly claim are background).
      nan for the background class itself, for classes with no false positives, and for
      all classes when ``background`` is None. ``mean_over_activation`` = nanmean over
      the foreground classes.

    Args:
        conf: (K, K) integer numpy array or torch tensor (any device).
        class_names: K names; default ``"0" .. "K-1"``.
        background: index of the background class, or None if there is none.

    Returns:
        JSON-ready dict: ``class_names`` (list), ``num_classes``, ``background``, the
        per-class lists ``iou``, ``precision``, ``recall``, ``over_activation``, the scalars
        ``miou``, ``mean_precision``, ``mean_recall``, ``pixel_accuracy``,
        ``background_fp_rate``, ``mean_over_activation``, and the counts they come from: ``tp``, ``fp``, ``fn``,
        ``gt_pixels`` (row sums), ``pred_pixels`` (column sums), ``fp_on_background``
        (conf[background, :], zeros if background is None), ``total_pixels``, ``confusion``.
    """
    conf, names = _checked(conf, class_names, background)
    k = conf.shape[0]
    tp = np.diag(conf)
    gt_pixels = conf.sum(axis=1)
    pred_pixels = conf.sum(axis=0)
    fp = pred_pixels - tp
    fn = gt_pixels - tp
    total = int(conf.sum())
    iou = _nan_div(tp, tp + fp + fn)
    precision = _nan_div(tp, pred_pixels)
    recall = _nan_div(tp, gt_pixels)
    if background is None:
        fp_bg = np.zeros(k, np.int64)
        over = np.full(k, np.nan)
        fg = np.ones(k, bool)
        bg_fp_rate = float("nan")
    else:
        fp_bg = conf[background].copy()
        over = _nan_div(fp_bg, fp)
        over[background] = np.nan
        fg = np.arange(k) != background
        bg_fp_rate = float(_nan_div(fn[background], gt_pixels[background]))

    def floats(a: np.ndarray) -> list[float]:
        return [float(x) for x in a]

    def ints(a: np.ndarray) -> list[int]:
        return [int(x) for x in a]

    return {
        "class_names": names,
        "num_classes": k,
        "background": background,
        "iou": floats(iou),
        "precision": floats(precision),
        "recall": floats(recall),
        "over_activation": floats(over),
        "miou": _nanmean(iou),
        "mean_precision": _nanmean(precision),
        "mean_recall": _nanmean(recall),
        "pixel_accuracy": float(np.trace(conf) / total) if total else float("nan"),
        "background_fp_rate": bg_fp_rate,
        "mean_over_activation": _nanmean(over[fg]),
        "tp": ints(tp),
        "fp": ints(fp),
        "fn": ints(fn),
        "gt_pixels": ints(gt_pixels),
        "pred_pixels": ints(pred_pixels),
        "fp_on_background": ints(fp_bg),
        "total_pixels": total,
        "confusion": conf.tolist(),
    }


def scores_table(result: dict[str, Any]):
    """pandas DataFrame with one row per class (index: class name) and columns
    ``iou``, ``precision``, ``recall``, ``over_activation``."""
    import pandas as pd  # lazy: pandas is slow to import and only needed for tables

    cols = ["iou", "precision", "recall", "over_activation"]
    df = pd.DataFrame({c: result[c] for c in cols},
                      index=pd.Index(result["class_names"], name="class"))
    return df
