"""CAM expansions (ssc.expansion, sslib.models.expansions): drs and none, a plugin's, and the
params checks that name the key."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.models.resnet import Bottleneck

from sslib import config
from sslib.config import ConfigError, chosen, variant_config
from sslib.models import CAMNet, DRSSettings, ExpandedBottleneck, build_expansion, drs, load_trained
from sslib.registry import EXPANSIONS

TOY = Path(__file__).resolve().parent / "toys" / "toy_expansion.py"
C = 3


def _x(seed: int = 0, shape=(2, 5, 6, 7)) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def _params(tmp_path, data: dict) -> config.Params:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return config.load(p)


def test_the_drs_entry_is_the_drs_function():
    x = _x()
    for module in (EXPANSIONS.create("drs", DRSSettings(0.4)), build_expansion("drs", {"delta": 0.4})):
        assert torch.equal(module(x), drs(x, 0.4))
        assert not list(module.parameters()) and not list(module.buffers())
    assert not torch.equal(drs(x, 0.4), x)  # it does cap


def test_none_is_no_expansion():
    assert build_expansion("none") is None and EXPANSIONS.create("none") is None
    with pytest.raises(ValueError, match="takes no settings"):
        build_expansion("none", {"delta": 0.5})


@pytest.mark.parametrize("backbone", ["resnet50", "efficientnet_lite0"])
def test_camnet_with_none_is_the_plain_network_and_drs_keeps_the_state_dict_keys(backbone):
    torch.manual_seed(0)
    plain = CAMNet(C, backbone=backbone, expansion=("none", None), weights=None, frozen_stages=0, bn_eval=False)
    torch.manual_seed(0)
    with_drs = CAMNet(C, backbone=backbone, expansion=("drs", DRSSettings(0.5)), weights=None, frozen_stages=0,
                      bn_eval=False)
    assert plain.backbone.expansion is None and plain.expansion == {"name": "none", "settings": None}
    assert with_drs.expansion == {"name": "drs", "settings": {"delta": 0.5}}
    a, b = plain.state_dict(), with_drs.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)  # same keys, same draws
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    bb = plain.backbone.eval()
    with torch.no_grad():
        if backbone == "resnet50":
            assert all(type(m) is Bottleneck for m in bb.layer4)
            assert all(isinstance(m, ExpandedBottleneck) for m in with_drs.backbone.layer4)
            ref = bb.layer4(bb.layer3(bb.layer2(bb.layer1(bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))))))
        else:
            ref = bb.bn2(bb.conv_head(bb.blocks(bb.bn1(bb.conv_stem(x)))))
        torch.testing.assert_close(bb(x), ref, rtol=0, atol=0)
        assert not torch.allclose(with_drs.backbone.eval()(x), ref, atol=1e-4)


def test_a_plugin_expansion_loaded_through_plugins_works_in_camnet(tmp_path):
    params = _params(tmp_path, {"plugins": [str(TOY)],
                                "ssc": {"expansion": "toy_cap", "expansions": {"toy_cap": {"ratio": 1.5}}}})
    v = variant_config(params, "ssc")
    entry, settings = chosen(v, "expansion")
    assert entry.name == "toy_cap" and settings.ratio == 1.5 and "toy_cap" in EXPANSIONS
    assert variant_config(params, "cam").expansion == "none"  # a variant still overrides it
    torch.manual_seed(0)
    net = CAMNet(C, backbone="efficientnet_lite0", expansion=(v.expansion, settings), weights=None,
                 frozen_stages=0, bn_eval=False).eval()
    bb = net.backbone
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        head = bb.bn2(bb.conv_head(bb.blocks(bb.bn1(bb.conv_stem(x)))))
        want = torch.minimum(head, head.mean(dim=(2, 3), keepdim=True) * 1.5)
        torch.testing.assert_close(bb(x), want, rtol=0, atol=0)
        assert not torch.equal(want, head)
    # model.pt records it; load_trained rebuilds it from the file alone
    path = tmp_path / "model.pt"
    torch.save({"net": net.state_dict(), "decoder": None, "classes": ["a", "b", "c"],
                "model": {"backbone": "efficientnet_lite0"}, "expansion": net.expansion}, path)
    loaded, _, _ = load_trained(path)
    assert loaded.expansion == {"name": "toy_cap", "settings": {"ratio": 1.5}}
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[1], net(x)[1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match=r"ssc\.expansions\.toy_cap\.ratio: must be >= 1"):
        _params(tmp_path, {"plugins": [str(TOY)], "ssc": {"expansions": {"toy_cap": {"ratio": 0.5}}}})


@pytest.mark.parametrize("data, match", [
    ({"ssc": {"expansion": "drz"}}, r"ssc\.expansion: unknown CAM expansion 'drz' \(known: drs, none"),
    ({"variants": {"cam": {"expansion": "drz"}}}, r"variants\.cam\.expansion: unknown CAM expansion 'drz'"),
    ({"ssc": {"expansions": {"drz": {}}}}, r"ssc\.expansions\.drz: unknown CAM expansion 'drz'"),
    ({"ssc": {"expansions": {"drs": {"delta": 0.0}}}}, r"ssc\.expansions\.drs\.delta: must lie in \(0"),
    ({"ssc": {"expansions": {"drs": {"delta": 0.5, "eps": 1}}}}, r"ssc\.expansions\.drs\.eps: unknown key"),
    ({"ssc": {"expansions": {"none": {"delta": 0.5}}}}, r"ssc\.expansions\.none: .* takes no settings"),
])
def test_bad_expansions_are_refused_naming_the_key(tmp_path, data, match):
    with pytest.raises(ConfigError, match=match):
        _params(tmp_path, data)


def test_the_chosen_expansions_settings_must_be_there():
    ssc = config.to_dict(config.defaults().ssc)
    assert ssc["expansion"] == "drs"
    with pytest.raises(ConfigError, match=r"ssc\.expansions\.drs: missing; the CAM expansion 'drs' needs its "
                                          r"settings \['delta'\]"):
        config.from_dict(config.VariantConfig, {**ssc, "expansions": {}}, "ssc")
    # none needs nothing
    v = config.from_dict(config.VariantConfig, {**ssc, "expansion": "none", "expansions": {}}, "ssc")
    assert chosen(v, "expansion")[1] is None and dataclasses.is_dataclass(v)
