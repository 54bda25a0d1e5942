"""sslib.affinity against hand counts, hand-computed losses and an IRN-style dense random walk."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslib.affinity import (affinity_loss, boundary_to_affinity, pair_indices, pair_labels, random_walk,
                            search_paths, walk_to_labels)


# --------------------------------------------------------------------------- references
def ref_directions(r: int) -> set[tuple[int, int]]:
    """The open upper half disc of radius r: 0 < dy^2 + dx^2 < r^2, dy > 0 or (dy = 0, dx > 0)."""
    return {(dy, dx) for dy in range(0, r) for dx in range(-r, r + 1)
            if 0 < dy * dy + dx * dx < r * r and (dy > 0 or dx > 0)}


def ref_path(dy: int, dx: int) -> set[tuple[int, int]]:
    """Pixels of the bounding box at distance < 1 from the line through (0, 0) and (dy, dx)."""
    norm = math.hypot(dy, dx)
    return {(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
            if abs(dy * x - dx * y) / norm < 1 - 1e-9}


def ref_affinity(b: torch.Tensor, r: int, dirs) -> torch.Tensor:
    """(N, 1, h, w) -> (N, D, h', w'): 1 - amax over shifted crops of each direction's path."""
    rf = r - 1
    ch, cw = b.shape[2] - rf, b.shape[3] - 2 * rf
    out = []
    for dy, dx in dirs:
        crops = [b[:, 0, y:y + ch, rf + x:rf + x + cw] for y, x in sorted(ref_path(dy, dx))]
        out.append(1 - torch.stack(crops).amax(0))
    return torch.stack(out, 1)


def dense_walk(cams: torch.Tensor, boundary: torch.Tensor, r: int, beta: float, exp_times: int):
    """IRN's propagate_to_edge in float64: padded dense affinity matrix, cropped, powered, squared.

    Returns the walked maps (K, h, w) and S = A ** beta (N, N) of the image's pixels.
    """
    h, w = boundary.shape
    rf = r - 1
    big_h, big_w = h + r, w + 2 * r
    bp = F.pad(boundary.double()[None, None], (r, r, 0, r), value=1.0)
    ch, cw = big_h - rf, big_w - 2 * rf
    dirs = sorted(ref_directions(r))
    aff = ref_affinity(bp, r, dirs)[0]                                  # (D, ch, cw)
    full = torch.arange(big_h * big_w).view(big_h, big_w)
    src = full[:ch, rf:rf + cw].reshape(-1)
    n = big_h * big_w
    a = torch.zeros(n, n, dtype=torch.float64)
    for k, (dy, dx) in enumerate(dirs):
        dst = full[dy:dy + ch, rf + dx:rf + dx + cw].reshape(-1)
        a[src, dst] = aff[k].reshape(-1)
        a[dst, src] = aff[k].reshape(-1)
    a[torch.arange(n), torch.arange(n)] = 1.0
    a = a.view(big_h, big_w, big_h, big_w)[:-r, r:-r, :-r, r:-r].reshape(h * w, h * w)
    s = a ** beta
    t = s / s.sum(0, keepdim=True)
    for _ in range(exp_times):
        t = t @ t
    x = (cams.double() * (1 - boundary.double())).reshape(len(cams), -1)
    return (x @ t).view(-1, h, w), s


def _walk_case(seed: int = 0, h: int = 12, w: int = 15, k: int = 3):
    """Low boundary noise, a strong vertical ridge and a few spikes: the walk moves but is stopped."""
    g = torch.Generator().manual_seed(seed)
    b = 0.1 * torch.rand(h, w, generator=g)
    b[:, 7] = 0.9
    b[torch.rand(h, w, generator=g) > 0.9] = 0.7
    cams = torch.rand(k, h, w, generator=g)
    return cams, b


# --------------------------------------------------------------------------- search paths
def test_direction_counts_by_hand():
    # r = 5: 4 on the row dy = 0, then 9 + 9 + 7 + 5; r = 10: 9, then 19 * 4 + 17 + 15 * 2 + 11 + 9
    assert search_paths(5).num_directions == 34
    assert search_paths(10).num_directions == 152
    assert search_paths(2).directions == ((0, 1), (1, 0), (1, -1), (1, 1))


@pytest.mark.parametrize("r", [2, 3, 5, 10])
def test_directions_are_the_half_disc_ordered_by_path_length(r):
    sp = search_paths(r)
    assert set(sp.directions) == ref_directions(r) and len(set(sp.directions)) == len(sp.directions)
    lengths = [len(p) for p in sp.paths]
    assert lengths == sorted(lengths)
    for d, p in zip(sp.directions, sp.paths):
        assert set(p) == ref_path(*d) and len(set(p)) == len(p)
        assert p[0] == d and p[-1] == (0, 0)


def test_path_pixels_by_hand():
    paths = dict(zip(search_paths(5).directions, search_paths(5).paths))
    assert paths[(0, 3)] == ((0, 3), (0, 2), (0, 1), (0, 0))
    assert paths[(1, 1)] == ((1, 1), (0, 1), (1, 0), (0, 0))
    # (2, 2): the diagonal and its two neighbouring diagonals, |x - y| <= 1
    assert set(paths[(2, 2)]) == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)}
    # (3, 2): |3x - 2y| < sqrt(13)
    assert set(paths[(3, 2)]) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2), (3, 1), (3, 2)}
    assert paths[(1, -2)][0] == (1, -2) and len(paths[(1, -2)]) == 6


