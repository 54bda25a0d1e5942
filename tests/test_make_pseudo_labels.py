"""The make_pseudo_labels stage on a tiny synthetic project with hand-made CAM files and a
randomly initialised boundary network: the files and their values, the metrics against an
independent computation, one image recomputed from the library's steps, resuming, the
errors that name a file, and sharding over two processes."""
from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslib import config, distributed, paths, training
from sslib.affinity import random_walk, walk_to_labels
from sslib.cam import cam_path, load_cam, save_cam
from sslib.data import EvalTransform, build_dataset
from sslib.io import DataError
from sslib.formats import IGNORE_INDEX
from sslib.models import BoundaryNet, load_boundary_net
from sslib.pseudo_labels import confidence_mask
from sslib.stages import make_pseudo_labels as stage

TINY = {
    "synthetic": {"n_train": 3, "n_val": 1, "image_size": 32, "max_objects": 2},
    "model": {"backbone": "efficientnet_lite0", "backbone_weights": "none"},
    "runs": {"variants": ["ssc"], "seeds": [0], "downstream": {"variants": ["ssc"], "seeds": [0]}},
    "make_pseudo_labels": {"refiners": {"random_walk": {"exp_times": 2, "radius": 3}}},
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
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RANDOM_INIT)
        yield


def _cams(mask: np.ndarray, keys: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(K, 8, 8) stride-4 and (K, 32, 32) maps: 0.9 on the class's pixels (at stride 4 the
    share of each 4x4 cell), plus noise in [0, 0.2)."""
    h, w = mask.shape
    high = np.stack([np.where(mask == k + 1, 0.9, 0.0) for k in keys]).astype(np.float32)
    high = np.clip(high + 0.2 * rng.random(high.shape, dtype=np.float32), 0, 1)
    low = high.reshape(len(keys), h // 4, 4, w // 4, 4).mean((2, 4))
    return low, high


def _write_cams(params: config.Params, variant: str, seed: int) -> None:
    split = params.data.train_split
    ds = build_dataset(params.data, split)
    rng = np.random.default_rng(0)
    for i in range(len(ds)):
        s = ds[i]
        mask, keys = s["mask"].numpy(), np.flatnonzero(s["label"].numpy())
        low, high = _cams(mask, keys, rng)
        save_cam(cam_path(paths.cam_dir(params, variant, seed), split, s["name"]), keys, low, high)


def _outputs(params: config.Params, variant: str, seed: int) -> dict[str, bytes]:
    out = paths.pseudo_label_dir(params, variant, seed)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.png"))}


def _timings(variant: str = "ssc", seed: int = 0) -> dict:
    return json.loads(paths.timings("make_pseudo_labels", paths.run_name(variant, seed)).read_text())


def _copy_run(params: config.Params, variant: str) -> None:
    """Run ssc/0's CAMs and boundary network as run ``variant``/0."""
    shutil.copytree(paths.cam_dir(params, *RUN), paths.cam_dir(params, variant, 0))
    paths.irn_model(params, variant, 0).parent.mkdir(parents=True)
    shutil.copy(paths.irn_model(params, *RUN), paths.irn_model(params, variant, 0))


def _write_run(params: config.Params) -> None:
    """Run ssc/0's CAM files and a randomly initialised boundary network."""
    _write_cams(params, *RUN)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RANDOM_INIT)
        net = BoundaryNet(backbone="efficientnet_lite0", weights="none")
    training.save({"net": net.state_dict(), "model": {"backbone": "efficientnet_lite0"},
                   "variant": RUN[0], "seed": RUN[1]}, paths.irn_model(params, *RUN))


@pytest.fixture(scope="module")
def project(tiny_project):
    """Data, CAM files and a randomly initialised boundary network of run ssc/0."""
    return tiny_project(TINY, "pl_project", then=_write_run)


@pytest.fixture(scope="module")
def made(project) -> dict:
    """One single-process run of ssc/0 into the default folder."""
    with project.entered(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RANDOM_INIT)
        params = project.params()
        metrics = stage.make_pseudo_labels(params, *RUN, progress=False)
        return {"metrics": metrics, "outputs": _outputs(params, *RUN), "timings": _timings()}


# --------------------------------------------------------------------------- files and metrics
def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def _margin(scores: np.ndarray) -> np.ndarray:
    """Top score minus the largest score strictly below it (0 if none), per pixel."""
    top = scores.max(0)
    below = np.where(scores < top, scores, -np.inf).max(0)
    return top - np.where(np.isfinite(below) & (below > 0), below, 0)


