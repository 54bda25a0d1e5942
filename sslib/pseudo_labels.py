"""Pseudo labels from CAMs and random-walk scores: IRN's IR labels and BECO's confidence masks.

**IR labels** (:func:`ir_label`, IRN's ``cam_to_ir_label``, which BECO and SSC keep): the
training targets of the inter-pixel relation network. From an image's high-resolution CAMs
(:mod:`sslib.cam`) two hard maps are made, each the argmax over a constant threshold plane
(background, index 0) and the K maps (index k + 1; the plane wins ties), and each refined by
the dense CRF (:func:`sslib.crf.crf_label`) on the image:

* the *foreground* map with the high threshold ``fg_threshold`` (IRN 0.30): its classes are
  confident foreground;
* the *background* map with the low threshold ``bg_threshold`` (IRN 0.05): its background is
  confident background.

After mapping the CRF labels 0..K to class ids (0, keys + 1), the IR label is the
foreground map, then 255 (:data:`sslib.formats.IGNORE_INDEX`) wherever the foreground map says
background, then 0 wherever *both* maps say background. So a pixel is its foreground class
wherever the foreground map has one (whatever the background map says), background where
both refined maps agree on background, and ignored in between.

**Confidence masks** (:func:`confidence_mask`, BECO's ``gen_mask``): which pixels of a
random-walk pseudo label are reliable. A pixel's margin is its largest score minus the
next lower one; within each label of the prediction, the pixels of largest margin (half of
them by default) are kept.

**Quality** (:func:`ir_label_counts`, :func:`ir_label_scores`, :func:`ir_label_quality`):
precision of the confident (non-255) IR-label pixels against the ground truth and their
coverage of the valid ground truth.

**Storage**: an IR label is an 8-bit indexed PNG with VOC's palette
(:func:`save_ir_label` / :func:`load_ir_label`); a confidence mask an 8-bit greyscale PNG,
255 kept and 0 dropped (:func:`save_confidence_mask` / :func:`load_confidence_mask`, which
also reads 1-bit PNGs). The loaders raise :class:`sslib.io.DataError` naming the file when
it is missing, unreadable, of the wrong kind or the wrong size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from .crf import CRFParams, crf_label
from .evaluate import cam_labels
from .io import DataError
from .formats import IGNORE_INDEX, read_png_labels, save_png, voc_palette

__all__ = [
    "threshold_argmax", "ir_label", "score_margin", "keep_count", "confidence_mask",
    "ir_label_counts", "ir_label_scores", "ir_label_quality",
    "save_ir_label", "load_ir_label", "load_pseudo_label", "save_confidence_mask", "load_confidence_mask", "files_stamp",
]


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


# ---------------------------------------------------------------------------------------- IR labels

def threshold_argmax(cams: np.ndarray, threshold: float) -> np.ndarray:
    """Argmax over ``[constant threshold plane; the K maps]``: (K, H, W) -> (H, W) int64 in 0..K.

    0 where no map exceeds ``threshold`` (the plane wins ties, as ``np.argmax`` over IRN's
    padded array), else 1 + the index of the largest map (the first one on ties). The
    comparison is made in float32 with the threshold rounded to float32, as IRN's padded
    float32 array does. This is the CAM evaluation's background-threshold rule
    (:func:`sslib.evaluate.cam_labels`) with map indices 0..K-1 as the class ids.
    """
    c = torch.from_numpy(np.ascontiguousarray(cams, dtype=np.float32))
    if c.ndim != 3:
        raise ValueError(f"threshold_argmax: expected (K, H, W) maps, got shape {tuple(c.shape)}")
    return cam_labels(c, torch.arange(c.shape[0]), threshold).numpy()


def _crf_params(crf_params: CRFParams | Mapping[str, Any] | None) -> dict[str, Any]:
    if crf_params is None:
        return CRFParams().kwargs()
    if isinstance(crf_params, CRFParams):
        return crf_params.kwargs()
    return CRFParams(**dict(crf_params)).kwargs()  # unknown names raise TypeError


def ir_label(image_uint8: np.ndarray, high_res: np.ndarray | Tensor, keys: np.ndarray | Tensor, *,
             fg_threshold: float = 0.30, bg_threshold: float = 0.05,
             crf: Callable[..., np.ndarray] = crf_label,
             crf_params: CRFParams | Mapping[str, Any] | None = None) -> np.ndarray:
    """IRN's inter-pixel-relation label of one image.

    Args:
        image_uint8: (H, W, 3) uint8 RGB image (the original, unnormalised).
        high_res: (K, H, W) CAMs of the present classes in [0, 1] (``load_cam(...)["high_res"]``).
        keys: (K,) 0-based class ids of those maps.
        fg_threshold: the background plane of the foreground map (IRN's ``conf_fg_thres``).
        bg_threshold: the background plane of the background map (IRN's ``conf_bg_thres``).
            The default is IRN's and BECO's 0.05 (their ``run_sample.py``), not the 0.10
            this module's specification proposed.
        crf: ``crf(image, labels, n_labels, **params) -> (H, W) labels in 0..n_labels-1``;
            :func:`sslib.crf.crf_label` by default (tests pass a stand-in).
        crf_params: :class:`sslib.crf.CRFParams` or a dict of its fields (IRN's by default).

    Returns:
        (H, W) uint8: class ids 1..C (keys + 1) for confident foreground, 0 for confident
        background, 255 (IGNORE_INDEX) for the uncertain band. With K = 0 every pixel is 0
        (both maps are all background; the CRF is not run).
    """
    image = np.asarray(image_uint8)
    cams = _numpy(high_res).astype(np.float32, copy=False)
    k = np.asarray(_numpy(keys), dtype=np.int64).reshape(-1)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"ir_label: expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if cams.ndim != 3 or cams.shape[1:] != image.shape[:2] or cams.shape[0] != len(k):
        raise ValueError(f"ir_label: CAMs {cams.shape}, keys {k.shape}, image {image.shape} do not match")
    if len(k) and (k.min() < 0 or k.max() + 1 >= IGNORE_INDEX):
        raise ValueError(f"ir_label: class ids must lie in [0, {IGNORE_INDEX - 1}), got {k.tolist()}")
    h, w = image.shape[:2]
    if len(k) == 0:
        return np.zeros((h, w), np.uint8)
    n = len(k) + 1
    params = _crf_params(crf_params)
    lut = np.concatenate([[0], k + 1])

    def refined(threshold: float) -> np.ndarray:
        out = np.asarray(crf(image, threshold_argmax(cams, threshold), n, **params))
        if out.shape != (h, w) or (out.size and (out.min() < 0 or out.max() >= n)):
            raise ValueError(f"ir_label: the CRF returned {out.shape} labels outside [0, {n})")
        return lut[out.astype(np.int64)]

    fg = refined(fg_threshold)
    bg = refined(bg_threshold)
    conf = fg.copy()
    conf[fg == 0] = IGNORE_INDEX
    conf[(fg == 0) & (bg == 0)] = 0     # IRN: bg_conf + fg_conf == 0 (both are >= 0)
    return conf.astype(np.uint8)


# -------------------------------------------------------------------------------- confidence masks

def _scores_tensor(scores: np.ndarray | Tensor) -> Tensor:
    s = torch.as_tensor(scores)
    if not s.is_floating_point() or s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    return s


def score_margin(scores: np.ndarray | Tensor) -> Tensor:
    """Top-1 minus the next lower score per pixel: (K+1, H, W) -> (H, W), as BECO computes it.

    BECO sets every score equal to the pixel's maximum to 0 and takes the maximum again, so
    the second score is the largest score *strictly below* the top one, or 0 if there is
    none (or if all lower ones are negative). Two maps tied at the top therefore do not give
    a margin of 0, and a single map's margin is its score. Half-precision scores are
    computed in float32.
    """
    s = _scores_tensor(scores)
    if s.ndim != 3 or s.shape[0] == 0:
        raise ValueError(f"score_margin: expected (K+1, H, W) scores, got shape {tuple(s.shape)}")
    top = s.amax(0)
    second = torch.where(s < top, s, torch.zeros((), dtype=s.dtype, device=s.device)).amax(0)
    return top - second


def keep_count(n: int, ratio: float) -> int:
    """How many of a label's ``n`` pixels :func:`confidence_mask` keeps: BECO's
    ``int(n // (1 / ratio))``.

    For ratio 0.5 (BECO's) this is floor(n / 2) = floor(n * ratio); for a ratio whose
    reciprocal is not exact in floating point it can be one less than floor(n * ratio)
    (e.g. n = 10, ratio 0.3: 10 // 3.3333333333333335 = 2, not 3). ratio 0 keeps none.
    """
    if not 0 <= ratio <= 1:
        raise ValueError(f"keep_count: ratio must lie in [0, 1], got {ratio}")
    if ratio == 0:
        return 0
    return int(n // (1.0 / ratio))


def confidence_mask(scores: np.ndarray | Tensor, pred: np.ndarray | Tensor,
                    ratio: float = 0.5) -> np.ndarray | Tensor:
    """BECO's confidence mask of a random-walk pseudo label.

    Args:
        scores: (K+1, H, W) random-walk scores with the background map (BECO: the
            constant ``sem_seg_bg_thres`` plane first, then the normalised walks).
        pred: (H, W) integer prediction. Only how it groups pixels matters: each distinct
            value (background included) is one group. BECO passes class ids
            (``keys[argmax(scores)]``, 0 = background); the index of the winning map
            (0..K) gives the same mask.
        ratio: the share of each group kept (BECO's ``thd``, 0.5).

    Returns:
        (H, W) bool, True = confident: within each group of ``pred`` with n pixels, the
        :func:`keep_count` ``(n, ratio)`` pixels of largest :func:`score_margin`. Ties are
        broken by raster order (earlier pixels first; BECO's unstable ``torch.sort`` leaves
        them unspecified). A numpy array for numpy scores, else a tensor on the scores'
        device.
    """
    as_numpy = not isinstance(scores, Tensor)
    margin = score_margin(scores)
    p = torch.as_tensor(pred, device=margin.device)
    if tuple(p.shape) != tuple(margin.shape):
        raise ValueError(f"confidence_mask: pred is {tuple(p.shape)}, the scores are {tuple(margin.shape)}")
    keep_count(0, ratio)  # validates ratio
    flat_p, flat_m = p.reshape(-1), margin.reshape(-1)
    mask = torch.zeros(flat_p.numel(), dtype=torch.bool, device=margin.device)
    for v in torch.unique(flat_p):
        idx = torch.nonzero(flat_p == v)[:, 0]                   # raster order
        n_keep = keep_count(idx.numel(), ratio)
        if n_keep:
            order = torch.sort(flat_m[idx], descending=True, stable=True).indices[:n_keep]
            mask[idx[order]] = True
    mask = mask.reshape(margin.shape)
    return mask.cpu().numpy() if as_numpy else mask


# ----------------------------------------------------------------------------------------- quality

def ir_label_counts(ir: np.ndarray | Tensor, gt: np.ndarray | Tensor,
                    ignore_index: int = IGNORE_INDEX) -> dict[str, int]:
    """Pixel counts of one IR label against its ground truth (sum them over a split).

    Args:
        ir: (H, W) IR label (class ids, 0 = background, ``ignore_index`` = uncertain).
        gt: (H, W) ground truth (``ignore_index`` = not labelled); numpy or torch like ``ir``.

    Returns:
        ``{"valid": gt != ignore, "confident": valid and ir != ignore,
        "correct": confident and ir == gt}``, as ints.
    """
    if tuple(ir.shape) != tuple(gt.shape):
        raise ValueError(f"ir_label_counts: ir is {tuple(ir.shape)}, gt is {tuple(gt.shape)}")
    valid = gt != ignore_index
    confident = valid & (ir != ignore_index)
    correct = confident & (ir == gt)
    return {"valid": int(valid.sum()), "confident": int(confident.sum()), "correct": int(correct.sum())}


def ir_label_scores(counts: Mapping[str, int]) -> dict[str, float]:
    """Precision and coverage from (summed) :func:`ir_label_counts`.

    ``precision`` = correct / confident (share of the confident pixels whose label is
    right), ``coverage`` = confident / valid (share of the valid ground truth that is
    confident); nan where the denominator is 0.
    """
    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {"precision": ratio(counts["correct"], counts["confident"]),
            "coverage": ratio(counts["confident"], counts["valid"])}


def ir_label_quality(ir: np.ndarray | Tensor, gt: np.ndarray | Tensor,
                     ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
    """``{"precision", "coverage"}`` of one (H, W) IR label against its (H, W) ground truth."""
    return ir_label_scores(ir_label_counts(ir, gt, ignore_index))


# ----------------------------------------------------------------------------------------- storage

def save_ir_label(path: str | Path, label: np.ndarray | Tensor) -> None:
    """Write an (H, W) IR label (values 0..254 and 255) as an 8-bit VOC-palette PNG, atomically."""
    arr = _numpy(label)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise ValueError(f"save_ir_label: expected an (H, W) label map in 0..255, got {arr.dtype} {arr.shape} "
                         f"for {path}")
    save_png(path, arr.astype(np.uint8), palette=voc_palette())


def _check_size(path: Path, arr: np.ndarray, size: tuple[int, int] | None, what: str) -> None:
    if size is not None and arr.shape != tuple(size):
        raise DataError(f"{path}: {what} is {arr.shape}, the image is {tuple(size)}")


def load_ir_label(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an IR label written by :func:`save_ir_label` as (H, W) uint8.

    Raises:
        DataError naming the file: missing, unreadable, not an 8-bit indexed or greyscale
        PNG, or not of ``size`` (H, W) when that is given.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: IR label file missing")
    arr = read_png_labels(path)
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8-bit IR label PNG, got {arr.dtype} values")
    _check_size(path, arr, size, "the IR label")
    return arr


def load_pseudo_label(path: str | Path, size: tuple[int, int] | None = None,
                      num_classes: int | None = None) -> np.ndarray:
    """Read a pseudo label PNG (class ids, VOC palette; 255 = ignored) as (H, W) uint8.

    Raises:
        DataError naming the file: missing, unreadable, not 8-bit, not of ``size`` (H, W),
        or holding a class id >= ``num_classes`` (other than 255).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pseudo label file missing")
    arr = read_png_labels(path)
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8-bit pseudo label PNG, got {arr.dtype} values")
    _check_size(path, arr, size, "the pseudo label")
    if num_classes is not None:
        bad = (arr >= num_classes) & (arr != IGNORE_INDEX)
        if bad.any():
            raise DataError(f"{path}: class id {int(arr[bad].max())} in a pseudo label of {num_classes} classes")
    return arr


def save_confidence_mask(path: str | Path, mask: np.ndarray | Tensor) -> None:
    """Write an (H, W) bool mask as an 8-bit greyscale PNG (255 = kept, 0 = not), atomically."""
    arr = _numpy(mask)
    if arr.ndim != 2:
        raise ValueError(f"save_confidence_mask: expected an (H, W) mask, got shape {arr.shape} for {path}")
    if arr.dtype != np.bool_:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"save_confidence_mask: expected a boolean (or 0/1) mask for {path}")
        arr = arr.astype(bool)
    save_png(path, np.where(arr, 255, 0).astype(np.uint8))


def load_confidence_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a confidence mask PNG as (H, W) bool (True = kept).

    Reads :func:`save_confidence_mask`'s 8-bit 0/255 files and 1-bit PNGs.

    Raises:
        DataError naming the file: missing, unreadable, not a greyscale/1-bit PNG, values
        other than 0 and 255, or not of ``size`` (H, W) when that is given.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: confidence mask file missing")
    arr = read_png_labels(path)
    if arr.dtype == np.bool_:
        mask = arr
    else:
        values = np.unique(arr)
        if not np.isin(values, (0, 255)).all():
            raise DataError(f"{path}: not a confidence mask (values {values[:8].tolist()}, expected 0 and 255)")
        mask = arr == 255
    _check_size(path, mask, size, "the confidence mask")
    return mask


def files_stamp(folder: str | Path, pattern: str) -> str:
    """A digest of the names, sizes and modification times of ``folder``'s files matching
    ``pattern`` (a stat per file, no read): it changes when they are made again (what the
    pseudo-label stages keep in ``meta.json`` of the CAM files they read)."""
    import hashlib

    h = hashlib.md5()
    for f in sorted(Path(folder).glob(pattern)):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()