# --------------------------------------------------------------------------- affinities
@pytest.mark.parametrize("r", [3, 5])
def test_boundary_to_affinity_matches_shifted_crops_values_and_gradient(r):
    g = torch.Generator().manual_seed(r)
    b = torch.rand(2, 1, 11, 13, generator=g, dtype=torch.float64).requires_grad_()
    sp = search_paths(r)
    ours = boundary_to_affinity(b, r)
    ref = ref_affinity(b, r, sp.directions)
    assert ours.shape == (2, sp.num_directions, 11 - (r - 1), 13 - 2 * (r - 1))
    torch.testing.assert_close(ours, ref)
    up = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((ours * up).sum(), b)
    (g_ref,) = torch.autograd.grad((ref * up).sum(), b)
    torch.testing.assert_close(g_ours, g_ref)
    with torch.no_grad():
        torch.testing.assert_close(boundary_to_affinity(b[0, 0], r), ref[0])


def test_boundary_to_affinity_gives_each_gradient_to_the_first_maximal_path_pixel():
    # quantised boundaries tie often; IRN's max pool (and ours) credits the first maximum in path order
    r = 3
    g = torch.Generator().manual_seed(7)
    b = (torch.randint(0, 3, (2, 1, 9, 10), generator=g).double() / 2).requires_grad_()
    aff = boundary_to_affinity(b, r)
    up = torch.randn(aff.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((aff * up).sum(), b)
    rf, (ch, cw) = r - 1, aff.shape[2:]
    ref, ties = torch.zeros_like(b), 0
    for k, path in enumerate(search_paths(r).paths):
        crops = torch.stack([b.detach()[:, 0, y:y + ch, rf + x:rf + x + cw] for y, x in path])  # (L, N, h', w')
        first = crops.argmax(0)                                   # the first maximum in path order
        ties += int(((crops == crops.amax(0)).sum(0) > 1).sum())
        for l, (y, x) in enumerate(path):
            ref[:, 0, y:y + ch, rf + x:rf + x + cw] -= up[:, k] * (first == l)
    assert ties > 100
    torch.testing.assert_close(grad, ref)


def test_pair_indices_and_pair_labels_agree_with_irn_flat_indexing():
    g = torch.Generator().manual_seed(1)
    lab = torch.randint(0, 4, (9, 13), generator=g)
    lab[torch.rand(9, 13, generator=g) > 0.8] = 255
    src, dst = pair_indices((9, 13), 3)
    flat = lab.reshape(-1)
    a, b = flat[src][None], flat[dst]                                # IRN's GetAffinityLabelFromIndices
    valid = (a < 21) & (b < 21)
    pairs = pair_labels(lab, 3)
    d = search_paths(3).num_directions
    assert pairs["bg_pos"].shape == (d, 7, 9)
    assert torch.equal(pairs["bg_pos"].reshape(d, -1), (a == b) & valid & (a == 0))
    assert torch.equal(pairs["fg_pos"].reshape(d, -1), (a == b) & valid & (a > 0))
    assert torch.equal(pairs["neg"].reshape(d, -1), (a != b) & valid)


def test_affinity_loss_by_hand():
    # radius 2 on 2 x 3 maps: one source (0, 1); directions (0,1) (1,0) (1,-1) (1,1) reach
    # (0,2) (1,1) (1,0) (1,2); paths {(0,1),(0,2)}, {(0,1),(1,1)}, the 2x2 boxes of columns 0-1 and 1-2
    p = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64)
    logits = torch.log(p / (1 - p)).expand(2, 1, 2, 3)
    aff = torch.tensor([0.7, 0.5, 0.5, 0.4], dtype=torch.float64)
    torch.testing.assert_close(boundary_to_affinity(p[None, None], 2)[0, :, 0, 0], aff)
    labels = torch.tensor([[[0, 1, 1], [255, 2, 1]],     # fg (0,2), neg (1,1), ignored (1,0), fg (1,2)
                           [[0, 0, 0], [0, 255, 0]]])    # bg (0,2), ignored (1,1), bg (1,0), bg (1,2)
    pairs = pair_labels(labels, 2)
    assert pairs["fg_pos"][:, :, 0, 0].tolist() == [[True, False, False, True], [False] * 4]
    assert pairs["neg"][:, :, 0, 0].tolist() == [[False, True, False, False], [False] * 4]
    assert pairs["bg_pos"][:, :, 0, 0].tolist() == [[False] * 4, [True, False, True, True]]
    e = 1e-5
    bg = -(math.log(0.7 + e) + math.log(0.5 + e) + math.log(0.4 + e)) / (3 + e)
    fg = -(math.log(0.7 + e) + math.log(0.4 + e)) / (2 + e)
    neg = -math.log(1 + e - 0.5) / (1 + e)
    out = affinity_loss(logits, labels, radius=2)
    for key, want in {"bg_pos": bg, "fg_pos": fg, "neg": neg, "pos": bg / 2 + fg / 2,
                      "total": (bg / 2 + fg / 2 + neg) / 2}.items():
        assert out[key].item() == pytest.approx(want, rel=1e-9), key
    # no pairs of a kind: that loss is 0 (IRN's sum / (0 + 1e-5))
    assert affinity_loss(logits[1:], labels[1:], radius=2)["fg_pos"].item() == 0.0


