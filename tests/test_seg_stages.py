"""The train_seg and eval_seg stages on a tiny synthetic project whose pseudo labels are the
ground truth and whose confidence masks are hand-made: the files, the metrics against an
independent computation, the ce step's loss against the library's, resuming, BECO's
co-training running, and the errors that name a file."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslib import config, paths
from sslib.crf import crf_available
from sslib.data import build_dataset
from sslib.inference import multiscale_logits
from sslib.io import DataError
from sslib.formats import IGNORE_INDEX
from sslib.models import WeightsError, load_seg_nets
from sslib.pseudo_labels import save_confidence_mask
from sslib import seg_methods
from sslib.stages import eval_seg, train_seg

TINY = {
    "synthetic": {"n_train": 4, "n_val": 2, "image_size": 32, "max_objects": 2},
    "runs": {"variants": ["ssc"], "seeds": [0], "downstream": {"variants": ["ssc"], "seeds": [0]}},
    "train_seg": {"backbone_weights": "none", "epochs": 2, "batch_size": 2, "crop_size": 32, "crops": {"scale_crop": {"scale_range": [0.9, 1.1]}},
                  "methods": {"beco": {"warm_up_epochs": 1}}},
    "eval_seg": {"scales": [1.0, 1.5], "crf": False, "workers": 1},
}
RUN = ("ssc", 0)
RANDOM_INIT = ".*means random initialisation"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny forwards on the shared 2-core machine are faster so."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _quiet_random_init():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RANDOM_INIT)
        yield


def _write_pseudo_labels(params: config.Params) -> None:
    """Pseudo label = the ground truth; confidence = the left half of every image."""
    ds = build_dataset(params.data, params.data.train_split)
    for i in range(len(ds)):
        s = ds[i]
        gt = s["mask"].numpy().astype(np.uint8)
        Image.fromarray(np.where(gt == IGNORE_INDEX, 0, gt)).save(
            _mk(paths.pseudo_label_file(params, *RUN, s["name"])))
        mask = np.zeros(gt.shape, bool)
        mask[:, : gt.shape[1] // 2] = True
        save_confidence_mask(_mk(paths.confidence_mask_file(params, *RUN, s["name"])), mask)
    (paths.pseudo_label_dir(params, *RUN) / "meta.json").write_text("{}")


def _mk(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


@pytest.fixture(scope="module")
def project(tiny_project):
    return tiny_project(TINY, "seg_project", then=_write_pseudo_labels)


@pytest.fixture(scope="module")
def trained(project) -> dict:
    """One uninterrupted ce run of ssc/0."""
    with project.entered(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RANDOM_INIT)
        params = project.params()
        metrics = train_seg.train_seg(params, *RUN, progress=False)
        return {"metrics": metrics, "state": torch.load(paths.seg_model(params, *RUN), weights_only=True)}


# --------------------------------------------------------------------------- train_seg
def test_train_seg_writes_the_model_losses_and_metrics(in_project, trained):
    params = in_project.load()
    m = trained["metrics"]
    assert (m["method"], m["confidence"], m["epochs"], m["steps"]) == ("ce", True, 2, 4)
    assert m["init"] == "random" and m["backbone"] == "efficientnet_lite0" and m["output_stride"] == 16
    assert m["num_classes"] == len(build_dataset(params.data, "train").classes) + 1
    assert np.isfinite(m["final"]["loss"]) and m["final"]["loss"] == m["final"]["ce"]
    rows = (paths.seg_reports(*RUN) / paths.LOSSES).read_text().splitlines()
    assert rows[0].split(",")[:5] == ["epoch", "step", "lr", "loss", "ce"] and len(rows) == 3
    assert json.loads((paths.seg_reports(*RUN) / paths.METRICS).read_text())["init"] == "random"
    assert len(trained["state"]["nets"]) == 1 and trained["state"]["method"] == "ce"
    nets = load_seg_nets(paths.seg_model(params, *RUN))
    assert len(nets) == 1 and not nets[0].training


def test_the_ce_step_ignores_exactly_the_unconfident_pixels():
    """The step's loss is the CE over the confident pixels (and the whole image without
    ``confidence``), computed here independently."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 1)
    image = torch.randn(2, 3, 8, 8)
    label = torch.randint(0, 4, (2, 8, 8))
    label[0, 0, :3] = IGNORE_INDEX
    conf = torch.zeros(2, 8, 8, dtype=torch.int64)
    conf[:, :, :5] = 1
    conf[1, 7, 7] = IGNORE_INDEX  # crop padding: never confident

    class Ctx:
        modules = {"net": net}
        device = torch.device("cpu")

        @staticmethod
        def autocast():
            import contextlib
            return contextlib.nullcontext()

    batch = {"image": image, "pseudo_label": label, "confidence": conf}
    loss, parts = seg_methods.ce(seg_methods.CESettings(confidence=True), 0)(batch, Ctx)
    logp = torch.log_softmax(net(image), 1)
    keep = (conf == 1) & (label != IGNORE_INDEX)
    nll = -logp.gather(1, label.clamp(max=3)[:, None])[:, 0]
    assert loss.item() == pytest.approx(nll[keep].mean().item(), rel=1e-5)
    assert parts.shape == (1,)
    plain, _ = seg_methods.ce(seg_methods.CESettings(confidence=False), 0)(batch, Ctx)
    assert plain.item() == pytest.approx(nll[label != IGNORE_INDEX].mean().item(), rel=1e-5)


