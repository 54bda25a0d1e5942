"""Superpixels: computation (scikit-image SLIC / Felzenszwalb), lossless storage, precomputation.

One superpixel map per image, stored as a 16-bit greyscale PNG ``<out_dir>/<name>.png``
holding ids ``0..K-1`` (lossless, small, readable by any image tool). Maps written by
:func:`precompute` carry two PNG text chunks: ``ssc-superpixels`` (:func:`params_tag`: md5
of the format version, method, parameters and scikit-image version) and ``ssc-source``
(md5 of the input image file's bytes).

:func:`precompute` fills a folder in parallel, resumably, and never damages a finished one::

    <out_dir>/<name>.png       (H, W) uint16 superpixel ids, one per image
    <out_dir>/.params.json     method, its parameters, scikit-image version
    <out_dir>/meta.json        parameters + statistics (written last: its presence marks a
                               complete, consistent run)
    <out_dir>.partial/         staging (:func:`staging_dir`), a sibling of out_dir: new maps
                               are computed here and moved into out_dir only once every
                               image has succeeded; removed at the end of a successful run

A map (in out_dir or in staging) is reused only if both its tags are current and its
shape equals the image header's, so an unchanged folder costs one header read and one
hash per image, a run stopped by a corrupt image or Ctrl-C leaves out_dir byte-identical
and resumes from staging, and maps made with other parameters or from other image bytes
are never reused.

Shapes: images are (H, W, 3) uint8 RGB; superpixel maps are (H, W) int64.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import SuperpixelConfig, to_dict
from .io import DataError, remove_stale_temps, write_bytes, write_json
from .formats import read_png_labels, read_rgb, save_png
from .pool import cpu_workers, map_tasks

__all__ = [
    "compute", "merge_regions", "save", "load", "read_tags", "path_for", "staging_dir", "params_tag", "precompute",
    "boundaries", "mean_fill", "MAX_ID", "META_NAME", "PARAMS_NAME", "TAG_KEY", "SOURCE_KEY",
]

#: the largest id a 16-bit PNG can hold (so at most 65536 superpixels per image)
MAX_ID = 65535
META_NAME = "meta.json"
PARAMS_NAME = ".params.json"
#: PNG text chunk holding :func:`params_tag` (which parameters made the map)
TAG_KEY = "ssc-superpixels"
#: PNG text chunk holding the md5 of the input image file (which image bytes made the map)
SOURCE_KEY = "ssc-source"
#: suffix of the staging folder, a sibling of out_dir (see :func:`staging_dir`)
STAGING_SUFFIX = ".partial"
#: bump when the stored format or the computation changes, so old maps are recomputed
_FORMAT_VERSION = 2


# --------------------------------------------------------------------------- computation
def _method_params(cfg: SuperpixelConfig) -> dict[str, Any]:
    """The parameters of the selected method only (changing the other method's do not matter)."""
    if cfg.method == "slic":
        return to_dict(cfg.slic)
    if cfg.method == "felzenszwalb":
        return to_dict(cfg.felzenszwalb)
    raise ValueError(f"unknown superpixel method {cfg.method!r} (expected 'slic' or 'felzenszwalb')")


def compute(image: np.ndarray, cfg: SuperpixelConfig) -> np.ndarray:
    """Superpixels of one image.

    Args:
        image: (H, W, 3) uint8 RGB.
        cfg: ``cfg.method`` selects ``skimage.segmentation.slic`` (``cfg.slic``:
            n_segments, compactness, sigma) or ``felzenszwalb`` (``cfg.felzenszwalb``:
            scale, sigma, min_size; then :func:`merge_regions` down to ``max_regions``
            when that is > 0).

    Returns:
        (H, W) int64 ids, consecutive ``0..K-1`` (every id occurs). Deterministic.
    """
    from skimage.segmentation import felzenszwalb, slic  # lazy: keeps `import sslib` light

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"compute: expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if cfg.method == "slic":
        p = cfg.slic
        seg = slic(image, n_segments=p.n_segments, compactness=p.compactness, sigma=p.sigma,
                   start_label=0, channel_axis=-1)
    elif cfg.method == "felzenszwalb":
        p = cfg.felzenszwalb
        seg = felzenszwalb(image, scale=p.scale, sigma=p.sigma, min_size=p.min_size, channel_axis=-1)
    else:
        raise ValueError(f"unknown superpixel method {cfg.method!r} (expected 'slic' or 'felzenszwalb')")
    # make ids consecutive 0..K-1 whatever the backend returned (order of first value kept)
    _, inverse = np.unique(seg.ravel(), return_inverse=True)
    ids = inverse.reshape(image.shape[:2]).astype(np.int64, copy=False)
    if cfg.method == "felzenszwalb" and cfg.felzenszwalb.max_regions:
        ids = merge_regions(ids, image, cfg.felzenszwalb.max_regions)  # consecutive ids again
    return ids


def merge_regions(ids: np.ndarray, image: np.ndarray, max_regions: int) -> np.ndarray:
    """Merge adjacent regions, greedily, until at most ``max_regions`` are left.

    Each step merges the 4-adjacent pair with the smallest Ward cost
    ``n_a n_b / (n_a + n_b) * ||mu_a - mu_b||^2`` (n: pixel counts, mu: mean RGB): the
    merge that least increases the total squared colour deviation of the pixels from
    their region's mean, so small and similar regions go first (ties: the first pair in
    (a, b) order of the adjacency list).
    This is how the ``voc`` / ``coco`` presets bound Felzenszwalb's regions at 64, the
    size of the official SSC superpixel set (docs/method.md).

    Args:
        ids: (H, W) int ids ``0..K-1``, every id present; image: (H, W, 3) uint8 RGB.
        max_regions: >= 1.

    Returns:
        (H, W) int64 ids ``0..K'-1``, ``K' = min(K, max_regions)``, each a union of input
        regions (only 4-adjacent ones are joined, so the union is connected when the input
        regions are). Deterministic.
    """
    if max_regions < 1:
        raise ValueError(f"merge_regions: max_regions must be >= 1, got {max_regions}")
    ids = np.asarray(ids, np.int64)
    k = int(ids.max()) + 1
    if k <= max_regions:
        return ids
    size = np.bincount(ids.ravel(), minlength=k).astype(np.float64)             # (K,)
    mean = np.stack([np.bincount(ids.ravel(), weights=image[..., c].ravel().astype(np.float64), minlength=k)
                     for c in range(3)], 1) / size[:, None]                       # (K, 3)
    pairs = np.concatenate([np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], 1),
                            np.stack([ids[:-1].ravel(), ids[1:].ravel()], 1)])
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], 1), axis=0)      # (E, 2), a < b
    parent = np.arange(k)
    for _ in range(k - max_regions):
        a, b = pairs[:, 0], pairs[:, 1]
        cost = size[a] * size[b] / (size[a] + size[b]) * ((mean[a] - mean[b]) ** 2).sum(1)
        i, j = sorted(pairs[int(np.argmin(cost))])                              # keep i, absorb j
        mean[i] = (mean[i] * size[i] + mean[j] * size[j]) / (size[i] + size[j])
        size[i] += size[j]
        parent[j] = i
        pairs = np.where(pairs == j, i, pairs)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]  # duplicates may stay: they cost the same
    while True:  # every id to its surviving root
        up = parent[parent]
        if np.array_equal(up, parent):
            break
        parent = up
    _, inverse = np.unique(parent[ids].ravel(), return_inverse=True)
    return inverse.reshape(ids.shape).astype(np.int64, copy=False)


