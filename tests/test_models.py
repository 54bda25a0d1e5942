"""CAM network (ResNet-50 + DRS), decoder, reconstruction losses, weights loading."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from sslib.config import ConfigError
from sslib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sslib.models import (
    CAMNet, Decoder, DRSSettings, ExpandedBottleneck, LayerNorm2d, PerceptualLoss, WeightsError,
    build_reconstruction_loss, drs, imagenet_to_tanh, tanh_to_imagenet,
)

C = 3


@pytest.fixture(autouse=True)
def _quiet_random_init():
    """``none`` weights warn by design; the tests that check the warning catch it themselves."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*means random initialisation")
        yield


def _net(**kw) -> CAMNet:
    torch.manual_seed(kw.pop("seed", 0))
    kw.setdefault("frozen_stages", 2)
    kw.setdefault("bn_eval", True)
    return CAMNet(C, **kw)


def _images(n: int = 2, h: int = 64, w: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g)


def _bns(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


# --------------------------------------------------------------------------- CAMNet
def test_camnet_shapes_scores_are_gap_of_bias_free_cams():
    net = _net()
    assert net.classifier.bias is None and net.classifier.weight.shape == (C, 2048, 1, 1)
    for mode in (True, False):
        net.train(mode)
        scores, cams = net(_images(2, 64, 96))
        assert scores.shape == (2, C) and cams.shape == (2, C, 4, 6)  # output stride 16
        torch.testing.assert_close(scores, cams.mean(dim=(2, 3)))
    # layer4 keeps the resolution: stride 1, no dilation (official strides (2, 2, 2, 1))
    assert net.backbone.layer4[0].conv2.stride == (1, 1) and net.backbone.layer4[0].downsample[0].stride == (1, 1)
    assert all(m.dilation == (1, 1) for m in net.modules() if isinstance(m, nn.Conv2d))


def _backward(net: CAMNet) -> None:
    net.train()
    scores, cams = net(_images())
    (scores.sum() + cams.pow(2).mean()).backward()


def test_frozen_stages_2_no_gradient_for_stem_layer1_layer2():
    net = _net(frozen_stages=2)
    _backward(net)
    for part in (net.backbone.conv1, net.backbone.bn1, net.backbone.layer1, net.backbone.layer2):
        for p in part.parameters():
            assert p.grad is None and not p.requires_grad
    for part in (net.backbone.layer3, net.backbone.layer4, net.classifier):
        # every parameter gets a gradient (a conv before a zero-initialised BN gets zeros)
        assert all(p.grad is not None for p in part.parameters())
        assert sum(p.grad.abs().sum() for p in part.parameters()) > 0
    backbone, head = net.param_groups()
    assert head == [net.classifier.weight]
    assert {id(p) for p in backbone} == {id(p) for m in (net.backbone.layer3, net.backbone.layer4) for p in m.parameters()}


def test_frozen_stages_1_trains_layer2():
    net = _net(frozen_stages=1)
    _backward(net)
    assert all(p.grad is None for m in (net.backbone.conv1, net.backbone.bn1, net.backbone.layer1) for p in m.parameters())
    assert all(p.grad is not None for p in net.backbone.layer2.parameters())


def test_frozen_stages_0_without_bn_eval_trains_everything():
    net = _net(frozen_stages=0, bn_eval=False)
    _backward(net)
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []
    backbone, head = net.param_groups()
    assert len(backbone) + len(head) == len(list(net.parameters()))
    net.train()  # train() re-freezes nothing when nothing is frozen
    assert all(p.requires_grad for p in net.parameters())


def test_auto_settings_follow_weights():
    net = CAMNet(C, weights="none")
    assert (net.frozen_stages, net.bn_eval) == (0, False)
    with pytest.raises(ValueError, match="frozen_stages"):
        CAMNet(C, frozen_stages=5)


def test_bn_eval_keeps_running_statistics_in_train_mode():
    net = _net(bn_eval=True, frozen_stages=0)
    net.train()
    assert net.training and not any(bn.training for bn in _bns(net))
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    net(_images())
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    # train() again (e.g. after an eval pass) keeps it so
    net.eval().train()
    assert not any(bn.training for bn in _bns(net))


def test_without_bn_eval_batch_statistics_update_except_in_frozen_stages():
    net = _net(bn_eval=False, frozen_stages=2)
    net.train()
    frozen = _bns(net.backbone.layer1) + _bns(net.backbone.layer2) + [net.backbone.bn1]
    trained = _bns(net.backbone.layer3) + _bns(net.backbone.layer4)
    assert not any(bn.training for bn in frozen) and all(bn.training for bn in trained)
    m_frozen, m_trained = net.backbone.layer2[0].bn1.running_mean.clone(), net.backbone.layer3[0].bn1.running_mean.clone()
    net(_images())
    assert torch.equal(net.backbone.layer2[0].bn1.running_mean, m_frozen)
    assert not torch.equal(net.backbone.layer3[0].bn1.running_mean, m_trained)


# --------------------------------------------------------------------------- DRS
def test_drs_against_hand_computed_example_and_gradient_through_the_max():
    x = torch.tensor([[[[0.0, 1.0], [3.0, 4.0]],      # max 4 -> cap 2
                       [[3.0, 0.0], [0.0, 0.0]]]],    # max 3 -> cap 1.5
                     requires_grad=True)
    y = drs(x, 0.5)
    torch.testing.assert_close(y, torch.tensor([[[[0.0, 1.0], [2.0, 2.0]], [[1.5, 0.0], [0.0, 0.0]]]]))
    y.sum().backward()
    # capped entries pass their gradient, times delta, to the maximum (not detached, as official)
    torch.testing.assert_close(x.grad, torch.tensor([[[[1.0, 1.0], [0.0, 1.0]], [[0.5, 1.0], [1.0, 1.0]]]]))


def _capture(module: nn.Module, store: list, inputs: bool = False):
    def hook(_m, inp, out):
        store.append((inp[0] if inputs else out).detach().clone())
    return module.register_forward_hook(hook)


def _check_capped(out: torch.Tensor, pre: torch.Tensor, delta: float) -> None:
    """out = min(pre, delta * max_hw(pre)), checked as properties of the values."""
    cap = delta * pre.amax(dim=(2, 3), keepdim=True)
    assert bool((out <= cap + 1e-5).all())
    torch.testing.assert_close(out.amax(dim=(2, 3), keepdim=True), cap)  # the cap binds
    below = pre < cap
    torch.testing.assert_close(out[below], pre[below])
    assert bool((pre > cap + 1e-3).any())  # something was suppressed


def test_drs_caps_layer4_always_and_stage2_only_in_training():
    delta = 0.55
    net = _net(expansion=("drs", DRSSettings(delta)))
    assert all(isinstance(b, ExpandedBottleneck) for b in net.backbone.layer4)
    for training in (True, False):
        net.train(training)
        blocks, relus, l3_in, l2_out = [], [], [], []
        hooks = [_capture(b, blocks) for b in net.backbone.layer4] + [_capture(b.relu, relus) for b in net.backbone.layer4]
        hooks += [_capture(net.backbone.layer3, l3_in, inputs=True), _capture(net.backbone.layer2, l2_out)]
        net(_images())
        for h in hooks:
            h.remove()
        # each block calls its ReLU three times; the third is the final one, before DRS
        assert len(blocks) == 3 and len(relus) == 9
        for out, pre in zip(blocks, relus[2::3]):
            _check_capped(out, pre, delta)
        if training:
            _check_capped(l3_in[0], l2_out[0], delta)
        else:
            torch.testing.assert_close(l3_in[0], l2_out[0])


def _plain_resnet_cams(net: CAMNet, x: torch.Tensor) -> torch.Tensor:
    """Independent forward: torchvision's ResNet-50 with net's weights, layer4 stride 1."""
    tv = torchvision.models.resnet50()
    tv.fc = nn.Identity()
    trunk = {k.removeprefix("backbone."): v for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    tv.load_state_dict(trunk, strict=True)
    tv.layer4[0].conv2.stride = (1, 1)
    tv.layer4[0].downsample[0].stride = (1, 1)
    tv.eval()
    with torch.no_grad():
        f = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        return F.conv2d(f, net.classifier.weight)


def test_expansion_none_is_the_plain_relu_network():
    x = _images()
    plain = _net(expansion=("none", None))
    assert not any(isinstance(b, ExpandedBottleneck) for b in plain.backbone.layer4)
    ref = _plain_resnet_cams(plain, x)
    for training in (True, False):
        plain.train(training)
        with torch.no_grad():
            _, cams = plain(x)
        torch.testing.assert_close(cams, ref)
    # the same weights with DRS on give other CAMs
    with_drs = _net(expansion=("drs", {"delta": 0.55}))
    with_drs.load_state_dict(plain.state_dict())
    with torch.no_grad():
        _, cams = with_drs.eval()(x)
    assert not torch.allclose(cams, ref, atol=1e-3)


# --------------------------------------------------------------------------- decoder
def test_decoder_shape_range_and_gradient_to_cams():
    torch.manual_seed(0)
    dec = Decoder(C)
    cams = torch.randn(2, C, 4, 5, requires_grad=True)
    out = dec(cams)
    assert out.shape == (2, 3, 64, 80)
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0
    out.mean().backward()
    assert cams.grad is not None and cams.grad.abs().sum() > 0
    assert all(p.grad is not None for p in dec.parameters())


def test_layer_norm_matches_the_official_formula():
    torch.manual_seed(0)
    ln = LayerNorm2d(8)
    assert bool((ln.weight >= 0).all() and (ln.weight < 1).all()) and not ln.bias.any()
    with torch.no_grad():
        ln.bias.normal_()
    for scale in (1.0, 1e-3):
        x = torch.randn(2, 8, 6, 5) * scale + 0.3
        flat = x.view(2, -1)
        ref = (x - flat.mean(1).view(2, 1, 1, 1)) / (flat.std(1).view(2, 1, 1, 1) + 1e-5)
        ref = ref * ln.weight.view(1, -1, 1, 1) + ln.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(ln(x), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


# --------------------------------------------------------------------------- reconstruction losses
@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """torchvision's vgg19().features with seeded random weights, saved as ``features.*``."""
    with torch.device("meta"):
        features = torchvision.models.vgg19().features
    features = features.to_empty(device="cpu")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in features.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
    path = tmp_path_factory.mktemp("weights") / "vgg19-test.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return str(path), features


def test_perceptual_slices_end_at_torchvision_relus(vgg_file):
    with torch.device("meta"):
        tv = torchvision.models.vgg19().features
    loss = PerceptualLoss(vgg_file[0])
    assert tuple(loss.layer_indices) == (1, 6, 11, 20, 29)
    start = 0
    for s, end in zip(loss.slices, loss.layer_indices):
        assert [int(k) for k in s._modules] == list(range(start, end + 1))
        assert isinstance(tv[end], nn.ReLU) and isinstance(s[-1], nn.ReLU)
        # relu{k}_1: the first ReLU after the k-th block start (after a pool, or the input)
        assert isinstance(tv[end - 1], nn.Conv2d) and (end == 1 or isinstance(tv[end - 2], nn.MaxPool2d))
        for mine, theirs in zip(s, tv[start:end + 1]):
            assert type(mine) is type(theirs) and repr(mine) == repr(theirs)
        start = end + 1


def _manual_perceptual(features: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    weights = {1: 1 / 32, 6: 1 / 16, 11: 1 / 8, 20: 1 / 4, 29: 1.0}
    total, a, b = 0.0, x, y
    with torch.no_grad():
        for i, layer in enumerate(features[:30]):
            a, b = layer(a.clone()), layer(b.clone())
            if i in weights:
                total = total + weights[i] * (a - b).abs().mean()
    return total


def test_perceptual_loss_equals_independent_computation(vgg_file):
    path, features = vgg_file
    x, y = _images(2, 32, 32, seed=5), _images(2, 32, 32, seed=6)
    loss = PerceptualLoss(path)
    torch.testing.assert_close(loss(x, y), _manual_perceptual(features, x, y))
    rec = torch.tanh(_images(2, 32, 32, seed=7))
    full = build_reconstruction_loss("perceptual", path)
    torch.testing.assert_close(full(rec, y), _manual_perceptual(features, tanh_to_imagenet(rec), y))


def test_perceptual_loss_zero_for_the_image_itself_and_gradient_only_to_rec(vgg_file):
    g = torch.Generator().manual_seed(8)
    rgb = torch.rand(2, 3, 32, 32, generator=g)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    image = (rgb - mean) / std
    rec = imagenet_to_tanh(image)
    torch.testing.assert_close(rec, rgb * 2 - 1)
    loss_fn = build_reconstruction_loss("perceptual", vgg_file[0])
    assert float(loss_fn(rec, image)) == pytest.approx(0.0, abs=1e-5)

    rec = torch.tanh(_images(2, 32, 32, seed=9)).requires_grad_(True)
    target = image.clone().requires_grad_(True)
    loss_fn.train()
    assert not loss_fn.perceptual.training
    loss = loss_fn(rec, target)
    assert loss > 0
    loss.backward()
    assert rec.grad is not None and rec.grad.abs().sum() > 0
    assert target.grad is None
    vgg_params = list(loss_fn.parameters())
    assert vgg_params and all(p.grad is None and not p.requires_grad for p in vgg_params)


def test_pixel_losses_equal_hand_computation():
    rec = torch.tanh(_images(2, 16, 16, seed=10))
    image = _images(2, 16, 16, seed=11)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    diff = ((rec + 1) / 2 - mean) / std - image
    torch.testing.assert_close(build_reconstruction_loss("l1", "missing.pth")(rec, image), diff.abs().mean())
    torch.testing.assert_close(build_reconstruction_loss("l2", "none")(rec, image), diff.pow(2).mean())
    assert list(build_reconstruction_loss("l1", "none").parameters()) == []
    with pytest.raises(ValueError, match="differ in shape"):
        build_reconstruction_loss("l1", "none")(rec[..., :8], image)


# --------------------------------------------------------------------------- weights
def test_missing_weights_file_names_parameter_path_and_alternatives(tmp_path):
    missing = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(WeightsError) as e:
        CAMNet(C, weights=str(missing))
    msg = str(e.value)
    assert isinstance(e.value, ConfigError)
    assert "model.backbone_weights" in msg and str(missing) in msg
    assert "resnet50-0676ba61.pth" in msg and "https://download.pytorch.org/models/" in msg
    assert "none" in msg
    with pytest.raises(WeightsError, match=r"model\.vgg_weights.*vgg19-dcbb9e9d\.pth"):
        PerceptualLoss(str(tmp_path / "vgg.pth"))


def test_none_weights_warn_and_log(caplog):
    with warnings.catch_warnings():
        warnings.resetwarnings()
        with pytest.warns(UserWarning, match=r"model\.backbone_weights: none means random initialisation"):
            with caplog.at_level(logging.WARNING, logger="sslib.models.weights"):
                CAMNet(C, weights="none")
        assert any("not be comparable to the paper" in r.getMessage() for r in caplog.records)
        with pytest.warns(UserWarning, match=r"model\.vgg_weights: none"):
            build_reconstruction_loss("perceptual", "none")


def test_torchvision_resnet50_state_dict_loads(tmp_path):
    torch.manual_seed(4)
    tv = torchvision.models.resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    net = CAMNet(C, weights=str(path))
    assert (net.frozen_stages, net.bn_eval) == (2, True)
    mine = net.state_dict()
    theirs = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert set(mine) == {f"backbone.{k}" for k in theirs} | {"classifier.weight"}
    assert all(torch.equal(mine[f"backbone.{k}"], v) for k, v in theirs.items())


def test_state_dict_that_does_not_fit_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match=r"model\.backbone_weights: .*other\.pth.*missing .*unexpected 1 keys \(foo\.weight\)"):
        CAMNet(C, weights=str(path))
    torch.save({"not": "tensors"}, path)
    with pytest.raises(WeightsError, match="not a torchvision state dict"):
        CAMNet(C, weights=str(path))
