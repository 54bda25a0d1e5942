"""Where the stages write, and where a stage run by hand writes instead.

Every path in params.yaml and under ``reports/`` is relative to the project root (the
folder holding params.yaml). The command-line entry points make it the working
directory first (:func:`enter_root`), so ``python -m sslib.data.prepare`` run from
``notebooks/`` reads and writes the same files as from the root.

**Interactive runs write to scratch/.** ``dvc repro`` runs a notebook through
``python -m sslib.notebook run``, which sets ``SSC_PIPELINE=1``. A notebook run any
other way (JupyterLab, ``papermill``, ``jupyter nbconvert --execute``) is an
experiment: its stage's outputs (the artifacts folder named in params.yaml and its
files under ``reports/``) go under ``scratch/`` instead (:func:`redirect_to_scratch`),
so it never overwrites what the pipeline made, while it still reads the pipeline's
outputs of the other stages. The redirected stages are kept in the ``SSC_SCRATCH_STAGES``
environment variable, which ``torchrun`` children inherit.

**Timings** are machine-dependent, so they are kept apart from the results that must
reproduce: ``reports/timings/<stage>/<run>.json`` (gitignored, not a DVC output).
"""
from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError, project_root

__all__ = ["REPORTS", "SCRATCH", "PIPELINE_ENV", "SCRATCH_ENV", "in_pipeline", "redirect_to_scratch",
           "scratch_stages", "reports", "timings_path", "enter_root"]

REPORTS = Path("reports")
SCRATCH = Path("scratch")
#: set to 1 by ``python -m sslib.notebook run`` (what dvc.yaml runs)
PIPELINE_ENV = "SSC_PIPELINE"
#: comma-separated stages whose outputs go under scratch/ in this process and its children
SCRATCH_ENV = "SSC_SCRATCH_STAGES"


def in_pipeline() -> bool:
    """True when this process runs a stage for the pipeline (``SSC_PIPELINE=1``)."""
    return os.environ.get(PIPELINE_ENV) == "1"


def scratch_stages() -> set[str]:
    """The stages whose outputs go under scratch/ in this process."""
    return {s for s in os.environ.get(SCRATCH_ENV, "").split(",") if s}


def redirect_to_scratch(stage: str) -> None:
    """From now on (and in child processes), ``stage``'s outputs go under scratch/."""
    os.environ[SCRATCH_ENV] = ",".join(sorted(scratch_stages() | {stage}))


def reports(stage: str) -> Path:
    """The reports root for files that ``stage`` writes (or that others read from it).

    ``reports`` normally; ``scratch/reports`` when ``stage`` was redirected. The caller
    appends the rest, e.g. ``reports("train_cam") / "train_cam" / variant / "seed0"``.
    """
    return SCRATCH / REPORTS if stage in scratch_stages() else REPORTS


def timings_path(stage: str, run: str) -> Path:
    """``<reports(stage)>/timings/<stage>/<run>.json``: wall-clock times of one run."""
    return reports(stage) / "timings" / stage / f"{run}.json"


def enter_root(params: str | Path | None = None) -> Path:
    """Make the project root the working directory; return the params file's absolute path.

    The root is the nearest folder at or above the current directory that holds
    params.yaml (or, outside any project, the folder of ``params``). ``params`` is
    resolved against the current directory first, then against the root, so
    ``--params params.yaml`` from ``notebooks/`` means the project's file.
    """
    given = Path(params) if params is not None else None
    here = given.resolve() if given is not None and given.is_file() else None
    try:
        root = project_root()
    except FileNotFoundError:
        if here is None:
            raise ConfigError(f"{params or 'params.yaml'}: parameter file not found here or in a parent folder") from None
        root = here.parent
    path = here or root / (given or "params.yaml")
    if not path.is_file():
        raise ConfigError(f"{params}: parameter file not found (looked in {Path.cwd()} and {root})")
    os.chdir(root)
    return path