# --------------------------------------------------------------------------- storage
def path_for(out_dir: str | Path, name: str) -> Path:
    """``<out_dir>/<name>.png``: where the superpixels of image ``name`` are stored."""
    return Path(out_dir) / f"{name}.png"


def staging_dir(out_dir: str | Path) -> Path:
    """``<out_dir>.partial``: the staging folder of :func:`precompute`, a *sibling* of
    ``out_dir`` (never inside it: ``out_dir`` is a tracked output), e.g.
    ``artifacts/superpixels`` -> ``artifacts/superpixels.partial``."""
    out_dir = Path(out_dir)
    if out_dir.name in ("", ".", ".."):  # "." or "a/..": name the folder itself
        out_dir = out_dir.resolve()
    return out_dir.with_name(out_dir.name + STAGING_SUFFIX)


def save(path: str | Path, ids: np.ndarray, tag: str | None = None, source: str | None = None) -> None:
    """Write an (H, W) map of non-negative integer ids as a lossless 16-bit PNG (atomically).

    ``tag`` / ``source`` (optional) are stored as PNG text chunks :data:`TAG_KEY` /
    :data:`SOURCE_KEY` (see :func:`read_tags`); without them the file is a plain PNG.

    Raises ValueError if ``ids`` is not 2-D integer, has negative ids, or an id above
    :data:`MAX_ID` (more than 65536 superpixels cannot be stored in 16 bits).
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool):
        raise ValueError(f"{path}: expected an (H, W) integer id map, got {ids.dtype} {ids.shape}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0:
            raise ValueError(f"{path}: superpixel ids must be >= 0, got {lo}")
        if hi > MAX_ID:
            raise ValueError(f"{path}: {hi + 1} superpixels (max id {hi}) do not fit a 16-bit PNG "
                             f"(max id {MAX_ID}); use fewer superpixels")
    if tag is None and source is None:
        save_png(path, ids.astype(np.uint16))
        return
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in ((TAG_KEY, tag), (SOURCE_KEY, source)):
        if value is not None:
            info.add_text(key, str(value))  # tEXt, written before IDAT: readable from the header
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint16)).save(
        buf, format="PNG", optimize=False, pnginfo=info)
    write_bytes(path, buf.getvalue())


def load(path: str | Path, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a superpixel PNG (tagged or not) as an (H, W) int64 id map.

    Raises :class:`sslib.io.DataError` naming the file if it is missing, corrupt, not a
    2-D greyscale image, or (with ``expected_shape`` = (H, W)) has another shape.
    """
    path = Path(path)
    arr = read_png_labels(path)  # DataError on missing / corrupt / wrong mode
    if expected_shape is not None and tuple(arr.shape) != tuple(expected_shape):
        raise DataError(f"{path}: superpixel map has shape {tuple(arr.shape)}, "
                        f"expected {tuple(expected_shape)}")
    return arr.astype(np.int64)


