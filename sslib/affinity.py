"""Pixel affinities from a class-boundary map: IRN's search paths, affinity loss and random walk.

Semantics are those of IRN's code (Ahn et al., CVPR 2019: ``misc/indexing.py``,
``net/resnet50_irn.py``'s ``AffinityDisplacementLoss``, ``voc12/dataloader.py``'s
``GetAffinityLabelFromIndices``, ``step/train_irn.py`` and ``step/make_sem_seg_labels.py``),
which SSC uses unchanged. Everything here is vectorised over pixels (the only Python loops
run over directions or path positions) and runs on the tensors' device.

**Search directions** (:func:`search_paths`, IRN's ``PathIndex.get_search_paths_dst``):
the displacements ``(dy, dx)`` of the open upper half disc, ``0 < dy^2 + dx^2 < r^2`` with
``dy > 0``, or ``dy = 0`` and ``dx > 0``; 34 of them for ``r = 5`` and 152 for ``r = 10``.
Each pair of pixels is counted once (the opposite displacement is the same pair). The
*path* of a direction ``d`` is every pixel ``(y, x)`` of the bounding box of ``0`` and
``d`` whose distance to the line through them is below 1, i.e.
``(dy * x - dx * y)^2 < dy^2 + dx^2`` (both end pixels included); IRN sorts each path
farthest pixel first and orders the directions by path length (stable), and so does this
module, so the direction axis ``D`` matches IRN's affinity and ``search_dst`` order.

**The crop** (IRN's ``PathIndex.get_path_indices``): with ``rf = r - 1`` (IRN's
``radius_floor = ceil(r) - 1``), a map of size (h, w) has sources at rows ``0 .. h - rf - 1``
and columns ``rf .. w - rf - 1``, so that every destination ``p + d`` stays inside: the
affinity and pair-label maps are (h - rf, w - 2 * rf) (``h'``, ``w'`` below).

**Affinity** (:func:`boundary_to_affinity`, IRN's ``to_affinity`` / ``edge_to_affinity``):
``aff(p, p + d) = 1 - max`` of the boundary probability over the path of ``d`` placed at p.

**Training** (:func:`pair_labels`, :func:`affinity_loss`): the affinity losses of IRN's
``AffinityDisplacementLoss`` as ``train_irn`` combines them; the displacement-field half of
IRN's loss is not here (it only serves instance segmentation). The loss lives in this
module because it needs the path logic.

**Inference** (:func:`random_walk`, :func:`walk_to_labels`): IRN's ``propagate_to_edge``
and the post-processing of ``make_sem_seg_labels``. IRN builds the dense (N x N)
transition matrix of the N stride-4 pixels and squares it ``exp_times`` times; here the
transition is applied as a fixed-offset stencil ``2 ** exp_times`` times to the (K, N)
maps, never building an N x N matrix (N = 11,750 at VOC's 375 x 500: 552 MB per dense
matrix; the stencil's weights are (2D + 1) x N floats, 3.2 MB for radius 5).

**Where this follows IRN's code rather than the brief it was written from:**

* positive pair losses are ``-log(aff + 1e-5)`` (the brief: ``-log(aff)``); each of the
  three is ``sum(loss * mask) / (sum(mask) + 1e-5)`` over the whole batch (a mean over
  its pairs, 0 when there are none);
* ``train_irn`` combines them as ``pos = bg_pos / 2 + fg_pos / 2`` and
  ``(pos + neg) / 2`` (the brief: ``pos + neg``); that halved sum is ``"total"`` below
  (IRN's total training loss adds ``(dp_fg + dp_bg) / 2`` of the displacement branch);
* IRN marks a pair valid when both labels are ``< 21`` (VOC's 0 .. 20, so 255 and
  anything above 20 are ignored); here both must differ from ``ignore_index`` (255), the
  same on VOC's IR labels and also right for more than 20 classes;
* the random walk's boundary padding (1.0 at the left, right and bottom, as IRN pads)
  never changes a transition: the path of two in-image pixels lies in their bounding box,
  inside the image, and a pair with an out-of-image end has affinity ``1 - 1 = 0`` and
  is dropped when IRN crops its dense matrix to the image. Here the padding is ``rf``
  rather than IRN's ``r`` (IRN's extra ring of sources lies outside the image) and pairs
  leaving the image are also masked explicitly, so boundary values above 1 cannot leak.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SearchPaths", "search_paths", "pair_indices", "boundary_to_affinity", "pair_labels",
    "affinity_loss", "random_walk", "walk_to_labels", "IGNORE_INDEX",
]

#: label of pixels that belong to no pair (IRN's IR labels: confident bg 0, classes 1..C, 255)
IGNORE_INDEX = 255
#: IRN's epsilon in the pair losses and their normalisation
_EPS = 1e-5


# --------------------------------------------------------------------------- search paths
@dataclass(frozen=True)
class SearchPaths:
    """The directions within a radius and the pixels of each one's path (IRN's ``PathIndex``).

    Attributes:
        radius: r; displacements with ``0 < dy^2 + dx^2 < r^2`` of the upper half plane.
        radius_floor: ``rf = r - 1``, the largest ``|dy|`` and ``|dx|``; the crop margin.
        directions: D ``(dy, dx)`` displacements, ordered by path length (stable in IRN's
            enumeration order ``(0, 1) .. (0, rf)``, then row by row ``dy = 1 .. rf``, ``dx``
            ascending); IRN's ``search_dst``.
        paths: for each direction, the ``(y, x)`` offsets of its path pixels relative to
            the source, the destination first (IRN's sort: ``-|y| - |x|``, stable), the
            source ``(0, 0)`` last.
    """

    radius: int
    radius_floor: int
    directions: tuple[tuple[int, int], ...]
    paths: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def num_directions(self) -> int:
        """D."""
        return len(self.directions)

    @property
    def window(self) -> tuple[int, int]:
        """``(rf + 1, 2 * rf + 1)``: the window of offsets ``dy in [0, rf]``, ``dx in [-rf, rf]``."""
        return self.radius_floor + 1, 2 * self.radius_floor + 1

    def cropped_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(h - rf, w - 2 * rf)``: the grid of sources of a (h, w) map (IRN's crop)."""
        h, w = size
        ch, cw = h - self.radius_floor, w - 2 * self.radius_floor
        if ch < 1 or cw < 1:
            raise ValueError(f"a {h} x {w} map is too small for radius {self.radius} "
                             f"(needs at least {self.radius_floor + 1} x {2 * self.radius_floor + 1})")
        return ch, cw


def _path(dy: int, dx: int) -> tuple[tuple[int, int], ...]:
    """Pixels of the bounding box of (0, 0) and (dy, dx) closer than 1 to the line through them."""
    length_sq = dy * dy + dx * dx
    box = [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)]
    inside = [(y, x) for y, x in box if (dy * x - dx * y) ** 2 < length_sq]   # integer, exact
    return tuple(sorted(inside, key=lambda p: -abs(p[0]) - abs(p[1])))       # stable: farthest first


