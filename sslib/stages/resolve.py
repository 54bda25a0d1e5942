"""Write what every run depends on (the ``resolve`` stage, first in dvc.yaml).

For each stage, ``pipeline/resolved/<stage>/code.json``: the fingerprint of the code it runs
(:func:`sslib.fingerprint.fingerprint`: each file of its import closure, comments and
docstrings left out, the modules that cannot change a result left out); and its settings,
``settings.json``, or for a per-run stage one ``settings-<variant>.json`` per variant: the
params values its runs use, as resolved for the variant (:mod:`sslib.stages.registry`).

DVC reruns this stage on any edit of params.yaml or the code (it takes seconds), and then
reruns a run only when one of its two files changed. Files are rewritten only when their
content changes; those of variants (and stages) no longer run are removed. Only the stages
the params need are resolved (:meth:`sslib.stages.registry.Stage.needed`); when the DVC files
differ from what :mod:`sslib.dvcgen` writes for the current params (a choice such as
``make_pseudo_labels.refiner`` adds or removes stages), the stage stops and says to run
``python -m sslib.dvcgen``.

Usage::

    python -m sslib.stages.resolve
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from .. import paths
from ..config import ConfigError, Params, VariantConfig, choices
from ..fingerprint import closure, fingerprint, module_file
from ..registry import plugin_code
from ..io import write_text
from . import common
from .registry import needed_stages, runs_of

__all__ = ["resolved", "run", "main"]


def resolved(params: Params, root: Path) -> dict[Path, dict]:
    """``{path: content}`` of every file the stage writes (paths relative to ``root``)."""
    out: dict[Path, dict] = {}
    for stage in needed_stages(params):
        out[paths.resolved_code(stage.name)] = stage_code(params, stage, root)
        variants = dict.fromkeys(v for v, _ in runs_of(params, stage)) if stage.runs else [None]
        for v in variants:
            out[paths.resolved_settings(stage.name, v)] = stage.settings(params, v)
    return out


def stage_code(params: Params, stage, root: Path) -> dict[str, str]:
    """The code a stage runs: the fingerprint of its import closure, and the plugin files whose
    entries params choose for every run (``model.backbone``, ``make_pseudo_labels.refiner``, ...)
    where the stage's code calls that table. An entry a variant chooses (``ssc.expansion``) is in
    that variant's settings instead (:func:`~sslib.stages.registry.variant_settings`)."""
    from ..dvcgen import entry_points

    entries = entry_points(stage, root)
    code = fingerprint(entries, root)
    reach = {f.relative_to(root).as_posix() for f in closure(entries, root)}
    for entry, key in choices(params, skip=(VariantConfig,)):
        home = module_file(entry.home, root)
        if home is not None and home.relative_to(root).as_posix() in reach:
            code.update(plugin_code(entry, root))
    return code


def _check_watched(root: Path, params: Params) -> None:
    """Stop when dvc.yaml's resolve stage does not watch every file a stage's code imports
    (an import was added): its edits would otherwise rerun nothing."""
    from ..dvcgen import watched_files

    declared = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["resolve"]["deps"]
    missing = sorted(set(watched_files(root, params)) - set(declared))
    if missing:
        raise ConfigError(f"dvc.yaml: the resolve stage does not depend on {missing}, which the stages "
                          "import; run `python -m sslib.dvcgen` to rewrite the DVC files")


def _check_current(params: Params, root: Path) -> None:
    """Stop when the DVC files define other stages than ``params`` needs (another refiner adds
    or removes the boundary-network stages): what :mod:`sslib.dvcgen` would write differs in
    its stages, not only in text such as the plots' variant list."""
    defined = set(yaml.safe_load((root / "dvc.yaml").read_text()).get("stages", {}))
    defined |= {f.parent.name for f in (root / "pipeline").glob("*/dvc.yaml")}
    wanted = {"resolve", *(s.name for s in needed_stages(params))}
    if defined != wanted:
        extra, missing = sorted(defined - wanted), sorted(wanted - defined)
        raise ConfigError("the DVC files do not define the stages the current params need ("
                          + "; ".join([*(["not needed: " + ", ".join(extra)] if extra else []),
                                       *(["missing: " + ", ".join(missing)] if missing else [])])
                          + "; a choice such as make_pseudo_labels.refiner changes which stages run): "
                          "run `python -m sslib.dvcgen`, then the pipeline again")


def run(params: Params, root: Path | None = None) -> dict:
    """Write the settings and code files; return ``{"written": [...], "removed": [...]}``."""
    root = Path.cwd() if root is None else root
    _check_watched(root, params)
    _check_current(params, root)
    files = resolved(params, root)
    written = []
    for rel, content in files.items():
        text = json.dumps(content, indent=1, sort_keys=True) + "\n"
        f = root / rel
        if not f.is_file() or f.read_text() != text:
            write_text(f, text)
            written.append(rel.as_posix())
    removed = []
    for f in sorted((root / paths.RESOLVED).rglob("*.json")):
        if f.relative_to(root) not in files:
            f.unlink()
            removed.append(f.relative_to(root).as_posix())
    return {"written": written, "removed": removed}


def main(argv: list[str] | None = None) -> int:
    return common.cli("resolve", __doc__, lambda p, a: run(p), argv)


if __name__ == "__main__":
    sys.exit(main())
