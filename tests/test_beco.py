"""BECO's band, class mask, ClassMix and losses on tiny hand-made tensors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslib.beco import beco_loss, boundary_band, class_mix, online_labels, random_class_mask
from sslib.losses import seg_cross_entropy

torch.set_num_threads(1)


def _grid(rows: list[str]) -> torch.Tensor:
    """'0'/'1' strings -> (H, W) float."""
    return torch.tensor([[float(c) for c in r] for r in rows])


# --------------------------------------------------------------------------- boundary_band
def test_band_of_square_hand_checked():
    region = torch.zeros(1, 8, 8, dtype=torch.bool)
    region[0, 1:7, 1:7] = True                         # a 6x6 square
    # dilation by 3x3 fills the 8x8 image, erosion leaves the inner 4x4
    expected = _grid(["11111111",
                      "11111111",
                      "11000011",
                      "11000011",
                      "11000011",
                      "11000011",
                      "11111111",
                      "11111111"])
    band = boundary_band(region, 1)
    assert band.dtype == torch.float32 and band.shape == (1, 8, 8)
    assert torch.equal(band[0], expected)
    # size 2 (5x5 kernel): the erosion keeps the central 2x2 only
    expected2 = torch.ones(8, 8)
    expected2[3:5, 3:5] = 0
    assert torch.equal(boundary_band(region, 2)[0], expected2)


def test_band_empty_and_full_are_zero():
    region = torch.zeros(2, 5, 5, dtype=torch.bool)
    region[1] = True
    assert torch.equal(boundary_band(region, 1), torch.zeros(2, 5, 5))


def test_band_image_edge_does_not_erode():
    region = torch.zeros(1, 6, 6, dtype=torch.bool)
    region[0, :, :3] = True                            # touches top, bottom and left edges
    expected = _grid(["001100"] * 6)                   # only the vertical edge at cols 2|3
    assert torch.equal(boundary_band(region, 1)[0], expected)


def test_band_per_image():
    region = torch.zeros(2, 6, 6, dtype=torch.bool)
    region[0, :, :3] = True
    region[1] = True                                   # full: no band, image 0 unaffected
    band = boundary_band(region, 1)
    assert band[0].sum() == 12 and band[1].sum() == 0


# --------------------------------------------------------------------------- random_class_mask
def _labels() -> torch.Tensor:
    """(3, 4, 4): image 0 has {0, 1, 2, 3, 255}, image 1 {0, 5}, image 2 {0, 255}."""
    a = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 255, 0, 0]])
    b = torch.tensor([[0, 0, 0, 0], [0, 5, 5, 0], [0, 5, 5, 0], [0, 0, 0, 0]])
    c = torch.tensor([[0, 0, 255, 255]] * 4)
    return torch.stack([a, b, c])


def test_random_class_mask_picks_half_of_the_classes():
    labels = _labels()
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        m = random_class_mask(labels, ignore_bg=True, generator=g)
        assert m.dtype == torch.bool and m.shape == labels.shape
        chosen = set(labels[0][m[0]].tolist())
        assert len(chosen) == 2 and chosen <= {1, 2, 3}          # ceil(3 / 2), never 0 / 255
        assert torch.equal(m[0], torch.isin(labels[0], torch.tensor(sorted(chosen))))
        assert torch.equal(m[1], labels[1] == 5)                   # ceil(1 / 2) = 1
        assert not m[2].any()                                      # nothing eligible


def test_random_class_mask_with_background():
    labels = _labels()
    seen = set()
    for seed in range(30):
        m = random_class_mask(labels, ignore_bg=False, generator=torch.Generator().manual_seed(seed))
        chosen = frozenset(labels[0][m[0]].tolist())
        assert len(chosen) == 2 and 255 not in chosen              # ceil(4 / 2) of {0, 1, 2, 3}
        seen.add(chosen)
        assert torch.equal(m[2], labels[2] == 0)                   # only class 0 is eligible
    assert any(0 in s for s in seen)


def test_random_class_mask_uniform_and_reproducible():
    labels = _labels()[:1].expand(300, 4, 4).contiguous()
    m1 = random_class_mask(labels, generator=torch.Generator().manual_seed(3))
    m2 = random_class_mask(labels, generator=torch.Generator().manual_seed(3))
    assert torch.equal(m1, m2)
    # the excluded class of each image: each of 1, 2, 3 about a third of the time
    excluded = torch.stack([(~m1 & (labels == k)).flatten(1).any(1) for k in (1, 2, 3)], 1)
    assert torch.equal(excluded.sum(1), torch.ones(300, dtype=torch.long))
    counts = excluded.sum(0)
    assert (counts > 60).all(), counts


# --------------------------------------------------------------------------- class_mix
def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n images 4x4, distinct pixel values; labels: two classes in the top quadrants, bg below."""
    images = torch.arange(n * 3 * 16, dtype=torch.float32).view(n, 3, 4, 4)
    labels = torch.zeros(n, 4, 4, dtype=torch.long)
    for i in range(n):
        labels[i, :2, :2] = 1 + i
        labels[i, :2, 2:] = 10 + i
    labels[:, 3, 3] = 255
    masks = (torch.arange(n * 16).view(n, 4, 4) % 3 != 0).float()
    return images, labels, masks


