"""BECO: boundary-enhanced co-training of two segmentation networks on noisy pseudo labels.

Recipe (Rong et al., CVPR 2023; official ``models/train_beco.py`` and
``datasets/transforms/imgmix.py``), as implemented here:

* Two networks are trained on offline pseudo labels with a confidence mask
  (1 = confident pixel). Confident pixels get cross-entropy on the pseudo label; the
  others get a co-training term, each network learning the other's argmax
  (:func:`beco_loss`).
* Every batch is augmented by ClassMix (:func:`class_mix`): the batch is split in two
  halves and each image, with probability ``p``, receives the pixels of half of the
  classes (``ceil(n/2)`` of its ``n`` present ones, :func:`random_class_mask`) of its
  partner in the other half.
* During warm-up the pasted region comes from the partner's offline labels and there is
  no boundary term. Afterwards the softmax of both networks' averaged logits (BECO's
  ``forward_cat``) gives online labels
  and a confidence mask (:func:`online_labels`); the region is chosen among the
  partner's confident online classes, mixed images are trained on the mixed *online*
  labels and masks, and the band around the pasted region's edge
  (:func:`boundary_band`) up-weights the losses there by ``1 + w * band``.
* Pixels outside the image (crop padding, label 255) and ignored pixels (255 in the
  pseudo label) take part in nothing: no loss term and no mean's denominator
  (:func:`beco_loss` averages over the labelled pixels), and no online label is formed
  there (:func:`online_labels` with ``valid``), so they are never pasted nor learnt from.
  With no padding and no ignored pixel (SSC's crop on random-walk labels) this is BECO's
  mean over all pixels.

Differences from the official code, none changing the expected result:

* Output order: BECO interleaves the pairs (A_0 <- B_0, B_0 <- A_0, A_1 <- B_1, ...);
  here the outputs keep the input order by halves: output ``i < N/2`` is A_i with regions
  of B_i pasted, output ``N/2 + i`` is B_i with regions of A_i pasted.
* Randomness comes from torch (optionally a ``torch.Generator`` on the tensors' device)
  instead of Python's ``random`` and NumPy, and everything is vectorised over the batch
  on the tensors' device; the "inside" and "isbdry" maps BECO computes but never uses
  are dropped.
* BECO's optional augmentation after mixing (``mix_aug``, ``augment_withmask``) is not
  part of this module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["boundary_band", "random_class_mask", "class_mix", "online_labels", "beco_loss"]

IGNORE = 255
_NUM_BINS = 256  # label values are in [0, 255]; a fixed width avoids reading the max back


def boundary_band(region: torch.Tensor, size: int = 1) -> torch.Tensor:
    """Pixels within ``size`` of the edge of a region, on either side.

    Args:
        region: (N, H, W) bool.
        size: half side of the square structuring element, kernel ``2 * size + 1``.

    Returns:
        (N, H, W) float: dilation minus erosion of the region. Pixels outside the image
        count as outside the region for the dilation and as inside it for the erosion
        (``cv2``'s default borders), so the image edge itself creates no band. An empty
        or full region has no band (BECO's ``torch.unique(mask).size(0) == 1`` test).
    """
    if size < 0:
        raise ValueError(f"boundary size must be >= 0, got {size}")
    k = 2 * size + 1
    inside = region[:, None].float()                                            # (N, 1, H, W)
    # max_pool2d pads with -inf: outside the image is neither region nor hole
    dilated = F.max_pool2d(inside, k, stride=1, padding=size)
    eroded = 1.0 - F.max_pool2d(1.0 - inside, k, stride=1, padding=size)
    band = (dilated - eroded)[:, 0]
    # implied by the border handling above; kept explicit as BECO's own test
    uniform = region.all(dim=(1, 2)) | ~region.any(dim=(1, 2))                  # (N,)
    return band * (~uniform)[:, None, None]


def _presence(labels: torch.Tensor) -> torch.Tensor:
    """(N, H, W) int64 labels in [0, 255] -> (N, 256) bool: class present in the image."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1)
    present = torch.zeros(n, _NUM_BINS, dtype=torch.bool, device=labels.device)
    return present.scatter_(1, flat, True)


def random_class_mask(labels: torch.Tensor, ignore_bg: bool = True,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixels of a random half of each image's classes.

    Args:
        labels: (N, H, W) int64 in [0, 255], 255 = ignore.
        ignore_bg: class 0 is never chosen.
        generator: torch generator on the labels' device; None: the global RNG.

    Returns:
        (N, H, W) bool: pixels whose class is among ``ceil(n / 2)`` classes drawn
        uniformly without replacement from the image's ``n`` eligible present classes
        (not 255, not 0 when ``ignore_bg``). No eligible class: all False.
    """
    n = labels.shape[0]
    present = _presence(labels)                                                 # (N, 256)
    present[:, IGNORE] = False
    if ignore_bg:
        present[:, 0] = False
    keys = torch.rand(present.shape, generator=generator, device=labels.device)
    keys = keys.masked_fill(~present, 2.0)                                      # absent: last
    rank = keys.argsort(dim=1).argsort(dim=1)                                   # (N, 256)
    take = (present.sum(dim=1, keepdim=True) + 1) // 2                          # ceil(n / 2)
    chosen = present & (rank < take)                                            # (N, 256)
    return chosen.gather(1, labels.reshape(n, -1)).view_as(labels)


def _partner(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, ...): row i is row i + N/2 (first half) or i - N/2 (second half)."""
    return x.roll(x.shape[0] // 2, dims=0)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """A floating copy of a bool/int mask; floating masks are returned as they are."""
    return x if x.is_floating_point() else x.float()


def class_mix(images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, *, p: float,
              ignore_bg: bool = True,
              online: tuple[torch.Tensor, torch.Tensor] | None = None,
              boundary_size: int = 1,
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """BECO's ClassMix of a batch with itself, half against half.

    Output ``i < N/2`` is image A_i = ``images[i]`` with regions of B_i =
    ``images[N/2 + i]`` pasted; output ``N/2 + i`` is B_i with regions of A_i pasted.
    Each output is mixed independently with probability ``p``; an unmixed output is its
    input image with its offline label and mask, and a zero band.

    Args:
        images: (N, 3, H, W) float, N even.
        labels: (N, H, W) int64 offline pseudo labels, 255 = ignore.
        masks: (N, H, W) float or bool offline confidence (1 = confident).
        p: probability of mixing each output.
        ignore_bg: the background class 0 is never pasted.
        online: None during warm-up; afterwards ``(online_labels (N, H, W) int64,
            online_masks (N, H, W) float)`` from :func:`online_labels`.
        boundary_size: half side of the band's kernel (online mode only).
        generator: torch generator on the images' device; None: the global RNG.

    Warm-up: the region is :func:`random_class_mask` of the source's offline labels;
    image, label and mask of the source are pasted inside it; band zero.
    Online: the region is chosen among the source's online classes where its online mask
    is set; a mixed output gets the mix of the online labels and of the online masks,
    and band = :func:`boundary_band` of the region.

    Returns:
        {"image": (N, 3, H, W), "label": (N, H, W) int64, "mask": (N, H, W) float,
        "band": (N, H, W) float}.
    """
    n = images.shape[0]
    if n % 2:
        raise ValueError(f"batch_size must be even for class_mix, got {n}")
    mixed = torch.rand(n, generator=generator, device=images.device) < p         # (N,)
    masks = _as_float(masks)
    if online is None:
        region = random_class_mask(_partner(labels), ignore_bg, generator)
        region &= mixed[:, None, None]
        return {"image": _paste(images, region), "label": _paste(labels, region),
                "mask": _paste(masks, region), "band": torch.zeros_like(masks)}
    labels_ol, masks_ol = online[0], _as_float(online[1])
    source = torch.where(masks_ol > 0, labels_ol, IGNORE)
    region = random_class_mask(_partner(source), ignore_bg, generator)
    region &= mixed[:, None, None]
    keep = mixed[:, None, None]
    return {"image": _paste(images, region),
            "label": torch.where(keep, _paste(labels_ol, region), labels),
            "mask": torch.where(keep, _paste(masks_ol, region), masks),
            "band": boundary_band(region, boundary_size).to(masks.dtype)}


def _paste(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """x (N, ...) with its partner's values inside region (N, H, W) bool (broadcast over C)."""
    if x.dim() == 4:
        region = region[:, None]
    return torch.where(region, _partner(x), x)


@torch.no_grad()
def online_labels(prob_mean: torch.Tensor, threshold: float = 0.95,
                  valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Online pseudo labels from the two networks' averaged softmax.

    Args:
        prob_mean: (N, K, H, W) class probabilities.
        threshold: confidence above which a pixel is kept (BECO's ``highres_t``).
        valid: (N, H, W) bool, the pixels that may get an online label (not padding, not
            ignored in the offline label); None: all.

    Returns:
        (labels (N, H, W) int64 argmax, 255 outside ``valid``; mask (N, H, W) float: max
        probability > threshold, 0 outside ``valid``).
    """
    top, arg = prob_mean.max(dim=1)
    keep = top > threshold
    if valid is not None:
        arg = arg.masked_fill(~valid, IGNORE)
        keep &= valid
    return arg, keep.float()


def beco_loss(logits1: torch.Tensor, logits2: torch.Tensor, label: torch.Tensor, mask: torch.Tensor,
              band: torch.Tensor, *, w_band: tuple[float, float] = (0.2, 0.2),
              w_band_cot: tuple[float, float] = (0.0, 0.0)) -> dict[str, torch.Tensor]:
    """BECO's co-training loss of two networks.

    Args:
        logits1, logits2: (N, K, H, W) logits of the two networks.
        label: (N, H, W) int64 pseudo labels, 255 = ignore.
        mask: (N, H, W) float confidence (1 = confident).
        band: (N, H, W) float boundary band of the pasted region (0 when none).
        w_band: band weights of the two networks' cross-entropy terms (BECO's
            ``bdry_whb``, ``bdry_whi``).
        w_band_cot: band weights of the co-training terms (``bdry_wlb``, ``bdry_wli``).

    For network j with partner o, over the labelled pixels V (``label != 255``: crop
    padding and ignored pixels are not in V):
    ``ce_j = sum_V(CE(logits_j, label) * mask * (1 + w_band[j] * band)) / |V|`` and
    ``cot_j = sum_V(CE(logits_j, argmax(logits_o)) * (1 - mask) * (1 + w_band_cot[j] * band)) / |V|``,
    the argmax carrying no gradient; every term is 0 when V is empty. Pixels outside V
    change neither the loss nor its gradient. BECO's means run over all N * H * W pixels:
    the same when every pixel is labelled.

    Returns:
        {"total": ce1 + ce2 + cot1 + cot2, "ce1", "ce2", "cot1", "cot2"}, scalars.
    """
    out: dict[str, torch.Tensor] = {}
    valid = label != IGNORE
    count = valid.sum().clamp(min=1)
    target = label.masked_fill(~valid, 0)
    pairs = ((logits1, logits2), (logits2, logits1))
    for j, (own, other) in enumerate(pairs):
        ce = F.cross_entropy(own, target, reduction="none")
        w = torch.where(valid, mask * (1 + w_band[j] * band), 0.0)
        out[f"ce{j + 1}"] = (ce * w).sum() / count
        peer = other.detach().argmax(dim=1)
        cot = F.cross_entropy(own, peer, reduction="none")
        w = torch.where(valid, (1 - mask) * (1 + w_band_cot[j] * band), 0.0)
        out[f"cot{j + 1}"] = (cot * w).sum() / count
    out["total"] = out["ce1"] + out["ce2"] + out["cot1"] + out["cot2"]
    return out
