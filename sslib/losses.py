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

__all__ = ["classification_loss", "alignment_loss", "alignment_maps", "erode", "superpixel_mean", "compact_ids",
           "seg_cross_entropy"]


def classification_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multilabel soft-margin loss of class scores (N, C) against multi-hot labels (N, C)."""
    return F.multilabel_soft_margin_loss(scores, labels.to(scores.dtype))


def erode(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Binary erosion of (M, H, W) masks by a k x k square with ``cv2.erode`` semantics.

    ``out[y, x] = min over i, j in 0..k-1 of mask[y + i - k//2, x + j - k//2]``, pixels
    outside the image ignored (the border does not erode). Returns a bool (M, H, W) mask.
    """
    if k < 1:
        raise ValueError(f"erosion size must be >= 1, got {k}")
    if k == 1:
        return mask > 0
    a, b = k // 2, k - 1 - k // 2
    # A window holds a hole iff its count of holes is > 0: box sums by cumulative sums
    # (exact integers), one axis at a time; much faster than pooling on the CPU.
    hole = F.pad((mask <= 0).to(torch.int16), (a + 1, b, a + 1, b))  # +1: a leading zero row/col
    hole = hole.cumsum(1, dtype=torch.int16)
    hole = hole[:, k:].sub(hole[:, :-k])
    hole = hole.cumsum(2, dtype=torch.int16)
    return hole[:, :, k:] == hole[:, :, :-k]


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

    ``ids`` (N, P) are compact per-image ids in [0, P) (see :func:`compact_ids`). The sums
    run over rows of C values (``index_add_`` with a 1-D index of N * P global ids), so no
    (N, C, P) index tensor is ever built.
    """
    n, c, p = values.shape
    gid = (ids + torch.arange(n, device=ids.device)[:, None] * p).reshape(-1)   # (N*P,)
    rows = values.transpose(1, 2).reshape(n * p, c)                             # (N*P, C)
    sums = values.new_zeros(n * p, c).index_add_(0, gid, rows)
    counts = values.new_zeros(n * p).index_add_(0, gid, values.new_ones(n * p))
    means = sums / counts.clamp_min(1.0)[:, None]
    return means.index_select(0, gid).reshape(n, p, c).transpose(1, 2)


def _max_norm(x: torch.Tensor) -> torch.Tensor:
    """(N, C, P): clamp at 0 and divide each map by (its max + 1e-5)."""
    x = x.clamp_min(0)
    return x / (x.amax(dim=2, keepdim=True) + 1e-5)


def alignment_loss(cams: torch.Tensor, superpixels: torch.Tensor, labels: torch.Tensor,
                   threshold: float = 0.3, erosion: int = 8, pack: bool | None = None) -> torch.Tensor:
    """SSC's superpixel alignment loss (a scalar).

    Args:
        cams: (N, C, h, w) raw CAM logits.
        superpixels: (N, H, W) integer superpixel ids at input resolution (any
            non-negative ids, not necessarily consecutive), on the device of ``cams``.
        labels: (N, C) multi-hot image labels, on the device of ``cams`` or on the CPU.
            On the CPU (as a data loader yields them) they are read for free and only the
            present classes' maps are computed; on the device every map is computed and
            the absent ones are masked out, which needs no device-to-host copy. Both give
            the same value.
        threshold: reliable activations are normalised CAM values above this.
        erosion: side of the square that erodes the reliable region.
        pack: compute only the present maps (True) or all maps, masked (False); None:
            pack when ``labels`` are on the CPU. Packing with labels on a GPU would read
            them back to the host once.

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
    ids = compact_ids(sp.flatten(1).long())                                # (N, P)
    if pack is None:
        pack = labels.device.type == "cpu"
    if pack:
        # pack: one "image" per present (image, class) map
        present = (labels == 1).flatten().nonzero()[:, 0]                 # (M,); CPU labels: no sync
        present = present.to(cams.device, non_blocking=True)
        maps = cams.flatten(0, 1).index_select(0, present)[:, None]       # (M, 1, h, w)
        ids = ids.index_select(0, present // c)                            # (M, P)
    else:
        maps = cams * labels.to(cams.dtype)[:, :, None, None]              # (N, C, h, w)
    # multiplying by 0/1 labels before the (per-map, linear) resize is exact and cheaper
    pred = F.interpolate(maps, size=(h2, w2), mode="bilinear", align_corners=False).flatten(2)
    count = (labels == 1).sum().to(cams.device) * (h2 * w2)
    return _alignment(pred, ids, (h2, w2), threshold, erosion) / count.clamp_min(1).to(cams.dtype)


@torch.no_grad()
def alignment_maps(cams: torch.Tensor, superpixels: torch.Tensor, labels: torch.Tensor,
                   threshold: float = 0.3, erosion: int = 8) -> dict[str, torch.Tensor]:
    """The maps :func:`alignment_loss` compares, for inspection (no gradient).

    Args: as :func:`alignment_loss`.

    Returns:
        dict of (N, C, H2, W2) tensors at half the superpixel resolution, absent classes
        zero: ``cam`` (normalised CAM), ``averaged`` (normalised superpixel mean),
        ``reliable`` (bool: eroded CAM > threshold) and ``target`` (max(averaged,
        cam * reliable)); and ``superpixels`` (N, H2, W2), the downsampled ids.
        ``((cam - target) ** 2)`` summed over present maps / their pixel count is the loss.
    """
    n, c = cams.shape[:2]
    sp = F.interpolate(superpixels[:, None].float(), scale_factor=0.5, mode="nearest")[:, 0]
    h2, w2 = sp.shape[-2:]
    ids = compact_ids(sp.flatten(1).long())
    maps = cams * labels.to(cams.device, cams.dtype)[:, :, None, None]
    pred = F.interpolate(maps, size=(h2, w2), mode="bilinear", align_corners=False).flatten(2)
    averaged = _max_norm(superpixel_mean(pred, ids))
    cam = _max_norm(pred)
    reliable = erode((cam > threshold).view(n * c, h2, w2), erosion).view(n, c, -1)
    target = torch.maximum(averaged, cam * reliable)
    shape = (n, c, h2, w2)
    return {"cam": cam.view(shape), "averaged": averaged.view(shape), "reliable": reliable.view(shape),
            "target": target.view(shape), "superpixels": sp.long()}


def _alignment(pred: torch.Tensor, ids: torch.Tensor, hw: tuple[int, int], threshold: float,
               erosion: int) -> torch.Tensor:
    """Summed squared error of the alignment loss; pred (B, K, P) label-masked maps of B images."""
    b, k = pred.shape[:2]
    with torch.no_grad():
        averaged = superpixel_mean(pred.detach(), ids).clamp_min_(0)
        averaged = averaged.div_(averaged.amax(dim=2, keepdim=True).add_(1e-5))
    cam = pred.clamp_min(0)
    cam = cam / (cam.amax(dim=2, keepdim=True) + 1e-5)                     # (B, K, P), with grad
    with torch.no_grad():
        reliable = erode((cam > threshold).view(b * k, *hw), erosion).view(b, k, -1)
        target = torch.maximum(averaged, cam.detach() * reliable, out=averaged)
    # maps of absent classes are 0 in both cam and target: summing over all maps and
    # dividing by the present ones' pixel count is the MSE over the present maps
    return F.mse_loss(cam, target, reduction="sum")


def seg_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Segmentation cross-entropy, optionally restricted to a confidence mask (a scalar).

    Args:
        logits: (N, K, H, W) class logits.
        target: (N, H, W) int64 labels, 255 = ignore.
        mask: (N, H, W) bool or float, nonzero = kept; None keeps every labelled pixel.

    Without a mask: the mean cross-entropy over the non-ignored pixels
    (``F.cross_entropy(ignore_index=255)``). With a mask: the mean over the pixels that
    are kept and not ignored, 0 when there is none. ``train_seg.methods.ce.confidence: true``
    ignores the pixels outside BECO's confidence mask this way.
    """
    if mask is None:
        return F.cross_entropy(logits, target, ignore_index=255)
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")   # (N, H, W)
    keep = (mask != 0) & (target != 255)
    total = torch.where(keep, ce, ce.new_zeros(())).sum()
    return total / keep.sum().clamp_min(1).to(ce.dtype)
