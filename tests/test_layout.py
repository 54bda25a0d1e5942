"""The pipeline's layout cannot drift: stage order and names in dvc.yaml, notebooks/ and
sslib/stages/; dvc.yaml's outputs against sslib.paths; its code deps against the sslib
modules each stage imports; its params and data deps against what the stage reads."""
from __future__ import annotations

import ast
import importlib
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from sslib import config, paths
from sslib.stages import DOWNSTREAM, PER_RUN, STAGES

from dvc_files import load_stages, per_run_file

ROOT = Path(__file__).resolve().parents[1]
DVC = load_stages(ROOT)
PARAMS = config.load(ROOT / "params.yaml")
RAW = config.read_yaml((ROOT / "params.yaml").read_text())


def _interpolate(text: str, item: dict | None = None) -> str:
    """dvc.yaml's ``${a.b}`` from params.yaml and ``${item.x}`` from a matrix item."""
    def value(m: re.Match) -> str:
        node: object = {"item": item or {}, **RAW}
        for part in m.group(1).split("."):
            node = node[part]  # type: ignore[index]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, text)


def _entries(stage: dict, kind: str, item: dict | None) -> list[str]:
    out = []
    for e in stage.get(kind, []):
        out.append(_interpolate(next(iter(e)) if isinstance(e, dict) else e, item))
    return out


def _items(name: str) -> list[dict | None]:
    if name not in PER_RUN:
        return [None]
    runs = PARAMS.runs.downstream if name in DOWNSTREAM else PARAMS.runs
    return [{"variant": v, "seed": s} for v in runs.variants for s in runs.seeds]


# --------------------------------------------------------------------------- order and names
def test_stages_read_top_to_bottom_in_the_same_order_everywhere():
    assert list(DVC) == list(STAGES)
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert notebooks == [nb for nb in STAGES.values() if nb is not None]
    numbers = [int(nb[:2]) for nb in STAGES.values() if nb is not None]
    assert numbers == sorted(numbers)
    for stage, nb in STAGES.items():
        assert nb is None or nb.endswith(f"_{stage}"), f"notebook {nb} is not named after stage {stage}"
        module = importlib.import_module(f"sslib.stages.{stage}")
        assert callable(module.run) and callable(module.main), stage
        cmd = DVC[stage]["cmd"]
        want = f"notebooks/{nb}.py" if nb else f"python -m sslib.stages.{stage}"
        assert want in cmd, f"{stage}: dvc.yaml runs {cmd!r}, expected {want}"
        assert ("matrix" in DVC[stage]) == (stage in PER_RUN)


def test_per_run_stages_have_a_file_each_with_root_relative_paths():
    """Each per-run stage sits alone in pipeline/<stage>/dvc.yaml (a lock file of its own),
    runs in the repository root (``wdir: ../..``, so its paths read as dvc.yaml's) and takes
    its ${...} values from the root params.yaml; no other file defines stages."""
    files = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("**/dvc.yaml")
                   if not {".venv", ".dvc", "artifacts", "scratch"} & set(p.relative_to(ROOT).parts))
    assert files == sorted(["dvc.yaml", *(f"pipeline/{s}/dvc.yaml" for s in PER_RUN)])
    for stage in PER_RUN:
        doc = yaml.safe_load(per_run_file(stage).read_text())
        assert doc["vars"] == ["../../params.yaml"], stage
        assert DVC[stage]["wdir"] == "../..", stage


def test_matrix_stages_run_over_their_runs():
    """train_cam / eval_cam over runs.variants x runs.seeds, the downstream stages over runs.downstream."""
    for stage in PER_RUN:
        runs = "runs.downstream" if stage in DOWNSTREAM else "runs"
        assert DVC[stage]["matrix"] == {"variant": f"${{{runs}.variants}}", "seed": f"${{{runs}.seeds}}"}, stage


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_outputs_are_the_paths_module_outputs(stage):
    for item in _items(stage):
        declared = {Path(p) for kind in ("outs", "metrics", "plots") for p in _entries(DVC[stage], kind, item)}
        built = paths.stage_outputs(PARAMS, stage, **(item or {}), notebook_stem=STAGES[stage])
        assert declared == set(built), f"{stage} {item}: dvc.yaml {sorted(map(str, declared))} != paths {sorted(map(str, built))}"