def read_tags(path: str | Path) -> tuple[str | None, str | None, tuple[int, int]]:
    """``(tag, source, (H, W))`` of a superpixel PNG from its header (pixels not decoded);
    ``None`` for a missing text chunk. DataError naming the file if it cannot be opened."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            info = dict(im.info)
    except Exception as e:
        raise DataError(f"{path}: cannot read superpixel map ({type(e).__name__}: {e})") from None
    tag, source = info.get(TAG_KEY), info.get(SOURCE_KEY)
    return (tag if isinstance(tag, str) else None, source if isinstance(source, str) else None, (h, w))


# --------------------------------------------------------------------------- figures / checks
def boundaries(ids: np.ndarray) -> np.ndarray:
    """Boundary mask of a superpixel map: a pixel is on a boundary if any of its
    4-neighbours has another id (both sides of an edge are marked; equals
    ``skimage.segmentation.find_boundaries(ids, mode="thick")``).

    Args: ids: (H, W) integer map. Returns: (H, W) bool.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"boundaries: expected an (H, W) map, got shape {ids.shape}")
    out = np.zeros(ids.shape, dtype=bool)
    dx = ids[:, 1:] != ids[:, :-1]  # (H, W-1): edge between (i, j) and (i, j+1)
    out[:, 1:] |= dx
    out[:, :-1] |= dx
    dy = ids[1:, :] != ids[:-1, :]  # (H-1, W)
    out[1:, :] |= dy
    out[:-1, :] |= dy
    return out


