"""The pipeline's layout cannot drift: stage order and names in dvc.yaml, notebooks/ and
sslib/stages/; dvc.yaml's outputs against sslib.paths; each stage's code and settings deps
(pipeline/resolved/, written by the resolve stage) and its data deps against what it reads."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import yaml

from sslib import config, fingerprint, paths
from sslib.dvcgen import watched_files
from sslib.stages import DOWNSTREAM, PER_RUN, STAGES
from sslib.stages.registry import BY_NAME

from dvc_files import load_stages, per_run_file
from params_reads import covers, stage_reads

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
    assert list(DVC) == ["resolve", *STAGES]  # resolve: what every other stage depends on
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
def _closure(entry: Path) -> set[Path]:
    return set(fingerprint.closure([entry], ROOT))


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_depends_on_its_notebook_code_fingerprint_and_settings_only(stage):
    """No source file is a dep of a stage: its code is pipeline/resolved/<stage>/code.json (the
    fingerprint of its import closure), its params values the settings file beside it."""
    deps = DVC[stage]["deps"]
    code = [d for d in deps if d.startswith(("sslib", "notebooks", "pipeline"))]
    settings = paths.resolved_settings(stage, "${item.variant}" if stage in PER_RUN else None).as_posix()
    nb = [f"notebooks/{STAGES[stage]}.py"] if STAGES[stage] else []
    assert code == [*nb, paths.resolved_code(stage).as_posix(), settings]
    assert "params" not in DVC[stage], f"{stage}: params reach a stage through its settings file"


def test_resolve_watches_every_file_a_stage_imports():
    deps = DVC["resolve"]["deps"]
    assert deps == watched_files(ROOT, config.load()) == sorted(deps)
    for stage in STAGES:
        for f in fingerprint.closure([ROOT / "sslib" / "stages" / f"{stage}.py"], ROOT):
            assert f.relative_to(ROOT).as_posix() in deps, (stage, f)
    assert DVC["resolve"]["params"] == [{"params.yaml": None}]


def test_the_closure_sees_lazy_and_relative_imports():
    closure = {str(f.relative_to(ROOT)) for f in _closure(ROOT / "sslib" / "stages" / "eval_cam.py")}
    # function-level `from ..cam import make_cams` and `from ..models import load_trained`
    assert {"sslib/cam.py", "sslib/models/cam_net.py", "sslib/models/__init__.py", "sslib/paths.py"} <= closure


def test_a_reexporting_package_is_followed_by_the_names_taken_from_it():
    """`from ..models import load_trained` reaches cam_net.py, not every network the package lists."""
    irn = {str(f.relative_to(ROOT)) for f in _closure(ROOT / "sslib" / "stages" / "train_irn.py")}
    seg = {str(f.relative_to(ROOT)) for f in _closure(ROOT / "sslib" / "stages" / "train_seg.py")}
    assert "sslib/models/irn.py" in irn and "sslib/models/deeplab.py" not in irn
    assert "sslib/models/deeplab.py" in seg and "sslib/models/irn.py" not in seg


def test_exclusions_are_named_files_that_exist():
    for f, why in fingerprint.EXCLUDED.items():
        assert (ROOT / f).is_file() and len(why) > 20, f


# --------------------------------------------------------------------------- params and data deps
_READS: dict[str, set[str]] = {}


def _stage_reads(stage: str) -> set[str]:
    """The params keys the stage module, its notebook and the sslib functions they hand
    params to read (tests/params_reads.py: from the ast, not the text)."""
    if stage not in _READS:
        _READS[stage] = stage_reads(stage, STAGES[stage])
    return _READS[stage]


def _unread(reads: set[str], keys) -> list[str]:
    return [k for k in keys if not covers(reads, k)]


def _settings_keys(stage: str) -> list[str]:
    """The params keys in a stage's settings (every variant's): a whole section, its fields,
    or ``variant.<field>`` for the variant settings (``ssc`` merged with ``variants.<name>``)."""
    out = []
    variants = PARAMS.runs.variants if stage in PER_RUN else [None]
    for v in variants:
        for section, value in BY_NAME[stage].settings(PARAMS, v).items():
            if section == "variant":
                out += [f"variant.{k}" for k in value]
            elif section == "variants":
                out += [f"variant.{k}" for fields in value.values() for k in fields]
            elif isinstance(value, dict) and value != config.to_dict(getattr(PARAMS, section)):
                out += [f"{section}.{k}" for k in value]
            else:
                out.append(section)
    return sorted(set(out))


def _data_keys(stage: str) -> list[str]:
    """The params keys of dvc.yaml's ``${section.key}...`` deps of the stage."""
    keys = []
    for dep in DVC[stage].get("deps", []):
        m = re.fullmatch(r"\$\{(\w+)\.(\w+)\}(/.*)?", dep)
        if m is not None:
            keys.append(f"{m.group(1)}.{m.group(2)}")
    return keys


