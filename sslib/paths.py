"""Every path the stages write or read from each other, built in one place.

Library modules never build output paths; stages, notebooks, tests and ``dvc.yaml``
(checked by tests/test_layout.py) all agree with the functions here.

**Layout.** The artifacts folders are params.yaml keys (``synthetic.out_dir``,
``data.prepared_dir``, ``superpixels.out_dir``, ``train_cam.out_dir``,
``eval_cam.out_dir``, ``make_ir_labels.out_dir``, ``train_irn.out_dir``,
``make_pseudo_labels.out_dir``), because ``dvc.yaml`` interpolates them. What goes to git
(metrics, plots, tables, figures) lives under the fixed :data:`REPORTS` root, which
DVC's ``metrics``/``plots`` entries and the docs name. A per-run stage (``train_cam``,
``eval_cam``, ``make_ir_labels``, ``train_irn``, ``make_pseudo_labels``) writes ``<variant>/seed<seed>/`` under each of its folders, and its executed
notebook to ``reports/notebooks/<stage>/<variant>-seed<seed>.ipynb``.

Every path is relative to the project root (the folder holding params.yaml). The
command-line entry points make it the working directory first (:func:`enter_root`), so
``python -m sslib.stages.prepare`` run from ``notebooks/`` reads and writes the same files.

**Interactive runs write to scratch/.** ``dvc repro`` runs a notebook through
``python -m sslib.notebook run``, which sets ``SSC_PIPELINE=1``. A notebook run any
other way (JupyterLab, ``papermill``, ``jupyter nbconvert --execute``) is an
experiment: its stage's outputs (the artifacts folder named in params.yaml and its
files under ``reports/``) go under ``scratch/`` instead (:func:`redirect_to_scratch`,
called by :func:`sslib.notebook.route_outputs`), so it never overwrites what the
pipeline made, while it still reads the pipeline's outputs of the other stages. The
redirected stages are kept in the ``SSC_SCRATCH_STAGES`` environment variable, which
``torchrun`` children inherit.

**Timings** are machine-dependent, so they are kept apart from the results that must
reproduce: ``reports/timings/<stage>/<run>.json`` (gitignored, not a DVC output).
"""
from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError, Params, project_root

__all__ = ["REPORTS", "SCRATCH", "PIPELINE_ENV", "SCRATCH_ENV", "in_pipeline", "redirect_to_scratch",
           "scratch_stages", "reports", "timings", "enter_root", "run_name", "run_subdir", "train_dir",
           "checkpoint", "model", "train_reports", "cam_dir", "eval_reports", "eval_root", "ir_label_dir", "ir_label_reports",
           "irn_dir", "irn_checkpoint", "irn_model", "irn_reports", "pseudo_label_dir", "pseudo_label_file",
           "confidence_mask_file", "pseudo_label_reports", "pseudo_label_table", "seg_dir", "seg_checkpoint",
           "seg_model", "seg_reports", "seg_prediction_dir", "seg_prediction_file", "seg_eval_reports", "paper_table", "notebook",
           "figure", "data_stats", "ablation_table", "ablation_markdown", "ablation_sweep", "stage_outputs",
           "STAGE_OUT_DIRS", "NOTEBOOK_DIR", "RESOLVED", "resolved_code", "resolved_settings"]

REPORTS = Path("reports")
SCRATCH = Path("scratch")
NOTEBOOK_DIR = REPORTS / "notebooks"
#: set to 1 by ``python -m sslib.notebook run`` (what dvc.yaml runs)
PIPELINE_ENV = "SSC_PIPELINE"
#: comma-separated stages whose outputs go under scratch/ in this process and its children
SCRATCH_ENV = "SSC_SCRATCH_STAGES"
#: the params key (section, field) of the artifacts folder each stage writes
STAGE_OUT_DIRS = {"synthesize": ("synthetic", "out_dir"), "prepare": ("data", "prepared_dir"),
                  "superpixels": ("superpixels", "out_dir"), "train_cam": ("train_cam", "out_dir"),
                  "eval_cam": ("eval_cam", "out_dir"), "make_ir_labels": ("make_ir_labels", "out_dir"),
                  "train_irn": ("train_irn", "out_dir"), "make_pseudo_labels": ("make_pseudo_labels", "out_dir"),
                  "train_seg": ("train_seg", "out_dir"), "eval_seg": ("eval_seg", "out_dir")}