def mean_fill(image: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Paint every superpixel with its mean colour.

    Args:
        image: (H, W, C) or (H, W) array (uint8 or float).
        ids: (H, W) non-negative integer ids.

    Returns:
        Array of ``image``'s shape and dtype; integer images get the rounded mean.
    """
    image = np.asarray(image)
    ids = np.asarray(ids)
    if image.shape[:2] != ids.shape or ids.ndim != 2:
        raise ValueError(f"mean_fill: image {image.shape} and ids {ids.shape} do not match")
    flat = ids.ravel().astype(np.intp)
    if flat.size == 0:
        return image.copy()
    k = int(flat.max()) + 1
    counts = np.bincount(flat, minlength=k).astype(np.float64)  # (K,)
    pix = image.reshape(flat.size, -1).astype(np.float64)        # (N, C)
    means = np.stack([np.bincount(flat, weights=pix[:, c], minlength=k)
                      for c in range(pix.shape[1])], axis=1)    # (K, C); loop over channels only
    means /= np.maximum(counts, 1.0)[:, None]
    out = means[flat]                                            # (N, C)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(image.dtype).reshape(image.shape)


# --------------------------------------------------------------------------- precomputation
def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"precompute: invalid image name {name!r} (must be a plain file stem)")


def _image_shape(path: Path) -> tuple[int, int]:
    """(H, W) from the image header without decoding the pixels; DataError if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    return h, w


def _want(cfg: SuperpixelConfig) -> dict[str, Any]:
    """What decides a map's content besides the image: written to ``.params.json`` / ``meta.json``."""
    import skimage

    return {"format": _FORMAT_VERSION, "method": cfg.method, "params": _method_params(cfg),
            "skimage_version": skimage.__version__}


def _tag_of(want: dict[str, Any]) -> str:
    return hashlib.md5(json.dumps(want, sort_keys=True).encode("utf-8")).hexdigest()


def params_tag(cfg: SuperpixelConfig) -> str:
    """md5 hex of the canonical JSON (sorted keys) of format version, method, the method's
    parameters and the scikit-image version: the :data:`TAG_KEY` chunk of current maps."""
    return _tag_of(_want(cfg))


def _source_digest(path: Path) -> str | None:
    """md5 hex of an image file's bytes; None if it cannot be read (read_rgb then names it)."""
    try:
        return hashlib.md5(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _reusable(path: Path, tag: str, source: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The (H, W) int64 map at ``path`` if it is current (both tags match, shape == image's
    (H, W), pixels decode, non-empty); None for anything else (missing, stale, broken)."""
    if not path.is_file():
        return None
    try:
        if read_tags(path) != (tag, source, tuple(shape)):
            return None
        ids = load(path, expected_shape=shape)  # full decode: a damaged file is not reused
    except DataError:
        return None
    return ids if ids.size else None


def _work(task: tuple[str, str, str, str], cfg: SuperpixelConfig, tag: str) -> tuple[str, int, int, str]:
    """Worker: (name, image_path, out_path, staged_path) -> (name, K, H*W, where).

    ``where``: ``"out"`` (the current map in out_dir is kept), ``"staged"`` (a current map
    left in staging by an earlier run is reused) or ``"computed"`` (written to staging).
    """
    name, image_path, out_path, staged_path = task
    image_path, out_path, staged_path = Path(image_path), Path(out_path), Path(staged_path)
    source = _source_digest(image_path)
    if source is not None and (out_path.is_file() or staged_path.is_file()):
        try:
            shape = _image_shape(image_path)
        except DataError:
            shape = None  # a broken input fails in read_rgb below, with its name
        for where, candidate in (("out", out_path), ("staged", staged_path)):
            ids = None if shape is None else _reusable(candidate, tag, source, shape)
            if ids is not None:
                return name, int(ids.max()) + 1, int(ids.size), where
    image = read_rgb(image_path)  # DataError naming the input file
    try:
        ids = compute(image, cfg)
        save(staged_path, ids, tag=tag, source=source)
    except DataError:
        raise
    except Exception as e:  # keep the file name; the pool keeps the remote traceback as __cause__
        raise RuntimeError(f"{image_path}: superpixel computation failed ({type(e).__name__}: {e})") from e
    return name, int(ids.max()) + 1, int(ids.size), "computed"


def precompute(items: Sequence[tuple[str, str | Path]], out_dir: str | Path, cfg: SuperpixelConfig,
               workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Compute and store the superpixels of many images, in parallel and resumably.

    Folder contract (``S`` = :func:`staging_dir` ``(out_dir)`` = ``<out_dir>.partial``)::

        1. for each item, reuse the first *current* map of ``<out_dir>/<name>.png`` and
           ``S/<name>.png``: PNG chunk ssc-superpixels == params_tag(cfg), ssc-source ==
           md5 of the image file, (H, W) == the image header's (H, W); else compute the
           (H, W) map and write it (atomically, tagged) to ``S/<name>.png`` (workers too)
        2. only when every item succeeded: remove meta.json, os.replace each staged map
           into out_dir, remove ``*.png`` directly in out_dir whose name is not listed
           (only if out_dir is ours: it has ``.params.json`` or ``meta.json``), write
           ``.params.json``, then ``meta.json`` (last), then remove ``S``

    So a failure in step 1 (a corrupt image: DataError, Ctrl-C, any exception) leaves
    out_dir untouched (every map byte-identical, the old meta.json in place) and keeps in
    ``S`` what was computed; a rerun with the same parameters reuses it (``n_reused``) and
    ends with exactly the files a from-scratch run writes. Maps made with other parameters,
    another scikit-image or format version, from other image bytes, untagged (older
    versions), of another shape, or unreadable are never reused.

    Args:
        items: (name, image_path) pairs; the map of ``name`` goes to ``<out_dir>/<name>.png``.
        out_dir: output folder (created). It belongs to this function once it holds the
            marker files (``.params.json`` / ``meta.json``): unlisted ``*.png`` in it are
            then removed at the end of a successful run.
        cfg: method and parameters (``cfg.out_dir`` and ``cfg.workers`` are not used here).
        workers: processes; 0 = ``os.cpu_count()``; 1 = in this process, no pool. Workers
            are started with the ``spawn`` method (safe when torch / threads live in the
            parent; a calling *script* needs the usual ``if __name__ == "__main__":``
            guard), and get tasks in chunks so the per-image overhead stays small.
        progress: show a tqdm progress bar.

    Returns:
        The contents of ``meta.json`` (format, method, params, skimage_version, count,
        n_superpixels_mean/min/max, mean_superpixel_area = total pixels / total
        superpixels), plus two keys about this run only, not written to meta.json:
        ``n_computed`` and ``n_reused`` (current maps found in out_dir or staging).

    Raises:
        DataError: an input image is missing or corrupt (message names the file).
        ValueError: duplicate or invalid names.
    """
    out_dir = Path(out_dir)
    items = [(str(n), Path(p)) for n, p in items]  # also accepts a one-shot iterator
    names = [n for n, _ in items]
    for n in names:
        _check_name(n)
    if len(set(names)) != len(names):
        from collections import Counter

        dup = sorted(n for n, k in Counter(names).items() if k > 1)[:5]
        raise ValueError(f"precompute: duplicate image names, e.g. {dup}")

    want = _want(cfg)
    tag = _tag_of(want)
    meta_path, params_path = out_dir / META_NAME, out_dir / PARAMS_NAME
    ours = meta_path.exists() or params_path.exists()
    staging = staging_dir(out_dir)
    staging.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir, staging):  # what a killed run left
        remove_stale_temps(folder)

    # ---- step 1: nothing below writes into out_dir
    tasks = [(n, str(p), str(path_for(out_dir, n)), str(path_for(staging, n))) for n, p in items]
    n_workers = cpu_workers(workers)
    if n_workers < 1:
        raise ValueError(f"precompute: workers must be >= 0, got {workers}")
    n_workers = min(n_workers, max(1, len(tasks)))
    chunk = max(1, min(64, math.ceil(len(tasks) / (n_workers * 4))))
    # ordered: deterministic stats
    results: list[tuple[str, int, int, str]] = map_tasks(
        functools.partial(_work, cfg=cfg, tag=tag), tasks, n_workers, chunksize=chunk, spawn=True,
        desc=f"superpixels ({cfg.method})", progress=progress)

    ks = np.array([r[1] for r in results], dtype=np.int64)
    areas = np.array([r[2] for r in results], dtype=np.int64)
    meta: dict[str, Any] = dict(want, count=len(results))
    if len(results):
        meta.update(n_superpixels_mean=float(ks.mean()), n_superpixels_min=int(ks.min()),
                    n_superpixels_max=int(ks.max()),
                    mean_superpixel_area=float(areas.sum() / ks.sum()))
    else:
        meta.update(n_superpixels_mean=None, n_superpixels_min=None, n_superpixels_max=None,
                    mean_superpixel_area=None)

    # ---- step 2: every map is current (in out_dir or staging): move them into place
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # a crash while moving leaves no meta.json: incomplete
    for name, _, _, where in results:
        if where != "out":
            os.replace(path_for(staging, name), path_for(out_dir, name))
    if ours:
        listed = set(names)
        for p in list(out_dir.glob("*.png")):
            if p.is_file() and p.name[: -len(".png")] not in listed:
                p.unlink(missing_ok=True)
    write_json(params_path, want)
    write_json(meta_path, meta)  # last: marks the folder complete
    shutil.rmtree(staging, ignore_errors=True)
    n_reused = sum(r[3] != "computed" for r in results)
    return dict(meta, n_computed=len(results) - n_reused, n_reused=n_reused)