def test_an_interrupted_run_resumes_to_the_same_weights(in_project, trained):
    params = in_project.params({"train_seg": {"out_dir": "artifacts/seg_resumed"}})
    assert train_seg.train_seg(params, *RUN, progress=False, stop_after_epochs=1) == {"stopped_at_epoch": 1}
    assert not paths.seg_model(params, *RUN).exists()
    train_seg.train_seg(params, *RUN, progress=False)
    resumed = torch.load(paths.seg_model(params, *RUN), weights_only=True)["nets"][0]
    for k, v in trained["state"]["nets"][0].items():
        assert torch.equal(v, resumed[k]), k


def test_beco_trains_two_networks_with_its_four_losses(in_project):
    params = in_project.params({"train_seg": {"method": "beco", "out_dir": "artifacts/seg_beco",
                                                "methods": {"beco": {"mix_prob": 1.0, "online_threshold": 0.2}}}})
    m = train_seg.train_seg(params, *RUN, progress=False)
    assert set(m["final"]) == {"loss", "ce1", "ce2", "cot1", "cot2"} and np.isfinite(m["final"]["loss"])
    assert m["final"]["loss"] == pytest.approx(sum(m["final"][k] for k in ("ce1", "ce2", "cot1", "cot2")), rel=1e-4)
    assert len(load_seg_nets(paths.seg_model(params, *RUN))) == 2
    # a resumed BECO run (random mixing drawn per step) ends as the uninterrupted one
    p2 = in_project.params({"train_seg": {"method": "beco", "out_dir": "artifacts/seg_beco2",
                                            "methods": {"beco": {"mix_prob": 1.0, "online_threshold": 0.2}}}})
    train_seg.train_seg(p2, *RUN, progress=False, stop_after_epochs=1)
    train_seg.train_seg(p2, *RUN, progress=False)
    a = torch.load(paths.seg_model(params, *RUN), weights_only=True)["nets"]
    b = torch.load(paths.seg_model(p2, *RUN), weights_only=True)["nets"]
    assert all(torch.equal(a[i][k], b[i][k]) for i in range(2) for k in a[i])


def test_an_odd_beco_batch_is_refused_naming_the_key(in_project):
    with pytest.raises(config.ConfigError, match="train_seg.batch_size"):
        in_project.params({"train_seg": {"method": "beco", "batch_size": 3}})


def test_a_missing_confidence_mask_is_named_before_training(in_project, trained):
    params = in_project.params({"train_seg": {"out_dir": "artifacts/seg_bad"}})
    name = build_dataset(params.data, "train").names[1]
    f = paths.confidence_mask_file(params, *RUN, name)
    data = f.read_bytes()
    f.unlink()
    try:
        with pytest.raises(DataError, match=f"{name}.png: confidence mask file missing"):
            train_seg.train_seg(params, *RUN, progress=False)
    finally:
        f.write_bytes(data)


