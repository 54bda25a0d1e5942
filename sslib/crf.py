"""Dense CRF refinement of a hard label map (the fully connected CRF of Krähenbühl & Koltun).

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
:func:`crf_label` raises ImportError saying what to install.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CRFParams", "crf_label", "crf_available", "INSTALL_HINT"]

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
        image_uint8: (H, W, 3) uint8 RGB image (copied when it is not C-ordered or not
            writable, e.g. read with PIL; other dtypes are refused rather than silently rescaled).
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
    image = np.asarray(image_uint8)
    lab = np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"crf_label: expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
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
    crf = dcrf.DenseCRF2D(w, h, n)
    unary = unary_from_labels(lab.astype(np.int64), n, gt_prob=gt_prob, zero_unsure=False)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    # pydensecrf takes a writable buffer: an image read with PIL (np.asarray) is read-only
    rgb = np.ascontiguousarray(image) if image.flags.writeable else np.array(image, order="C")
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=rgb, compat=bilateral_compat)
    q = np.asarray(crf.inference(int(t)), dtype=np.float32).reshape(n, h, w)
    return np.argmax(q, axis=0).astype(np.int64)
