"""docs/extending.md kept true: a toy CAM expansion, refiner, segmentation method and training
crop, each a plugin file plus params entries (no sslib file edited), run through the tiny pipeline."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dvc_files import copy_repo, dvc, ran, set_params
from test_pipeline import TINY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOYS = ["tests/toys/toy_expansion.py", "tests/toys/toy_refiner.py", "tests/toys/toy_seg_method.py",
        "tests/toys/toy_crop.py"]
#: the params entries docs/extending.md shows, on the tiny pipeline
EXTENDED = {
    "plugins": TOYS,
    "runs": {"variants": ["cam", "+cap"], "seeds": [0], "downstream": {"variants": ["+cap"], "seeds": [0]}},
    "ssc": {"expansions": {"toy_cap": {"ratio": 2.0}}},
    "variants": {"+cap": {"expansion": "toy_cap", "reconstruction": False, "alignment": False}},
    "make_pseudo_labels": {"refiner": "max_pool", "refiners": {"max_pool": {"bg_threshold": 0.3}}},
    "train_seg": {"method": "smooth_ce", "methods": {"smooth_ce": {"smoothing": 0.1}},
                  "crop": "center_crop", "crops": {"center_crop": {"share": 0.8}}},
}


def _dvcgen(repo: Path) -> None:
    subprocess.run([sys.executable, "-m", "sslib.dvcgen"], cwd=repo, check=True, capture_output=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dst = copy_repo(tmp_path_factory.mktemp("extended"))
    for generated in ("reports/paper_table.md", "reports/paper_table.csv", "reports/ablation.md"):
        (dst / generated).unlink(missing_ok=True)
    shutil.rmtree(dst / "reports" / "train_cam", ignore_errors=True)
    set_params(dst, TINY)
    set_params(dst, EXTENDED)
    _dvcgen(dst)  # the refiner needs no boundary network: make_ir_labels and train_irn drop out
    return dst


def test_the_four_toys_run_through_the_pipeline(repo):
    r = dvc(repo, "repro")
    stages = ran(r)
    assert {"train_cam@+cap-0", "eval_cam@+cap-0", "make_pseudo_labels@+cap-0", "train_seg@+cap-0",
            "eval_seg@+cap-0", "paper_table", "ablation"} <= stages, stages
    assert not {s for s in stages if s.startswith(("train_irn", "make_ir_labels"))}, stages
    assert not (repo / "pipeline" / "train_irn").exists()
    # each toy's choice is in the settings its runs depend on
    resolved = repo / "pipeline" / "resolved"
    cam = json.loads((resolved / "train_cam" / "settings-+cap.json").read_text())
    assert cam["variant"]["expansion"] == "toy_cap" and cam["variant"]["expansions"] == {"toy_cap": {"ratio": 2.0}}
    assert list(cam["variant"]["plugins"]) == ["tests/toys/toy_expansion.py"]
    assert "plugins" not in json.loads((resolved / "train_cam" / "settings-cam.json").read_text())["variant"]
    assert "tests/toys/toy_refiner.py" in json.loads((resolved / "make_pseudo_labels" / "code.json").read_text())
    seg_code = json.loads((resolved / "train_seg" / "code.json").read_text())
    assert {"tests/toys/toy_seg_method.py", "tests/toys/toy_crop.py"} <= set(seg_code)
    seg = json.loads((resolved / "train_seg" / "settings-+cap.json").read_text())["train_seg"]
    assert seg["crop"] == "center_crop" and seg["crops"] == {"center_crop": {"share": 0.8}}
    # ... and the new rows appear in the tables
    assert "| +cap |" in (repo / "reports" / "ablation.md").read_text()
    assert "+cap" in (repo / "reports" / "paper_table.md").read_text()
    losses = (repo / "reports" / "train_seg" / "+cap" / "seed0" / "losses.csv").read_text().splitlines()[0]
    assert "loss" in losses


def _stale(repo: Path) -> set[str]:
    dvc(repo, "repro", "resolve")
    out = dvc(repo, "status", "--json").stdout
    return {s.split(":")[-1] for s in json.loads(out)} - {"data.dvc"}


def test_a_toy_edit_reruns_what_uses_it(repo):
    # a comment reruns nothing
    f = repo / "tests" / "toys" / "toy_expansion.py"
    f.write_text(f.read_text() + "\n# a comment\n")
    assert _stale(repo) == set()
    # a code line in the refiner: its runs and what follows them, never CAM training
    g = repo / "tests" / "toys" / "toy_refiner.py"
    g.write_text(g.read_text() + "\nUNUSED = 1\n")
    stale = _stale(repo)
    assert "make_pseudo_labels@+cap-0" in stale, stale
    assert not {s for s in stale if s.startswith(("train_cam", "eval_cam"))}, stale
