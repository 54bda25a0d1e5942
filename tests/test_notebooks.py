"""Notebook pairs (.py source <-> stripped .ipynb) and the papermill runner."""
import json
from pathlib import Path

import pytest

from sslib import notebook

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_committed_pairs_are_in_sync_and_stripped():
    assert SOURCES, "no notebook sources found"
    assert notebook.check(ROOT / "notebooks") == []


#: an override of one key per section, and where the loaded params must show it
OVERRIDES = {
    "data": ({"val_split": "other"}, lambda p: p.data.val_split == "other"),
    "synthetic": ({"n_train": 7}, lambda p: p.synthetic.n_train == 7),
    "superpixels": ({"workers": 3}, lambda p: p.superpixels.workers == 3),
    "augment": ({"hflip": False}, lambda p: p.augment.hflip is False),
    "model": ({"vgg_weights": "weights/other.pth"}, lambda p: p.model.vgg_weights == "weights/other.pth"),
    "runs": ({"devices": 3}, lambda p: p.runs.devices == 3),
    "ssc": ({"beta_rec": 0.25}, lambda p: p.ssc.beta_rec == 0.25),
    "variants": ({"ssc": {"beta_align": 0.5}}, lambda p: p.variants["ssc"] == {"beta_align": 0.5}),
    "train_cam": ({"epochs": 7}, lambda p: p.train_cam.epochs == 7),
    "eval_cam": ({"flip": False}, lambda p: p.eval_cam.flip is False),
    "make_ir_labels": ({"bg_threshold": 0.05}, lambda p: p.make_ir_labels.bg_threshold == 0.05),
    "train_irn": ({"epochs": 2}, lambda p: p.train_irn.epochs == 2),
    "make_pseudo_labels": ({"mask_ratio": 0.25}, lambda p: p.make_pseudo_labels.mask_ratio == 0.25),
    "train_seg": ({"epochs": 3}, lambda p: p.train_seg.epochs == 3),
    "eval_seg": ({"fusion": "mean"}, lambda p: p.eval_seg.fusion == "mean"),
}


def _parameters_and_setup(src: Path):
    """The parameters cell's code, and the first code cell's statements up to the
    ``params = notebook.setup(...)`` assignment."""
    import ast

    nb = notebook.read_source(src)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    body = ast.parse(code[1].source).body
    calls = [i for i, st in enumerate(body) if isinstance(st, ast.Assign) and "notebook.setup(" in ast.unparse(st)]
    assert calls, f"{src.name}: the cell after the parameters does not call notebook.setup"
    return code[0].source, ast.unparse(ast.Module(body=body[:calls[0] + 1], type_ignores=[]))


def _sections_read(stage: str) -> set[str]:
    """The params sections in the stage's settings (pipeline/resolved/): what its runs read."""
    from sslib import config
    from sslib.stages.registry import BY_NAME, PER_RUN

    params = config.defaults()
    variants = params.runs.variants if stage in PER_RUN else [None]
    out = set()
    for v in variants:
        out |= {"ssc" if k in ("variant", "variants") else k for k in BY_NAME[stage].settings(params, v)}
    return out


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_every_notebook_accepts_the_sections_it_reads_and_applies_them(src, monkeypatch):
    """The parameters cell holds one override dict per params section the stage reads
    (its settings in pipeline/resolved/), and an override injected as papermill would inject it reaches the
    params the notebook runs with."""
    from sslib import config, paths
    from sslib.stages import STAGES

    stage = next(s for s, nb in STAGES.items() if nb == src.stem)
    parameters, setup = _parameters_and_setup(src)
    env: dict = {}
    exec(parameters, env)
    sections = {k for k, v in env.items() if isinstance(v, dict) and k in config.to_dict(config.defaults())}
    assert _sections_read(stage) <= sections, f"{src.name}: no override dict for {_sections_read(stage) - sections}"
    assert f"notebook.setup('{stage}', params_path" in setup  # ast.unparse quotes with '
    for k in sections:  # what papermill's injected cell does
        env[k] = OVERRIDES[k][0]
    monkeypatch.setenv(paths.PIPELINE_ENV, "1")  # the pipeline's own outputs: nothing goes to scratch/
    monkeypatch.chdir(ROOT / "notebooks")  # as JupyterLab opens it
    exec(setup, env)
    params = env["params"]
    for k in sections:
        assert OVERRIDES[k][1](params), f"{src.name}: override of {k} not applied"
    assert Path.cwd() == ROOT  # it runs from the project root


def test_check_reports_drift_and_outputs(tmp_path):
    (tmp_path / "01_x.py").write_text('# %% tags=["parameters"]\na = 1\n\n# %%\nprint(a)\n')
    assert "missing" in notebook.check(tmp_path)[0]
    assert notebook.sync(tmp_path) == [tmp_path / "01_x.ipynb"]
    assert notebook.check(tmp_path) == [] and notebook.sync(tmp_path) == []
    nb = json.loads((tmp_path / "01_x.ipynb").read_text())
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    (tmp_path / "01_x.ipynb").write_text(json.dumps(nb))
    assert any("outputs" in p for p in notebook.check(tmp_path))
    notebook.sync(tmp_path)
    (tmp_path / "01_x.py").write_text('# %% tags=["parameters"]\na = 2\n\n# %%\nprint(a)\n')
    assert any("differ" in p for p in notebook.check(tmp_path))


def test_source_without_parameters_cell_is_rejected(tmp_path):
    src = tmp_path / "01_y.py"
    src.write_text("# %%\nx = 1\n")
    with pytest.raises(ValueError, match="parameters"):
        notebook.read_source(src)


