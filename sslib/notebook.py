"""Run the pipeline's notebooks with papermill, and keep their two forms in sync.

Each notebook lives twice under ``notebooks/``:

* ``NN_name.py`` (jupytext "py:percent"): the source of truth and the DVC dependency.
  Its text changes only when a cell's code or markdown changes, so opening the
  notebook in JupyterLab and running it never invalidates the pipeline.
* ``NN_name.ipynb``: the same cells with outputs stripped, for JupyterLab. Jupytext
  pairs the two (``notebooks/jupytext.toml``), so saving one rewrites the other.

``python -m sslib.notebook run notebooks/00_synthesize.py`` converts the source
in memory, executes it with papermill from the project root (the folder holding
params.yaml), and writes the executed copy atomically to
``reports/notebooks/00_synthesize.ipynb``. A failed run leaves its partial copy at
``reports/notebooks/00_synthesize.failed.ipynb`` and no file under the final name.
The executed copy keeps what the cells showed but not when they ran (papermill's
timestamps and durations, progress bars and other stderr output are left out), so
rerunning a stage that computes the same results writes the same notebook.

``run`` sets ``SSC_PIPELINE=1`` for the kernel: the notebook then writes the pipeline's
outputs. Run any other way (JupyterLab, papermill, nbconvert), a notebook's
:func:`route_outputs` sends its stage's outputs under ``scratch/`` (see
:mod:`sslib.paths`), so experimenting never overwrites what ``dvc repro`` made.

``python -m sslib.notebook sync`` rewrites every ``.ipynb`` from its ``.py``;
``python -m sslib.notebook check`` fails if any pair differs or an ``.ipynb``
carries outputs.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from pathlib import Path

from sslib import paths
from sslib.config import Params, load, project_root, read_yaml

__all__ = ["read_source", "run", "sync", "check", "setup", "route_outputs"]

# nbformat validates notebooks with jsonschema, which imports the optional IRI checker
# ``rfc3987_syntax`` (installed with jupyter-events) if it can; that module compiles a grammar
# on import, 4-5 s of every notebook stage's start on a 2-core CPU. No notebook here holds an
# IRI to check, so it is kept out (jsonschema then skips that one format check).
sys.modules.setdefault("rfc3987_syntax", None)

#: the kernel's own log (e.g. "KeyboardInterrupt caught in kernel" when papermill shuts it
#: down) is not the notebook's output: only critical kernel errors reach the console
_KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]

#: how papermill ends the kernel once the last cell has run. "immediate" kills it instead of
#: asking it to exit: every output the kernel had is already in the executed notebook and
#: every stage writes its files inside its cells (atomically), so nothing is lost, and a
#: stage no longer waits 1-2 s for the interpreter to tear down torch, matplotlib and the
#: rest (measured on notebooks/31_eval_seg.py: 18.2 -> 16.4 s; ~1.5 min over the default
#: pipeline's 68 notebook runs).
_SHUTDOWN = "immediate"


def setup(stage: str, params_path: str | Path = "params.yaml", **overrides: dict) -> Params:
    """The first call of every notebook: the params its stage runs with.

    Makes the project root the working directory (so a notebook opened in ``notebooks/``
    reads and writes the same relative paths as under papermill), loads ``params_path``
    with ``overrides`` (one dict per section, e.g. ``train_cam={"epochs": 1}``, from the
    notebook's parameters cell) merged over it, and routes the stage's outputs
    (:func:`route_outputs`).
    """
    path = paths.enter_root(params_path)
    params = load(path, overrides={k: v for k, v in overrides.items() if v})
    return route_outputs(params, stage)


def route_outputs(params: Params, stage: str) -> Params:
    """``params`` for notebook stage ``stage``: unchanged under the pipeline, else redirected.

    Run by ``dvc repro`` (``SSC_PIPELINE=1``), the stage writes its usual outputs. Run by
    hand, its artifacts folder (:data:`sslib.paths.STAGE_OUT_DIRS`) becomes
    ``scratch/<folder>`` and its reports go under ``scratch/reports/``; everything it reads
    from other stages stays.
    """
    if paths.in_pipeline():
        return params
    paths.redirect_to_scratch(stage)
    where = [str(paths.reports(stage))]
    if stage in paths.STAGE_OUT_DIRS:
        section, key = paths.STAGE_OUT_DIRS[stage]
        old = Path(getattr(getattr(params, section), key))
        new = str(paths.SCRATCH / (old.relative_to(old.anchor) if old.is_absolute() else old))
        params = dataclasses.replace(params, **{section: dataclasses.replace(getattr(params, section), **{key: new})})
        if stage == "synthesize" and Path(params.data.root) == old:  # the synthetic set is the data set
            params = dataclasses.replace(params, data=dataclasses.replace(params.data, root=new))
        where.insert(0, new)
    print(f"{stage}: not run by the pipeline, so its outputs go to {' and '.join(where)} "
          f"(the pipeline's are left alone; `dvc repro {stage}` writes those)", file=sys.stderr)
    return params


def read_source(path: str | Path):
    """Read a py:percent notebook source as an nbformat notebook (python3 kernel)."""
    import jupytext

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: notebook source not found")
    nb = jupytext.read(path, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        raise ValueError(f"{path}: no cell tagged 'parameters' (papermill needs one)")
    return nb


def run(source: str | Path, output: str | Path | None = None, parameters: dict | None = None,
        log_output: bool = True) -> Path:
    """Execute notebook ``source`` (py:percent) from the project root with papermill.

    ``parameters`` are injected after the cell tagged ``parameters``. Returns the path of
    the executed notebook, written atomically (default ``reports/notebooks/<stem>.ipynb``).
    """
    import nbformat
    import papermill

    source = Path(source).resolve()
    root = project_root(source.parent)
    output = Path(output) if output else root / paths.notebook(source.stem)
    output = output if output.is_absolute() else root / output
    output.parent.mkdir(parents=True, exist_ok=True)
    failed = output.with_suffix(".failed.ipynb")
    tmp = output.with_name(f".{output.stem}.running.ipynb")
    nb = read_source(source)
    try:
        with _pipeline_env():
            executed = papermill.execute_notebook(
                nb, str(tmp), parameters=parameters or {}, cwd=str(root), kernel_name="python3",
                progress_bar=False, log_output=log_output, stdout_file=None, stderr_file=None,
                extra_arguments=_KERNEL_ARGS, shutdown_kernel=_SHUTDOWN,
            )
    except BaseException:
        if tmp.exists():
            os.replace(tmp, failed)
        raise
    # papermill wrote tmp as it went; write the final copy once more and move it in place
    nbformat.write(_without_run_details(executed, source.relative_to(root).as_posix()), str(tmp))
    os.replace(tmp, output)
    failed.unlink(missing_ok=True)
    return output


@contextlib.contextmanager
def _pipeline_env():
    """``SSC_PIPELINE=1`` while the kernel runs (it inherits this process's environment)."""
    before = os.environ.get(paths.PIPELINE_ENV)
    os.environ[paths.PIPELINE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(paths.PIPELINE_ENV, None)
        else:
            os.environ[paths.PIPELINE_ENV] = before


_WIDGET = "application/vnd.jupyter.widget-view+json"


def _without_run_details(nb, source: str):
    """The executed notebook without what differs from run to run: random cell ids,
    timestamps and durations (papermill's and the kernel's), stderr (progress bars, rates)
    and widget views. papermill's ``input_path`` (the whole input notebook, as it was handed
    over in memory) becomes the source's path."""
    nb.metadata.pop("widgets", None)  # the saved widget states (progress bars)
    pm = nb.metadata.get("papermill", {})
    pm["input_path"] = source
    for k in ("start_time", "end_time", "duration"):
        pm.pop(k, None)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
        cell.metadata.pop("execution", None)
        for k in ("start_time", "end_time", "duration"):
            cell.metadata.get("papermill", {}).pop(k, None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
                            and _WIDGET not in o.get("data", {})]
    return nb


def _stripped_ipynb(source: Path):
    import jupytext

    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: sync is idempotent, diffs stay small
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return jupytext.writes(nb, fmt="ipynb")


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if p.name[:2].isdigit())


def sync(folder: str | Path = "notebooks") -> list[Path]:
    """Rewrite every ``NN_*.ipynb`` under ``folder`` from its ``.py`` source (outputs stripped)."""
    from sslib.io import write_text

    written = []
    for src in _sources(Path(folder)):
        target = src.with_suffix(".ipynb")
        text = _stripped_ipynb(src)
        if not target.exists() or target.read_text() != text:
            write_text(target, text)
            written.append(target)
    return written


def check(folder: str | Path = "notebooks") -> list[str]:
    """Problems with the notebook pairs under ``folder`` (empty list = all in sync)."""
    import jupytext

    problems = []
    for src in _sources(Path(folder)):
        target = src.with_suffix(".ipynb")
        if not target.exists():
            problems.append(f"{target}: missing (run `python -m sslib.notebook sync`)")
            continue
        nb = jupytext.read(target)
        if any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code"):
            problems.append(f"{target}: has outputs (run `python -m sslib.notebook sync`)")
        want = [(c.cell_type, c.source) for c in jupytext.read(src, fmt="py:percent").cells]
        have = [(c.cell_type, c.source) for c in nb.cells]
        if want != have:
            problems.append(f"{target}: cells differ from {src.name} (run `python -m sslib.notebook sync`)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sslib.notebook", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute a notebook source with papermill")
    r.add_argument("source")
    r.add_argument("-o", "--output", default=None)
    r.add_argument("-y", "--yaml", default=None,
                   help="parameters as a YAML mapping, e.g. \"superpixels: {method: felzenszwalb}\"")
    s = sub.add_parser("sync", help="rewrite notebooks/*.ipynb from their .py sources")
    s.add_argument("folder", nargs="?", default="notebooks")
    c = sub.add_parser("check", help="fail if a notebook pair is out of sync or has outputs")
    c.add_argument("folder", nargs="?", default="notebooks")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        params = read_yaml(args.yaml) if args.yaml else {}  # YAML 1.2 floats: 1e-3 is a number
        if not isinstance(params, dict):
            ap.error("--yaml must be a mapping")
        out = run(args.source, args.output, params)
        print(f"wrote {out}", file=sys.stderr)
    elif args.cmd == "sync":
        for p in sync(args.folder):
            print(f"wrote {p}")
    else:
        problems = check(args.folder)
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
