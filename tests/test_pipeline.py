"""End to end: `dvc repro` of the data stages in a temporary copy of the repository, at tiny size.

Checks what a user relies on: the pipeline completes from a clean checkout, a second
`dvc repro` does nothing, changing one superpixel parameter puts only that stage and
the stages that read its maps out of date, and a bad parameter stops with the key named.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dvc_files import copy_repo, dvc as _dvc, lock_files, ran as _ran, set_params as _set_params, short, target

TINY = {
    "synthetic": {"n_train": 10, "n_val": 4, "image_size": 64},
    "superpixels": {"workers": 1, "slic": {"n_segments": 30}},
    "augment": {"resize_long": [32, 64], "crop_size": 32},
    "model": {"frozen_stages": 2, "bn_eval": True},
    "runs": {"variants": ["cam", "ssc"], "seeds": [0], "downstream": {"variants": ["ssc"], "seeds": [0]}},
    "train_cam": {"epochs": 2, "batch_size": 5, "lr": 0.001},
    "ssc": {"warmup_epochs": 1, "rec_loss": "l1"},
    "eval_cam": {"scales": [1.0]},
    "train_irn": {"epochs": 1, "batch_size": 5, "crop_size": 32, "radius": 4},
    "train_seg": {"epochs": 1, "batch_size": 5, "crop_size": 32},
    "eval_seg": {"scales": [1.0, 1.5], "crf": True, "workers": 1},
}

pytestmark = pytest.mark.slow
# data.dvc (raw VOC/COCO) is "not in cache" in a fresh copy by design; check the pipeline only
TRAINED = ("train_cam@cam-0", "train_cam@ssc-0", "eval_cam@cam-0", "eval_cam@ssc-0", "ablation", "inspect_cams",
           "make_ir_labels@ssc-0", "train_irn@ssc-0", "make_pseudo_labels@ssc-0", "pseudo_label_table",
           "train_seg@ssc-0", "eval_seg@ssc-0", "paper_table")
STAGES = ("resolve", "synthesize", "prepare", "superpixels", "data_report", *TRAINED)


def _files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*"))
            if f.is_file() and not str(f.relative_to(folder)).startswith(skip)}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dst = copy_repo(tmp_path_factory.mktemp("clone"))
    for generated in ("reports/data_stats.json", "reports/figures", "reports/train_cam",
                      "reports/eval_cam", "reports/make_ir_labels", "reports/train_irn",
                      "reports/make_pseudo_labels", "reports/pseudo_labels.md", "reports/pseudo_labels.csv", "reports/ablation", "reports/ablation.md",
                      "reports/train_seg", "reports/eval_seg", "reports/paper_table.md", "reports/paper_table.csv",
                      "reports/ablation.csv"):
        p = dst / generated
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    _set_params(dst, TINY)
    return dst


def test_repro_from_clean_copy(repo):
    r = _dvc(repo, "repro")
    assert _ran(r) == set(STAGES)
    for f in ("artifacts/synthetic/meta.json", "artifacts/prepared/labels.json",
              "artifacts/superpixels/meta.json", "reports/figures/data_samples.png",
              "reports/notebooks/02_data_report.ipynb", "reports/notebooks/00_synthesize.ipynb",
              "reports/notebooks/01_superpixels.ipynb"):
        assert (repo / f).is_file(), f
    stats = json.loads((repo / "reports/data_stats.json").read_text())
    assert stats["images"] == {"train": 10, "val": 4}
    n_sp = len(list((repo / "artifacts/superpixels").glob("*.png")))
    assert n_sp == 14
    table = (repo / "reports/ablation.csv").read_text().splitlines()
    assert table[0].startswith("variant,miou_best_mean,miou_best_std,") and [r.split(",")[0] for r in table[1:]] == ["cam", "ssc"]
    for f in ("reports/ablation.md", "reports/figures/ablation_cams.png", "reports/ablation/sweep_val.csv",
              "reports/notebooks/19_inspect_cams.ipynb", "reports/eval_cam/ssc/seed0/metrics.json"):
        assert (repo / f).is_file(), f
    assert len(list((repo / "artifacts/cams/ssc/seed0/train").glob("*.npz"))) == 10
    assert len(list((repo / "artifacts/ir_labels/ssc/seed0").glob("*.png"))) == 10
    ir = json.loads((repo / "reports/make_ir_labels/ssc/seed0/metrics.json").read_text())
    assert ir["variant"] == "ssc" and 0 <= ir["train"]["precision"] <= 1 and ir["train"]["images"] == 10
    assert (repo / "reports/notebooks/make_ir_labels/ssc-seed0.ipynb").is_file()
    assert (repo / "artifacts/train_irn/ssc/seed0/model.pt").is_file()
    assert len(list((repo / "artifacts/pseudo_labels/ssc/seed0/labels").glob("*.png"))) == 10
    assert len(list((repo / "artifacts/pseudo_labels/ssc/seed0/masks").glob("*.png"))) == 10
    pl = json.loads((repo / "reports/make_pseudo_labels/ssc/seed0/metrics.json").read_text())
    assert 0 <= pl["train"]["miou"] <= 1 and pl["train"]["images_with_mask"] == 10
    table = (repo / "reports/pseudo_labels.csv").read_text().splitlines()
    assert table[0].startswith("variant,cam_miou_mean,") and [r.split(",")[0] for r in table[1:]] == ["ssc"]
    for f in ("reports/pseudo_labels.md", "reports/figures/pseudo_labels.png",
              "reports/notebooks/29_pseudo_label_table.ipynb", "reports/train_irn/ssc/seed0/losses.csv"):
        assert (repo / f).is_file(), f
    assert (repo / "artifacts/train_seg/ssc/seed0/model.pt").is_file()
    assert len(list((repo / "artifacts/seg_predictions/ssc/seed0").glob("*.png"))) == 4
    seg = json.loads((repo / "reports/eval_seg/ssc/seed0/metrics.json").read_text())
    assert seg["images"] == 4 and seg["crf"] is True and 0 <= seg["no_crf"]["miou"] <= 1
    table = (repo / "reports/paper_table.csv").read_text().splitlines()
    assert table[0].startswith("variant,cam_miou_mean,") and [r.split(",")[0] for r in table[1:]] == ["ssc"]
    assert "not run here" in (repo / "reports/paper_table.md").read_text()
    for f in ("reports/figures/segmentation.png", "reports/notebooks/39_paper_table.ipynb",
              "reports/train_seg/ssc/seed0/losses.csv", "reports/notebooks/eval_seg/ssc-seed0.ipynb"):
        assert (repo / f).is_file(), f


def test_second_repro_does_nothing(repo):
    r = _dvc(repo, "repro")
    assert _ran(r) == set()
    assert "changed" not in _dvc(repo, "status", *map(target, STAGES)).stdout


def test_rerunning_stages_changes_no_result_file_and_not_dvc_lock(repo):
    """A reproduction shows no change where nothing changed: forced reruns write byte-identical
    reports, notebooks and artifacts (times go to the gitignored reports/timings/), so dvc.lock
    stays as it was. (A training rerun writing the same weights is covered by test_train_cam.py.)"""
    locks = [f.read_bytes() for f in lock_files(repo)]
    reports = _files(repo / "reports", skip=("timings",))
    assert (repo / "reports/timings/train_cam/cam-seed0.json").is_file()
    r = _dvc(repo, "repro", "--force", "--single-item", target("eval_cam@cam-0"), "data_report", "ablation")
    assert _ran(r) == {"eval_cam@cam-0", "data_report", "ablation"}
    assert _files(repo / "reports", skip=("timings",)) == reports
    assert [f.read_bytes() for f in lock_files(repo)] == locks


def test_failed_stage_keeps_the_git_tracked_results(repo):
    """The user's probe: a bad value in params.yaml, then `dvc repro`. The stage fails naming
    the key, and the committed metrics, losses and tables (cache: false, so DVC could not
    restore them) are still there, byte for byte; the rerun with the good value restores all."""
    p = repo / "params.yaml"
    good = p.read_text()
    tracked = _files(repo / "reports", skip=("timings", "notebooks"))
    assert "train_cam/cam/seed0/metrics.json" in tracked and "train_cam/cam/seed0/losses.csv" in tracked
    _set_params(repo, {"train_cam": {"momentum": -1}})
    r = _dvc(repo, "repro", check=False)
    assert r.returncode != 0 and "train_cam.momentum" in r.stdout + r.stderr
    assert _files(repo / "reports", skip=("timings", "notebooks")) == tracked
    p.write_text(good)
    _dvc(repo, "repro")
    assert "changed" not in _dvc(repo, "status", *map(target, STAGES)).stdout


def test_checkout_on_a_clone_with_allow_missing(repo):
    """data.dvc is the empty slot for VOC/COCO, never in a clone's cache: plain `dvc checkout`
    fails on it (exit 255), `dvc checkout --allow-missing` (docs/troubleshooting.md) succeeds."""
    assert _dvc(repo, "checkout", check=False).returncode != 0
    _dvc(repo, "checkout", "--allow-missing")


def test_notebook_run_by_hand_writes_to_scratch(repo, tmp_path):
    """The user's probe: docs/pipeline.md's papermill example with other superpixels. It must not
    replace the pipeline's maps: its outputs go under scratch/, and no stage becomes changed."""
    before = _files(repo / "artifacts/superpixels")
    r = subprocess.run([sys.executable, "-m", "papermill", "notebooks/01_superpixels.ipynb",
                        str(tmp_path / "out.ipynb"), "-y", "superpixels: {method: felzenszwalb}"],
                       cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _files(repo / "artifacts/superpixels") == before
    meta = json.loads((repo / "scratch/artifacts/superpixels/meta.json").read_text())
    assert meta["method"] == "felzenszwalb" and meta["count"] == 14
    assert "changed" not in _dvc(repo, "status", *map(target, STAGES)).stdout


def test_superpixel_param_invalidates_only_dependents(repo):
    """One superpixel parameter changed and its stage reproduced: exactly the stages that read
    the maps (data_report, inspect_cams and every train_cam) are out of date, none further down; the old
    value back, `dvc repro` restores the same maps (rerun or from DVC's run cache), so
    nothing downstream reruns. (Checked with `dvc status` rather than by rerunning every
    dependent, which took 4 of the suite's 14 minutes.)"""
    p = repo / "params.yaml"
    good = p.read_text()
    _set_params(repo, {"superpixels": {"slic": {"n_segments": 20}}})
    assert _ran(_dvc(repo, "repro", "superpixels")) == {"resolve", "superpixels"}
    changed = {short(s) for s in re.findall(r"^(\S+):$", _dvc(repo, "status", *map(target, STAGES)).stdout, re.M)}
    assert changed == {"data_report", "inspect_cams", "train_cam@cam-0", "train_cam@ssc-0"}
    p.write_text(good)
    assert _ran(_dvc(repo, "repro")) <= {"resolve", "superpixels"}
    assert "changed" not in _dvc(repo, "status", *map(target, STAGES)).stdout


def _merged(text: str, update: dict) -> str:
    import yaml

    from sslib.config import deep_merge, read_yaml

    return yaml.safe_dump(deep_merge(read_yaml(text), update), sort_keys=False)


def _stale_after(repo: Path, path: str, edit) -> set[str]:
    """Apply ``edit`` (old text -> new text) to ``path``, run the resolve stage (seconds), and
    return the stages `dvc status` then puts out of date; the file is restored after."""
    f = repo / path
    old = f.read_text()
    try:
        assert edit(old) != old, path
        f.write_text(edit(old))
        assert _ran(_dvc(repo, "repro", "resolve")) <= {"resolve"}
        return {short(s) for s in re.findall(r"^(\S+):$", _dvc(repo, "status", *map(target, STAGES)).stdout, re.M)}
    finally:
        f.write_text(old)
        _dvc(repo, "repro", "resolve")


def test_an_edit_puts_out_of_date_only_the_runs_that_use_it(repo):
    """The issue's four edits on the tiny pipeline (variants cam and ssc; ssc downstream), by
    `dvc status` after the resolve stage: what a user checks before running. (Over all five
    variants, test_dvcgen.py checks the settings files each edit changes.)"""
    comment = lambda text: text + "\n# a comment changes no code\n"  # noqa: E731
    assert _stale_after(repo, "sslib/io.py", comment) == set()
    assert _stale_after(repo, "sslib/models/deeplab.py", comment) == set()
    code = lambda text: text + "\n_EDITED = True\n"  # noqa: E731
    assert _stale_after(repo, "sslib/models/deeplab.py", code) == {"train_seg@ssc-0", "eval_seg@ssc-0"}
    assert _stale_after(repo, "sslib/io.py", code) == set()  # atomic writes: excluded (sslib.fingerprint)
    assert _stale_after(repo, "sslib/losses.py", code) >= {"train_cam@cam-0", "train_cam@ssc-0"}
    erosion = lambda text: _merged(text, {"ssc": {"align_erosion": 6}})  # noqa: E731
    assert _stale_after(repo, "params.yaml", erosion) == {"train_cam@ssc-0", "inspect_cams"}
    # a key that cam switches off (it does not align): not cam's training; inspect_cams draws
    # every variant's alignment target, so it reads it
    off = lambda text: _merged(text, {"variants": {"cam": {"align_erosion": 5}}})  # noqa: E731
    assert _stale_after(repo, "params.yaml", off) == {"inspect_cams"}
    assert "changed" not in _dvc(repo, "status", *map(target, STAGES)).stdout


def test_bad_parameter_names_the_key_and_keeps_outputs(repo):
    before = (repo / "artifacts/synthetic/meta.json").read_bytes()
    p = repo / "params.yaml"
    good = p.read_text()
    _set_params(repo, {"superpixels": {"slic": {"n_segment": 5}}})
    r = _dvc(repo, "repro", check=False)
    assert r.returncode != 0
    assert "superpixels.slic.n_segment" in r.stdout + r.stderr
    assert (repo / "artifacts/synthetic/meta.json").read_bytes() == before
    p.write_text(good)
    r = _dvc(repo, "repro")  # back to the last good params: restored, nothing recomputed by hand
    assert (repo / "artifacts/superpixels/meta.json").is_file()
    assert "changed" not in _dvc(repo, "status", *map(target, STAGES)).stdout


@pytest.fixture(scope="module")
def voc_repo(tmp_path_factory) -> Path:
    """A copy of the repository pointed at a tiny VOC 2012 folder under data/."""
    sys.path.insert(0, str(Path(__file__).parent))
    from data_fixtures import make_mask, make_voc

    dst = copy_repo(tmp_path_factory.mktemp("voc_clone"))
    masks = {f"2007_00000{i}": make_mask([1 + i, 15]) for i in range(4)}
    make_voc(dst / "data/VOCdevkit/VOC2012", masks,
             {"train": ["2007_000000", "2007_000001"], "val": ["2007_000002", "2007_000003"]})
    _set_params(dst, {"data": {"dataset": "voc", "root": "data/VOCdevkit/VOC2012"},
                      "superpixels": {"workers": 1, "slic": {"n_segments": 10}}})
    return dst


def test_voc_layout_runs_and_bad_files_are_named(voc_repo):
    """The same stages on a VOC folder; a corrupt image and a list entry without a file each
    stop `dvc repro` with the file named, and what was written before is kept."""
    r = _dvc(voc_repo, "repro", "superpixels")
    assert _ran(r) == {"resolve", "prepare", "superpixels"}
    labels = json.loads((voc_repo / "artifacts/prepared/labels.json").read_text())
    assert labels["labels"]["2007_000001"] == [1, 14]  # foreground indices (mask id - 1)
    assert len(list((voc_repo / "artifacts/superpixels").glob("*.png"))) == 4

    # a truncated JPEG while the superpixels are being rebuilt with other parameters: the
    # stage fails naming it, and every map of the last good run stays as it was
    maps = _files(voc_repo / "artifacts/superpixels")
    _set_params(voc_repo, {"superpixels": {"slic": {"n_segments": 12}}})
    jpg = voc_repo / "data/VOCdevkit/VOC2012/JPEGImages/2007_000002.jpg"
    good = jpg.read_bytes()
    jpg.write_bytes(good[: len(good) // 2])
    r = _dvc(voc_repo, "repro", "superpixels", check=False)
    assert r.returncode != 0
    assert "2007_000002.jpg" in r.stdout + r.stderr
    assert (voc_repo / "artifacts/prepared/labels.json").is_file()
    assert _files(voc_repo / "artifacts/superpixels") == maps
    jpg.write_bytes(good)
    r = _dvc(voc_repo, "repro", "superpixels")  # resumes: the maps made before the failure are kept
    assert json.loads((voc_repo / "artifacts/superpixels/meta.json").read_text())["params"]["n_segments"] == 12
    assert not (voc_repo / "artifacts/superpixels.partial").exists()

    lst = voc_repo / "data/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    lst.write_text(lst.read_text() + "2007_999999\n")
    r = _dvc(voc_repo, "repro", "superpixels", check=False)
    assert r.returncode != 0
    assert "2007_999999" in r.stdout + r.stderr
    assert labels == json.loads((voc_repo / "artifacts/prepared/labels.json").read_text())


def test_exp_run_with_small_and_large_floats(repo):
    """The user's probe: `dvc exp run -S train_cam.weight_decay=0.00001` (DVC writes 1e-05, which
    YAML 1.1 reads as a string) with 2e-4 and 1e6 beside it, at tiny size, from the data
    stages through a training to its CAM evaluation (one chain, to keep the suite short)."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "tiny"], cwd=repo, check=True, env=env)
    r = _dvc(repo, "exp", "run", target("eval_cam@cam-0"), "-S", "train_cam.weight_decay=0.00001",
             "-S", "train_cam.decoder_lr=2e-4", "-S", "superpixels.slic.compactness=1e6")
    text = (repo / "params.yaml").read_text()
    assert "weight_decay: 1e-05" in text  # as DVC writes it
    assert _ran(r) == {"resolve", "superpixels", "train_cam@cam-0", "eval_cam@cam-0"}
    from sslib import config

    p = config.load(repo / "params.yaml")
    assert (p.train_cam.weight_decay, p.train_cam.decoder_lr, p.superpixels.slic.compactness) == (1e-05, 2e-4, 1e6)
    assert "changed" not in _dvc(repo, "status", target("eval_cam@cam-0")).stdout
