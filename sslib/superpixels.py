"""Superpixels: computation (scikit-image SLIC / Felzenszwalb), lossless storage, precomputation.

One superpixel map per image, stored as a 16-bit greyscale PNG ``<out_dir>/<name>.png``
holding ids ``0..K-1`` (lossless, small, readable by any image tool).

:func:`precompute` fills a folder in parallel and is resumable::

    <out_dir>/.params.json   method, its parameters, scikit-image version (written first)
    <out_dir>/<name>.png     (H, W) uint16 superpixel ids, one per image
    <out_dir>/meta.json      parameters + statistics (written last: its presence marks a
                             complete run)

If a run is interrupted (no ``meta.json``) and is started again with the same method and
parameters, images whose PNG already exists and loads with the right shape are not
recomputed. With different parameters, or after a complete run (``meta.json`` present:
something upstream may have changed), everything is recomputed.

Shapes: images are (H, W, 3) uint8 RGB; superpixel maps are (H, W) int64.
"""
from __future__ import annotations

import functools
import json
import math
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import SuperpixelConfig, to_dict
from .io import DataError, read_png_labels, read_rgb, save_png, write_json

__all__ = [
    "compute", "save", "load", "path_for", "precompute", "boundaries", "mean_fill",
    "MAX_ID", "META_NAME", "PARAMS_NAME",
]

#: the largest id a 16-bit PNG can hold (so at most 65536 superpixels per image)
MAX_ID = 65535
META_NAME = "meta.json"
PARAMS_NAME = ".params.json"
#: bump when the stored format or the computation changes, so old folders are recomputed
_FORMAT_VERSION = 1


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
            scale, sigma, min_size).

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
    return inverse.reshape(image.shape[:2]).astype(np.int64, copy=False)


# --------------------------------------------------------------------------- storage
def path_for(out_dir: str | Path, name: str) -> Path:
    """``<out_dir>/<name>.png``: where the superpixels of image ``name`` are stored."""
    return Path(out_dir) / f"{name}.png"


def save(path: str | Path, ids: np.ndarray) -> None:
    """Write an (H, W) map of non-negative integer ids as a lossless 16-bit PNG (atomically).

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
    save_png(path, ids.astype(np.uint16))


def load(path: str | Path, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a superpixel PNG as an (H, W) int64 id map.

    Raises :class:`sslib.io.DataError` naming the file if it is missing, corrupt, not a
    2-D greyscale image, or (with ``expected_shape`` = (H, W)) has another shape.
    """
    path = Path(path)
    arr = read_png_labels(path)  # DataError on missing / corrupt / wrong mode
    if expected_shape is not None and tuple(arr.shape) != tuple(expected_shape):
        raise DataError(f"{path}: superpixel map has shape {tuple(arr.shape)}, "
                        f"expected {tuple(expected_shape)}")
    return arr.astype(np.int64)


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


def _work(task: tuple[str, str, str, bool], cfg: SuperpixelConfig) -> tuple[str, int, int, bool]:
    """Worker: (name, image_path, out_path, may_reuse) -> (name, K, H*W, reused)."""
    name, image_path, out_path, may_reuse = task
    image_path, out_path = Path(image_path), Path(out_path)
    if may_reuse and out_path.is_file():
        try:
            ids = load(out_path, expected_shape=_image_shape(image_path))
        except DataError:
            ids = None  # a broken or stale leftover: recompute (a broken input fails below)
        if ids is not None and ids.size:
            return name, int(ids.max()) + 1, int(ids.size), True
    image = read_rgb(image_path)  # DataError naming the input file
    try:
        ids = compute(image, cfg)
        save(out_path, ids)
    except DataError:
        raise
    except Exception as e:  # keep the file name; the pool keeps the remote traceback as __cause__
        raise RuntimeError(f"{image_path}: superpixel computation failed ({type(e).__name__}: {e})") from e
    return name, int(ids.max()) + 1, int(ids.size), False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def precompute(items: Sequence[tuple[str, str | Path]], out_dir: str | Path, cfg: SuperpixelConfig,
               workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Compute and store the superpixels of many images, in parallel and resumably.

    Args:
        items: (name, image_path) pairs; the map of ``name`` goes to ``<out_dir>/<name>.png``.
        out_dir: output folder (created). It belongs to this function: after a parameter
            change every ``*.png`` directly in it is removed if it carries this function's
            marker files (``.params.json`` or ``meta.json``).
        cfg: method and parameters (``cfg.out_dir`` and ``cfg.workers`` are not used here).
        workers: processes; 0 = ``os.cpu_count()``; 1 = in this process, no pool. Workers
            are started with the ``spawn`` method (safe when torch / threads live in the
            parent; a calling *script* needs the usual ``if __name__ == "__main__":``
            guard), and get tasks in chunks so the per-image overhead stays small.
        progress: show a tqdm progress bar.

    Returns:
        The contents of ``meta.json`` (method, params, skimage_version, count,
        n_superpixels_mean/min/max, mean_superpixel_area = total pixels / total
        superpixels), plus two keys about this run only, not written to meta.json:
        ``n_computed`` and ``n_reused``.

    Raises:
        DataError: an input image is missing or corrupt (message names the file).
        ValueError: duplicate or invalid names.
    """
    import skimage
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    items = [(str(n), Path(p)) for n, p in items]  # also accepts a one-shot iterator
    names = [n for n, _ in items]
    for n in names:
        _check_name(n)
    if len(set(names)) != len(names):
        from collections import Counter

        dup = sorted(n for n, k in Counter(names).items() if k > 1)[:5]
        raise ValueError(f"precompute: duplicate image names, e.g. {dup}")

    want = {"format": _FORMAT_VERSION, "method": cfg.method, "params": _method_params(cfg),
            "skimage_version": skimage.__version__}
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path, params_path = out_dir / META_NAME, out_dir / PARAMS_NAME
    had_meta = meta_path.exists()
    resume = not had_meta and _read_json(params_path) == want
    ours = had_meta or params_path.exists()
    meta_path.unlink(missing_ok=True)  # from here on the folder is "incomplete"
    if not resume:
        # nothing in here may be reused under the new .params.json: clear old maps first
        stale = out_dir.glob("*.png") if ours else (path_for(out_dir, n) for n in names)
        for p in list(stale):
            p.unlink(missing_ok=True)
    write_json(params_path, want)

    tasks = [(n, str(p), str(path_for(out_dir, n)), resume) for n, p in items]
    n_workers = (os.cpu_count() or 1) if workers == 0 else int(workers)
    if n_workers < 1:
        raise ValueError(f"precompute: workers must be >= 0, got {workers}")
    n_workers = min(n_workers, max(1, len(tasks)))
    fn = functools.partial(_work, cfg=cfg)
    results: list[tuple[str, int, int, bool]] = []
    with tqdm(total=len(tasks), desc=f"superpixels ({cfg.method})", unit="img",
              disable=not progress) as bar:
        if n_workers == 1:
            for t in tasks:
                results.append(fn(t))
                bar.update()
        else:
            chunk = max(1, min(64, math.ceil(len(tasks) / (n_workers * 4))))
            with mp.get_context("spawn").Pool(n_workers) as pool:
                for r in pool.imap(fn, tasks, chunksize=chunk):  # ordered: deterministic stats
                    results.append(r)
                    bar.update()

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
    write_json(meta_path, meta)  # last: marks the folder complete
    n_reused = sum(r[3] for r in results)
    return dict(meta, n_computed=len(results) - n_reused, n_reused=n_reused)
