"""alignment_loss and erode against independent, deliberately plain implementations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslib.losses import alignment_loss, classification_loss, compact_ids, erode


# --------------------------------------------------------------------------- references
def erode_ref(mask: np.ndarray, k: int) -> np.ndarray:
    """cv2.erode with a k x k ones kernel, anchor (k//2, k//2), border ignored: explicit loops."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    a = k // 2
    for y in range(h):
        for x in range(w):
            vals = [mask[y + i - a, x + j - a] for i in range(k) for j in range(k)
                    if 0 <= y + i - a < h and 0 <= x + j - a < w]
            out[y, x] = min(vals)
    return out


def alignment_ref(cams: torch.Tensor, sp: np.ndarray, labels: np.ndarray, thr: float, k: int) -> torch.Tensor:
    """The official algorithm, in float64, one image / class / superpixel at a time."""
    n, c = cams.shape[:2]
    sp2 = sp[:, ::2, ::2][:, : sp.shape[1] // 2, : sp.shape[2] // 2]  # nearest, scale 0.5
    h2, w2 = sp2.shape[1:]
    pred = F.interpolate(cams.double(), size=(h2, w2), mode="bilinear", align_corners=False)
    maps, targets = [], []
    for i in range(n):
        ids = sp2[i]
        for j in range(c):
            if labels[i, j] != 1:
                continue
            m = pred[i, j] * float(labels[i, j])
            avg = torch.zeros_like(m)
            for s in np.unique(ids):  # per-superpixel mean, broadcast back
                sel = torch.from_numpy(ids == s)
                avg[sel] = m.detach()[sel].mean()
            cam = m.clamp_min(0)
            cam = cam / (cam.max() + 1e-5)
            avg = avg.clamp_min(0)
            avg = avg / (avg.max() + 1e-5)
            region = erode_ref((cam.detach().numpy() > thr).astype(np.uint8), k)
            reliable = cam.detach() * torch.from_numpy(region).double()
            maps.append(cam)
            targets.append(torch.where(avg > reliable, avg, reliable))
    return F.mse_loss(torch.stack(maps), torch.stack(targets))


def _case(seed: int, n: int, c: int, hw: tuple[int, int], cam_hw: tuple[int, int], n_sp: int,
          sparse_ids: bool = False):
    g = torch.Generator().manual_seed(seed)
    cams = (torch.randn(n, c, *cam_hw, generator=g) * 2 + 0.5).requires_grad_()
    rng = np.random.default_rng(seed)
    # Voronoi superpixels from random seeds; a different count per image
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    sp = np.zeros((n, *hw), np.int64)
    for i in range(n):
        k = max(2, n_sp - 3 * i)
        pts = rng.uniform([0, 0], hw, size=(k, 2))
        d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
        sp[i] = d.argmin(-1)
        if sparse_ids:
            sp[i] = sp[i] * 37 + 1000  # non-consecutive, large ids
    labels = (rng.uniform(size=(n, c)) < 0.4).astype(np.float32)
    labels[np.arange(n), rng.integers(0, c, n)] = 1.0  # at least one present class per image
    return cams, sp, labels


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_erode_matches_cv2_rule(k):
    rng = np.random.default_rng(k)
    m = (rng.uniform(size=(3, 13, 17)) < 0.8).astype(np.float32)
    m[0] = 1.0
    m[0, 6, 8] = 0.0  # one hole: erodes exactly the k x k window positions that see it
    got = erode(torch.from_numpy(m), k).float().numpy()
    want = np.stack([erode_ref(x, k) for x in m])
    np.testing.assert_array_equal(got, want)
    if k > 1:
        assert got[0].sum() == 13 * 17 - k * k and got[0, 0, 0] == 1.0  # the border does not erode


def test_erode_anchor_hand_example():
    m = torch.ones(1, 5, 5)
    m[0, 2, 2] = 0
    # k = 2, anchor 1: out[y, x] = min(m[y-1..y, x-1..x]) -> zeros at (2..3, 2..3)
    want = torch.ones(5, 5)
    want[2:4, 2:4] = 0
    assert torch.equal(erode(m, 2)[0].float(), want)


def test_compact_ids_ranks_each_row():
    ids = torch.tensor([[7, 3, 7, 100], [5, 5, 5, 5]])
    assert compact_ids(ids).tolist() == [[1, 0, 1, 2], [0, 0, 0, 0]]


@pytest.mark.parametrize("seed, n, c, hw, cam_hw, n_sp, k, sparse", [
    (0, 2, 3, (32, 32), (4, 4), 12, 8, False),
    (1, 3, 4, (33, 47), (5, 7), 15, 3, True),      # odd sizes, non-consecutive ids
    (2, 1, 2, (20, 26), (3, 4), 6, 1, False),      # N = 1, no erosion
    (3, 4, 5, (40, 36), (6, 5), 20, 2, True),      # even kernel, 4 images
])
@pytest.mark.parametrize("pack", [True, False], ids=["packed", "masked"])
def test_alignment_loss_matches_dense_reference(seed, n, c, hw, cam_hw, n_sp, k, sparse, pack):
    cams, sp, labels = _case(seed, n, c, hw, cam_hw, n_sp, sparse)
    ours = alignment_loss(cams, torch.from_numpy(sp), torch.from_numpy(labels), 0.3, k, pack=pack)
    (g_ours,) = torch.autograd.grad(ours, cams)
    ref = alignment_ref(cams, sp, labels, 0.3, k)
    (g_ref,) = torch.autograd.grad(ref, cams)
    assert ours.item() > 0
    assert abs(ours.item() - ref.item()) < 1e-5
    torch.testing.assert_close(g_ours.double(), g_ref.double(), rtol=1e-4, atol=1e-5)


def test_reliable_region_at_the_border_is_kept():
    """A CAM that is high everywhere: erosion must not remove the border, so the target
    equals the CAM itself and the loss vanishes wherever avg <= cam."""
    cams = torch.full((1, 1, 4, 4), 3.0, requires_grad=True)
    sp = torch.arange(64 * 64).reshape(1, 64, 64)  # one superpixel per pixel: averaged == cam
    loss = alignment_loss(cams, sp, torch.ones(1, 1), 0.3, 8)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "masked"])