# file names inside a run's folders
CHECKPOINT, MODEL = "checkpoint.pt", "model.pt"
LOSSES, METRICS, SWEEP = "losses.csv", "metrics.json", "sweep.csv"


#: the resolve stage's folder: each run's settings and each stage's code fingerprint (git-tracked)
RESOLVED = Path("pipeline") / "resolved"


def resolved_code(stage: str) -> Path:
    """``pipeline/resolved/<stage>/code.json``: the code fingerprint every run of ``stage`` depends on."""
    return RESOLVED / stage / "code.json"


def resolved_settings(stage: str, variant: str | None = None) -> Path:
    """``pipeline/resolved/<stage>/settings.json`` (``settings-<variant>.json`` for a per-run stage):
    the settings its runs use, as resolved for the variant."""
    return RESOLVED / stage / ("settings.json" if variant is None else f"settings-{variant}.json")


# --------------------------------------------------------------------------- pipeline or scratch
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
    """The reports root of files that ``stage`` writes: ``reports``, or ``scratch/reports``
    when ``stage`` was redirected."""
    return SCRATCH / REPORTS if stage in scratch_stages() else REPORTS


def timings(stage: str, run: str) -> Path:
    """``<reports(stage)>/timings/<stage>/<run>.json``: wall-clock times of one run."""
    return reports(stage) / "timings" / stage / f"{run}.json"


# --------------------------------------------------------------------------- per-run stages
def run_name(variant: str, seed: int) -> str:
    """``<variant>-seed<seed>``: one run's name in DVC (``train_cam@ssc-0``'s notebook) and timings."""
    return f"{variant}-seed{seed}"


def run_subdir(variant: str, seed: int) -> Path:
    """``<variant>/seed<seed>``: one run's folder under each of its stage's folders."""
    return Path(variant) / f"seed{seed}"


def train_dir(params: Params, variant: str, seed: int) -> Path:
    """``<train_cam.out_dir>/<variant>/seed<seed>``: checkpoint and final weights of one run."""
    return Path(params.train_cam.out_dir) / run_subdir(variant, seed)


def checkpoint(params: Params, variant: str, seed: int) -> Path:
    return train_dir(params, variant, seed) / CHECKPOINT


def model(params: Params, variant: str, seed: int) -> Path:
    """The trained CAM network of one run (written when its training has finished)."""
    return train_dir(params, variant, seed) / MODEL


def train_reports(variant: str, seed: int) -> Path:
    """``reports/train_cam/<variant>/seed<seed>``: ``losses.csv`` (DVC plots), ``metrics.json``."""
    return reports("train_cam") / "train_cam" / run_subdir(variant, seed)


def cam_dir(params: Params, variant: str, seed: int) -> Path:
    """``<eval_cam.out_dir>/<variant>/seed<seed>``: the CAM files of one run (a folder per split)."""
    return Path(params.eval_cam.out_dir) / run_subdir(variant, seed)


def eval_root() -> Path:
    """``reports/eval_cam``: the per-run CAM results (``<variant>/seed<seed>/``)."""
    return reports("eval_cam") / "eval_cam"


def eval_reports(variant: str, seed: int) -> Path:
    """``reports/eval_cam/<variant>/seed<seed>``: ``metrics.json``, ``sweep.csv``."""
    return eval_root() / run_subdir(variant, seed)


def ir_label_dir(params: Params, variant: str, seed: int) -> Path:
    """``<make_ir_labels.out_dir>/<variant>/seed<seed>``: one run's IR labels (``<name>.png``
    per image of the train split)."""
    return Path(params.make_ir_labels.out_dir) / run_subdir(variant, seed)


def ir_label_reports(variant: str, seed: int) -> Path:
    """``reports/make_ir_labels/<variant>/seed<seed>``: ``metrics.json`` (IR-label quality)."""
    return reports("make_ir_labels") / "make_ir_labels" / run_subdir(variant, seed)


