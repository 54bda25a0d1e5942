"""End to end: `dvc repro` of the data stages in a temporary copy of the repository, at tiny size.

Checks what a user relies on: the pipeline completes from a clean checkout, a second
`dvc repro` does nothing, changing one superpixel parameter reruns only that stage and
what depends on it, and a bad parameter stops with the key named.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synthetic": {"n_train": 10, "n_val": 4, "image_size": 64},
    "superpixels": {"workers": 1, "slic": {"n_segments": 30}},
    "augment": {"resize_long": [32, 64], "crop_size": 32},
    "model": {"frozen_stages": 2, "bn_eval": True},
    "train": {"variants": ["cam", "ssc"], "seeds": [0], "epochs": 2, "batch_size": 5, "lr": 0.001},
    "ssc": {"warmup_epochs": 1, "rec_loss": "l1"},
    "cam": {"scales": [1.0]},
}

pytestmark = pytest.mark.slow
# data.dvc (raw VOC/COCO) is "not in cache" in a fresh copy by design; check the pipeline only
TRAINED = ("train_cam@cam-0", "train_cam@ssc-0", "eval_cam@cam-0", "eval_cam@ssc-0", "ablation", "inspect_cams")
STAGES = ("synthesize", "prepare", "superpixels", "data_report", *TRAINED)


def _repo_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def _dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def _ran(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))


def _set_params(repo: Path, update: dict) -> None:
    from sslib.config import deep_merge

    p = repo / "params.yaml"
    p.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(p.read_text()), update), sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("clone")
    for f in _repo_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    for generated in ("dvc.lock", "reports/data_stats.json", "reports/figures", "reports/train_cam",
                      "reports/eval_cam", "reports/ablation", "reports/ablation.md", "reports/ablation.csv"):
        p = dst / generated
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    _set_params(dst, TINY)
    return dst


def test_repro_from_clean_copy(repo):
    r = _dvc(repo, "repro")
    assert _ran(r) == set(STAGES)
    for f in ("artifacts/synthetic/meta.json", "artifacts/prepared/labels.json",
              "artifacts/superpixels/meta.json", "reports/figures/data_samples.png",
              "reports/notebooks/00_data.ipynb", "reports/notebooks/01_synthesize.ipynb",
              "reports/notebooks/02_superpixels.ipynb"):
        assert (repo / f).is_file(), f
    stats = json.loads((repo / "reports/data_stats.json").read_text())
    assert stats["images"] == {"train": 10, "val": 4}
    n_sp = len(list((repo / "artifacts/superpixels").glob("*.png")))
    assert n_sp == 14
    table = (repo / "reports/ablation.csv").read_text().splitlines()
    assert table[0].startswith("variant,miou_best_mean,miou_best_std,") and [r.split(",")[0] for r in table[1:]] == ["cam", "ssc"]
    for f in ("reports/ablation.md", "reports/figures/ablation_cams.png", "reports/ablation/sweep_val.csv",
              "reports/notebooks/20_inspect_cams.ipynb", "reports/eval_cam/ssc/seed0/metrics.json"):
        assert (repo / f).is_file(), f
    assert len(list((repo / "artifacts/cams/ssc/seed0/train").glob("*.npz"))) == 10


def test_second_repro_does_nothing(repo):
    r = _dvc(repo, "repro")
    assert _ran(r) == set()
    assert "changed" not in _dvc(repo, "status", *STAGES).stdout


def test_superpixel_param_reruns_only_dependents(repo):
    _set_params(repo, {"superpixels": {"slic": {"n_segments": 20}}})
    r = _dvc(repo, "repro")
    # train_cam@cam-0 reads no superpixels but depends on the folder, so it reruns too
    assert _ran(r) == {"superpixels", "data_report", *TRAINED}


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
    assert "changed" not in _dvc(repo, "status", *STAGES).stdout


@pytest.fixture(scope="module")
def voc_repo(tmp_path_factory) -> Path:
    """A copy of the repository pointed at a tiny VOC 2012 folder under data/."""
    sys.path.insert(0, str(Path(__file__).parent))
    from data_fixtures import make_mask, make_voc

    dst = tmp_path_factory.mktemp("voc_clone")
    for f in _repo_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    (dst / "dvc.lock").unlink(missing_ok=True)
    masks = {f"2007_00000{i}": make_mask([1 + i, 15]) for i in range(4)}
    make_voc(dst / "data/VOCdevkit/VOC2012", masks,
             {"train": ["2007_000000", "2007_000001"], "val": ["2007_000002", "2007_000003"]})
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    _set_params(dst, {"data": {"dataset": "voc", "root": "data/VOCdevkit/VOC2012"},
                      "superpixels": {"workers": 1, "slic": {"n_segments": 10}}})
    return dst


def test_voc_layout_runs_and_bad_files_are_named(voc_repo):
    """The same stages on a VOC folder; a corrupt image and a list entry without a file each
    stop `dvc repro` with the file named, and what was written before is kept."""
    r = _dvc(voc_repo, "repro", "superpixels")
    assert _ran(r) == {"prepare", "superpixels"}
    labels = json.loads((voc_repo / "artifacts/prepared/labels.json").read_text())
    assert labels["labels"]["2007_000001"] == [1, 14]  # foreground indices (mask id - 1)
    assert len(list((voc_repo / "artifacts/superpixels").glob("*.png"))) == 4

    jpg = voc_repo / "data/VOCdevkit/VOC2012/JPEGImages/2007_000002.jpg"
    good = jpg.read_bytes()
    jpg.write_bytes(b"not a jpeg")
    r = _dvc(voc_repo, "repro", "superpixels", check=False)
    assert r.returncode != 0
    assert "2007_000002.jpg" in r.stdout + r.stderr
    assert (voc_repo / "artifacts/prepared/labels.json").is_file()
    jpg.write_bytes(good)

    lst = voc_repo / "data/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    lst.write_text(lst.read_text() + "2007_999999\n")
    r = _dvc(voc_repo, "repro", "superpixels", check=False)
    assert r.returncode != 0
    assert "2007_999999" in r.stdout + r.stderr
    assert labels == json.loads((voc_repo / "artifacts/prepared/labels.json").read_text())
