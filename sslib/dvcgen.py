"""Write the pipeline's DVC files from the stage registry, sslib.paths and the code's imports.

``python -m sslib.dvcgen`` writes ``dvc.yaml`` and ``pipeline/<stage>/dvc.yaml`` for every
per-run stage; ``python -m sslib.dvcgen --check`` exits 1 naming the files that differ from
what it would write (tests/test_dvcgen.py runs it). Nothing in those files is kept by hand:
the stages, their order and comments come from :mod:`sslib.stages.registry`, their outputs
from :func:`sslib.paths.stage_outputs`, and the code files the ``resolve`` stage watches from
the import closure of every stage (:mod:`sslib.fingerprint`).

Only the stages the params need are written (:meth:`sslib.stages.registry.Stage.needed`:
with a refiner that needs no boundary network there is no ``make_ir_labels`` or
``train_irn``), so after changing such a choice the files must be written again; the
``resolve`` stage stops until they are.

Every stage depends on its notebook, ``pipeline/resolved/<stage>/code.json`` (the fingerprint
of the code it runs) and its settings file there, which the ``resolve`` stage writes; see
:mod:`sslib.stages.resolve`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

from . import paths
from .config import Params, load, project_root
from .fingerprint import closure
from .stages.registry import REGISTRY, Stage, needed_stages

__all__ = ["entry_points", "watched_files", "render", "stale", "write", "main"]

HEADER = """\
# Written by `python -m sslib.dvcgen` (do not edit: change sslib/stages/registry.py, sslib/paths.py
# or the code, then run it again; tests/test_dvcgen.py fails while this file is stale).
#
"""
ROOT_INTRO = """\
# The pipeline, top to bottom. Each stage is one module sslib/stages/<stage>.py and (except
# resolve and prepare) one notebook notebooks/NN_<stage>.py, in this order. A notebook stage
# runs its jupytext source with papermill (python -m sslib.notebook run ...) and saves the
# executed copy under reports/notebooks/. ${...} values come from params.yaml.
#
# What reruns: every stage depends on pipeline/resolved/<stage>/code.json (a fingerprint of
# the code it imports, comments and docstrings left out) and on its settings file there
# (exactly the params values its runs use, resolved per variant), both written by `resolve`,
# which reruns on any change to params.yaml or the code and takes seconds. After an edit,
# `dvc repro resolve && dvc status` lists what will rerun (docs/pipeline.md).
#
# The per-run stages (one run per variant and seed: train_cam ... eval_seg) are defined in
# pipeline/<stage>/dvc.yaml, each marked below where it runs; their paths are relative to
# the repository root as here. They live apart because DVC rewrites a stage's whole lock
# file after each stage it runs (one lock of all stages took 4 s per stage to parse and
# write). `dvc repro` still runs them all; address one with its file, e.g.
# `dvc repro pipeline/train_cam/dvc.yaml:train_cam@ssc-0`.
#
# Results committed to git (metrics, plots, tables, figures: `cache: false`) are also
# `persist: true`: DVC deletes an output before it reruns a stage unless it persists, and
# a cache: false file cannot be restored from DVC's cache. The stages write these files
# only when they succeed (atomically), so a failed or interrupted stage leaves the last
# good results in place.
"""
RUN_INTRO = """\
# Stage {name} of the pipeline in ../../dvc.yaml (read that file top to bottom).
# A per-run stage lives in a file of its own because DVC rewrites the whole lock
# file after every stage; its paths, like every stage's, are relative to the
# repository root (wdir), and ${{...}} values come from the root params.yaml.
"""
GIT_TRACKED = "git-tracked result: kept until the stage succeeds"
ITEM = {"variant": "${item.variant}", "seed": "${item.seed}"}
PLOT_AXES = {paths.LOSSES: ("epoch", "loss"), paths.SWEEP: ("threshold", None)}


# --------------------------------------------------------------------------- what the files say
def entry_points(stage: Stage, root: Path) -> list[Path]:
    """The files a stage's command runs: its module and, for a notebook stage, the notebook."""
    out = [root / "sslib" / "stages" / f"{stage.name}.py"]
    if stage.notebook:
        out.append(root / "notebooks" / f"{stage.notebook}.py")
    return out