def test_one_label_and_one_mask_per_image_with_the_expected_values(in_project, made):
    params = in_project.load()
    ds = build_dataset(params.data, params.data.train_split)
    assert sorted(made["outputs"]) == sorted([f"labels/{n}.png" for n in ds.names] + [f"masks/{n}.png" for n in ds.names])
    assert made["timings"]["made"] == len(ds) and made["timings"]["kept"] == 0 and made["timings"]["world_size"] == 1
    k = ds.num_classes + 1
    conf = np.zeros((k, k), np.int64)
    valid = confident = correct = kept = 0
    for i in range(len(ds)):
        s = ds[i]
        name, gt = s["name"], s["mask"].numpy()
        label_file = paths.pseudo_label_file(params, *RUN, name)
        mask_file = paths.confidence_mask_file(params, *RUN, name)
        assert label_file == Path(f"artifacts/pseudo_labels/ssc/seed0/labels/{name}.png")
        with Image.open(label_file) as im:
            assert im.mode == "P" and im.size == (32, 32)
        with Image.open(mask_file) as im:
            assert im.mode == "L" and im.size == (32, 32)
        label, mask_png = _read_png(label_file), _read_png(mask_file)
        assert set(np.unique(mask_png)) <= {0, 255}
        mask = mask_png == 255
        keys = np.flatnonzero(s["label"].numpy())
        assert set(np.unique(label)) <= {0, *(keys + 1)}
        # BECO's mask: floor(n / 2) pixels of every label value
        for v in np.unique(label):
            assert mask[label == v].sum() == (label == v).sum() // 2, (name, v)
        kept += mask.sum()
        # the test's own confusion matrix (rows: ground truth, columns: pseudo label)
        ok = gt != IGNORE_INDEX
        np.add.at(conf, (gt[ok], label[ok]), 1)
        c = ok & mask
        valid, confident, correct = valid + ok.sum(), confident + c.sum(), correct + (c & (label == gt)).sum()
    tp, gt_n, pred_n = np.diag(conf), conf.sum(1), conf.sum(0)
    present = (gt_n + pred_n) > 0
    iou = tp[present] / (gt_n + pred_n - tp)[present]
    train = made["metrics"]["train"]
    assert train["miou"] == pytest.approx(iou.mean())
    assert train["mean_precision"] == pytest.approx(np.mean(tp[pred_n > 0] / pred_n[pred_n > 0]))
    assert train["mean_recall"] == pytest.approx(np.mean(tp[gt_n > 0] / gt_n[gt_n > 0]))
    assert train["pixel_accuracy"] == pytest.approx(tp.sum() / conf.sum())
    assert train["background_fp_rate"] == pytest.approx(1 - conf[0, 0] / conf[0].sum())
    assert train["confident"]["precision"] == pytest.approx(correct / confident)
    assert train["confident"]["coverage"] == pytest.approx(confident / valid)
    assert train["confident_share"] == pytest.approx(kept / (len(ds) * 32 * 32))
    assert (train["images"], train["images_with_mask"]) == (len(ds), len(ds))
    assert set(train["iou"]) == {"background", *ds.classes}
    assert 0 < train["miou"] < 1 and 0 < train["confident"]["coverage"] < 1
    written = json.loads((paths.pseudo_label_reports(*RUN) / paths.METRICS).read_text())
    assert written["variant"] == "ssc" and written["seed"] == 0
    assert written["train"]["miou"] == pytest.approx(train["miou"])
    assert paths.pseudo_label_reports(*RUN) / paths.METRICS in paths.stage_outputs(params, "make_pseudo_labels", *RUN)


def test_one_image_equals_the_library_steps_recomputed(in_project, made):
    params = in_project.load()
    cfg = params.make_pseudo_labels.refiners["random_walk"]
    split = params.data.train_split
    ds = build_dataset(params.data, split, transform=EvalTransform(), with_mask=False)
    net = load_boundary_net(paths.irn_model(params, *RUN))
    for i in range(len(ds)):
        s = ds[i]
        cam = load_cam(cam_path(paths.cam_dir(params, *RUN), split, s["name"]), (32, 32), s["label"])
        boundary, label, mask = stage.pseudo_label(params, net, s["image"], cam)
        with torch.no_grad():
            b = net.boundary(s["image"][None])[0, 0]
        walked = random_walk(torch.from_numpy(cam["cam"]), b, radius=3, beta=cfg.beta, exp_times=2)
        scores, want_label = walk_to_labels(walked, torch.from_numpy(cam["keys"]), (32, 32), cfg.bg_threshold)
        want_mask = confidence_mask(scores, want_label, 0.5)
        assert tuple(boundary.shape) == (8, 8) and ((boundary >= 0) & (boundary <= 1)).all()
        torch.testing.assert_close(boundary, b, rtol=0, atol=0)
        assert label.dtype == torch.int64 and torch.equal(label, want_label)
        assert mask.dtype == torch.bool and torch.equal(mask, want_mask)
        # what the stage wrote for this image
        name = s["name"]
        np.testing.assert_array_equal(_read_png(paths.pseudo_label_file(params, *RUN, name)), label.numpy())
        np.testing.assert_array_equal(_read_png(paths.confidence_mask_file(params, *RUN, name)) == 255, mask.numpy())
        # within each label the kept pixels are the ones of largest margin
        m = _margin(scores.numpy())
        lab, msk = label.numpy(), mask.numpy()
        for v in np.unique(lab):
            group = lab == v
            if msk[group].any() and (~msk & group).any():
                assert m[msk & group].min() >= m[~msk & group].max() - 1e-7