def test_notebook_runner_writes_where_dvc_expects():
    for stage, nb in STAGES.items():
        if nb is None:
            continue
        cmd = " ".join(DVC[stage]["cmd"].split())
        for item in _items(stage):
            want = paths.stage_outputs(PARAMS, stage, **(item or {}), notebook_stem=nb)
            ipynb = [p for p in want if p.suffix == ".ipynb"][0]
            if item is None:
                assert "-o" not in cmd and ipynb == paths.notebook(nb)  # the runner's default
            else:
                assert f"-o {ipynb}" in _interpolate(cmd, item)


# --------------------------------------------------------------------------- code deps
def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "sslib":
        return None
    base = ROOT.joinpath(*parts)
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imports(path: Path) -> set[str]:
    """Absolute names of every sslib module ``path`` imports (at any depth in the file)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.removesuffix(".__init__")
    else:
        package = package.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if m.split(".")[0] == "sslib"}


@lru_cache(maxsize=None)
def _closure(entry: Path) -> frozenset[Path]:
    """Every sslib file that running ``entry`` may import, with the packages around them."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for name in _imports(f):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
                mf = _module_file(".".join(parts[:i]))
                if mf is not None and mf not in seen:
                    todo.append(mf)
    return frozenset(p for p in seen if p.is_relative_to(ROOT / "sslib"))


def _trivial(f: Path) -> bool:
    """A package ``__init__`` without imports (a docstring and constants) changes no stage's result."""
    tree = ast.parse(f.read_text())
    return f.name == "__init__.py" and not any(
        isinstance(n, (ast.Import, ast.ImportFrom)) and getattr(n, "module", "") != "__future__" for n in tree.body)


def _entry_points(stage: str) -> list[Path]:
    nb = STAGES[stage]
    if nb is None:
        return [ROOT / "sslib" / "stages" / f"{stage}.py"]
    return [ROOT / "notebooks" / f"{nb}.py", ROOT / "sslib" / "notebook.py"]


def _code_deps(stage: str) -> list[Path]:
    return [ROOT / d for d in DVC[stage].get("deps", []) if d.startswith(("sslib", "notebooks"))]


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_declares_every_sslib_module_the_stage_imports(stage):
    used = set().union(*(_closure(e) for e in _entry_points(stage) if e.suffix == ".py"))
    used = {f for f in used if not _trivial(f)}
    declared = _code_deps(stage)
    missing = sorted(str(f.relative_to(ROOT)) for f in used
                     if not any(f == d or f.is_relative_to(d) for d in declared))
    assert not missing, f"dvc.yaml stage {stage} does not declare {missing}"
    unused = sorted(str(d.relative_to(ROOT)) for d in declared if d.suffix != ".py" or d.parent.name != "notebooks"
                    if not any(f == d or f.is_relative_to(d) for f in used))
    assert not unused, f"dvc.yaml stage {stage} declares code it never imports: {unused}"
    nb = STAGES[stage]
    assert nb is None or ROOT / "notebooks" / f"{nb}.py" in declared


def test_the_closure_sees_lazy_and_relative_imports():
    closure = {str(f.relative_to(ROOT)) for f in _closure(ROOT / "sslib" / "stages" / "eval_cam.py")}
    # function-level `from ..cam import make_cams` and `from ..models import load_trained`
    assert {"sslib/cam.py", "sslib/models/cam_net.py", "sslib/models/__init__.py", "sslib/paths.py"} <= closure


