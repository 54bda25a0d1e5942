"""Dense CRF refinement of label maps and of class probabilities (Krähenbühl & Koltun's CRF).

:func:`crf_label` is the refinement IRN applies to CAM label maps before it mines
inter-pixel relations (IRN's ``crf_inference_label``, used unchanged by BECO and SSC):

* the unary of a pixel labelled l is ``-log(gt_prob)`` for l and
  ``-log((1 - gt_prob) / (n - 1))`` for every other label (pydensecrf's
  ``unary_from_labels`` with ``zero_unsure=False``: label 0 is a label like any other,
  not "unknown");
* a Gaussian (smoothness) pairwise term, positions scaled by ``gauss_sxy``, weight
  ``gauss_compat``; a bilateral (appearance) term, positions scaled by ``bilateral_sxy``
  and RGB by ``bilateral_srgb``, weight ``bilateral_compat``;
* ``t`` mean-field iterations; each pixel takes the label of largest marginal (the first
  label on ties, as ``np.argmax``).

The defaults are IRN's (t 10, gt_prob 0.7, Gaussian 3 / 3, bilateral 50 / 5 / 10);
:class:`CRFParams` bundles them.

The CRF comes from the ``pydensecrf`` module (PyPI package ``pydensecrf2``, a maintained
build of Lucas Beyer's pydensecrf that compiles on current Python and numpy). It is
imported only when a CRF is run, so the rest of the library works without it; without it
:func:`crf_label` (and :func:`crf_prob`) raise ImportError saying what to install.

:func:`crf_prob` is the post-processing BECO applies to the segmentation network's
softmax at test time (``utils/crf.py``'s ``DenseCRF``, called by ``test.py --crf``): the
unary is ``-log(prob)`` (pydensecrf's ``unary_from_softmax``, probabilities clipped to
``[1e-5, 1]``), the pairwise terms are the same two kernels with BECO's weights
(:class:`SegCRFParams`: t 10, Gaussian xy 1 / weight 3, bilateral xy 67 / rgb 3 / weight 4),
and it returns the marginals rather than a label map. BECO's ``test.py`` hands the CRF
not the image but the mean-subtracted image cast to uint8 (negative values wrap around);
:func:`beco_crf_image` rebuilds that array from the real image, for exact reproduction.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CRFParams", "crf_label", "crf_available", "INSTALL_HINT",
           "SegCRFParams", "crf_prob", "beco_crf_image", "BECO_MEAN_RGB"]

#: what the ImportError of a missing CRF module says
INSTALL_HINT = "pip install pydensecrf2 (its import name is pydensecrf)"


@dataclass(frozen=True)
class CRFParams:
    """The dense CRF's settings (IRN's values by default); ``crf_label(..., **p.kwargs())``."""

    t: int = 10
    gt_prob: float = 0.7
    gauss_sxy: float = 3
    gauss_compat: float = 3
    bilateral_sxy: float = 50
    bilateral_srgb: float = 5
    bilateral_compat: float = 10

    def kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of :func:`crf_label`."""
        return dataclasses.asdict(self)


def _import_densecrf():
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_labels
    except ImportError as e:
        raise ImportError(f"the dense CRF needs the pydensecrf module, which is not installed: "
                          f"{INSTALL_HINT}") from e
    return dcrf, unary_from_labels


def crf_available() -> bool:
    """Whether the ``pydensecrf`` module can be imported (a stage can check before its loop)."""
    try:
        _import_densecrf()
    except ImportError:
        return False
    return True


