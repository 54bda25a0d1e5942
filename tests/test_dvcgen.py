"""The DVC files are generated (sslib.dvcgen) and the resolve stage's files are current; code
fingerprints ignore what cannot change a result; settings drop what a variant switches off."""
from __future__ import annotations

import functools
import json
import textwrap
from pathlib import Path

import pytest

from sslib import config, dvcgen, fingerprint, paths
from sslib.stages import resolve
from sslib.stages.registry import BY_NAME, variant_settings

ROOT = Path(__file__).resolve().parents[1]
PARAMS = config.load(ROOT / "params.yaml")


def test_committed_dvc_files_are_what_dvcgen_writes():
    stale = dvcgen.stale(PARAMS, ROOT)
    assert not stale, f"{stale} differ from `python -m sslib.dvcgen`'s output: run it and commit"


def test_committed_resolved_files_are_what_the_resolve_stage_writes():
    """pipeline/resolved/ is git-tracked (what each run depends on): it must match the code and
    params.yaml as committed, or dvc.lock would describe other settings than params.yaml."""
    want = {p.as_posix(): json.dumps(c, indent=1, sort_keys=True) + "\n" for p, c in resolve.resolved(PARAMS, ROOT).items()}
    have = {f.relative_to(ROOT).as_posix(): f.read_text() for f in (ROOT / paths.RESOLVED).rglob("*.json")}
    assert sorted(have) == sorted(want)
    bad = [p for p in want if have[p] != want[p]]
    assert not bad, f"{bad} are stale: run `dvc repro resolve` (or python -m sslib.stages.resolve) and commit"


def _module(tmp_path: Path, rel: str, text: str) -> Path:
    f = tmp_path / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(textwrap.dedent(text))
    return f


def test_file_hash_ignores_comments_docstrings_and_layout_but_not_code(tmp_path):
    a = _module(tmp_path, "a.py", '''
        """Module doc."""
        def f(x):
            """Doc."""
            return x + 1  # comment
        ''')
    b = _module(tmp_path, "b.py", '''
        # a new comment
        def f(x):
            """Another doc, longer."""

            return (x +
                    1)
        ''')
    c = _module(tmp_path, "c.py", "def f(x):\n    return x + 2\n")
    d = _module(tmp_path, "d.py", "def f(x):\n    'not a docstring: a string in a call'\n    return len('x' 'y')\n")
    e = _module(tmp_path, "e.py", "def f(x):\n    'not a docstring: a string in a call'\n    return len('x' 'yz')\n")
    assert fingerprint.file_hash(a) == fingerprint.file_hash(b)
    assert fingerprint.file_hash(a) != fingerprint.file_hash(c)
    assert fingerprint.file_hash(d) != fingerprint.file_hash(e)


def test_closure_follows_lazy_relative_and_reexported_imports(tmp_path):
    _module(tmp_path, "sslib/__init__.py", '"""pkg."""\n')
    _module(tmp_path, "sslib/models/__init__.py", "from .a import A\nfrom .b import B\n__all__ = ['A', 'B']\n")
    _module(tmp_path, "sslib/models/a.py", "from ..util import u\nA = 1\n")
    _module(tmp_path, "sslib/models/b.py", "B = 2\n")
    _module(tmp_path, "sslib/util.py", "u = 0\n")
    _module(tmp_path, "sslib/lazy.py", "x = 0\n")
    entry = _module(tmp_path, "sslib/stage.py", '''
        from .models import A
        def run():
            from . import lazy
            return lazy.x
        ''')
    got = {f.relative_to(tmp_path).as_posix() for f in fingerprint.closure([entry], tmp_path)}
    assert got == {"sslib/__init__.py", "sslib/models/__init__.py", "sslib/models/a.py", "sslib/util.py",
                   "sslib/lazy.py", "sslib/stage.py"}  # not models/b.py: only A is taken


def test_variant_settings_drop_what_the_variant_switches_off():
    cam, ssc = variant_settings(PARAMS, "cam"), variant_settings(PARAMS, "ssc")
    assert set(cam) == {"expansion", "reconstruction", "alignment"}
    assert variant_settings(PARAMS, "ssc")["expansions"] == {"drs": {"delta": PARAMS.ssc.expansions["drs"].delta}}
    assert set(ssc) == set(config.to_dict(config.variant_config(PARAMS, "ssc")))
    plus_crm = BY_NAME["train_cam"].settings(PARAMS, "+crm")
    assert "align_erosion" not in plus_crm["variant"] and "superpixels" not in plus_crm
    assert plus_crm["model"]["decoder_width"] == PARAMS.model.decoder_width
    baseline = BY_NAME["train_cam"].settings(PARAMS, "baseline")
    assert "decoder_width" not in baseline["model"] and "decoder_lr" not in baseline["train_cam"]


