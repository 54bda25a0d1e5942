"""Training losses of the CAM network: classification and superpixel alignment (SSC's ASM).

:func:`alignment_loss` is SSC's activation self-modulation: each present class's CAM
is pulled (MSE) toward its superpixel-averaged version, while its reliable activations
(normalised CAM above a threshold, eroded) are kept as a lower bound of the target.

Semantics are those of the official implementation as it runs on a GPU
(``alignment_loss`` in the official ``step/train_cam.py``). Run on a CPU, the official
function computes something else: its ``.cpu().numpy()`` then aliases the CAM tensor,
and the in-place erosion overwrites the prediction itself. This implementation gives
the GPU semantics on every device, fully vectorised: no Python loop over images,
classes or superpixels and no host round-trip (the number of superpixels is never
read back; ids are compacted per image with a sort on the device).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["classification_loss", "alignment_loss", "erode", "superpixel_mean", "compact_ids"]


def classification_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multilabel soft-margin loss of class scores (N, C) against multi-hot labels (N, C)."""
    return F.multilabel_soft_margin_loss(scores, labels.to(scores.dtype))


def erode(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Binary erosion of (M, H, W) masks by a k x k square with ``cv2.erode`` semantics.

    ``out[y, x] = min over i, j in 0..k-1 of mask[y + i - k//2, x + j - k//2]``, pixels
    outside the image ignored (the border does not erode). Returns a float (M, H, W) mask.
    """
    if k < 1:
        raise ValueError(f"erosion size must be >= 1, got {k}")
    m = mask.float()
    if k == 1:
        return m
    a, b = k // 2, k - 1 - k // 2
    padded = F.pad(m[:, None], (a, b, a, b), value=1.0)  # outside counts as set: no border erosion
    return -F.max_pool2d(-padded, k, stride=1)[:, 0]


def compact_ids(ids: torch.Tensor) -> torch.Tensor:
    """Per-row consecutive ranks of integer ids: (N, P) -> (N, P) int64 in [0, P).

    Equal ids in a row get equal ranks, ordered as the ids; computed with a sort on the
    device (no ``unique``, whose output size would need a host round-trip).
    """
    sorted_ids, order = ids.sort(dim=1)
    new = torch.ones_like(sorted_ids, dtype=torch.int64)
    new[:, 0] = 0
    new[:, 1:] = (sorted_ids[:, 1:] != sorted_ids[:, :-1]).long()
    ranks = new.cumsum(1)
    return torch.empty_like(ranks).scatter_(1, order, ranks)


def superpixel_mean(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (N, C, P) over each superpixel, broadcast back: (N, C, P).

    ``ids`` (N, P) are compact per-image ids in [0, P) (see :func:`compact_ids`).
    """
    n, c, p = values.shape
    idx = ids[:, None, :].expand(n, c, p)
    sums = values.new_zeros(n, c, p).scatter_add_(2, idx, values)
    counts = values.new_zeros(n, p).scatter_add_(1, ids, values.new_ones(n, p))
    means = sums / counts.clamp_min(1.0)[:, None, :]
    return means.gather(2, idx)


def _max_norm(x: torch.Tensor) -> torch.Tensor:
    """(N, C, P): clamp at 0 and divide each map by (its max + 1e-5)."""
    x = x.clamp_min(0)
    return x / (x.amax(dim=2, keepdim=True) + 1e-5)


def alignment_loss(cams: torch.Tensor, superpixels: torch.Tensor, labels: torch.Tensor,
                   threshold: float = 0.3, erosion: int = 8) -> torch.Tensor:
    """SSC's superpixel alignment loss (a scalar).

    Args:
        cams: (N, C, h, w) raw CAM logits.
        superpixels: (N, H, W) integer superpixel ids at input resolution (any
            non-negative ids, not necessarily consecutive).
        labels: (N, C) multi-hot image labels.
        threshold: reliable activations are normalised CAM values above this.
        erosion: side of the square that erodes the reliable region.

    Steps: superpixels downsampled by 0.5 (nearest) to (H2, W2) = (H//2, W//2); CAMs
    resized bilinearly to (H2, W2) and multiplied by the labels; the per-superpixel mean
    of those logits broadcast back to pixels; both maps clamped at 0 and divided by
    their per-map max + 1e-5; target = max(averaged map, CAM * eroded(CAM > threshold)),
    detached; loss = mean squared error over the present classes' maps and pixels.
    The gradient flows through the normalised CAM only (its max included).
    """
    n, c = cams.shape[:2]
    sp = F.interpolate(superpixels[:, None].float(), scale_factor=0.5, mode="nearest")[:, 0]
    h2, w2 = sp.shape[-2:]
    lab = labels.to(cams.dtype)
    pred = F.interpolate(cams, size=(h2, w2), mode="bilinear", align_corners=False)
    pred = (pred * lab[:, :, None, None]).flatten(2)                      # (N, C, P)
    ids = compact_ids(sp.flatten(1).long())                                # (N, P)
    with torch.no_grad():
        averaged = _max_norm(superpixel_mean(pred.detach(), ids))
    cam = _max_norm(pred)                                                  # (N, C, P), with grad
    with torch.no_grad():
        reliable = erode((cam > threshold).reshape(n * c, h2, w2), erosion).reshape(n, c, -1)
        target = torch.maximum(averaged, cam * reliable)
    sq = ((cam - target) ** 2).sum(dim=2)                                  # (N, C)
    present = (lab == 1).to(cams.dtype)
    return (sq * present).sum() / (present.sum() * (h2 * w2)).clamp_min(1.0)