def watched_files(root: Path, params: Params | None = None) -> list[str]:
    """Every file whose edit may change a stage's code fingerprint or settings: the closures of
    all stages and of the resolve stage itself, every notebook and the ``plugins`` files."""
    files = set(closure([root / "sslib" / "stages" / "resolve.py"], root))
    for stage in REGISTRY:
        files |= set(closure(entry_points(stage, root), root))
        if stage.notebook:
            files.add(root / "notebooks" / f"{stage.notebook}.py")
    out = {f.relative_to(root).as_posix() for f in files}
    for f in params.plugins if params is not None else ():
        path = (root / f).resolve()
        out.add(path.relative_to(root.resolve()).as_posix() if path.is_relative_to(root.resolve()) else str(path))
    return sorted(out)


def _template_params(params: Params) -> SimpleNamespace:
    """``params`` with every stage's output folder as its ``${section.key}`` (for DVC templates)."""
    sections = {}
    for section, key in paths.STAGE_OUT_DIRS.values():
        ns = sections.setdefault(section, SimpleNamespace(**vars(getattr(params, section))))
        setattr(ns, key, f"${{{section}.{key}}}")
    return SimpleNamespace(**{**vars(params), **sections})


def _cmd(stage: Stage) -> list[str]:
    if stage.notebook is None:
        return [f"python -m sslib.stages.{stage.name}"]
    cmd = [f"python -m sslib.notebook run notebooks/{stage.notebook}.py"]
    if stage.runs:
        nb = paths.notebook(stage.notebook, stage.name, paths.run_name(**ITEM))
        cmd += [f"-o {nb.as_posix()}", "-y \"{variant: '${item.variant}', seed: ${item.seed}}\""]
    return cmd


def _outputs(stage: Stage, params: Params) -> dict[str, list[str]]:
    """``outs``, ``metrics`` and ``plots`` entries (YAML lines, indented for a stage body)."""
    item = ITEM if stage.runs else {}
    built = paths.stage_outputs(_template_params(params), stage.name, **item, notebook_stem=stage.notebook)
    groups: dict[str, list[str]] = {"outs": [], "metrics": [], "plots": []}
    for p in (b.as_posix() for b in built):
        if p.startswith("${"):  # the stage's artifacts folder
            if stage.persist:
                groups["outs"] += [f"      - {p}:", f"          persist: true   # {stage.persist}"]
            else:
                groups["outs"].append(f"      - {p}")
        elif p.endswith(".ipynb"):
            groups["outs"].append(f"      - {p}")
        else:
            name = p.rsplit("/", 1)[-1]
            kind = "metrics" if name.endswith(".json") else "plots" if name in PLOT_AXES else "outs"
            lines = [f"      - {p}:", "          cache: false", f"          persist: true   # {GIT_TRACKED}"]
            if kind == "plots":
                x, y = PLOT_AXES[name]
                lines.append(f"          x: {x}")
                lines += [f"          y: {y}"] if y else []
            groups[kind] += lines
    return groups


def _deps(stage: Stage, params: Params) -> list[str]:
    deps = [f"notebooks/{stage.notebook}.py"] if stage.notebook else []
    deps.append(paths.resolved_code(stage.name).as_posix())
    deps.append(paths.resolved_settings(stage.name, ITEM["variant"] if stage.runs else None).as_posix())
    return deps + list(stage.reads_for(params))


def _stage_body(stage: Stage, params: Params) -> list[str]:
    lines = [f"  {stage.name}:"]
    if stage.runs:
        lines += ["    wdir: ../..", "    matrix:", f"      variant: ${{{stage.runs}.variants}}",
                  f"      seed: ${{{stage.runs}.seeds}}"]
    cmd = _cmd(stage)
    lines += [f"    cmd: {cmd[0]}"] if len(cmd) == 1 else ["    cmd: >-", *(f"      {c}" for c in cmd)]
    lines += ["    deps:", *(f"      - {d}" for d in _deps(stage, params))]
    for kind, entries in _outputs(stage, params).items():
        if entries:
            lines += [f"    {kind}:", *entries]
    return lines