def test_class_mix_p0_is_identity():
    images, labels, masks = _batch()
    out = class_mix(images, labels, masks.bool(), p=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["image"], images) and torch.equal(out["label"], labels)
    assert out["mask"].dtype == torch.float32 and torch.equal(out["mask"], masks)
    assert torch.equal(out["band"], torch.zeros(4, 4, 4))


def test_class_mix_p1_pastes_the_region():
    images, labels, masks = _batch()
    for seed in range(5):
        out = class_mix(images, labels, masks, p=1.0, generator=torch.Generator().manual_seed(seed))
        for i in range(4):
            s = (i + 2) % 4                                    # A_i <- B_i, B_i <- A_i
            region = (out["image"][i] != images[i]).any(0)
            # the region is one of the source's two foreground classes, whole
            assert torch.equal(region, labels[s] == 1 + s) or torch.equal(region, labels[s] == 10 + s)
            r3 = region.expand(3, 4, 4)
            assert torch.equal(out["image"][i][r3], images[s][r3])
            assert torch.equal(out["image"][i][~r3], images[i][~r3])
            assert torch.equal(out["label"][i], torch.where(region, labels[s], labels[i]))
            assert torch.equal(out["mask"][i], torch.where(region, masks[s], masks[i]))
        assert torch.equal(out["band"], torch.zeros(4, 4, 4))     # warm-up: no band


