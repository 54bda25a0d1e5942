"""The train_irn stage on a tiny synthetic project with hand-made IR labels: IRN's augmentation
(ScaleCropTransform), the IR-label data set, training end to end (frozen backbone, trained
edge branch, reports), resuming to the weights of an uninterrupted run, and missing labels."""
from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslib import config, paths
from sslib.data import LabelMapDataset, ScaleCropTransform, build_dataset
from sslib.data.transforms import normalize
from sslib.io import DataError
from sslib.formats import IGNORE_INDEX
from sslib.models import BoundaryNet, load_boundary_net
from sslib.pseudo_labels import load_ir_label, save_ir_label
from sslib.stages import train_irn

TINY = {
    "synthetic": {"n_train": 3, "n_val": 1, "image_size": 32, "max_objects": 2},
    "model": {"backbone": "efficientnet_lite0", "backbone_weights": "none"},
    "runs": {"variants": ["ssc"], "seeds": [0], "downstream": {"variants": ["ssc"], "seeds": [0]}},
    "train_irn": {"epochs": 2, "batch_size": 2, "crop_size": 32, "radius": 3},
}
RUN = ("ssc", 0)
RANDOM_INIT = ".*means random initialisation"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core test machine, OpenMP threads waiting for busy
    cores make these 32 x 32 forward passes up to 50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _quiet_random_init():
    """``backbone_weights: none`` warns by design."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RANDOM_INIT)
        yield


def _ir_label(mask: np.ndarray) -> np.ndarray:
    """The ground truth with a vertical band of uncertain (255) pixels."""
    ir = mask.astype(np.uint8).copy()
    ir[:, 12:16] = IGNORE_INDEX
    return ir


def _write_ir_labels(params: config.Params, variant: str, seed: int, skip: tuple[str, ...] = ()) -> Path:
    ds = build_dataset(params.data, params.data.train_split)
    out = paths.ir_label_dir(params, variant, seed)
    for i in range(len(ds)):
        s = ds[i]
        if s["name"] not in skip:
            save_ir_label(out / f"{s['name']}.png", _ir_label(s["mask"].numpy()))
    (out / "meta.json").write_text(json.dumps({"made_by": "test_train_irn", "variant": variant}))
    return out


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["net"]


def _report_bytes(variant: str, seed: int) -> dict[str, bytes]:
    rep = paths.irn_reports(variant, seed)
    return {f: (rep / f).read_bytes() for f in (paths.LOSSES, paths.METRICS)}


@pytest.fixture(scope="module")
def project(tiny_project):
    """A tiny synthetic project with the IR labels of run ssc/0 (the ground truth with a band)."""
    return tiny_project(TINY, "irn_project", then=lambda params: _write_ir_labels(params, *RUN))


@pytest.fixture(scope="module")
def trained(project) -> dict:
    """One uninterrupted run of ssc/0 (2 epochs): what it returned and what it wrote."""
    with project.entered(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RANDOM_INIT)
        params = project.params()
        metrics = train_irn.train_irn(params, *RUN, progress=False)
        return {"metrics": metrics, "state": _state(paths.irn_model(params, *RUN)),
                "reports": _report_bytes(*RUN), "model_bytes": paths.irn_model(params, *RUN).read_bytes()}


# --------------------------------------------------------------------------- the augmentation
def _find_window(out: np.ndarray, full: np.ndarray, crop: int) -> tuple[int, int]:
    """The one (y, x) with ``full[y:y+crop, x:x+crop] == out`` (out, full: (h, w, 3))."""
    hits = [(y, x) for y in range(full.shape[0] - crop + 1) for x in range(full.shape[1] - crop + 1)
            if np.array_equal(full[y:y + crop, x:x + crop], out)]
    assert len(hits) == 1, hits
    return hits[0]


def _pil_quarter(label: np.ndarray) -> np.ndarray:
    """IRN's pil_rescale of a label map by 0.25 (nearest), computed with PIL directly."""
    h, w = label.shape
    im = Image.fromarray(label.astype(np.uint8)).resize((w // 4, h // 4), Image.NEAREST)
    return np.asarray(im).astype(np.int64)


def test_scale_crop_of_a_larger_image_crops_image_and_label_together():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    label = rng.integers(0, 6, (48, 40)).astype(np.int64)
    label[rng.random((48, 40)) < 0.1] = IGNORE_INDEX
    t = ScaleCropTransform([1.0, 1.0], 32, hflip=False, label_scale=0.25)
    windows = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out = t({"name": "x", "image": image, "ir_label": label, "other": 7})
        img, lab = out["image"], out["ir_label"]
        assert img.dtype == torch.float32 and tuple(img.shape) == (3, 32, 32)
        assert lab.dtype == torch.int64 and tuple(lab.shape) == (8, 8)
        assert out["other"] == 7 and out["name"] == "x"
        y, x = _find_window(img.numpy().transpose(1, 2, 0), normalize(image), 32)
        windows.add((y, x))
        want = _pil_quarter(label[y:y + 32, x:x + 32])
        np.testing.assert_array_equal(lab.numpy(), want)
        # PIL's nearest 32 -> 8 reads the pixel at the centre of each 4x4 cell, not its corner
        np.testing.assert_array_equal(want, label[y + 2:y + 32:4, x + 2:x + 32:4])
    assert len(windows) > 1  # the crop is drawn at random


def test_scale_crop_of_a_smaller_image_pads_image_with_0_and_label_with_255():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    label = rng.integers(0, 6, (20, 24)).astype(np.int64)  # no 255 of its own
    t = ScaleCropTransform([1.0, 1.0], 32, hflip=False, label_scale=0.25)
    offsets = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out = t({"name": "x", "image": image, "ir_label": label})
        img = out["image"].numpy().transpose(1, 2, 0)
        assert img.shape == (32, 32, 3) and tuple(out["ir_label"].shape) == (8, 8)
        norm = normalize(image)
        hits = [(dy, dx) for dy in range(13) for dx in range(9) if np.array_equal(img[dy:dy + 20, dx:dx + 24], norm)]
        assert len(hits) == 1, hits
        dy, dx = hits[0]
        offsets.add((dy, dx))
        outside = np.ones((32, 32), bool)
        outside[dy:dy + 20, dx:dx + 24] = False
        assert (img[outside] == 0).all()
        padded = np.full((32, 32), IGNORE_INDEX, np.int64)
        padded[dy:dy + 20, dx:dx + 24] = label
        lab = out["ir_label"].numpy()
        np.testing.assert_array_equal(lab, _pil_quarter(padded))
        assert (lab == IGNORE_INDEX).any() and (lab != IGNORE_INDEX).any()
    assert len(offsets) > 1


def test_scale_crop_flip_mirrors_image_and_label_together():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    label = rng.integers(0, 6, (40, 40)).astype(np.int64)
    t = ScaleCropTransform([1.0, 1.0], 32, hflip=True, label_scale=0.25)
    flips = set()
    for seed in range(10):
        torch.manual_seed(seed)
        out = t({"name": "x", "image": image, "ir_label": label})
        img = out["image"].numpy().transpose(1, 2, 0)
        found = []
        for flipped in (False, True):
            im, lb = (image[:, ::-1], label[:, ::-1]) if flipped else (image, label)
            n = normalize(im)
            found += [(flipped, y, x, lb) for y in range(9) for x in range(9)
                      if np.array_equal(n[y:y + 32, x:x + 32], img)]
        assert len(found) == 1
        flipped, y, x, lb = found[0]
        flips.add(flipped)
        np.testing.assert_array_equal(out["ir_label"].numpy(), _pil_quarter(lb[y:y + 32, x:x + 32]))
    assert flips == {False, True}


def test_scale_crop_rescales_by_the_drawn_factor():
    """scale_range [0.5, 0.5]: a 64 x 64 image becomes 32 x 32, so the crop is all of it."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    label = rng.integers(0, 6, (64, 64))
    out = ScaleCropTransform([0.5, 0.5], 32, hflip=False, label_scale=0.25)({"image": image, "ir_label": label})
    want_img = normalize(np.asarray(Image.fromarray(image).resize((32, 32), Image.BICUBIC)))
    np.testing.assert_allclose(out["image"].numpy().transpose(1, 2, 0), want_img, atol=1e-6)
    half = np.asarray(Image.fromarray(label.astype(np.uint8)).resize((32, 32), Image.NEAREST))
    np.testing.assert_array_equal(out["ir_label"].numpy(), _pil_quarter(half))
    # both nearest steps read cell centres: source pixel 2 * (4i + 2) + 1 = 8i + 5
    np.testing.assert_array_equal(out["ir_label"].numpy(), label[5::8, 5::8])


# --------------------------------------------------------------------------- the data set
def test_label_map_dataset_names_a_missing_or_mis_sized_label(in_project, tmp_path):
    params = in_project.load()
    base = build_dataset(params.data, params.data.train_split, with_mask=False)
    folder = tmp_path / "labels"
    ds = LabelMapDataset(base, "ir_label", lambda name: folder / f"{name}.png", load_ir_label)
    missing = folder / f"{base.names[0]}.png"
    with pytest.raises(DataError, match=re.escape(f"{missing}: IR label file missing")):
        ds[0]
    save_ir_label(missing, np.zeros((16, 32), np.uint8))
    with pytest.raises(DataError, match=re.escape(str(missing))):
        ds[0]
    save_ir_label(missing, np.full((32, 32), 3, np.uint8))
    s = ds[0]
    assert s["ir_label"].dtype == np.int64 and (s["ir_label"] == 3).all() and s["name"] == base.names[0]
    assert len(ds) == len(base) and ds.names == base.names
    with_transform = build_dataset(params.data, params.data.train_split, transform=lambda s: s)
    with pytest.raises(ValueError, match="without a transform"):
        LabelMapDataset(with_transform, "ir_label", lambda n: folder / n, load_ir_label)


def test_the_stage_dataset_gives_reduced_labels_of_the_ir_label_files(in_project):
    params = in_project.load()
    ds = train_irn._dataset(params, *RUN)
    gt = build_dataset(params.data, params.data.train_split)
    s = ds[1]
    assert tuple(s["image"].shape) == (3, 32, 32) and tuple(s["ir_label"].shape) == (8, 8)
    # scale_range [0.5, 1.5] draws another size; the label values are still the file's
    ir = _ir_label(gt[1]["mask"].numpy())
    assert set(np.unique(s["ir_label"].numpy())) <= set(np.unique(ir)) | {IGNORE_INDEX}


# --------------------------------------------------------------------------- training
def test_trains_the_edge_branch_only_and_writes_model_and_reports(in_project, trained):
    params = in_project.load()
    m = trained["metrics"]
    # 3 images, batch 2: one step per epoch (the incomplete batch is dropped)
    assert (m["epochs"], m["steps"], m["backbone"], m["world_size"]) == (2, 2, "efficientnet_lite0", 1)
    assert (m["variant"], m["seed"]) == RUN
    final = m["final"]
    assert list(final) == ["loss", *train_irn.LOSS_NAMES] and all(np.isfinite(v) for v in final.values())
    # IRN's total: (bg_pos / 2 + fg_pos / 2 + neg) / 2, linear, so it holds for the epoch means too
    assert final["loss"] == pytest.approx((final["bg_pos"] / 2 + final["fg_pos"] / 2 + final["neg"]) / 2, rel=1e-5)

    rep = paths.irn_reports(*RUN)
    assert rep == Path("reports/train_irn/ssc/seed0")
    assert json.loads(trained["reports"][paths.METRICS]) == m
    rows = list(csv.DictReader(trained["reports"][paths.LOSSES].decode().splitlines()))
    assert list(rows[0]) == ["epoch", "step", "lr", "loss", "bg_pos", "fg_pos", "neg"]
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(1, 1), (2, 2)]
    assert float(rows[0]["lr"]) == pytest.approx(params.train_irn.lr)  # poly: step 0 of 2
    assert float(rows[1]["lr"]) == pytest.approx(params.train_irn.lr * 0.5 ** params.train_irn.poly_power, rel=1e-5)
    for k in final:
        assert float(rows[-1][k]) == pytest.approx(final[k], rel=1e-5)
    timings = json.loads(paths.timings("train_irn", paths.run_name(*RUN)).read_text())
    assert len(timings["epoch_s"]) == 2 and not any("time" in k for k in m)

    model = paths.irn_model(params, *RUN)
    assert model == Path("artifacts/train_irn/ssc/seed0/model.pt") and paths.irn_checkpoint(params, *RUN).is_file()
    ck = torch.load(model, map_location="cpu", weights_only=True)
    assert list(ck) == ["net", "model", "variant", "seed"]
    assert ck["model"] == {"backbone": "efficientnet_lite0"} and (ck["variant"], ck["seed"]) == RUN
    net = load_boundary_net(model)
    assert not net.training
    b = net.boundary(torch.zeros(1, 3, 32, 32))
    assert tuple(b.shape) == (1, 1, 8, 8) and ((b >= 0) & (b <= 1)).all()

    # the backbone is the seeded initialisation, untouched; the edge branch trained
    torch.manual_seed(RUN[1])
    fresh = BoundaryNet(backbone="efficientnet_lite0", weights="none").state_dict()
    state = trained["state"]
    assert state.keys() == fresh.keys()
    backbone = [k for k in state if k.startswith("backbone.")]
    edge = [k for k in state if k.startswith("edge_")]
    assert backbone and edge and len(backbone) + len(edge) == len(state)
    for k in backbone:
        assert torch.equal(state[k], fresh[k]), k
    changed = [k for k in edge if not torch.equal(state[k], fresh[k])]
    assert "edge_fuse.weight" in changed and any(k.startswith("edge_taps.") for k in changed)


def test_interrupted_run_resumes_to_the_same_weights(in_project, trained, capsys):
    resumed = in_project.params({"train_irn": {"out_dir": "runs/resumed"}})
    assert train_irn.train_irn(resumed, *RUN, progress=False, stop_after_epochs=1) == {"stopped_at_epoch": 1}
    assert not paths.irn_model(resumed, *RUN).exists()
    ck = torch.load(paths.irn_checkpoint(resumed, *RUN), map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1 and len(ck["history"]) == 1
    # an unfinished run leaves the last finished run's reports as they were
    assert _report_bytes(*RUN) == trained["reports"]
    capsys.readouterr()
    m = train_irn.train_irn(resumed, *RUN, progress=False)
    assert "train_irn: resuming ssc seed 0 after epoch 1" in capsys.readouterr().err
    assert m == trained["metrics"]
    state = _state(paths.irn_model(resumed, *RUN))
    assert state.keys() == trained["state"].keys()
    for k in state:
        assert torch.equal(state[k], trained["state"][k]), k
    assert paths.irn_model(resumed, *RUN).read_bytes() == trained["model_bytes"]
    assert _report_bytes(*RUN) == trained["reports"]


def test_other_ir_labels_do_not_resume_a_checkpoint(in_project, capsys):
    """The fingerprint holds the IR labels' meta.json: new labels train from the start."""
    params = in_project.params({"train_irn": {"out_dir": "runs/relabelled"}})
    labels = _write_ir_labels(params, "baseline", 0)
    assert train_irn.train_irn(params, "baseline", 0, progress=False, stop_after_epochs=1) == {"stopped_at_epoch": 1}
    (labels / "meta.json").write_text(json.dumps({"made_by": "test_train_irn", "other": "settings"}))
    capsys.readouterr()
    assert train_irn.train_irn(params, "baseline", 0, progress=False, stop_after_epochs=1) == {"stopped_at_epoch": 1}
    err = capsys.readouterr().err
    assert "runs/relabelled/baseline/seed0/checkpoint.pt was written with other settings" in err
    assert "resuming" not in err


def test_a_missing_ir_label_stops_the_run_naming_it(in_project, capsys):
    params = in_project.load()
    names = build_dataset(params.data, params.data.train_split).names
    labels = _write_ir_labels(params, "cam", 0, skip=(names[0],))
    missing = labels / f"{names[0]}.png"
    with pytest.raises(DataError, match=re.escape(f"{missing}: IR label file missing")):
        train_irn.train_irn(params, "cam", 0, progress=False)
    assert not paths.irn_checkpoint(params, "cam", 0).exists()  # stopped before training
    assert not (paths.irn_reports("cam", 0) / paths.METRICS).exists()
    capsys.readouterr()
    assert train_irn.main(["--variant", "cam", "--seed", "0"]) == 1
    captured = capsys.readouterr()
    assert f"train_irn: error: {missing}: IR label file missing" in captured.err
    assert captured.out == ""


def test_a_missing_ir_label_found_during_training_names_it(in_project):
    """Seed 0: image 1 is first drawn in epoch 2 (3 images, batch 2), after epoch 1's checkpoint."""
    params = in_project.load()
    names = build_dataset(params.data, params.data.train_split).names
    labels = _write_ir_labels(params, "+crm", 0, skip=(names[1],))
    with pytest.raises(DataError, match=re.escape(f"{labels / names[1]}.png: IR label file missing")):
        train_irn.train_irn(params, "+crm", 0, progress=False)
    assert not paths.irn_model(params, "+crm", 0).exists()
    assert not (paths.irn_reports("+crm", 0) / paths.METRICS).exists()


def test_a_missing_ir_label_of_an_image_never_drawn_still_stops_the_run(in_project):
    """Seed 2, 2 epochs of one batch of 2 out of 3 images: image 2 is never drawn."""
    params = in_project.load()
    names = build_dataset(params.data, params.data.train_split).names
    _write_ir_labels(params, "+asm", 2, skip=(names[2],))
    with pytest.raises(DataError, match=names[2]):
        train_irn.train_irn(params, "+asm", 2, progress=False)
