"""The command line every stage module shares.

:func:`cli` gives each stage the same shell interface: ``--params FILE`` (default the
project's params.yaml, found from any folder inside the project), the project root as the
working directory, and expected failures (bad parameters, bad data, a diverged run)
printed as ``<stage>: error: ...`` with exit status 1 instead of a traceback.

Running a per-run stage in this process or under ``torchrun`` is
:func:`sslib.distributed.run_here_or_torchrun`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import paths
from ..config import ConfigError, Params, load
from ..io import DataError, remove_stale_temps, write_json

__all__ = ["cli", "add_run_args", "prepare_folder", "META"]

#: the settings file a per-image stage keeps beside its outputs
META = "meta.json"


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """``--variant`` and ``--seed`` of a per-run stage."""
    ap.add_argument("--variant", required=True, help="a key of params.yaml's variants")
    ap.add_argument("--seed", type=int, required=True)


def cli(stage: str, doc: str, call: Callable[[Params, argparse.Namespace], Any],
        argv: Sequence[str] | None = None, add_args: Callable[[argparse.ArgumentParser], None] | None = None,
        errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse the command line, load params, call ``call(params, args)``; print its result as JSON.

    Returns the exit status: 0, or 1 after printing ``<stage>: error: <message>`` for a
    :class:`ConfigError`, :class:`DataError` or one of ``errors``.
    """
    ap = argparse.ArgumentParser(prog=f"python -m sslib.stages.{stage}", description=doc.strip().splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default: the project's)")
    if add_args is not None:
        add_args(ap)
    args = ap.parse_args(argv)
    try:
        params = load(paths.enter_root(args.params))
        result = call(params, args)
    except (ConfigError, DataError, *errors) as e:
        print(f"{stage}: error: {e}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, default=str))
    return 0


def prepare_folder(out: Path, settings: dict[str, Any], globs: Sequence[str]) -> bool:
    """Get a per-image stage's output folder ready to resume; return whether its files may be kept.

    Removes stale temporary files, compares ``settings`` with the ``meta.json`` of the
    run that made the files, and when they differ (or there is none) deletes every file
    matching ``globs`` before writing the new ``meta.json``, so that no file of other
    settings survives a kill after it.
    """
    remove_stale_temps(out, recursive=True)
    meta = out / META
    try:
        keep = json.loads(meta.read_text()) == json.loads(json.dumps(settings))
    except (OSError, ValueError):
        keep = False
    if not keep:
        for pattern in globs:
            for old in out.glob(pattern):
                old.unlink()
    write_json(meta, settings)
    return keep