def test_only_present_classes_count_and_target_is_detached(pack):
    cams, sp, labels = _case(5, 2, 3, (24, 24), (3, 3), 8)
    labels[:] = 0
    labels[0, 1] = 1
    loss = alignment_loss(cams, torch.from_numpy(sp), torch.from_numpy(labels), 0.3, 3, pack=pack)
    (g,) = torch.autograd.grad(loss, cams)
    assert g[0, 1].abs().sum() > 0
    assert g[0, [0, 2]].abs().sum() == 0 and g[1].abs().sum() == 0
    assert loss.item() == pytest.approx(alignment_ref(cams, sp, labels, 0.3, 3).item(), abs=1e-6)


def test_classification_loss_is_multilabel_soft_margin():
    s = torch.tensor([[2.0, -1.0]])
    y = torch.tensor([[1.0, 0.0]])
    want = -(np.log(1 / (1 + np.exp(-2.0))) + np.log(1 - 1 / (1 + np.exp(1.0)))) / 2
    assert classification_loss(s, y).item() == pytest.approx(want, rel=1e-6)


def test_alignment_maps_give_the_loss():
    from sslib.losses import alignment_maps

    g = torch.Generator().manual_seed(3)
    cams = torch.randn(2, 4, 5, 7, generator=g)
    sp = torch.randint(0, 9, (2, 34, 46), generator=g)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    m = alignment_maps(cams, sp, labels, threshold=0.3, erosion=3)
    assert m["cam"].shape == (2, 4, 17, 23) and m["superpixels"].shape == (2, 17, 23)
    assert m["target"][0, 1].abs().sum() == 0 and m["cam"][1, 0].abs().sum() == 0   # absent classes
    assert torch.all(m["target"] >= m["averaged"]) and torch.all(m["target"] >= m["cam"] * m["reliable"])
    # each superpixel of the averaged map is constant
    a, ids = m["averaged"][0, 0], m["superpixels"][0]
    for k in ids.unique():
        v = a[ids == k]
        assert torch.allclose(v, v[0].expand_as(v))
    present = labels.sum() * 17 * 23
    want = ((m["cam"] - m["target"]) ** 2).sum() / present
    torch.testing.assert_close(alignment_loss(cams, sp, labels, 0.3, 3), want)