def test_a_pseudo_label_of_the_wrong_size_is_named(in_project, trained):
    params = in_project.params({"train_seg": {"out_dir": "artifacts/seg_bad"}})
    name = build_dataset(params.data, "train").names[0]
    f = paths.pseudo_label_file(params, *RUN, name)
    data = f.read_bytes()
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(f)
    try:
        with pytest.raises(DataError, match=rf"{name}.png: the pseudo label is \(16, 20\), the image is \(32, 32\)"):
            train_seg.train_seg(params, *RUN, progress=False)
    finally:
        f.write_bytes(data)


def test_a_missing_resnet101_file_is_named(in_project):
    params = in_project.params({"train_seg": {"backbone": "resnet101", "out_dir": "artifacts/seg_bad",
                                                "backbone_weights": "weights/resnet101-cd907fc2.pth"}})
    with pytest.raises(WeightsError, match="weights/resnet101-cd907fc2.pth"):
        train_seg.train_seg(params, *RUN, progress=False)
    assert train_seg.main(["--variant", "ssc", "--seed", "0"]) == 1


def test_a_coco_pretrained_deeplab_is_refused(in_project):
    with pytest.raises(config.ConfigError, match="COCO-pretrained"):
        in_project.params({"train_seg": {"backbone": "resnet101",
                                           "backbone_weights": "weights/deeplabv1_resnet101-coco.pth"}})