def crf_label(image_uint8: np.ndarray, labels: np.ndarray, n_labels: int, *, t: int = 10,
              gt_prob: float = 0.7, gauss_sxy: float = 3, gauss_compat: float = 3,
              bilateral_sxy: float = 50, bilateral_srgb: float = 5,
              bilateral_compat: float = 10) -> np.ndarray:
    """Refine a hard label map with a dense CRF on the image's colours.

    Args:
        image_uint8: (H, W, 3) uint8 RGB image (copied to C order if it is not; other
            dtypes are refused rather than silently rescaled).
        labels: (H, W) integer labels in ``0 .. n_labels - 1``.
        n_labels: number of labels n (>= 1).
        t: mean-field iterations.
        gt_prob: the probability the unary gives a pixel's own label, in (0, 1).
        gauss_sxy, gauss_compat: the Gaussian term's position scale and weight.
        bilateral_sxy, bilateral_srgb, bilateral_compat: the bilateral term's position
            and colour scales and weight.

    Returns:
        (H, W) int64 labels in ``0 .. n_labels - 1``. With ``n_labels == 1`` every pixel is
        0 and no CRF is run (pydensecrf's unary divides by ``n - 1``).

    Raises:
        ImportError: pydensecrf is missing (the message says ``pip install pydensecrf2``).
        ValueError: wrong shapes, dtype, or labels out of range.
    """
    image = _check_image(image_uint8, "crf_label")
    lab = np.asarray(labels)
    h, w = image.shape[:2]
    if lab.shape != (h, w):
        raise ValueError(f"crf_label: labels are {lab.shape}, the image is {(h, w)}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"crf_label: labels must be integers, got {lab.dtype}")
    n = int(n_labels)
    if n < 1:
        raise ValueError(f"crf_label: n_labels must be >= 1, got {n_labels}")
    if lab.size and (lab.min() < 0 or lab.max() >= n):
        raise ValueError(f"crf_label: labels must lie in [0, {n}), got [{lab.min()}, {lab.max()}]")
    if not 0 < gt_prob < 1:
        raise ValueError(f"crf_label: gt_prob must lie in (0, 1), got {gt_prob}")
    if n == 1:
        return np.zeros((h, w), np.int64)
    dcrf, unary_from_labels = _import_densecrf()
    unary = unary_from_labels(lab.astype(np.int64), n, gt_prob=gt_prob, zero_unsure=False)
    q = _mean_field(dcrf, image, unary, n, t, gauss_sxy, gauss_compat, bilateral_sxy, bilateral_srgb,
                    bilateral_compat)
    return np.argmax(q, axis=0).astype(np.int64)


def _mean_field(dcrf, image: np.ndarray, unary: np.ndarray, n: int, t: int, gauss_sxy: float,
                gauss_compat: float, bilateral_sxy: float, bilateral_srgb: float,
                bilateral_compat: float) -> np.ndarray:
    """``t`` mean-field iterations of a dense CRF with ``unary`` (n, H*W) on ``image``
    (H, W, 3) uint8 and the Gaussian + bilateral terms; returns (n, H, W) float32 marginals."""
    h, w = image.shape[:2]
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(np.require(unary, np.float32, ['C', 'W']))
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.require(image, np.uint8, ['C', 'W']),  # pydensecrf needs a writeable buffer
                             compat=bilateral_compat)
    return np.asarray(crf.inference(int(t)), dtype=np.float32).reshape(n, h, w)


# --------------------------------------------------------------------------- soft CRF (BECO)
#: the per-channel RGB mean BECO's ``test.py`` subtracts (0..255 scale, RGB order)
BECO_MEAN_RGB = (122.675, 116.669, 104.008)


