"""Crop padding and ignored pixels take part in no segmentation loss: not in a term, not in a
mean's denominator, never given an online label (BECO) and never pasted by ClassMix.

Each test changes what the padded pixels hold (their logits, or the image there) and checks
that the loss and its gradient stay the same, and compares the loss on a padded batch with
the loss on the same pixels cropped to the image (no padding at all)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from sslib import seg_methods
from sslib.beco import beco_loss
from sslib.formats import IGNORE_INDEX

torch.set_num_threads(1)
K = 4


def _padded_targets(n: int = 4, h: int = 8, w: int = 12, pad: int = 5, seed: int = 0):
    """Labels and masks of ``n`` crops whose last ``pad`` columns are padding (label 255,
    confidence 255 -> not confident), one ignored pixel inside the image."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, K, (n, h, w), generator=g)
    mask = (torch.rand(n, h, w, generator=g) > 0.5).float()
    band = (torch.rand(n, h, w, generator=g) > 0.7).float()
    label[..., w - pad:] = IGNORE_INDEX
    mask[..., w - pad:] = 0.0
    label[0, 0, 0] = IGNORE_INDEX  # ignored inside the image
    return label, mask, band, w - pad


def _loss_and_grads(l1, l2, label, mask, band):
    l1, l2 = l1.clone().requires_grad_(True), l2.clone().requires_grad_(True)
    out = beco_loss(l1, l2, label, mask, band)
    out["total"].backward()
    return {k: v.detach() for k, v in out.items()}, l1.grad, l2.grad


def test_beco_loss_and_gradient_do_not_see_the_padded_logits():
    label, mask, band, inside = _padded_targets()
    g = torch.Generator().manual_seed(1)
    l1, l2 = torch.randn(4, K, 8, 12, generator=g), torch.randn(4, K, 8, 12, generator=g)
    base, g1, g2 = _loss_and_grads(l1, l2, label, mask, band)
    noise1, noise2 = 10 * torch.randn(l1.shape, generator=g), 10 * torch.randn(l2.shape, generator=g)
    padded = (label == IGNORE_INDEX)[:, None]
    moved, h1, h2 = _loss_and_grads(torch.where(padded, noise1, l1), torch.where(padded, noise2, l2),
                                    label, mask, band)
    for k in base:
        assert torch.allclose(moved[k], base[k], atol=1e-6), k
    assert torch.allclose(h1, g1, atol=1e-7) and torch.allclose(h2, g2, atol=1e-7)
    assert g1[padded.expand_as(g1)].abs().max() == 0 and g2[padded.expand_as(g2)].abs().max() == 0


def test_beco_loss_of_a_padded_crop_is_the_loss_of_its_image_pixels():
    """Padding in no mean's denominator: the padded batch's loss equals the loss of the
    unpadded crop (the first ``inside`` columns) with its one ignored pixel, whose means run
    over the labelled pixels; with no ignored pixel, over every pixel (BECO's mean)."""
    label, mask, band, inside = _padded_targets()
    g = torch.Generator().manual_seed(2)
    l1, l2 = torch.randn(4, K, 8, 12, generator=g), torch.randn(4, K, 8, 12, generator=g)
    full = beco_loss(l1, l2, label, mask, band)
    crop = beco_loss(l1[..., :inside], l2[..., :inside], label[..., :inside], mask[..., :inside],
                     band[..., :inside])
    for k in full:
        assert torch.allclose(full[k], crop[k], atol=1e-6), k
    # independent: network 1's co-training term by hand over the labelled image pixels
    keep = label[..., :inside] != IGNORE_INDEX
    logp = torch.log_softmax(l1[..., :inside], 1)
    peer = l2[..., :inside].argmax(1)
    nll = -logp.gather(1, peer[:, None])[:, 0]
    expected = (nll * (1 - mask[..., :inside]))[keep].sum() / keep.sum()
    assert torch.allclose(full["cot1"], expected, atol=1e-6)


class _Ctx:
    """What a segmentation step reads of :class:`sslib.training.StepContext`."""

    def __init__(self, modules, epoch: int, step: int = 3):
        self.modules, self.epoch, self.step = modules, epoch, step
        self.device = torch.device("cpu")

    @staticmethod
    def autocast():
        return contextlib.nullcontext()


def _nets(names):
    """Per-pixel networks (1x1 convolutions): a pixel's logits depend on that pixel alone."""
    torch.manual_seed(0)
    return {n: torch.nn.Conv2d(3, K, 1) for n in names}


def _step_loss_and_grads(method: str, settings, batch, epoch: int):
    nets = _nets(seg_methods.net_names(method))
    step = seg_methods.SEG_METHODS.get(method).factory(settings, 7)
    loss, parts = step(batch, _Ctx(nets, epoch))
    loss.backward()
    return loss.detach(), parts, [p.grad.clone() for n in nets.values() for p in n.parameters()]


@pytest.mark.parametrize("method,epoch", [("ce", 0), ("beco", 0), ("beco", 5)])
def test_a_training_step_does_not_see_what_the_padding_holds(method, epoch):
    """The ce and BECO steps (BECO in warm-up and with online labels, whose softmax is made
    confident everywhere by a large bias) on a padded batch: filling the padded image pixels
    with anything else changes neither the loss nor a gradient of the networks."""
    label, mask, _, _ = _padded_targets(seed=3)
    conf = mask.long()
    conf[label == IGNORE_INDEX] = IGNORE_INDEX
    conf[0, 0, 0] = 1  # the ignored pixel inside the image may be "confident": still ignored
    g = torch.Generator().manual_seed(4)
    image = torch.randn(4, 3, 8, 12, generator=g)
    settings = (seg_methods.CESettings(confidence=True) if method == "ce" else
                seg_methods.BecoSettings(warm_up_epochs=1, mix_prob=1.0, ignore_bg=True, boundary_size=1,
                                         boundary_weight=0.2, online_threshold=0.3))
    base = _step_loss_and_grads(method, settings, {"image": image, "pseudo_label": label, "confidence": conf}, epoch)
    padded = (label == IGNORE_INDEX)[:, None].expand_as(image)
    other = torch.where(padded, 50 * torch.randn(image.shape, generator=g), image)
    moved = _step_loss_and_grads(method, settings, {"image": other, "pseudo_label": label, "confidence": conf}, epoch)
    assert torch.isfinite(base[0]) and base[0] > 0
    assert torch.allclose(moved[0], base[0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(moved[1], base[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(base[2], moved[2]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
