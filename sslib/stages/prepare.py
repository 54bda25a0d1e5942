"""Derive image labels and split lists from the masks (the ``prepare`` stage).

Reads the ``data`` section and writes ``data.prepared_dir`` through
:func:`sslib.data.prepare.prepare` (see there for the files and the checks on every
image). Shell (the stage has no notebook)::

    python -m sslib.stages.prepare [--params params.yaml] [--workers N] [--no-progress]
"""
from __future__ import annotations

import sys

from ..config import Params
from . import common

__all__ = ["run", "main"]


def run(params: Params, progress: bool = True, workers: int | None = None) -> dict:
    """Prepare ``params.data``; returns the summary (images per split, class counts)."""
    from ..data.prepare import prepare

    return prepare(params.data, progress, workers=workers)


def main(argv: list[str] | None = None) -> int:
    def add_args(ap):
        ap.add_argument("--workers", type=int, default=None, help="processes (default: automatic)")
        ap.add_argument("--no-progress", action="store_true", help="no progress bar")

    def call(params, args):
        summary = run(params, progress=not args.no_progress, workers=args.workers)
        return {"dataset": summary["dataset"], "images": summary["images"], "prepared_dir": params.data.prepared_dir}

    return common.cli("prepare", __doc__, call, argv, add_args)


if __name__ == "__main__":
    sys.exit(main())