@dataclass(frozen=True)
class SegCRFParams:
    """The dense CRF BECO runs on segmentation probabilities (``utils/crf.py``'s ``DenseCRF``
    defaults: ``iter_max`` 10, ``pos_xy_std`` 1, ``pos_w`` 3, ``bi_xy_std`` 67,
    ``bi_rgb_std`` 3, ``bi_w`` 4); ``crf_prob(..., **p.kwargs())``."""

    t: int = 10
    gauss_sxy: float = 1
    gauss_compat: float = 3
    bilateral_sxy: float = 67
    bilateral_srgb: float = 3
    bilateral_compat: float = 4

    def kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of :func:`crf_prob`."""
        return dataclasses.asdict(self)


def _import_densecrf_softmax():
    """``(densecrf module, unary_from_softmax)``; ImportError with the install hint if missing."""
    dcrf, _ = _import_densecrf()
    from pydensecrf.utils import unary_from_softmax
    return dcrf, unary_from_softmax


def _check_image(image_uint8: np.ndarray, who: str) -> np.ndarray:
    """The image as an array, or ValueError unless it is (H, W, 3) uint8."""
    image = np.asarray(image_uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{who}: expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    return image


def _check_prob(prob: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The probabilities as an array, or ValueError unless (K, H, W) float, finite, in [0, 1]."""
    p = np.asarray(prob)
    if p.ndim != 3 or p.shape[0] < 1 or p.shape[1:] != hw:
        raise ValueError(f"crf_prob: expected prob of shape (K, {hw[0]}, {hw[1]}) with K >= 1 "
                         f"(the image is {hw}), got {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"crf_prob: prob must be floating point, got {p.dtype}")
    if p.size and not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
        raise ValueError("crf_prob: prob must be finite and lie in [0, 1] (a softmax over K)")
    return p


def crf_prob(image_uint8: np.ndarray, prob: np.ndarray, *, t: int = 10, gauss_sxy: float = 1,
             gauss_compat: float = 3, bilateral_sxy: float = 67, bilateral_srgb: float = 3,
             bilateral_compat: float = 4) -> np.ndarray:
    """Refine class probabilities with a dense CRF; the unary is ``-log(prob)``.

    BECO's segmentation post-processing (``utils/crf.py``'s ``DenseCRF.__call__``); the
    defaults are its settings (:class:`SegCRFParams`). Each pixel's label is the argmax
    over K of the result.

    Args:
        image_uint8: (H, W, 3) uint8 image for the bilateral term (RGB; copied to C order
            if it is not). For BECO's exact numbers pass :func:`beco_crf_image` of the image.
        prob: (K, H, W) floating probabilities (a softmax over K), values in [0, 1]; they
            are clipped to ``[1e-5, 1]`` before the log, as pydensecrf's ``unary_from_softmax``.
        t: mean-field iterations (>= 0).
        gauss_sxy, gauss_compat: the Gaussian term's position scale and weight.
        bilateral_sxy, bilateral_srgb, bilateral_compat: the bilateral term's position
            and colour scales and weight.

    Returns:
        (K, H, W) float32 marginals, summing to 1 over K at each pixel. With K == 1 they
        are all 1 and no CRF is run.

    Raises:
        ImportError: pydensecrf is missing (the message says ``pip install pydensecrf2``).
        ValueError: wrong shapes or dtypes, probabilities outside [0, 1], or t < 0.
    """
    image = _check_image(image_uint8, "crf_prob")
    h, w = image.shape[:2]
    p = _check_prob(prob, (h, w))
    if int(t) != t or t < 0:
        raise ValueError(f"crf_prob: t must be an integer >= 0, got {t}")
    k = p.shape[0]
    if k == 1:
        return np.ones((1, h, w), np.float32)
    dcrf, unary_from_softmax = _import_densecrf_softmax()
    unary = unary_from_softmax(p.astype(np.float32, copy=False))
    return _mean_field(dcrf, image, unary, k, t, gauss_sxy, gauss_compat, bilateral_sxy, bilateral_srgb,
                       bilateral_compat)


def beco_crf_image(image_uint8: np.ndarray) -> np.ndarray:
    """The array BECO's ``test.py`` gives the CRF as "the image": mean-subtracted, wrapped to uint8.

    BECO's ``test.py`` loads the image with PIL (``convert('RGB')``, so RGB order, full
    resolution, HWC), its ``MeanSub`` transform makes it float32 and subtracts the RGB
    mean :data:`BECO_MEAN_RGB` ``(122.675, 116.669, 104.008)`` (0..255 scale, no division by
    a std), and before the CRF it casts that with ``image.astype(np.uint8)`` without
    adding the mean back. numpy's float-to-uint8 cast of an out-of-range value is the C
    cast (undefined behaviour); on x86-64 it truncates toward zero and keeps the low 8
    bits, so a value -22.675 becomes -22 -> 234 and 77.325 becomes 77. This function
    computes exactly that, explicitly, on every platform::

        out = (trunc(image - mean) mod 256)  per pixel and channel

    So dark pixels (below the mean) get bright values and the bilateral term sees an
    image with false edges where a channel crosses its mean.

    Args:
        image_uint8: (H, W, 3) uint8 RGB image (the real one, as read from disk).

    Returns:
        (H, W, 3) uint8, C order.

    Raises:
        ValueError: not an (H, W, 3) uint8 array.
    """
    image = _check_image(image_uint8, "beco_crf_image")
    centred = image.astype(np.float64) - np.asarray(BECO_MEAN_RGB, np.float64)
    return np.ascontiguousarray(np.mod(np.trunc(centred).astype(np.int64), 256).astype(np.uint8))