# --------------------------------------------------------------------------- eval_seg
def _independent(params: config.Params) -> tuple[dict[str, np.ndarray], float]:
    """Predictions and mIoU recomputed from the model file and the library's fusion."""
    nets = load_seg_nets(paths.seg_model(params, *RUN))
    ds = build_dataset(params.data, params.data.val_split)
    from sslib.data.transforms import normalize

    k = nets[0].head.convs[0].out_channels
    conf = np.zeros((k, k), np.int64)
    preds = {}
    for i in range(len(ds)):
        s = ds[i]
        x = torch.from_numpy(normalize(s["image"]).transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            logits = multiscale_logits(lambda t: nets[0](t), x, params.eval_seg.scales, fusion="max")
        pred = logits[0].argmax(0).numpy()
        gt = s["mask"].numpy()
        ok = gt != IGNORE_INDEX
        np.add.at(conf, (gt[ok], pred[ok]), 1)
        preds[s["name"]] = pred
    tp, g, p = np.diag(conf), conf.sum(1), conf.sum(0)
    present = g + p > 0
    return preds, float((tp[present] / (g + p - tp)[present]).mean())


def test_eval_seg_writes_palette_pngs_and_the_miou(in_project, trained):
    params = in_project.params()
    m = eval_seg.eval_seg(params, *RUN, progress=False)
    preds, miou = _independent(params)
    assert m["miou"] == pytest.approx(miou) and m["no_crf"]["miou"] == pytest.approx(miou) and m["crf"] is False
    assert m["images"] == 2 and m["split"] == "val"
    assert set(m["final"]["per_class"]["background"]) == {"iou", "precision", "recall"}
    for name, pred in preds.items():
        with Image.open(paths.seg_prediction_file(params, *RUN, name)) as im:
            assert im.mode == "P" and im.size == (32, 32)
            assert np.array_equal(np.array(im), pred)
    assert json.loads((paths.seg_eval_reports(*RUN) / paths.METRICS).read_text())["miou"] == pytest.approx(miou)


@pytest.mark.skipif(not crf_available(), reason="pydensecrf (pip install pydensecrf2) is not installed")
@pytest.mark.parametrize("crf_image", ["real", "beco"])
def test_eval_seg_with_the_crf_gives_both_scores(in_project, trained, crf_image):
    params = in_project.params({"eval_seg": {"crf": True, "crf_image": crf_image}})
    m = eval_seg.eval_seg(params, *RUN, progress=False)
    _, miou = _independent(params)
    assert m["no_crf"]["miou"] == pytest.approx(miou) and m["crf"] is True
    assert 0 <= m["final"]["miou"] <= 1 and m["miou"] == m["final"]["miou"]


def test_eval_seg_without_a_model_names_the_file(in_project):
    params = in_project.params({"train_seg": {"out_dir": "artifacts/nowhere"}})
    with pytest.raises(DataError, match="nowhere/ssc/seed0/model.pt: no trained segmentation network"):
        eval_seg.eval_seg(params, *RUN, progress=False)


# --------------------------------------------------------------------------- selection on val (SSC's)
def test_best_on_val_keeps_the_best_epochs_networks(in_project, monkeypatch):
    """A 3-epoch run whose val score peaks at epoch 2 (scripted): model.pt holds epoch 2's
    networks as ``nets`` (the weights the checkpoint held after epoch 2) and the last epoch's
    as ``last_nets``, through an interruption after epoch 2; the reports name the epoch."""
    scripted = iter([0.2, 0.6, 0.4])
    monkeypatch.setattr(train_seg._BestOnVal, "score", lambda self: next(scripted))
    params = in_project.params({"train_seg": {"epochs": 3, "out_dir": "artifacts/seg_best"},
                                "eval_seg": {"selection": "best_on_val"}})
    assert train_seg.train_seg(params, *RUN, progress=False, stop_after_epochs=2) == {"stopped_at_epoch": 2}
    after_two = torch.load(paths.seg_checkpoint(params, *RUN), weights_only=True)["net"]
    assert paths.seg_best(params, *RUN).is_file()
    m = train_seg.train_seg(params, *RUN, progress=False)
    saved = torch.load(paths.seg_model(params, *RUN), weights_only=True)
    assert saved["selection"] == {"rule": "best_on_val", "epoch": 2, "val_miou": [0.2, 0.6, 0.4]}
    assert all(torch.equal(saved["nets"][0][k], v) for k, v in after_two.items())
    assert not all(torch.equal(saved["last_nets"][0][k], v) for k, v in after_two.items())
    assert m["selection"] == "best_on_val" and m["selected"]["epoch"] == 2 and m["selected"]["split"] == "val"
    assert m["selected"]["val_miou"][1] == 0.6
    rows = (paths.seg_reports(*RUN) / paths.LOSSES).read_text().splitlines()
    assert rows[0].endswith(",val_miou") and [r.split(",")[-1] for r in rows[1:]] == ["0.2", "0.6", "0.4"]
    assert not paths.seg_best(params, *RUN).exists()  # model.pt holds them now
    # eval_seg scores both and says, in words, that the model was selected on val
    e = eval_seg.eval_seg(params, *RUN, progress=False)
    assert e["selection"]["epoch"] == 2 and "selected on val, the split it is scored on" in e["selection"]["statement"]
    assert 0 <= e["last"]["miou"] <= 1 and e["last"]["miou"] == e["last"]["no_crf_miou"]


def test_the_per_epoch_val_score_is_eval_segs_miou_at_scale_one(in_project):
    """The real per-epoch score of the selected epoch equals eval_seg's mIoU of the selected
    model at scale 1.0, no flip, no CRF, the same resize (computed independently here)."""
    params = in_project.params({"train_seg": {"epochs": 2, "out_dir": "artifacts/seg_best_real"},
                                "eval_seg": {"selection": "best_on_val", "scales": [1.0], "resize": 48}})
    m = train_seg.train_seg(params, *RUN, progress=False)
    e = eval_seg.eval_seg(params, *RUN, progress=False)
    picked = m["selected"]["val_miou"][m["selected"]["epoch"] - 1]
    assert picked == max(m["selected"]["val_miou"])
    assert e["no_crf"]["miou"] == pytest.approx(picked, abs=1e-3)


def test_eval_seg_resize_runs_the_network_at_the_fixed_size(in_project, trained, monkeypatch):
    """With resize 48 the networks see 48 x 48 images; the predictions come back at 32 x 32."""
    params = in_project.params({"eval_seg": {"resize": 48, "scales": [1.0]}})
    seen = []
    real = eval_seg.inference_nets

    def spy(p, nets):
        for n in nets:
            n.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape[-2:])))
        return real(p, nets)

    monkeypatch.setattr(eval_seg, "inference_nets", spy)
    m = eval_seg.eval_seg(params, *RUN, progress=False)
    assert seen and set(seen) == {(48, 48)}
    assert m["settings"]["resize"] == 48 and 0 <= m["miou"] <= 1
    with Image.open(paths.seg_prediction_file(params, *RUN, build_dataset(params.data, "val").names[0])) as im:
        assert im.size == (32, 32)
