"""The segmentation methods (sslib.seg_methods, the SEG_METHODS table): what ce and beco
declare, the batch multiple refused with its key, a plugin's method through ``plugins:``,
and that an unchosen method's settings rerun nothing."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from sslib import config, seg_methods
from sslib.registry import SEG_METHODS
from sslib.stages import resolve, train_seg

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toys" / "toy_seg_method.py"


def _load(tmp_path: Path, update: dict) -> config.Params:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(update))
    return config.load(path)


class Ctx:
    device, epoch, step = torch.device("cpu"), 0, 0
    autocast = staticmethod(nullcontext)

    def __init__(self, modules):
        self.modules = modules


def _batch():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 8, 8), generator=g)
    conf = torch.zeros(2, 8, 8, dtype=torch.int64)
    conf[:, :, :4] = 1
    return {"image": torch.rand(2, 3, 8, 8, generator=g), "pseudo_label": label, "confidence": conf}


def test_what_ce_and_beco_declare():
    assert seg_methods.net_names("ce") == ("net",) and seg_methods.net_names("beco") == ("net1", "net2")
    assert train_seg.loss_names("ce") == ("ce",) and train_seg.loss_names("beco") == ("ce1", "ce2", "cot1", "cot2")
    assert SEG_METHODS.get("ce").get("batch_multiple") == 1 and SEG_METHODS.get("beco").get("batch_multiple") == 2
    assert seg_methods.inference_nets("beco", ["a", "b"]) == ["a", "b"]
    params = config.load(ROOT / "params.yaml")
    assert train_seg.method_settings(params) == {"method": "ce", "confidence": True}
    assert set(params.train_seg.methods) == {"ce", "beco"}


def test_an_odd_batch_is_refused_for_beco_naming_the_key(tmp_path):
    with pytest.raises(config.ConfigError, match=r"train_seg.batch_size: .*'beco'.*multiple of 2, got 3"):
        _load(tmp_path, {"train_seg": {"method": "beco", "batch_size": 3}})
    assert _load(tmp_path, {"train_seg": {"method": "ce", "batch_size": 3}}).train_seg.batch_size == 3


def test_an_unknown_method_is_refused_with_the_key_and_the_known_names(tmp_path):
    with pytest.raises(config.ConfigError, match=r"train_seg.method: unknown segmentation method 'bec'.*ce, beco"):
        _load(tmp_path, {"train_seg": {"method": "bec"}})


def test_a_plugin_method(tmp_path):
    params = _load(tmp_path, {"plugins": [str(TOY)], "train_seg": {
        "method": "smooth_ce", "methods": {"smooth_ce": {"smoothing": 0.1}}}})
    entry, settings = config.chosen(params.train_seg, "method")
    assert entry.name == "smooth_ce" and settings.smoothing == 0.1 and seg_methods.net_names("smooth_ce") == ("net",)
    net = torch.nn.Conv2d(3, 3, 1)
    batch = _batch()
    loss, parts = entry.factory(settings, 0)(batch, Ctx({"net": net}))
    target = batch["pseudo_label"].masked_fill(batch["confidence"] != 1, 255)
    want = F.cross_entropy(net(batch["image"]), target, ignore_index=255, label_smoothing=0.1)
    torch.testing.assert_close(loss, want) and torch.testing.assert_close(parts, want.reshape(1))
    plain, _ = seg_methods.ce(seg_methods.CESettings(confidence=True), 0)(batch, Ctx({"net": net}))
    assert not torch.isclose(loss, plain)  # the smoothing changes the loss
    assert train_seg.method_settings(params) == {"method": "smooth_ce", "smoothing": 0.1}


def test_an_unchosen_methods_settings_rerun_nothing(tmp_path):
    base = resolve.resolved(config.load(ROOT / "params.yaml"), ROOT)
    other = resolve.resolved(_load(tmp_path, {"train_seg": {"methods": {"beco": {"mix_prob": 0.9}}}}), ROOT)
    assert base == other
    plain = resolve.resolved(_load(tmp_path, {"train_seg": {"methods": {"ce": {"confidence": False}}}}), ROOT)
    changed = {p.as_posix() for p in base if base[p] != plain[p]}
    assert changed and all(p.startswith(("pipeline/resolved/train_seg/", "pipeline/resolved/paper_table/"))
                           for p in changed)