def irn_dir(params: Params, variant: str, seed: int) -> Path:
    """``<train_irn.out_dir>/<variant>/seed<seed>``: checkpoint and boundary network of one run."""
    return Path(params.train_irn.out_dir) / run_subdir(variant, seed)


def irn_checkpoint(params: Params, variant: str, seed: int) -> Path:
    return irn_dir(params, variant, seed) / CHECKPOINT


def irn_model(params: Params, variant: str, seed: int) -> Path:
    """The trained boundary network of one run (written when its training has finished)."""
    return irn_dir(params, variant, seed) / MODEL


def irn_reports(variant: str, seed: int) -> Path:
    """``reports/train_irn/<variant>/seed<seed>``: ``losses.csv`` (DVC plots), ``metrics.json``."""
    return reports("train_irn") / "train_irn" / run_subdir(variant, seed)


def pseudo_label_dir(params: Params, variant: str, seed: int) -> Path:
    """``<make_pseudo_labels.out_dir>/<variant>/seed<seed>``: ``labels/`` and ``masks/`` of one run."""
    return Path(params.make_pseudo_labels.out_dir) / run_subdir(variant, seed)


def pseudo_label_file(params: Params, variant: str, seed: int, name: str) -> Path:
    """One image's pseudo label: ``.../labels/<name>.png`` (VOC palette, class ids)."""
    return pseudo_label_dir(params, variant, seed) / "labels" / f"{name}.png"


def confidence_mask_file(params: Params, variant: str, seed: int, name: str) -> Path:
    """One image's confidence mask: ``.../masks/<name>.png`` (8-bit, 255 = confident)."""
    return pseudo_label_dir(params, variant, seed) / "masks" / f"{name}.png"


def pseudo_label_reports(variant: str, seed: int) -> Path:
    """``reports/make_pseudo_labels/<variant>/seed<seed>``: ``metrics.json`` (pseudo-label quality)."""
    return reports("make_pseudo_labels") / "make_pseudo_labels" / run_subdir(variant, seed)


def seg_dir(params: Params, variant: str, seed: int) -> Path:
    """``<train_seg.out_dir>/<variant>/seed<seed>``: checkpoint and segmentation network of one run."""
    return Path(params.train_seg.out_dir) / run_subdir(variant, seed)


def seg_checkpoint(params: Params, variant: str, seed: int) -> Path:
    return seg_dir(params, variant, seed) / CHECKPOINT


def seg_best(params: Params, variant: str, seed: int) -> Path:
    """The networks of the epoch best on val so far (``eval_seg.selection: best_on_val``; removed
    once ``model.pt`` holds them)."""
    return seg_dir(params, variant, seed) / "best_on_val.pt"


def seg_model(params: Params, variant: str, seed: int) -> Path:
    """The trained segmentation network(s) of one run (written when training has finished)."""
    return seg_dir(params, variant, seed) / MODEL


def seg_reports(variant: str, seed: int) -> Path:
    """``reports/train_seg/<variant>/seed<seed>``: ``losses.csv`` (DVC plots), ``metrics.json``."""
    return reports("train_seg") / "train_seg" / run_subdir(variant, seed)


def seg_prediction_dir(params: Params, variant: str, seed: int) -> Path:
    """``<eval_seg.out_dir>/<variant>/seed<seed>``: one VOC-palette PNG per val image, and meta.json."""
    return Path(params.eval_seg.out_dir) / run_subdir(variant, seed)


def seg_prediction_file(params: Params, variant: str, seed: int, name: str) -> Path:
    """One val image's prediction: ``.../<name>.png`` (VOC palette, class ids)."""
    return seg_prediction_dir(params, variant, seed) / f"{name}.png"


def seg_eval_reports(variant: str, seed: int) -> Path:
    """``reports/eval_seg/<variant>/seed<seed>``: ``metrics.json`` (val mIoU, per class, with/without CRF)."""
    return reports("eval_seg") / "eval_seg" / run_subdir(variant, seed)