@functools.lru_cache(maxsize=None)
def search_paths(radius: int) -> SearchPaths:
    """The :class:`SearchPaths` of an integer ``radius >= 2`` (cached)."""
    if int(radius) != radius or radius < 2:
        raise ValueError(f"radius must be an integer >= 2, got {radius}")
    r = int(radius)
    rf = r - 1
    dirs = [(0, x) for x in range(1, r)]
    dirs += [(y, x) for y in range(1, r) for x in range(-rf, r) if x * x + y * y < r * r]
    paths = [_path(*d) for d in dirs]
    order = sorted(range(len(dirs)), key=lambda i: len(paths[i]))            # stable
    return SearchPaths(r, rf, tuple(dirs[i] for i in order), tuple(paths[i] for i in order))


@functools.lru_cache(maxsize=None)
def _path_window_index(radius: int, device: torch.device) -> Tensor:
    """(L, D) int64: row l holds pixel l of every path, as an index into the flattened window.

    ``L`` is the longest path; shorter paths repeat their destination (a max is unchanged
    by repeats, and ties keep the first pixel, as IRN's max pool does).
    """
    sp = search_paths(radius)
    kw = sp.window[1]
    longest = max(len(p) for p in sp.paths)
    rows = []
    for p in sp.paths:
        idx = [y * kw + x + sp.radius_floor for y, x in p]
        rows.append(idx + [idx[0]] * (longest - len(idx)))
    return torch.tensor(rows, dtype=torch.int64).t().contiguous().to(device)