def _comment(text: str, indent: str = "  ") -> list[str]:
    return [f"{indent}# {line}" for line in text.splitlines()]


def _resolve_stage(root: Path, params: Params) -> list[str]:
    return ["  # Each run's settings and each stage's code fingerprint (seconds; reruns on any edit).",
            "  resolve:", "    cmd: python -m sslib.stages.resolve", "    deps:",
            *(f"      - {f}" for f in watched_files(root, params)),
            "    params:", "      - params.yaml:", "    outs:", f"      - {paths.RESOLVED.as_posix()}:",
            "          cache: false", "          persist: true   # git-tracked: what each run depends on"]


def render(params: Params, root: Path) -> dict[str, str]:
    """``{path relative to root: text}`` of every DVC file of the pipeline."""
    out: dict[str, str] = {}
    body = [*_resolve_stage(root, params)]
    for stage in needed_stages(params):
        body.append("")
        if stage.runs:
            body += _comment(stage.doc) + [f"  # {stage.name} (per run): pipeline/{stage.name}/dvc.yaml"]
            text = [RUN_INTRO.format(name=stage.name), "vars:", "  - ../../params.yaml", "", "stages:",
                    *_comment(stage.doc), *_stage_body(stage, params)]
            out[f"pipeline/{stage.name}/dvc.yaml"] = HEADER + "\n".join(text) + "\n"
        else:
            body += _comment(stage.doc) + _stage_body(stage, params)
    sweeps = [p for p in paths.stage_outputs(params, "ablation") if p.name.startswith("sweep_")]
    plots = ["", "# mIoU against the background threshold, mean over seeds, one line per variant.", "plots:"]
    for p in sweeps:
        split = p.stem.removeprefix("sweep_")
        plots += [f"  - {p.as_posix()}:", "      x: threshold", f"      y: [{', '.join(params.runs.variants)}]",
                  f"      title: CAM mIoU ({split} split) against background threshold"]
    out["dvc.yaml"] = HEADER + ROOT_INTRO + "stages:\n" + "\n".join(body + plots) + "\n"
    return out


# --------------------------------------------------------------------------- writing and checking
def _differing(texts: dict[str, str], root: Path) -> list[str]:
    return [p for p, text in texts.items() if not (root / p).is_file() or (root / p).read_text() != text]


def _unneeded(texts: dict[str, str], root: Path) -> list[str]:
    """The per-run DVC files under ``root`` of stages the params no longer need (e.g. ``train_irn``
    for a refiner without a boundary network)."""
    return sorted(p for f in (root / "pipeline").glob("*/dvc.yaml")
                  if (p := f.relative_to(root).as_posix()) not in texts)


def stale(params: Params, root: Path) -> list[str]:
    """The DVC files under ``root`` that differ from what :func:`render` writes, or that it
    would remove."""
    texts = render(params, root)
    return _differing(texts, root) + _unneeded(texts, root)


def write(params: Params, root: Path) -> list[str]:
    """Write every DVC file that differs and remove those of stages no longer needed (with
    their lock files: the stages' outputs stay where they are); return their paths."""
    from .io import write_text

    texts = render(params, root)
    changed = _differing(texts, root)
    for p in changed:
        write_text(root / p, texts[p])
    for p in _unneeded(texts, root):
        (root / p).unlink()
        (root / p).with_name("dvc.lock").unlink(missing_ok=True)
        if not any((root / p).parent.iterdir()):
            (root / p).parent.rmdir()
        changed.append(p)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sslib.dvcgen", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only say which files are stale (exit 1 if any)")
    ap.add_argument("--params", default=None, help="params file (default: the project's params.yaml)")
    args = ap.parse_args(argv)
    root = project_root()
    params = load(args.params or root / "params.yaml")
    files = stale(params, root) if args.check else write(params, root)
    for f in files:
        gone = not (root / f).exists()
        print(f"{'stale' if args.check else 'removed' if gone else 'wrote'}: {f}")
    if args.check and files:
        print("run `python -m sslib.dvcgen` to write them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
