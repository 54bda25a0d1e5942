"""What every stage module shares: its command line, and running a per-run stage in this
process or under ``torchrun``.

:func:`cli` gives each stage the same shell interface: ``--params FILE`` (default the
project's params.yaml, found from any folder inside the project), the project root as the
working directory, and expected failures (bad parameters, bad data, a diverged run)
printed as ``<stage>: error: ...`` with exit status 1 instead of a traceback.

:func:`run_here_or_torchrun` runs one variant and seed in this process, or, when
``runs.devices > 1``, launches ``torchrun -m sslib.stages.<stage> --variant V --seed S``
and waits. The children get the caller's params exactly, notebook overrides included
(:func:`sslib.distributed.launch_with_params`), and the caller reads the run's result
file back.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import distributed, paths
from ..config import ConfigError, Params, load
from ..io import DataError

__all__ = ["cli", "run_here_or_torchrun", "add_run_args"]


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


def run_here_or_torchrun(stage: str, params: Params, variant: str, seed: int,
                         here: Callable[[], dict], result: Path) -> dict:
    """``here()`` in this process, or the stage under torchrun when ``runs.devices > 1``
    (then the run's ``result`` JSON file, which rank 0 wrote, is returned)."""
    if params.runs.devices > 1:
        distributed.launch_with_params(f"sslib.stages.{stage}", params, ["--variant", variant, "--seed", seed],
                                       nproc_per_node=params.runs.devices)
        return json.loads(Path(result).read_text())
    return here()