@functools.lru_cache(maxsize=None)
def _direction_index(radius: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(D,) window row and column of each direction's destination: ``dy`` and ``dx + rf``."""
    sp = search_paths(radius)
    d = torch.tensor(sp.directions, dtype=torch.int64)
    return d[:, 0].to(device), (d[:, 1] + sp.radius_floor).to(device)


def pair_indices(size: tuple[int, int], radius: int) -> tuple[Tensor, Tensor]:
    """Flat pixel indices of all pairs of a (h, w) map: IRN's ``src_indices`` and ``dst_indices``.

    Returns:
        ``(src, dst)``: (P,) and (D, P) int64 indices into the row-major flattened map,
        P = h' * w' sources of the crop, ``dst[d] = src + dy * w + dx``.
    """
    sp = search_paths(radius)
    h, w = size
    ch, cw = sp.cropped_size(size)
    rf = sp.radius_floor
    full = torch.arange(h * w, dtype=torch.int64).view(h, w)
    src = full[:ch, rf:rf + cw].reshape(-1)
    d = torch.tensor(sp.directions, dtype=torch.int64)
    dst = src[None] + (d[:, 0] * w + d[:, 1])[:, None]
    return src, dst


# --------------------------------------------------------------------------- affinities
def boundary_to_affinity(boundary: Tensor, radius: int) -> Tensor:
    """Affinities of all pairs: one minus the largest boundary probability along each path.

    Args:
        boundary: (N, 1, h, w) or (h, w) boundary probabilities (floating).
        radius: the search radius r (10 in IRN's training, 5 in its random walk).

    Returns:
        (N, D, h', w') (or (D, h', w') for a 2-D input) with ``h' = h - rf``,
        ``w' = w - 2 * rf``: ``out[n, k, i, j] = 1 - max`` of ``boundary`` over the pixels
        ``(i + y, j + rf + x)`` of path ``k``; the source is ``(i, j + rf)`` and the
        destination ``(i + dy, j + rf + dx)``. IRN's ``to_affinity`` gives the same
        values, flattened to (N, D, h' * w').

    The gradient reaches one pixel per affinity, the path's first maximal pixel (IRN's max
    pool does the same). The maximum is searched without autograd, then read with one
    ``gather``, so autograd keeps an (N, D, h', w') index rather than every path pixel.
    The search keeps the first maximum's position along the path in uint8 (one byte a pair,
    updated with ``maximum``), which made IRN's VOC-size training step about 10 % faster on
    the CPU than an int64 window index updated with ``where`` (docs/measurements.md).
    """
    flat = boundary.dim() == 2
    b = boundary[None, None] if flat else boundary
    if b.dim() != 4 or b.shape[1] != 1:
        raise ValueError(f"boundary must be (N, 1, h, w) or (h, w), got {tuple(boundary.shape)}")
    if not b.is_floating_point():
        raise TypeError(f"boundary must be floating, got {b.dtype}")
    sp = search_paths(radius)
    n, _, h, w = b.shape
    ch, cw = sp.cropped_size((h, w))
    win = F.unfold(b, sp.window)                                   # (N, U, h' * w'), U = window size
    idx = _path_window_index(sp.radius, b.device)                  # (L, D); L = 22 at r = 10
    need_grad = torch.is_grad_enabled() and b.requires_grad
    with torch.no_grad():
        best = win.index_select(1, idx[0])                         # (N, D, P)
        # pos: the path position of the first maximum, in uint8 (L < 256 checked): the last l whose
        # pixel beat all before it (strictly: ties keep the first) is the largest such l
        if need_grad and idx.shape[0] > 255:
            raise ValueError(f"radius {radius}: paths of {idx.shape[0]} pixels do not fit the uint8 positions")
        pos = torch.zeros(best.shape, dtype=torch.uint8, device=b.device) if need_grad else None
        for l in range(1, idx.shape[0]):
            cand = win.index_select(1, idx[l])
            if need_grad:
                torch.maximum(pos, (cand > best).view(torch.uint8) * l, out=pos)
            torch.maximum(best, cand, out=best)
        if need_grad:                                              # window index of that pixel
            arg = idx.t().expand(n, -1, -1).gather(2, pos.long())  # (N, D, P)
    top = win.gather(1, arg) if need_grad else best
    aff = (1 - top).view(n, sp.num_directions, ch, cw)
    return aff[0] if flat else aff


def pair_labels(label_map: Tensor, radius: int = 10, ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Training pairs of a stride-4 label map (IRN's ``GetAffinityLabelFromIndices``).

    Args:
        label_map: (N, h, w) or (h, w) integer labels: 0 background, 1..C classes,
            ``ignore_index`` unknown. IRN's is the IR label of the crop downscaled by 0.25
            (PIL nearest, to ``round(0.25 * size)``), the size of the boundary map.
        radius: the search radius (IRN trains with 10).
        ignore_index: label of pixels in no pair.

    Returns:
        bool masks (N, D, h', w') (or (D, h', w')), for source ``(i, j + rf)`` and the
        destination of direction k (see :func:`boundary_to_affinity`):
        ``"bg_pos"``: both 0; ``"fg_pos"``: the same class > 0; ``"neg"``: different
        labels; each with neither label ``ignore_index``.
    """
    flat = label_map.dim() == 2
    lab = label_map[None] if flat else label_map
    if lab.dim() != 3:
        raise ValueError(f"label_map must be (N, h, w) or (h, w), got {tuple(label_map.shape)}")
    sp = search_paths(radius)
    ch, cw = sp.cropped_size(tuple(lab.shape[-2:]))
    rf = sp.radius_floor
    kh, kw = sp.window
    win = lab.unfold(1, kh, 1).unfold(2, kw, 1)                    # view (N, h', w', kh, kw)
    dy, dxw = _direction_index(sp.radius, lab.device)                 # window row dy, column dx + rf
    dst = win[..., dy, dxw].permute(0, 3, 1, 2)                     # (N, D, h', w')
    src = lab[:, None, :ch, rf:rf + cw]                            # (N, 1, h', w')
    valid = (src != ignore_index) & (dst != ignore_index)
    equal = src == dst
    out = {"bg_pos": equal & valid & (src == 0),
           "fg_pos": equal & valid & (src > 0),
           "neg": ~equal & valid}
    return {k: v[0] for k, v in out.items()} if flat else out


def affinity_loss(boundary_logits: Tensor, label_map: Tensor, radius: int = 10,
                  ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """IRN's affinity losses of boundary logits against a label map's pairs (scalars).

    Args:
        boundary_logits: (N, 1, h, w) class-boundary logits at stride 4 (a sigmoid gives
            the probabilities, as IRN's ``forward``).
        label_map: (N, h, w) integer labels of the same size (see :func:`pair_labels`);
            moved to the logits' device.
        radius: the search radius (10 in IRN).
        ignore_index: label of pixels in no pair.

    Returns:
        ``{"bg_pos", "fg_pos", "neg", "pos", "total"}``: with ``aff`` from
        :func:`boundary_to_affinity`, ``bg_pos`` and ``fg_pos`` the mean of
        ``-log(aff + 1e-5)`` over their pairs, ``neg`` the mean of ``-log(1 + 1e-5 - aff)``
        over the negative pairs (each ``sum / (count + 1e-5)`` over the whole batch);
        ``pos = bg_pos / 2 + fg_pos / 2`` and ``total = (pos + neg) / 2``, as ``train_irn``
        combines them.
    """
    if boundary_logits.dim() != 4 or label_map.dim() != 3 or \
            boundary_logits.shape[0] != label_map.shape[0] or boundary_logits.shape[2:] != label_map.shape[1:]:
        raise ValueError(f"boundary_logits (N, 1, h, w) and label_map (N, h, w) must match, got "
                         f"{tuple(boundary_logits.shape)} and {tuple(label_map.shape)}")
    aff = boundary_to_affinity(torch.sigmoid(boundary_logits), radius)
    pairs = pair_labels(label_map.to(aff.device), radius, ignore_index)
    pos_loss = -torch.log(aff + _EPS)
    neg_loss = -torch.log(1.0 + _EPS - aff)

    def mean_over(loss: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(loss.dtype)
        return (loss * m).sum() / (m.sum() + _EPS)

    bg, fg, neg = mean_over(pos_loss, pairs["bg_pos"]), mean_over(pos_loss, pairs["fg_pos"]), \
        mean_over(neg_loss, pairs["neg"])
    pos = bg / 2 + fg / 2
    return {"bg_pos": bg, "fg_pos": fg, "neg": neg, "pos": pos, "total": (pos + neg) / 2}


# --------------------------------------------------------------------------- random walk
def _stencil_offsets(radius: int) -> list[tuple[int, int]]:
    """The 2D + 1 offsets of one walk step: the centre, every direction d, then every -d."""
    dirs = search_paths(radius).directions
    return [(0, 0)] + list(dirs) + [(-dy, -dx) for dy, dx in dirs]


def _transition_stencil(boundary: Tensor, radius: int, beta: float) -> Tensor:
    """Weights of one walk step as a stencil: (2D + 1, h, w) float32.

    ``x_next(q) = sum_o W[o, q] * x(q + o)`` over the offsets o of :func:`_stencil_offsets`
    (x zero outside the map), i.e. ``x_next = x @ T`` with IRN's
    column-normalised ``T[p, q] = S[p, q] / sum_p' S[p', q]``, ``S = A ** beta`` and A the
    symmetric affinity matrix of the in-image pairs with ones on the diagonal.
    """
    sp = search_paths(radius)
    rf = sp.radius_floor
    h, w = boundary.shape
    dev = boundary.device
    padded = F.pad(boundary[None, None], (rf, rf, 0, rf), value=1.0)   # sources: every pixel
    aff = boundary_to_affinity(padded, radius)[0]                       # (D, h, w)
    ones = F.pad(boundary.new_ones(1, 1, h, w), (rf, rf, 0, rf))
    dy, dxw = _direction_index(radius, dev)                             # dxw = dx + rf
    inside = ones[0, 0].unfold(0, rf + 1, 1).unfold(1, 2 * rf + 1, 1)[..., dy, dxw]  # (h, w, D)
    a = aff.clamp_min(0).pow(beta) * inside.permute(2, 0, 1)            # a[d, p] = S[p, p + d]
    # b[d, q] = a[d, q - d] = S[q - d, q]: a padded at the top/left/right, read at offset -d
    a_pad = F.pad(a, (rf, rf, rf, 0))                                   # (D, h + rf, w + 2rf)
    back = a_pad.unfold(1, rf + 1, 1).unfold(2, 2 * rf + 1, 1)          # view (D, h, w, rf+1, 2rf+1)
    b = back[torch.arange(len(dy), device=dev), :, :, rf - dy, 2 * rf - dxw]  # (D, h, w)
    degree = 1 + a.sum(0) + b.sum(0)                                    # column sums of S
    weights = torch.cat([boundary.new_ones(1, h, w), a, b])             # offsets 0, +d, -d
    return weights / degree


def random_walk(cams: Tensor, boundary: Tensor, radius: int = 5, beta: float = 10.0,
                exp_times: int = 8) -> Tensor:
    """IRN's random walk of stride-4 CAMs on a boundary map (``propagate_to_edge``), sparse.

    Args:
        cams: (K, h, w) stride-4 class maps (IRN: the strided CAMs of the present classes).
        boundary: (h, w) or (1, h, w) boundary probabilities in [0, 1].
        radius: the search radius of the transitions (5 in IRN).
        beta: the affinities' exponent (10 in IRN).
        exp_times: the walk takes ``2 ** exp_times`` steps (IRN squares its transition
            matrix ``exp_times`` times; 8 -> 256 steps).

    Returns:
        (K, h, w) float32: ``(cams * (1 - boundary))`` flattened times ``T ** (2 ** exp_times)``
        with IRN's transition matrix T: affinities of the radius-``radius`` pairs inside the
        map (:func:`boundary_to_affinity`) and of their transposes, 1 on the diagonal,
        raised to ``beta`` and divided by their column sums. IRN returns (K, 1, h, w).

    T is applied as a stencil of 2D + 1 fixed offsets (the centre, the D directions and
    their opposites; 69 for radius 5): each step sums, over the offsets, the maps' shifted
    slices (views of one zero-padded buffer) times a fixed (h, w) weight map, with
    ``addcmul_`` (elementwise float32, no matrix product, so no TF32 on CUDA; memory
    (2D + 1) x N weights, never N x N; on the 2-core CPU ~1.7 ms a step at VOC size, 4x
    faster than one unfold-and-sum of all offsets). On the tests' 12 x 15 case the result
    is within 1.7e-5 of the maximum of a float64 dense walk (IRN's own float32 dense walk:
    4.7e-5; the two float32 walks differ by 5e-5; the tests allow 1e-4).
    """
    if cams.dim() != 3:
        raise ValueError(f"cams must be (K, h, w), got {tuple(cams.shape)}")
    if exp_times < 0:
        raise ValueError(f"exp_times must be >= 0, got {exp_times}")
    k, h, w = cams.shape
    if boundary.shape[-2:] != (h, w) or boundary.numel() != h * w:
        raise ValueError(f"boundary must be (h, w) or (1, h, w) with (h, w) = {(h, w)}, "
                         f"got {tuple(boundary.shape)}")
    b = boundary.reshape(h, w).to(cams.device, torch.float32)
    rf = search_paths(radius).radius_floor
    with torch.no_grad():
        weights = _transition_stencil(b, radius, beta)                  # (2D + 1, h, w)
        # x lives in the interior of a zero-padded buffer; offset o reads a shifted slice
        buf = cams.new_zeros(k, h + 2 * rf, w + 2 * rf, dtype=torch.float32)
        inner = buf[:, rf:rf + h, rf:rf + w]
        inner.copy_(cams.float() * (1 - b))
        shifted = [buf[:, rf + oy:rf + oy + h, rf + ox:rf + ox + w] for oy, ox in _stencil_offsets(radius)]
        # summed in reverse (longest paths first, the large centre term last): 10x less
        # float32 drift over 256 steps than centre first (1.7e-5 vs 1.7e-4 of the maximum)
        shifted, weights = shifted[::-1], weights.flip(0)
        out = torch.empty_like(inner)
        for _ in range(2 ** exp_times):
            torch.mul(shifted[0], weights[0], out=out)
            for view, wt in zip(shifted[1:], weights[1:]):
                out.addcmul_(view, wt)
            inner.copy_(out)
        return out


def walk_to_labels(walked: Tensor, keys: Tensor, image_size: tuple[int, int],
                   bg_threshold: float = 0.25) -> tuple[Tensor, Tensor]:
    """Semantic labels from the walked maps, as IRN's ``make_sem_seg_labels``.

    Args:
        walked: (K, h, w) or (K, 1, h, w) output of :func:`random_walk` at stride 4.
        keys: (K,) 0-based foreground class ids of the maps (a CAM file's ``keys``).
        image_size: the image's (H, W), with ``4 * h >= H`` and ``4 * w >= W``.
        bg_threshold: the constant score of the background (IRN's ``sem_seg_bg_thres``).

    Returns:
        ``(scores, labels)``: (K + 1, H, W) float32 scores, plane 0 the constant
        ``bg_threshold`` and plane k + 1 the walked map k upsampled by 4 (bilinear,
        ``align_corners=False``), cropped to (H, W) at the top left and divided by the
        single maximum over all planes; and (H, W) int64 labels, the argmax's class id
        (``keys + 1``, 0 background; the first plane wins ties). Where IRN would divide by
        a maximum <= 0 (all maps zero) the maps are left undivided.
    """
    keys = torch.as_tensor(keys)
    if walked.dim() == 4:
        walked = walked[:, 0]
    height, width = image_size
    k, h, w = walked.shape
    if 4 * h < height or 4 * w < width:
        raise ValueError(f"a {h} x {w} stride-4 map does not cover a {height} x {width} image")
    if keys.numel() != k:
        raise ValueError(f"{keys.numel()} keys for {k} maps")
    if k:
        up = F.interpolate(walked[:, None].float(), scale_factor=4, mode="bilinear",
                           align_corners=False)[:, 0, :height, :width]
        top = up.max()
        up = torch.where(top > 0, up / top, up)
    else:
        up = walked.new_zeros(0, height, width, dtype=torch.float32)
    scores = torch.cat([up.new_full((1, height, width), float(bg_threshold)), up])
    ids = torch.cat([keys.new_zeros(1), keys + 1]).to(device=scores.device, dtype=torch.int64)
    return scores, ids[scores.argmax(0)]