# --------------------------------------------------------------------------- reports
def notebook(stem: str, stage: str | None = None, run: str | None = None) -> Path:
    """The executed copy of notebook ``stem``: ``reports/notebooks/<stem>.ipynb``, or for a
    per-run stage ``reports/notebooks/<stage>/<run>.ipynb``."""
    return NOTEBOOK_DIR / stage / f"{run}.ipynb" if run is not None else NOTEBOOK_DIR / f"{stem}.ipynb"


def figure(stage: str, name: str) -> Path:
    """``reports/figures/<name>.png``, a figure written by ``stage``."""
    return reports(stage) / "figures" / f"{name}.png"


def data_stats() -> Path:
    """``reports/data_stats.json``: the ``data_report`` stage's DVC metrics."""
    return reports("data_report") / "data_stats.json"


def ablation_table(suffix: str = "csv") -> Path:
    """``reports/ablation.csv`` (or ``.md`` with ``suffix="md"``)."""
    return reports("ablation") / f"ablation.{suffix}"


def pseudo_label_table(suffix: str = "csv") -> Path:
    """``reports/pseudo_labels.csv`` (or ``.md``): CAM -> IR label -> pseudo label per variant."""
    return reports("pseudo_label_table") / f"pseudo_labels.{suffix}"


def paper_table(suffix: str = "csv") -> Path:
    """``reports/paper_table.csv`` (or ``.md``): CAM, pseudo-label and segmentation mIoU per variant."""
    return reports("paper_table") / f"paper_table.{suffix}"


def ablation_markdown() -> Path:
    return ablation_table("md")


def ablation_sweep(split: str) -> Path:
    """``reports/ablation/sweep_<split>.csv`` (``split``: ``train`` or ``val``): a DVC plot."""
    return reports("ablation") / "ablation" / f"sweep_{split}.csv"


#: the figures each stage writes (names for :func:`figure`)
FIGURES = {"data_report": ["data_samples"], "ablation": ["ablation_sweep", "ablation_per_class", "ablation_cams"],
           "pseudo_label_table": ["pseudo_labels"], "paper_table": ["segmentation"]}


def stage_outputs(params: Params, stage: str, variant: str | None = None, seed: int | None = None,
                  notebook_stem: str | None = None) -> list[Path]:
    """Every output of one stage (of one run, for a per-run stage), as dvc.yaml declares them
    (outs, metrics and plots). ``notebook_stem``: the stage's notebook, if it has one."""
    out: list[Path] = []
    if stage in STAGE_OUT_DIRS:
        section, key = STAGE_OUT_DIRS[stage]
        folder = Path(getattr(getattr(params, section), key))
        out.append(folder / run_subdir(variant, seed) if variant is not None else folder)
    if notebook_stem is not None:
        out.append(notebook(notebook_stem, stage, run_name(variant, seed) if variant is not None else None))
    if stage == "data_report":
        out += [data_stats()]
    if stage == "train_cam":
        out += [train_reports(variant, seed) / METRICS, train_reports(variant, seed) / LOSSES]
    if stage == "eval_cam":
        out += [eval_reports(variant, seed) / METRICS, eval_reports(variant, seed) / SWEEP]
    if stage == "make_ir_labels":
        out += [ir_label_reports(variant, seed) / METRICS]
    if stage == "train_irn":
        out += [irn_reports(variant, seed) / METRICS, irn_reports(variant, seed) / LOSSES]
    if stage == "make_pseudo_labels":
        out += [pseudo_label_reports(variant, seed) / METRICS]
    if stage == "pseudo_label_table":
        out += [pseudo_label_table("md"), pseudo_label_table()]
    if stage == "train_seg":
        out += [seg_reports(variant, seed) / METRICS, seg_reports(variant, seed) / LOSSES]
    if stage == "eval_seg":
        out += [seg_eval_reports(variant, seed) / METRICS]
    if stage == "paper_table":
        out += [paper_table("md"), paper_table()]
    if stage == "ablation":
        out += [ablation_markdown(), ablation_table(), *(ablation_sweep(s) for s in params.eval_cam.splits)]
    out += [figure(stage, name) for name in FIGURES.get(stage, [])]
    return out


# --------------------------------------------------------------------------- entry points
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
