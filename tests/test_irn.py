"""IRN's boundary branch (sslib.models.irn) and the backbones' taps it reads."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslib.io import DataError
from sslib.models import DRS, BoundaryNet, load_boundary_net
from sslib.models.backbones import build_backbone
from sslib.models.irn import EdgeTap

BACKBONES = ("resnet50", "efficientnet_lite0")
WEIGHTS = {"resnet50": "none", "efficientnet_lite0": "packaged"}


@pytest.fixture(autouse=True)
def _quiet_random_init():
    """``none`` weights warn by design."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*means random initialisation")
        yield


@pytest.fixture(scope="module", params=BACKBONES)
def net(request) -> BoundaryNet:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*means random initialisation")
        return BoundaryNet(backbone=request.param, weights=WEIGHTS[request.param])


def _images(n: int = 2, h: int = 50, w: int = 37, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _edge_params(net: BoundaryNet) -> set[int]:
    return {id(p) for m in (net.edge_taps, net.edge_fuse) for p in m.parameters()}


# --------------------------------------------------------------------------- taps
@pytest.mark.parametrize("name, strides, channels", [
    ("resnet50", (4, 4, 8, 16, 16), (64, 256, 512, 1024, 2048)),
    ("efficientnet_lite0", (2, 4, 8, 16, 16), (16, 24, 40, 112, 1280)),
])
def test_taps_have_the_declared_channels_and_strides_and_end_in_forward(name, strides, channels):
    torch.manual_seed(0)
    bb = build_backbone(name, DRS(0.55), weights=WEIGHTS[name], frozen_stages=0, bn_eval=True).eval()
    assert (bb.tap_strides, bb.tap_channels) == (strides, channels)
    x = _images(1, 50, 37)
    with torch.no_grad():
        taps, feats = bb.taps(x), bb(x)
    assert [tuple(t.shape) for t in taps] == [(1, c, -(-50 // s), -(-37 // s)) for c, s in zip(channels, strides)]
    assert min(strides) <= 4
    torch.testing.assert_close(taps[-1], feats)  # the same computation as forward, DRS included


def test_resnet_taps_follow_forward_in_training_with_drs():
    """ResNet's DRS on the layer2 output runs in training only; taps sees it as forward does."""
    torch.manual_seed(0)
    bb = build_backbone("resnet50", DRS(0.55), weights="none", frozen_stages=2, bn_eval=True).train()
    x = _images(2, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(bb.taps(x)[-1], bb(x))


def test_frozen_stages_all_freezes_every_group():
    for name in BACKBONES:
        bb = build_backbone(name, None, weights=WEIGHTS[name], frozen_stages="all", bn_eval=True)
        assert bb.frozen_stages == len(bb.stages())
        assert not any(p.requires_grad for p in bb.parameters())


# --------------------------------------------------------------------------- the network
@pytest.mark.parametrize("h, w", [(50, 37), (64, 64), (33, 17)])
def test_output_is_one_logit_at_stride_4(net, h, w):
    with torch.no_grad():
        out = net.eval()(_images(2, h, w))
    assert out.shape == (2, 1, -(-h // 4), -(-w // 4))
    assert net.edge_fuse.weight.shape == (1, 160, 1, 1) and net.edge_fuse.bias is not None
    assert [m.stride for m in net.edge_taps] == list(net.backbone.tap_strides)


def test_built_without_drs_and_fully_frozen(net):
    assert net.backbone.expansion is None and net.backbone.bn_eval
    assert net.backbone.frozen_stages == len(net.backbone.stages())


def test_only_the_edge_branch_gets_gradients(net):
    net.train().zero_grad(set_to_none=True)
    out = net(_images(2, 40, 36))
    assert out.requires_grad
    out.square().mean().backward()
    assert all(p.grad is None and not p.requires_grad for p in net.backbone.parameters())
    edge = [p for m in (net.edge_taps, net.edge_fuse) for p in m.parameters()]
    assert edge and all(p.grad is not None and p.grad.abs().sum() > 0 for p in edge)
    net.zero_grad(set_to_none=True)


def test_backbone_stays_in_eval_and_bn_statistics_stay_fixed_in_train_mode(net):
    net.train()
    assert net.training and net.edge_taps.training and not net.backbone.training
    assert not any(m.training for m in net.backbone.modules())
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    with torch.no_grad():
        net(_images(2, 40, 36) * 3 + 1)  # statistics far from the stored ones
    after = net.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    net.eval()
    assert not net.training
    net.train()
    assert not net.backbone.training


def test_param_groups_are_exactly_the_edge_branch(net):
    body, head = net.param_groups()
    assert body == []
    assert {id(p) for p in head} == _edge_params(net) and len(head) == len(_edge_params(net))
    assert {id(p) for p in net.parameters() if p.requires_grad} == _edge_params(net)
    assert len(head) == 5 * 3 + 2  # five taps (conv, GN weight, GN bias) + the fuse conv's weight and bias
    opt = torch.optim.SGD([{"params": body}, {"params": head}], lr=0.1)  # as train_cam builds its SGD
    assert len(opt.param_groups) == 2


# --------------------------------------------------------------------------- one tap
def test_edge_tap_is_conv_norm_resample_relu_and_crops():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 3)  # a stride-16 map of a 50 x 37 image
    tap = EdgeTap(8, 16)
    with torch.no_grad():
        got = tap(x, (13, 10))
        z = tap.norm(tap.conv(x))
        want = F.relu(F.interpolate(z, scale_factor=4, mode="bilinear", align_corners=False)[..., :13, :10])
    torch.testing.assert_close(got, want)
    assert isinstance(tap.norm, nn.GroupNorm) and tap.norm.num_groups == 4 and tap.norm.num_channels == 32
    assert tap.conv.bias is None and tap.conv.kernel_size == (1, 1)
    # stride 2: a 2x2 mean (bilinear by 1/2 for even sizes), rounded up for odd ones
    fine = EdgeTap(8, 2)
    y = torch.randn(1, 8, 26, 20)
    with torch.no_grad():
        z = fine.norm(fine.conv(y))
        torch.testing.assert_close(fine(y, (13, 10)), F.relu(F.interpolate(z, scale_factor=0.5, mode="bilinear",
                                                                           align_corners=False)))
        assert fine(torch.randn(1, 8, 25, 19), (13, 10)).shape == (1, 32, 13, 10)
    with pytest.raises(ValueError, match="power of two"):
        EdgeTap(8, 6)


# --------------------------------------------------------------------------- inference
def test_boundary_is_the_sigmoid_of_the_flip_averaged_logits(net):
    net.eval()
    x = _images(2, 50, 37)
    b = net.boundary(x)
    assert b.shape == (2, 1, 13, 10) and float(b.min()) >= 0 and float(b.max()) <= 1
    with torch.no_grad():
        want = torch.sigmoid((net(x) + net(x.flip(-1)).flip(-1)) / 2)
    torch.testing.assert_close(b, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net.boundary(x.flip(-1)), b.flip(-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pad_to", [None, 64])
def test_boundary_of_a_flip_symmetric_image_is_flip_symmetric(net, pad_to):
    half = _images(1, 41, 19, seed=3)
    x = torch.cat([half, half.flip(-1)], dim=-1)  # (1, 3, 41, 38), equal to its flip
    b = net.eval().boundary(x, pad_to=pad_to)
    assert b.shape == (1, 1, 11, 10) and float(b.min()) >= 0 and float(b.max()) <= 1
    torch.testing.assert_close(b, b.flip(-1), atol=1e-6, rtol=1e-5)
    assert not b.requires_grad


# --------------------------------------------------------------------------- loading
def test_load_boundary_net_rebuilds_the_backbone(tmp_path, net):
    name = "resnet50" if net.backbone.out_channels == 2048 else "efficientnet_lite0"
    path = tmp_path / "irn.pt"
    torch.save({"net": net.state_dict(), "model": {"backbone": name}}, path)
    got = load_boundary_net(path)
    assert type(got.backbone) is type(net.backbone) and not got.training
    x = _images(1, 32, 28)
    with torch.no_grad():
        torch.testing.assert_close(got(x), net.eval()(x))


def test_a_missing_boundary_checkpoint_is_named(tmp_path):
    path = tmp_path / "nowhere" / "irn.pt"
    with pytest.raises(DataError, match="nowhere"):
        load_boundary_net(path)
