"""The make_ir_labels stage on a tiny synthetic project with hand-made CAM files: one PNG
per train image with the expected values (an identity stand-in for the CRF), resuming,
CAM files that disagree with the image's label, and one run with the real dense CRF."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from sslib import config, paths
from sslib.cam import cam_path, save_cam, strided_size
from sslib.data import build_dataset
from sslib.io import DataError
from sslib.formats import IGNORE_INDEX
from sslib.pseudo_labels import load_ir_label
from sslib.stages import make_ir_labels as stage

TINY = {
    "synthetic": {"n_train": 3, "n_val": 1, "image_size": 32, "max_objects": 2},
    "runs": {"variants": ["ssc"], "seeds": [0], "downstream": {"variants": ["ssc"], "seeds": [0]}},
    "make_ir_labels": {"fg_threshold": 0.3, "bg_threshold": 0.1},  # IRN's / SSC's planes (the presets')
}
RUN = ("ssc", 0)


def _cams(mask: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per class: 0.8 on its own pixels; elsewhere 0.2 in the left half (between the two
    thresholds: ignored) and 0 in the right half (background)."""
    w = mask.shape[1]
    rest = np.zeros(mask.shape, np.float32)
    rest[:, : w // 2] = 0.2
    return np.stack([np.where(mask == k + 1, 0.8, rest) for k in keys]).astype(np.float32)


def expected_label(mask: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """What :func:`_cams` gives with a CRF that changes nothing."""
    w = mask.shape[1]
    out = np.zeros(mask.shape, np.uint8)
    out[:, : w // 2] = IGNORE_INDEX
    for k in keys:
        out[mask == k + 1] = k + 1
    return out


def _write_cams(params: config.Params, keys_of=None) -> None:
    split = params.data.train_split
    ds = build_dataset(params.data, split)
    for i in range(len(ds)):
        s = ds[i]
        mask, keys = s["mask"].numpy(), np.flatnonzero(s["label"].numpy())
        save_cam(cam_path(paths.cam_dir(params, *RUN), split, s["name"]), keys,
                 np.zeros((len(keys), *strided_size(mask.shape, 4))), _cams(mask, keys))


@pytest.fixture
def params(tiny_project, monkeypatch) -> config.Params:
    """A fresh project for each test (the tests change its files)."""
    project = tiny_project(TINY, "ir_project", then=_write_cams)
    monkeypatch.chdir(project.root)
    monkeypatch.delenv(paths.SCRATCH_ENV, raising=False)
    return project.load()


class CountingCRF:
    """A stand-in for :func:`sslib.crf.crf_label` that returns the labels unchanged."""

    def __init__(self):
        self.calls: list[tuple[str, int, dict]] = []

    def __call__(self, image, labels, n_labels, **kw):
        assert image.dtype == np.uint8 and image.shape[:2] == labels.shape
        self.calls.append((labels.shape, n_labels, kw))
        return labels


def test_one_png_per_train_image_with_the_expected_values(params):
    crf = CountingCRF()
    metrics = stage.run(params, *RUN, progress=False, crf=crf)
    ds = build_dataset(params.data, params.data.train_split)
    out = paths.ir_label_dir(params, *RUN)
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(ds.names)
    valid = confident = pixels = confident_all = 0
    for i in range(len(ds)):
        s = ds[i]
        mask, keys = s["mask"].numpy(), np.flatnonzero(s["label"].numpy())
        got = load_ir_label(stage.label_file(params, *RUN, s["name"]), mask.shape)
        want = expected_label(mask, keys)
        np.testing.assert_array_equal(got, want)
        v = mask != IGNORE_INDEX
        valid, confident = valid + v.sum(), confident + (v & (want != IGNORE_INDEX)).sum()
        pixels, confident_all = pixels + want.size, confident_all + (want != IGNORE_INDEX).sum()
    # two CRF calls per image (foreground and background maps) with IRN's settings
    assert len(crf.calls) == 2 * len(ds)
    assert crf.calls[0][2] == {"t": 10, "gt_prob": 0.7, "gauss_sxy": 3.0, "gauss_compat": 3.0,
                               "bilateral_sxy": 50.0, "bilateral_srgb": 5.0, "bilateral_compat": 10.0}
    train = metrics["train"]
    assert train["precision"] == 1.0  # every confident label is the ground truth here
    assert train["coverage"] == pytest.approx(confident / valid)
    assert train["confident_share"] == pytest.approx(confident_all / pixels)
    assert (train["images"], train["images_with_mask"]) == (len(ds), len(ds))
    written = json.loads((paths.ir_label_reports(*RUN) / paths.METRICS).read_text())
    assert written["variant"] == "ssc" and written["seed"] == 0 and written["train"] == pytest.approx(train)
    assert paths.ir_label_reports(*RUN) / paths.METRICS in paths.stage_outputs(params, "make_ir_labels", *RUN)


def test_a_rerun_keeps_finished_labels_and_remakes_bad_ones(params):
    stage.run(params, *RUN, progress=False, crf=CountingCRF())
    out = paths.ir_label_dir(params, *RUN)
    first = {p.name: p.read_bytes() for p in out.glob("*.png")}
    again = CountingCRF()
    m2 = stage.run(params, *RUN, progress=False, crf=again)
    assert again.calls == []  # nothing left to do
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == first
    names = sorted(first)
    (out / names[0]).unlink()                       # missing
    (out / names[1]).write_bytes(b"not a png")      # killed mid-way by hand
    stale = out / f".{names[2]}.tmp-x.png"          # what a killed atomic write leaves
    stale.write_bytes(b"")
    third = CountingCRF()
    m3 = stage.run(params, *RUN, progress=False, crf=third)
    assert len(third.calls) == 2 * 2 and not stale.exists()
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == first and m3 == m2


def test_changed_settings_remake_every_label(params):
    stage.run(params, *RUN, progress=False, crf=CountingCRF())
    changed = config.load(Path("params.yaml"), overrides={"make_ir_labels": {"bg_threshold": 0.25}})
    crf = CountingCRF()
    metrics = stage.run(changed, *RUN, progress=False, crf=crf)
    n = len(build_dataset(params.data, params.data.train_split))
    assert len(crf.calls) == 2 * n
    assert metrics["train"]["confident_share"] == 1.0  # 0.2 < 0.25: the left half is background now


def test_cam_keys_that_disagree_with_the_label_name_the_file(params, capsys):
    split = params.data.train_split
    ds = build_dataset(params.data, split)
    s = ds[1]
    keys = np.flatnonzero(s["label"].numpy())
    other = np.array([k for k in range(ds.num_classes) if k not in keys][:1])
    bad = cam_path(paths.cam_dir(params, *RUN), split, s["name"])
    mask = s["mask"].numpy()
    save_cam(bad, other, np.zeros((1, *strided_size(mask.shape, 4))), _cams(mask, other))
    with pytest.raises(DataError, match=str(bad)):
        stage.run(params, *RUN, progress=False, crf=CountingCRF())
    assert not (paths.ir_label_reports(*RUN) / paths.METRICS).exists()  # only written when complete
    # the shell: one line naming the stage and the file, exit status 1
    assert stage.main(["--variant", "ssc", "--seed", "0"]) == 1
    err = capsys.readouterr().err
    assert f"make_ir_labels: error: {bad}: CAM classes" in err


def test_missing_cam_file_names_it(params):
    split = params.data.train_split
    name = build_dataset(params.data, split).names[0]
    missing = cam_path(paths.cam_dir(params, *RUN), split, name)
    os.remove(missing)
    with pytest.raises(DataError, match=f"{missing}: CAM file missing"):
        stage.run(params, *RUN, progress=False, crf=CountingCRF())


def test_with_the_dense_crf(params):
    pytest.importorskip("pydensecrf")
    metrics = stage.run(params, *RUN, progress=False)
    ds = build_dataset(params.data, params.data.train_split)
    for name in ds.names:
        lab = load_ir_label(stage.label_file(params, *RUN, name))
        assert lab.shape == (32, 32) and set(np.unique(lab)) <= {0, IGNORE_INDEX, *range(1, ds.num_classes + 1)}
    assert 0.5 < metrics["train"]["precision"] <= 1.0 and 0 < metrics["train"]["coverage"] <= 1.0


def test_a_pool_of_two_processes_writes_the_same_labels(params):
    """make_ir_labels.workers: 2 spreads the dense CRF over processes; same files as one process."""
    pytest.importorskip("pydensecrf")
    one = config.load(Path("params.yaml"), overrides={"make_ir_labels": {"workers": 1}})
    stage.run(one, *RUN, progress=False)
    names = build_dataset(one.data, one.data.train_split).names
    first = {n: stage.label_file(one, *RUN, n).read_bytes() for n in names}
    two = config.load(Path("params.yaml"), overrides={"make_ir_labels": {"workers": 2, "out_dir": "ir2"}})
    stage.run(two, *RUN, progress=False)
    assert {n: stage.label_file(two, *RUN, n).read_bytes() for n in names} == first
    timing = json.loads(paths.timings("make_ir_labels", paths.run_name(*RUN)).read_text())
    assert (timing["made"], timing["kept"]) == (len(names), 0)
