"""The pseudo-label refiners (sslib.refiners, the REFINERS table): the random walk equals the
library's steps, the CAMs refiner against a hand computation, a plugin's refiner through
``plugins:``, and what the choice does to the pipeline (no boundary-network stages, settings
of the chosen entry only, resolve refusing stale DVC files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sslib import config, dvcgen
from sslib.affinity import random_walk, walk_to_labels
from sslib.refiners import CamsSettings, RandomWalkSettings
from sslib.registry import REFINERS
from sslib.stages import make_pseudo_labels as stage
from sslib.stages import resolve

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toys" / "toy_refiner.py"


class FixedBoundary(torch.nn.Module):
    """A stand-in boundary network: the same (h4, w4) map for every image."""

    def __init__(self, b: torch.Tensor):
        super().__init__()
        self.b, self.pad_to = b, "unset"

    def boundary(self, x, pad_to=None):
        self.pad_to = pad_to
        return self.b[None, None]


def _load(tmp_path: Path, update: dict) -> config.Params:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(update))
    return config.load(path)


def test_random_walk_entry_equals_the_library_steps():
    g = torch.Generator().manual_seed(0)
    cams = torch.rand(2, 5, 6, generator=g)
    keys = torch.tensor([3, 11])
    b = torch.rand(5, 6, generator=g)
    image = torch.zeros(3, 18, 22)
    s = RandomWalkSettings(radius=3, beta=10.0, exp_times=2, bg_threshold=0.4, pad_to=0)
    net = FixedBoundary(b)
    got = REFINERS.create("random_walk", s, cams, keys, image, net)
    assert net.pad_to is None  # pad_to 0: no padding
    want_scores, want_label = walk_to_labels(random_walk(cams, b, radius=3, beta=10.0, exp_times=2), keys, (18, 22), 0.4)
    assert torch.equal(got.scores, want_scores) and torch.equal(got.label, want_label) and torch.equal(got.boundary, b)
    assert REFINERS.get("random_walk").get("needs_boundary_net") is True
    REFINERS.create("random_walk", RandomWalkSettings(3, 10.0, 2, 0.4, 64), cams, keys, image, net)
    assert net.pad_to == 64


def test_cams_refiner_by_hand():
    """One class, a 1 x 2 stride-4 map [1, 0]: upsampled x4 (bilinear, half-pixel centres) the
    columns are 1, 1, .875, .625, .375, .125, 0, 0; against a background of 0.5 the first four
    columns are the class (id 5 + 1), the rest background."""
    cams = torch.tensor([[[1.0, 0.0]]])
    got = REFINERS.create("cams", CamsSettings(bg_threshold=0.5), cams, torch.tensor([5]), torch.zeros(3, 4, 8))
    cols = torch.tensor([1, 1, 0.875, 0.625, 0.375, 0.125, 0, 0])
    torch.testing.assert_close(got.scores[1], cols.expand(4, 8))
    assert (got.scores[0] == 0.5).all() and got.boundary is None
    want = torch.zeros(4, 8, dtype=torch.int64)
    want[:, :4] = 6
    assert torch.equal(got.label, want)
    assert REFINERS.get("cams").get("needs_boundary_net") is False


def test_the_stage_runs_the_chosen_refiner_without_a_boundary_net(tmp_path):
    params = _load(tmp_path, {"make_pseudo_labels": {"refiner": "cams", "refiners": {"cams": {"bg_threshold": 0.5}}}})
    assert not stage.needs_boundary_net(params)
    cam = {"keys": np.array([5]), "cam": np.array([[[1.0, 0.0]]], np.float32)}
    boundary, label, mask = stage.pseudo_label(params, None, torch.zeros(3, 4, 8), cam)
    assert boundary is None and (label[:, :4] == 6).all() and (label[:, 4:] == 0).all() and mask.shape == (4, 8)


def test_a_plugin_refiner(tmp_path):
    params = _load(tmp_path, {"plugins": [str(TOY)], "make_pseudo_labels": {
        "refiner": "max_pool", "refiners": {"max_pool": {"bg_threshold": 0.3}}}})
    entry, settings = config.chosen(params.make_pseudo_labels, "refiner")
    assert entry.name == "max_pool" and settings.bg_threshold == 0.3 and not stage.needs_boundary_net(params)
    cams = np.zeros((1, 3, 3), np.float32)
    cams[0, 0, 0] = 1.0  # the max pool spreads it over the top-left 2 x 2
    _, label, _ = stage.pseudo_label(params, None, torch.zeros(3, 12, 12), {"keys": np.array([2]), "cam": cams})
    pooled = torch.zeros(1, 3, 3)
    pooled[0, :2, :2] = 1.0
    assert torch.equal(label, walk_to_labels(pooled, torch.tensor([2]), (12, 12), 0.3)[1])
    assert label[0, 0] == 3 and label[-1, -1] == 0


def test_an_unknown_refiner_is_refused_with_the_key(tmp_path):
    with pytest.raises(config.ConfigError, match=r"make_pseudo_labels.refiner: unknown pseudo-label refiner 'walk'.*"
                                                 r"random_walk, cams"):
        _load(tmp_path, {"make_pseudo_labels": {"refiner": "walk"}})


def test_without_a_boundary_net_the_pipeline_has_no_irn_stages(tmp_path):
    params = _load(tmp_path, {"make_pseudo_labels": {"refiner": "cams"}})
    files = dvcgen.render(params, ROOT)
    assert "pipeline/train_irn/dvc.yaml" not in files and "pipeline/make_ir_labels/dvc.yaml" not in files
    assert "pipeline/make_pseudo_labels/dvc.yaml" in files
    assert "train_irn" not in files["pipeline/make_pseudo_labels/dvc.yaml"]
    assert "train_irn" not in yaml.safe_load(files["dvc.yaml"])["stages"]
    out = {p.as_posix() for p in resolve.resolved(params, ROOT)}
    assert not any("/train_irn/" in p or "/make_ir_labels/" in p for p in out)
    default = dvcgen.render(config.load(ROOT / "params.yaml"), ROOT)
    assert "pipeline/train_irn/dvc.yaml" in default and "train_irn" in default["pipeline/make_pseudo_labels/dvc.yaml"]


def test_resolve_refuses_dvc_files_of_other_choices(tmp_path):
    params = _load(tmp_path, {"make_pseudo_labels": {"refiner": "cams"}})
    with pytest.raises(config.ConfigError, match=r"python -m sslib.dvcgen"):
        resolve._check_current(params, ROOT)
    resolve._check_current(config.load(ROOT / "params.yaml"), ROOT)  # the committed files are current
    # other variants change only the text of the plots, not the stages: no stop
    resolve._check_current(_load(tmp_path, {"runs": {"variants": ["baseline", "ssc"]}}), ROOT)


def test_an_unchosen_refiners_settings_rerun_nothing(tmp_path):
    base = resolve.resolved(config.load(ROOT / "params.yaml"), ROOT)
    other = resolve.resolved(_load(tmp_path, {"make_pseudo_labels": {"refiners": {"cams": {"bg_threshold": 0.4}}}}), ROOT)
    assert base == other
    walked = resolve.resolved(_load(tmp_path, {"make_pseudo_labels": {"refiners": {"random_walk": {"beta": 8.0}}}}), ROOT)
    changed = {p.as_posix() for p in base if base[p] != walked[p]}
    assert changed and all(p.startswith(("pipeline/resolved/make_pseudo_labels/", "pipeline/resolved/pseudo_label_table/"))
                           for p in changed)


def test_dvcgen_removes_the_files_of_stages_no_longer_needed(tmp_path):
    params = _load(tmp_path, {"make_pseudo_labels": {"refiner": "cams"}})
    texts = dvcgen.render(params, ROOT)
    for stage in ("train_irn", "make_pseudo_labels"):
        (tmp_path / "pipeline" / stage).mkdir(parents=True)
        (tmp_path / "pipeline" / stage / "dvc.yaml").write_text("stages: {}\n")
    assert dvcgen._unneeded(texts, tmp_path) == ["pipeline/train_irn/dvc.yaml"]
