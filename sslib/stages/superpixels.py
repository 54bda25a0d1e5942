"""Superpixels of every image of the splits in ``superpixels.splits`` (the ``superpixels`` stage).

Reads ``data`` and ``superpixels`` and writes one 16-bit PNG of ids per image plus
``meta.json`` under ``superpixels.out_dir`` through :func:`sslib.superpixels.precompute`
(staged beside it and moved in on success; only maps whose settings or image changed
are recomputed). Shell::

    python -m sslib.stages.superpixels [--params params.yaml]
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import Params
from . import common

__all__ = ["run", "images", "main"]


def images(params: Params) -> dict[str, Path]:
    """``{name: image path}`` of every image of the splits in ``superpixels.splits`` (``train``
    and ``val`` stand for ``data.train_split`` and ``data.val_split``)."""
    from ..data import build_dataset, resolve_split

    items: dict[str, Path] = {}
    for split in params.superpixels.splits:
        ds = build_dataset(params.data, resolve_split(params.data, split), with_mask=False)
        items.update((name, ds.image_path(name)) for name in ds.names)
    return items


def run(params: Params) -> dict:
    """Compute (or reuse) every map; returns the statistics written to ``meta.json``."""
    from .. import superpixels

    cfg = params.superpixels
    return superpixels.precompute(sorted(images(params).items()), cfg.out_dir, cfg, workers=cfg.workers)


def main(argv: list[str] | None = None) -> int:
    return common.cli("superpixels", __doc__, lambda params, args: run(params), argv)


if __name__ == "__main__":
    sys.exit(main())