def test_run_injects_parameters_and_writes_atomically(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "nb").mkdir()
    src = tmp_path / "nb" / "01_t.py"
    src.write_text('# %% tags=["parameters"]\nvalue = 1\n\n# %%\nimport os\n'
                   'open("result.txt", "w").write(f"{value} {os.getcwd()}")\n')
    out = notebook.run(src, parameters={"value": 7}, log_output=False)
    assert out == tmp_path / "reports" / "notebooks" / "01_t.ipynb" and out.exists()
    value, cwd = (tmp_path / "result.txt").read_text().split(" ", 1)
    assert value == "7" and Path(cwd) == tmp_path  # ran from the project root
    # a failing run leaves a .failed copy and keeps the earlier good output
    src.write_text('# %% tags=["parameters"]\nvalue = 1\n\n# %%\nraise RuntimeError("boom")\n')
    with pytest.raises(Exception, match="boom"):
        notebook.run(src, log_output=False)
    assert out.exists() and "result.txt" in out.read_text()
    assert (out.parent / "01_t.failed.ipynb").exists()
    assert not list(out.parent.glob(".*running*"))


def test_running_and_saving_in_jupyterlab_leaves_the_dvc_source_unchanged(tmp_path):
    """JupyterLab saves through jupytext's contents manager, which rewrites the paired .py;
    with notebooks/jupytext.toml's filters that rewrite is byte-identical, so `dvc repro`
    still sees an unchanged dependency after a notebook was executed and saved."""
    import shutil

    import nbformat
    from jupytext import TextFileContentsManager

    for f in (ROOT / "notebooks").iterdir():
        if f.suffix in (".py", ".ipynb", ".toml"):
            shutil.copy2(f, tmp_path / f.name)
    cm = TextFileContentsManager(root_dir=str(tmp_path))
    for src in SOURCES:
        before = (tmp_path / src.name).read_bytes()
        name = src.with_suffix(".ipynb").name
        nb = cm.get(name)["content"]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python", "version": "3.11"}
        for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            cell.execution_count = i + 1
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
            cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
        cm.save({"type": "notebook", "format": "json", "content": nb}, name)
        assert "ran" in (tmp_path / name).read_text()  # the .ipynb did change ...
        assert (tmp_path / src.name).read_bytes() == before, src.name  # ... its DVC source did not


def test_run_sets_pipeline_env_and_writes_the_same_notebook_twice(tmp_path):
    """`sslib.notebook run` (what dvc.yaml runs) marks the kernel as the pipeline's, and the
    executed copy holds no timestamps, durations or stderr, so a rerun that computes the
    same values writes the same bytes (and DVC's lock does not change)."""
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text("{}\n")
    src = tmp_path / "01_t.py"
    src.write_text('# %% tags=["parameters"]\nvalue = 1\n\n# %%\nimport os, sys, time\n'
                   'print("pipeline", os.environ.get("SSC_PIPELINE"))\n'
                   'print(f"{time.time()} s", file=sys.stderr)\n'
                   'from tqdm.auto import tqdm\nfor _ in tqdm(range(3)): time.sleep(0.01)\n')
    out = notebook.run(src, parameters={"value": 2}, log_output=False)
    first = out.read_bytes()
    nb = json.loads(first)
    assert "pipeline 1" in json.dumps(nb["cells"])
    assert not any(k in first.decode() for k in ("start_time", "end_time", "duration", "\"stderr\""))
    assert "SSC_PIPELINE" not in __import__("os").environ  # restored after the run
    r = subprocess.run([sys.executable, "-m", "sslib.notebook", "run", str(src), "-y", "value: 2"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == first
    assert "KeyboardInterrupt" not in r.stderr  # the kernel's shutdown log is not shown


def test_route_outputs_redirects_only_the_stage_run_by_hand(monkeypatch):
    from sslib import config, paths

    monkeypatch.setenv(paths.SCRATCH_ENV, "")
    monkeypatch.setenv(paths.PIPELINE_ENV, "1")
    params = config.load(ROOT / "params.yaml")
    assert notebook.route_outputs(params, "train_cam") is params
    assert paths.reports("train_cam") == Path("reports")
    monkeypatch.delenv(paths.PIPELINE_ENV)
    routed = notebook.route_outputs(params, "train_cam")
    assert routed.train_cam.out_dir == str(Path("scratch") / params.train_cam.out_dir)
    assert routed.eval_cam.out_dir == params.eval_cam.out_dir and routed.superpixels == params.superpixels
    assert paths.reports("train_cam") == Path("scratch/reports") and paths.reports("eval_cam") == Path("reports")
    synth = notebook.route_outputs(params, "synthesize")  # the synthetic set is also data.root
    assert synth.synthetic.out_dir == synth.data.root == str(Path("scratch") / params.synthetic.out_dir)


def test_run_kills_the_kernel_once_the_cells_are_done(tmp_path):
    """The kernel is ended at once, not asked to exit (its interpreter's teardown cost every
    stage 1-2 s): exit handlers do not run, so no stage may rely on them; the cells' own
    output is all there."""
    (tmp_path / "params.yaml").write_text("{}\n")
    flag = tmp_path / "atexit.txt"
    src = tmp_path / "01_t.py"
    src.write_text(f'# %% tags=["parameters"]\nvalue = 1\n\n# %%\nimport atexit, pathlib\natexit.register(pathlib.Path({str(flag)!r}).write_text, "ran")\n'
                   'print("cells done")\n')
    out = notebook.run(src, log_output=False)
    assert "cells done" in out.read_text()
    assert not flag.exists()