# --------------------------------------------------------------------------- params and data deps
#: the paths helpers that read a downstream stage's artifacts folder from the params they get
OUT_DIR_HELPERS = {"make_ir_labels.out_dir": ("paths.ir_label_dir",),
                   "train_irn.out_dir": ("paths.irn_model", "paths.irn_dir", "paths.irn_checkpoint"),
                   "make_pseudo_labels.out_dir": ("paths.pseudo_label_file", "paths.confidence_mask_file",
                                                  "paths.pseudo_label_dir"),
                   "train_seg.out_dir": ("paths.seg_model", "paths.seg_dir", "paths.seg_checkpoint"),
                   "eval_seg.out_dir": ("paths.seg_prediction_dir", "paths.seg_prediction_file")}


def _read_text(stage: str) -> str:
    """The source of the stage module and its notebook: where a stage reads its params."""
    files = [ROOT / "sslib" / "stages" / f"{stage}.py"]
    if STAGES[stage]:
        files.append(ROOT / "notebooks" / f"{STAGES[stage]}.py")
    return "\n".join(f.read_text() for f in files)


def _reads(stage: str, key: str) -> bool:
    """Whether the stage reads params key ``key`` (``section`` or ``section.field``): its
    module or notebook names it, or hands params to a paths/config helper that reads it."""
    text = _read_text(stage)
    section, _, rest = key.partition(".")
    direct = f"params.{key}" in text or (rest and f"{section}.{rest}" in text and f"params.{section}" in text)
    helpers = {  # sslib helpers that read a key of the params they are given
        "train_cam.out_dir": ("paths.train_dir", "paths.model", "paths.checkpoint", "load_run"),
        "eval_cam.out_dir": ("paths.cam_dir",),
        "ssc": ("variant_config", "load_run"), "ssc.drs_delta": ("variant_config", "load_run"),
        "variants": ("variant_config", "load_run"), "runs.devices": ("run_here_or_torchrun",),
        **OUT_DIR_HELPERS,
    }
    via = any(h in text for h in helpers.get(key.split("${")[0].rstrip("."), ()))
    return bool(direct or via or (key.startswith("variants.") and ("variant_config" in text or "load_run" in text)))


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_declares_no_params_the_stage_never_reads(stage):
    for entry in DVC[stage].get("params", []):
        key = entry if isinstance(entry, str) else next(iter(entry))
        assert _reads(stage, key), f"dvc.yaml stage {stage} declares params {key!r}, which it never reads"


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_declares_no_data_the_stage_never_reads(stage):
    for dep in DVC[stage].get("deps", []):
        m = re.fullmatch(r"\$\{(\w+)\.(\w+)\}(/.*)?", dep)
        if m is None:
            continue
        key = f"{m.group(1)}.{m.group(2)}"
        evidence = {"data.root": ("params.data", "build_dataset"), "data.prepared_dir": ("params.data",),
                    "superpixels.out_dir": ("superpixels.out_dir", "params.superpixels"),
                    "train_cam.out_dir": ("paths.model", "load_run", "paths.train_dir"),
                    "eval_cam.out_dir": ("paths.cam_dir",), **OUT_DIR_HELPERS}[key]
        text = _read_text(stage)
        assert any(e in text for e in evidence), f"dvc.yaml stage {stage} depends on {dep}, which it never reads"


# --------------------------------------------------------------------------- readability rules
@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_functions_are_short(stage):
    tree = ast.parse((ROOT / "sslib" / "stages" / f"{stage}.py").read_text())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, f"sslib/stages/{stage}.py: functions over 60 lines: {long}"


@pytest.mark.parametrize("nb", [nb for nb in STAGES.values() if nb], ids=str)
def test_notebooks_hold_no_paths(nb):
    """Notebooks get every path from sslib.paths (or a stage function), never from a literal."""
    tree = ast.parse((ROOT / "notebooks" / f"{nb}.py").read_text())
    suffixes = (".csv", ".json", ".png", ".ipynb", ".npz", ".pt", ".txt", ".jpg")
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    bad = [s for s in literals if s != "params.yaml" and ("/" in s and " " not in s or s.endswith(suffixes)
                                                           or s in ("reports", "artifacts", "scratch"))]
    assert not bad, f"notebooks/{nb}.py: path literals {bad}"