#: settings a stage holds without reading them, and why (each one named, so none slips in)
SETTINGS_NOT_READ: dict[str, tuple[set[str], str]] = {}  # stage -> (keys its settings hold unread, why)


@pytest.mark.parametrize("stage", list(STAGES))
def test_settings_name_no_params_the_stage_never_reads(stage):
    unread = _unread(_stage_reads(stage), _settings_keys(stage))
    known = SETTINGS_NOT_READ.get(stage, (set(), ""))[0]
    assert known <= set(unread), f"{stage}: {sorted(known - set(unread))} are read now; drop them from SETTINGS_NOT_READ"
    unread = [k for k in unread if k not in known]
    assert not unread, f"stage {stage}'s settings hold {unread}, which it never reads"


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_declares_no_data_the_stage_never_reads(stage):
    unread = _unread(_stage_reads(stage), _data_keys(stage))
    assert not unread, f"dvc.yaml stage {stage} depends on the folders of {unread}, which it never reads"


#: a made-up stage: it names ``params.data`` and calls variant_config, yet reads only
#: data.train_split, two fields of its variant and one of make_ir_labels (through a helper)
FAKE_STAGE = '''
from sslib.config import MakeIrLabelsConfig, Params, variant_config


def run(params: Params, variant: str):
    """Says params.data.root and params.data.prepared_dir; reads neither."""
    v = variant_config(params, variant)
    p = params.make_ir_labels
    return params.data.train_split, v.alignment, _threshold(p), _rec(v)


def _threshold(c):
    return c.fg_threshold


def _rec(vc):
    return vc.beta_rec
'''


def test_the_reads_checks_fail_on_keys_a_stage_only_names():
    """The checks above on FAKE_STAGE: what it reads passes, what it only names (or what a
    text match on ``params.data`` / ``variant_config`` would have let through) fails."""
    reads = stage_reads("fake_stage", extra={"fake_stage": FAKE_STAGE})
    read = ["data.train_split", "variant.alignment", "variant.beta_rec", "make_ir_labels.fg_threshold"]
    named = ["data.root", "data.prepared_dir", "variant.drs_delta", "variant.rec_loss", "make_ir_labels.bg_threshold",
             "make_ir_labels.out_dir", "eval_cam.out_dir", "train_cam"]
    assert _unread(reads, read) == []
    assert _unread(reads, named) == named
    assert "params.data" in FAKE_STAGE and "variant_config" in FAKE_STAGE


# --------------------------------------------------------------------------- readability rules
@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_functions_are_short(stage):
    tree = ast.parse((ROOT / "sslib" / "stages" / f"{stage}.py").read_text())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, f"sslib/stages/{stage}.py: functions over 60 lines: {long}"


def _code_lines(source: str, tree: ast.AST) -> dict[ast.AST, int]:
    """Each function's lines of code: its lines (decorators and signature included) less its
    docstring, blank lines and comment-only lines."""
    import io
    import tokenize

    code: set[int] = set()  # the lines that hold a token of code (a multi-line token: all of its lines)
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            code.update(range(tok.start[0], tok.end[0] + 1))
    out = {}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = set(range(min([d.lineno for d in n.decorator_list] + [n.lineno]), n.end_lineno + 1))
            if ast.get_docstring(n, clean=False) is not None:
                lines -= set(range(n.body[0].lineno, n.body[0].end_lineno + 1))
            out[n] = len(lines & code)
    return out


def test_code_lines_count_neither_docstring_nor_blank_nor_comment_lines():
    source = 'def f(a,\n      b):\n    """Doc.\n\n    More.\n    """\n    # a comment\n\n    x = """two\n    lines"""\n    return x  # trailing\n'
    tree = ast.parse(source)
    assert list(_code_lines(source, tree).values()) == [5]  # the signature (2), the string (2), return


@pytest.mark.parametrize("module", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "sslib").rglob("*.py")))
def test_library_functions_are_short(module):
    """No function in sslib/ has more than 60 lines of code (docstring, blank and comment lines not counted)."""
    source = (ROOT / module).read_text()
    long = [(n.name, k) for n, k in _code_lines(source, ast.parse(source)).items() if k > 60]
    assert not long, f"{module}: functions over 60 lines of code: {long}"


@pytest.mark.parametrize("nb", [nb for nb in STAGES.values() if nb], ids=str)
def test_notebooks_hold_no_paths(nb):
    """Notebooks get every path from sslib.paths (or a stage function), never from a literal."""
    tree = ast.parse((ROOT / "notebooks" / f"{nb}.py").read_text())
    suffixes = (".csv", ".json", ".png", ".ipynb", ".npz", ".pt", ".txt", ".jpg")
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    bad = [s for s in literals if s != "params.yaml" and ("/" in s and " " not in s or s.endswith(suffixes)
                                                           or s in ("reports", "artifacts", "scratch"))]
    assert not bad, f"notebooks/{nb}.py: path literals {bad}"
