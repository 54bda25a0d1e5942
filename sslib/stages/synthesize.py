"""Write the synthetic "context" scene set in the VOC layout (the ``synthesize`` stage).

Reads ``synthetic`` and writes ``synthetic.out_dir`` through
:func:`sslib.data.synthetic.generate` (deterministic from ``synthetic.seed``). Shell::

    python -m sslib.stages.synthesize [--params params.yaml]
"""
from __future__ import annotations

import sys

from ..config import Params
from . import common

__all__ = ["run", "main"]


def run(params: Params) -> dict:
    """Generate the set; returns its summary (images per split, objects per class, ...)."""
    from ..data import synthetic

    return synthetic.generate(params.synthetic)


def main(argv: list[str] | None = None) -> int:
    return common.cli("synthesize", __doc__, lambda params, args: run(params), argv)


if __name__ == "__main__":
    sys.exit(main())
