"""File formats of the data: images, label PNGs, CAM archives, split lists.

Readers name the file when it is missing or corrupt (:class:`sslib.io.DataError`); writers
go through :func:`sslib.io.write_bytes`, so they are atomic. Unlike :mod:`sslib.io`, what is
here decides the values a stage reads and the bytes it writes, so it is part of every code
fingerprint that imports it (:mod:`sslib.fingerprint`).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .io import DataError, write_bytes

__all__ = ["IGNORE_INDEX", "voc_palette", "save_png", "save_jpeg", "save_npz", "read_rgb", "read_png_labels",
           "read_lines"]

#: the label of "not labelled" pixels in every mask (VOC's boundary band; not a class)
IGNORE_INDEX = 255


def voc_palette() -> np.ndarray:
    """The standard PASCAL VOC colour map: (256, 3) uint8.

    Index 0 is black, 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0), ..., 255 (224, 224, 192).
    """
    idx = np.arange(256)
    pal = np.zeros((256, 3), np.int64)
    for bit in range(8):  # bits 0,1,2 of the index feed R,G,B's bit 7, bits 3,4,5 bit 6, ...
        for ch in range(3):
            pal[:, ch] |= ((idx >> (3 * bit + ch)) & 1) << (7 - bit)
    return pal.astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def save_png(path: str | Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write a PNG atomically.

    ``array``: (H, W) uint8 (optionally with a (256, 3) uint8 ``palette``: a VOC-style
    indexed PNG), (H, W) uint16 (16-bit greyscale, lossless ids) or (H, W, 3) uint8 RGB.
    """
    array = np.ascontiguousarray(array)
    ok = (array.ndim == 2 and array.dtype in (np.uint8, np.uint16)) or (
        array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8)
    if not ok or (palette is not None and array.dtype != np.uint8 or palette is not None and array.ndim != 2):
        raise ValueError(f"save_png: unsupported array {array.dtype} {array.shape} for {path}")
    img = Image.fromarray(array)
    if palette is not None:
        img.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())  # L -> P, indices kept
    write_bytes(path, _encode(img, "PNG", optimize=False))


def save_jpeg(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 image as JPEG atomically (deterministic for a given libjpeg)."""
    write_bytes(path, _encode(Image.fromarray(np.ascontiguousarray(rgb, np.uint8)), "JPEG",
                              quality=quality, subsampling=0))


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write a compressed .npz atomically; the same arrays give the same bytes.

    ``np.savez_compressed`` stamps every member with the current time, so a rerun that
    computes identical arrays would still change the file (and DVC's lock). Here every
    member has a fixed timestamp. ``np.load(path, allow_pickle=False)`` reads it.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.dtype == object:
                raise ValueError(f"save_npz: {path}: array {name!r} holds Python objects")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    write_bytes(path, buf.getvalue())


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB; a missing or corrupt file raises DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many kinds on corrupt files
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def read_png_labels(path: str | Path) -> np.ndarray:
    """Read a label PNG (indexed/palette or greyscale, 8 or 16 bit) as its raw 2-D integer indices.

    A palette PNG yields palette indices (VOC's class ids), not colours.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L", "I;16", "I", "1"):
                raise DataError(f"{path}: expected an indexed or greyscale PNG, got mode {im.mode}")
            arr = np.asarray(im)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read label image ({type(e).__name__}: {e})") from None
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D label image, got shape {arr.shape}")
    return arr


def read_lines(path: str | Path) -> list[str]:
    """Non-empty, stripped lines of a text file (split lists); first column only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.split()[0])
    return out