@pytest.mark.parametrize("stage", ["train_irn", "make_ir_labels", "train_seg"])
def test_downstream_settings_hold_no_cam_training_keys(stage):
    s = BY_NAME[stage].settings(PARAMS, "ssc")
    assert "variant" not in s and "train_cam" not in s and "decoder_width" not in s.get("model", {})


@functools.lru_cache(maxsize=1)
def _committed() -> dict:
    return resolve.resolved(PARAMS, ROOT)


def _changed_files(edit_params: dict | None = None, edit_code: tuple[str, str] | None = None,
                   tmp_path: Path | None = None) -> set[str]:
    """The resolve stage's files that differ after one edit (params deep-merged, or a source
    file's text appended in a copy of sslib/)."""
    before = _committed()
    if edit_params is not None:
        params = config.load(ROOT / "params.yaml", overrides=edit_params)
        after = resolve.resolved(params, ROOT)
    else:
        import shutil

        shutil.copytree(ROOT / "sslib", tmp_path / "sslib", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
        rel, extra = edit_code
        f = tmp_path / rel
        f.write_text(f.read_text() + extra)
        after = resolve.resolved(PARAMS, tmp_path)
    return {p.as_posix() for p in before if before[p] != after[p]}


def test_align_erosion_changes_only_the_aligning_variants_settings():
    """The issue's `ssc.align_erosion: 8 -> 6`: the train_cam runs of +asm and ssc (and the
    inspection of every variant), no cam, baseline or +crm run."""
    assert _changed_files({"ssc": {"align_erosion": 6}}) == {
        "pipeline/resolved/train_cam/settings-+asm.json", "pipeline/resolved/train_cam/settings-ssc.json",
        "pipeline/resolved/inspect_cams/settings.json"}


def test_a_key_of_one_variant_changes_only_that_variants_settings():
    variants = config.to_dict(PARAMS)["variants"]
    crm = {**variants["+crm"], "beta_rec": 0.5}
    # inspect_cams reads only the alignment keys; the rest reaches it through the run's model file
    assert _changed_files({"variants": {**variants, "+crm": crm}}) == {"pipeline/resolved/train_cam/settings-+crm.json"}


def test_a_decoder_setting_reruns_only_the_reconstructing_variants():
    assert _changed_files({"model": {"decoder_width": 32}}) == {
        "pipeline/resolved/train_cam/settings-+crm.json", "pipeline/resolved/train_cam/settings-ssc.json"}


@pytest.mark.parametrize("rel, extra, want", [
    ("sslib/io.py", "\n# a comment\n", set()),
    ("sslib/io.py", "\n_EDITED = 1\n", set()),  # excluded: atomic writes
    ("sslib/models/deeplab.py", "\n# a comment\n", set()),
    ("sslib/models/deeplab.py", "\n_EDITED = 1\n", {"pipeline/resolved/train_seg/code.json",
                                                    "pipeline/resolved/eval_seg/code.json"}),
])
def test_a_code_edit_changes_only_the_fingerprints_of_the_stages_that_run_it(tmp_path, rel, extra, want):
    assert _changed_files(edit_code=(rel, extra), tmp_path=tmp_path) == want


def test_the_tables_a_stage_chooses_from_are_in_its_code():
    """A stage's own choices (``train_seg.crop``, ``train_seg.method``, ``make_pseudo_labels.refiner``
    ...) are built by their table's home module: it is in the stage's code.json (an edit to it
    reruns the stage), under every entry of the table, not only the default's."""
    from sslib.config import choices
    from sslib.fingerprint import module_file

    checked = 0
    for entry, key in choices(PARAMS):
        stage = BY_NAME.get(key.split(".")[0])
        if stage is None:  # a shared section (data, model, ssc): read by several stages
            continue
        code = json.loads((ROOT / paths.RESOLVED / stage.name / "code.json").read_text())
        home = module_file(entry.home, ROOT).relative_to(ROOT).as_posix()
        assert home in code, f"{key}: {home} (the home of its table) is not in {stage.name}'s code.json"
        checked += 1
    assert checked >= 4  # make_pseudo_labels.refiner, train_seg.method, .backbone, .crop