def test_affinity_loss_backpropagates_to_the_logits():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 1, 24, 30, generator=g).requires_grad_()
    labels = torch.randint(0, 3, (2, 24, 30), generator=g)
    out = affinity_loss(logits, labels, radius=5)
    out["total"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# --------------------------------------------------------------------------- random walk
@pytest.mark.parametrize("exp_times", [0, 1, 3, 8])
def test_random_walk_matches_irn_dense_walk(exp_times):
    cams, b = _walk_case()
    ours = random_walk(cams, b, radius=5, beta=10, exp_times=exp_times)
    ref, _ = dense_walk(cams, b, 5, 10, exp_times)
    assert ours.shape == (3, 12, 15) and ours.dtype == torch.float32
    err = (ours.double() - ref).abs().max().item()
    assert err <= 1e-4 * ref.abs().max().item(), err
    torch.testing.assert_close(random_walk(cams, b[None], exp_times=exp_times), ours)


def test_random_walk_other_radius_and_beta():
    cams, b = _walk_case(seed=3, h=9, w=11, k=2)
    ours = random_walk(cams, b, radius=3, beta=4.0, exp_times=4)
    ref, _ = dense_walk(cams, b, 3, 4.0, 4)
    assert (ours.double() - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()


def test_random_walk_keeps_constants_and_degree_weighted_mass():
    cams, b = _walk_case(seed=4)
    # zero boundary: a constant map stays constant (T's columns sum to 1)
    const = torch.full((2, 12, 15), 0.7)
    torch.testing.assert_close(random_walk(const, torch.zeros(12, 15)), const, atol=1e-5, rtol=0)
    # any boundary: cams = 1 / (1 - b) makes the walked input constant 1, a fixed point
    torch.testing.assert_close(random_walk((1 / (1 - b))[None], b)[0], torch.ones(12, 15), atol=5e-5, rtol=0)
    # x -> x T keeps sum_q x(q) c(q), c the column sums of S (S symmetric)
    walked = random_walk(cams, b, exp_times=8)
    _, s = dense_walk(cams, b, 5, 10, 0)
    c = s.sum(0)
    x0 = (cams.double() * (1 - b.double())).reshape(3, -1)
    torch.testing.assert_close(walked.double().reshape(3, -1) @ c, x0 @ c, rtol=1e-4, atol=0)


def test_random_walk_is_stopped_by_a_full_boundary_column():
    # a column of boundary 1 splits the map: no mass crosses it
    cams = torch.zeros(1, 8, 12)
    cams[0, :, :3] = 1.0
    b = torch.zeros(8, 12)
    b[:, 6] = 1.0
    walked = random_walk(cams, b, radius=5, exp_times=6)
    assert walked[0, :, 6:].abs().max().item() == 0.0
    assert walked[0, :, :6].min().item() > 0.0


# --------------------------------------------------------------------------- labels
def test_walk_to_labels_by_hand():
    # bilinear x4 (align_corners=False) of a 2-wide row [v0, v1]:
    # [v0, v0, .875v0+.125v1, .625v0+.375v1, .375v0+.625v1, .125v0+.875v1, v1, v1]
    walked = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.5], [0.0, 0.5]]])
    scores, labels = walk_to_labels(walked * 3, torch.tensor([4, 11]), (6, 7))
    assert scores.shape == (3, 6, 7) and labels.shape == (6, 7) and labels.dtype == torch.int64
    assert torch.equal(scores[0], torch.full((6, 7), 0.25))
    torch.testing.assert_close(scores[1, 0], torch.tensor([1, 1, 0.875, 0.625, 0.375, 0.125, 0]))
    torch.testing.assert_close(scores[2, 0], torch.tensor([0, 0, 0.0625, 0.1875, 0.3125, 0.4375, 0.5]))
    assert (labels == torch.tensor([5, 5, 5, 5, 5, 12, 12])).all()
    _, labels = walk_to_labels(walked[:, None], torch.tensor([4, 11]), (6, 7), bg_threshold=0.4)
    assert (labels == torch.tensor([5, 5, 5, 5, 0, 12, 12])).all()
    # ties go to the first plane, the background
    _, labels = walk_to_labels(walked, torch.tensor([4, 11]), (6, 7), bg_threshold=1.0)
    assert (labels == 0).all()
    scores, labels = walk_to_labels(torch.zeros(0, 2, 2), torch.zeros(0, dtype=torch.int64), (5, 8))
    assert scores.shape == (1, 5, 8) and (labels == 0).all()
    with pytest.raises(ValueError):
        walk_to_labels(walked, torch.tensor([4, 11]), (9, 7))