def _online(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Online labels differing from the offline ones (+100 on foreground), confident top half."""
    lab = torch.where((labels > 0) & (labels != 255), labels + 100, 0)
    msk = torch.zeros(labels.shape)
    msk[:, :2] = 1.0
    msk[:, 2, 0] = 1.0
    return lab, msk


def test_class_mix_online_uses_online_targets():
    images, labels, masks = _batch()
    lab_ol, msk_ol = _online(labels)
    out = class_mix(images, labels, masks, p=1.0, online=(lab_ol, msk_ol), boundary_size=1,
                    generator=torch.Generator().manual_seed(1))
    for i in range(4):
        s = (i + 2) % 4
        region = (out["image"][i] != images[i]).any(0)
        assert torch.equal(region, lab_ol[s] == 101 + s) or torch.equal(region, lab_ol[s] == 110 + s)
        assert torch.equal(out["label"][i], torch.where(region, lab_ol[s], lab_ol[i]))
        assert torch.equal(out["mask"][i], torch.where(region, msk_ol[s], msk_ol[i]))
        assert torch.equal(out["band"][i], boundary_band(region[None], 1)[0])
    assert out["band"].sum() > 0


def test_class_mix_online_region_only_from_confident_pixels():
    images, labels, masks = _batch()
    lab_ol, msk_ol = _online(labels)
    msk_ol[:, :, 2:] = 0.0                      # the class in the top-right is never confident
    for seed in range(5):
        out = class_mix(images, labels, masks, p=1.0, online=(lab_ol, msk_ol),
                        generator=torch.Generator().manual_seed(seed))
        for i in range(4):
            s = (i + 2) % 4
            region = (out["image"][i] != images[i]).any(0)
            assert torch.equal(region, (lab_ol[s] == 101 + s) & (msk_ol[s] > 0))


def test_class_mix_online_unmixed_keep_offline_targets():
    images, labels, masks = _batch(8)
    lab_ol, msk_ol = _online(labels)
    out = class_mix(images, labels, masks, p=0.5, online=(lab_ol, msk_ol),
                    generator=torch.Generator().manual_seed(0))
    mixed = (out["image"] != images).flatten(1).any(1)
    assert 0 < mixed.sum() < 8                  # this seed mixes some, not all
    for i in range(8):
        if mixed[i]:
            assert (out["label"][i] > 100).any()
        else:
            assert torch.equal(out["label"][i], labels[i]) and torch.equal(out["mask"][i], masks[i])
            assert not out["band"][i].any()


def test_class_mix_reproducible_and_odd_batch():
    images, labels, masks = _batch()
    a = class_mix(images, labels, masks, p=0.5, generator=torch.Generator().manual_seed(7))
    b = class_mix(images, labels, masks, p=0.5, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="batch_size"):
        class_mix(images[:3], labels[:3], masks[:3], p=1.0)


# --------------------------------------------------------------------------- online_labels
def test_online_labels_threshold():
    prob = torch.tensor([[0.96, 0.02, 0.02], [0.03, 0.95, 0.02], [0.1, 0.3, 0.6]])  # 3 pixels, K = 3
    prob = prob.t().reshape(1, 3, 1, 3)
    lab, msk = online_labels(prob, threshold=0.95)
    assert lab.dtype == torch.long and torch.equal(lab, torch.tensor([[[0, 1, 2]]]))
    assert msk.dtype == torch.float32 and torch.equal(msk, torch.tensor([[[1.0, 0.0, 0.0]]]))  # strict >
    _, msk = online_labels(prob, threshold=0.5)
    assert torch.equal(msk, torch.ones(1, 1, 3))


# --------------------------------------------------------------------------- beco_loss
def _loss_inputs():
    g = torch.Generator().manual_seed(0)
    logits1 = torch.randn(1, 3, 2, 2, generator=g)
    logits2 = torch.randn(1, 3, 2, 2, generator=g)
    label = torch.tensor([[[0, 2], [255, 1]]])
    mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    band = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    return logits1, logits2, label, mask, band


def _manual(own, other, label, mask, band, w, wc):
    """Per-pixel loops; means over the labelled pixels (3 of the 4)."""
    ce = cot = 0.0
    n = 0
    for y in range(2):
        for x in range(2):
            logp = torch.log_softmax(own[0, :, y, x], 0)
            m, b = mask[0, y, x].item(), band[0, y, x].item()
            t = label[0, y, x].item()
            if t == 255:
                continue
            n += 1
            ce += -logp[t].item() * m * (1 + w * b)
            peer = int(other[0, :, y, x].argmax())
            cot += -logp[peer].item() * (1 - m) * (1 + wc * b)
    return ce / n, cot / n


def test_beco_loss_against_manual():
    l1, l2, label, mask, band = _loss_inputs()
    out = beco_loss(l1, l2, label, mask, band, w_band=(0.2, 0.2), w_band_cot=(0.5, 0.0))
    ce1, cot1 = _manual(l1, l2, label, mask, band, 0.2, 0.5)
    ce2, cot2 = _manual(l2, l1, label, mask, band, 0.2, 0.0)
    for k, v in {"ce1": ce1, "ce2": ce2, "cot1": cot1, "cot2": cot2}.items():
        assert math.isclose(out[k].item(), v, rel_tol=1e-5), k
    assert math.isclose(out["total"].item(), ce1 + ce2 + cot1 + cot2, rel_tol=1e-5)


def test_beco_loss_band_weight_is_1_2():
    l1, l2, label, mask, band = _loss_inputs()
    ce = F.cross_entropy(l1, label, ignore_index=255, reduction="none")
    out = beco_loss(l1, l2, label, mask, band)
    # pixel (0, 0): label 0, mask 1, band 1 -> x1.2; (1, 1): x1; (0, 1) mask 0; (1, 0) ignored,
    # and not in the mean: 3 labelled pixels
    expected = (1.2 * ce[0, 0, 0] + ce[0, 1, 1]) / 3
    assert torch.allclose(out["ce1"], expected)
    no_band = beco_loss(l1, l2, label, mask, torch.zeros_like(band))
    assert torch.allclose(no_band["ce1"], (ce[0, 0, 0] + ce[0, 1, 1]) / 3)
    assert torch.allclose(no_band["cot1"], out["cot1"])             # w_band_cot = 0 by default


def test_beco_loss_terms_split_by_confidence():
    l1, l2, label, mask, band = _loss_inputs()
    base = beco_loss(l1, l2, label, mask, band)
    conf = mask.bool()[:, None].expand_as(l1)
    # changing both networks where mask = 1 leaves the co-training terms unchanged
    out = beco_loss(torch.where(conf, l1 * 3 + 1, l1), torch.where(conf, -l2, l2), label, mask, band)
    assert torch.allclose(out["cot1"], base["cot1"]) and torch.allclose(out["cot2"], base["cot2"])
    assert not torch.allclose(out["ce1"], base["ce1"])
    # changing them where mask = 0 leaves the cross-entropy terms unchanged
    out = beco_loss(torch.where(~conf, l1 * 3 + 1, l1), torch.where(~conf, -l2, l2), label, mask, band)
    assert torch.allclose(out["ce1"], base["ce1"]) and torch.allclose(out["ce2"], base["ce2"])
    assert not torch.allclose(out["cot1"], base["cot1"])


def test_beco_loss_cot_gradient_stays_in_its_network():
    l1, l2, label, mask, band = _loss_inputs()
    l1.requires_grad_(True)
    l2.requires_grad_(True)
    beco_loss(l1, l2, label, mask, band)["cot1"].backward()
    assert l2.grad is None
    assert l1.grad is not None and l1.grad.abs().sum() > 0
    # and only at low-confidence pixels
    assert torch.equal(l1.grad[0, :, 0, 0], torch.zeros(3))


# --------------------------------------------------------------------------- seg_cross_entropy
def test_seg_cross_entropy_mask():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, generator=g)
    target = torch.randint(0, 4, (2, 3, 3), generator=g)
    target[0, 0, 0] = 255
    mask = torch.rand(2, 3, 3, generator=g) > 0.4
    mask[0, 0, 0] = True                                           # kept but ignored
    ce = F.cross_entropy(logits, target.clamp_max(3), reduction="none")
    keep = mask & (target != 255)
    assert torch.allclose(seg_cross_entropy(logits, target, mask), ce[keep].mean())
    assert torch.allclose(seg_cross_entropy(logits, target, mask.float()), ce[keep].mean())
    changed = torch.where(mask[:, None], logits, logits * 5 - 2)   # only outside the mask
    assert torch.allclose(seg_cross_entropy(changed, target, mask), ce[keep].mean())
    assert torch.equal(seg_cross_entropy(logits, target),
                       F.cross_entropy(logits, target, ignore_index=255))


def test_seg_cross_entropy_empty_mask_is_zero():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    loss = seg_cross_entropy(logits, target, torch.zeros(1, 2, 2))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