def test_an_image_without_classes_is_all_background(in_project):
    """No CAMs: the label is the background plane everywhere; all margins tie, so the mask
    keeps the first half of the pixels in raster order."""
    params = in_project.load()
    net = load_boundary_net(paths.irn_model(params, *RUN))
    cam = {"keys": np.zeros(0, np.int64), "cam": np.zeros((0, 8, 8), np.float32)}
    _, label, mask = stage.pseudo_label(params, net, torch.randn(3, 32, 32), cam)
    assert tuple(label.shape) == (32, 32) and (label == 0).all()
    want = np.zeros((32, 32), bool)
    want[:16] = True
    np.testing.assert_array_equal(mask.numpy(), want)


# --------------------------------------------------------------------------- resuming
def test_a_rerun_remakes_only_missing_or_broken_files(in_project, made):
    params = in_project.params({"make_pseudo_labels": {"out_dir": "pl/resume"}})
    first_metrics = stage.make_pseudo_labels(params, *RUN, progress=False)
    first = _outputs(params, *RUN)
    assert first == made["outputs"]  # the same files in another folder
    names = build_dataset(params.data, params.data.train_split).names
    n = len(names)
    again = stage.make_pseudo_labels(params, *RUN, progress=False)
    assert (_timings()["made"], _timings()["kept"]) == (0, n) and again == first_metrics
    paths.pseudo_label_file(params, *RUN, names[0]).unlink()
    broken = paths.confidence_mask_file(params, *RUN, names[1])
    broken.write_bytes(broken.read_bytes()[: len(broken.read_bytes()) // 2])  # killed mid-write by hand
    stale = broken.parent / f".{broken.name}.tmp-x.png"
    stale.write_bytes(b"")
    third = stage.make_pseudo_labels(params, *RUN, progress=False)
    assert (_timings()["made"], _timings()["kept"]) == (2, n - 2)
    assert _outputs(params, *RUN) == first and third == first_metrics and not stale.exists()


def test_changed_settings_remake_every_file(in_project, made):
    out = {"out_dir": "pl/changed"}
    params = in_project.params({"make_pseudo_labels": out})
    stage.make_pseudo_labels(params, *RUN, progress=False)
    n = _timings()["made"]
    meta = paths.pseudo_label_dir(params, *RUN) / "meta.json"
    assert json.loads(meta.read_text())["bg_threshold"] == params.make_pseudo_labels.refiners["random_walk"].bg_threshold == 0.75
    changed = in_project.params({"make_pseudo_labels": {**out, "refiners": {"random_walk": {"bg_threshold": 0.9}}}})
    m = stage.make_pseudo_labels(changed, *RUN, progress=False)
    assert (_timings()["made"], _timings()["kept"]) == (n, 0) and json.loads(meta.read_text())["bg_threshold"] == 0.9
    assert _outputs(changed, *RUN) != made["outputs"]
    # a higher background score labels more background
    assert m["train"]["background_fp_rate"] <= made["metrics"]["train"]["background_fp_rate"]
    # and back: everything again, the first files
    stage.make_pseudo_labels(params, *RUN, progress=False)
    assert (_timings()["made"], _timings()["kept"]) == (n, 0) and _outputs(params, *RUN) == made["outputs"]


def test_new_cams_in_the_same_folder_remake_the_labels(in_project):
    params = in_project.params({"make_pseudo_labels": {"out_dir": "pl/newcams"}})
    _copy_run(params, "+asm")
    stage.make_pseudo_labels(params, "+asm", 0, progress=False)
    split = params.data.train_split
    name = build_dataset(params.data, split).names[0]
    f = cam_path(paths.cam_dir(params, "+asm", 0), split, name)
    c = load_cam(f)
    save_cam(f, c["keys"], 1 - c["cam"], 1 - c["high_res"])
    stage.make_pseudo_labels(params, "+asm", 0, progress=False)
    assert _timings("+asm", 0)["made"] >= 1


# --------------------------------------------------------------------------- errors
def test_a_corrupt_cam_file_is_named(in_project):
    params = in_project.params({"make_pseudo_labels": {"out_dir": "pl/corrupt"}})
    _copy_run(params, "baseline")
    split = params.data.train_split
    names = build_dataset(params.data, split).names
    bad = cam_path(paths.cam_dir(params, "baseline", 0), split, names[1])
    bad.write_bytes(b"these bytes are not an npz archive")
    with pytest.raises(DataError, match=re.escape(f"{bad}: not a readable CAM file")):
        stage.make_pseudo_labels(params, "baseline", 0, progress=False)
    assert not (paths.pseudo_label_reports("baseline", 0) / paths.METRICS).exists()


def test_cam_keys_that_disagree_with_the_label_are_named(in_project, capsys):
    params = in_project.load()
    _copy_run(params, "+crm")
    split = params.data.train_split
    ds = build_dataset(params.data, split)
    s = ds[2]
    keys = np.flatnonzero(s["label"].numpy())
    other = np.array([k for k in range(ds.num_classes) if k not in keys][:1])
    bad = cam_path(paths.cam_dir(params, "+crm", 0), split, s["name"])
    low, high = _cams(s["mask"].numpy(), other, np.random.default_rng(1))
    save_cam(bad, other, low, high)
    with pytest.raises(DataError, match=re.escape(f"{bad}: CAM classes {other.tolist()}")):
        stage.make_pseudo_labels(params, "+crm", 0, progress=False)
    capsys.readouterr()
    assert stage.main(["--variant", "+crm", "--seed", "0"]) == 1
    captured = capsys.readouterr()
    assert f"make_pseudo_labels: error: {bad}: CAM classes" in captured.err and captured.out == ""
    assert not (paths.pseudo_label_reports("+crm", 0) / paths.METRICS).exists()


def test_a_missing_boundary_network_is_named(in_project, capsys):
    params = in_project.load()
    missing = paths.irn_model(params, "cam", 0)
    with pytest.raises(DataError, match=re.escape(f"{missing}: no trained boundary network")):
        stage.make_pseudo_labels(params, "cam", 0, progress=False)
    assert not paths.pseudo_label_dir(params, "cam", 0).exists()  # nothing written before the check
    assert stage.main(["--variant", "cam", "--seed", "0"]) == 1
    assert f"make_pseudo_labels: error: {missing}: no trained boundary network" in capsys.readouterr().err


# --------------------------------------------------------------------------- sharding
def test_two_ranks_make_the_single_process_files_between_them(in_project, made):
    """``_make`` of rank 0 and rank 1 of 2: images 0, 2 and image 1; together the same files."""
    params = in_project.params({"make_pseudo_labels": {"out_dir": "pl/shards"}})
    names = build_dataset(params.data, params.data.train_split).names
    counts = {}
    for rank in (0, 1):
        dist = distributed.DistInfo(rank, 2, rank, torch.device("cpu"))
        counts[rank] = stage._make(params, *RUN, False, dist, False)
        if rank == 0:
            assert sorted(_outputs(params, *RUN)) == sorted(f"{d}/{names[i]}.png" for d in ("labels", "masks")
                                                            for i in (0, 2))
    assert counts == {0: {"made": 2, "kept": 0}, 1: {"made": 1, "kept": 0}}
    assert _outputs(params, *RUN) == made["outputs"]
    # a resumed rank keeps its finished share
    dist = distributed.DistInfo(1, 2, 1, torch.device("cpu"))
    assert stage._make(params, *RUN, True, dist, False) == {"made": 0, "kept": 1}


@pytest.fixture(scope="module")
def ddp_run(project, made) -> dict:
    """ssc/0 under torchrun with 2 gloo processes, into another folder."""
    with project.entered():
        update = {"make_pseudo_labels": {"out_dir": "pl/ddp"}}
        project.write_params(update, name="params_ddp.yaml")
        distributed.launch("sslib.stages.make_pseudo_labels",
                           ["--variant", "ssc", "--seed", "0", "--params", "params_ddp.yaml"], nproc_per_node=2)
        params = project.load("params_ddp.yaml")
        return {"outputs": _outputs(params, *RUN), "timings": _timings(),
                "metrics": json.loads((paths.pseudo_label_reports(*RUN) / paths.METRICS).read_text())}


def test_two_gloo_processes_write_the_single_process_files(ddp_run, made):
    assert ddp_run["timings"]["world_size"] == 2
    assert ddp_run["outputs"] == made["outputs"]
    # the same files, so the same numbers (compared as JSON: NaN for classes that never occur)
    assert json.dumps(ddp_run["metrics"], sort_keys=True) == json.dumps(made["metrics"], sort_keys=True)


def test_two_gloo_processes_count_every_image(ddp_run):
    assert ddp_run["timings"]["made"] + ddp_run["timings"]["kept"] == 3
