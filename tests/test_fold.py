"""BatchNorm folding (sslib.models.fold): the folded network computes what the original did."""
import copy

import pytest
import torch
from torch import nn

from sslib.models import BoundaryNet, CAMNet, DeepLabV2, DRSSettings
from sslib.models.fold import fold_batchnorm


def _random_statistics(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return net.eval()


def _batchnorms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet50"])
def test_folded_cam_network_gives_the_same_scores_and_cams(backbone):
    torch.manual_seed(0)
    net = _random_statistics(CAMNet(3, backbone=backbone, expansion=("drs", DRSSettings(0.55)), weights=None, frozen_stages=0, bn_eval=False))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        folded = copy.deepcopy(net)
        n = fold_batchnorm(folded)
        out = folded(x)
    assert n == _batchnorms(net) and _batchnorms(folded) == 0  # every norm follows a conv
    for r, o in zip(ref, out):
        assert torch.allclose(o, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())


def test_folded_boundary_and_segmentation_networks_agree():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    for net in (BoundaryNet("efficientnet_lite0", weights=None),
                DeepLabV2(4, backbone="efficientnet_lite0", weights=None)):
        net = _random_statistics(net)
        with torch.no_grad():
            ref = net(x)
            folded = copy.deepcopy(net)
            fold_batchnorm(folded)
            out = folded(x)
        assert _batchnorms(folded) == 0, type(net).__name__
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()), type(net).__name__


def test_fold_by_hand_and_what_it_keeps():
    """One conv + BatchNormAct-like pair against the formula; a norm not after a conv, and a
    network in training mode, are left alone / refused."""
    from timm.layers import BatchNormAct2d

    conv = nn.Conv2d(2, 3, 1, bias=False)
    conv.weight.data = torch.tensor([[[[1.0]], [[0.0]]], [[[0.0]], [[2.0]]], [[[1.0]], [[1.0]]]])
    bn = BatchNormAct2d(3, act_layer=nn.ReLU)
    bn.running_mean.copy_(torch.tensor([1.0, 0.0, -1.0]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]) - bn.eps)
    bn.weight.data = torch.tensor([2.0, 1.0, 1.0])
    bn.bias.data = torch.tensor([0.0, -1.0, 0.5])
    lone = nn.BatchNorm2d(3)
    net = nn.Sequential(conv, bn, lone).eval()
    x = torch.tensor([[[[3.0]], [[1.0]]]])  # (1, 2, 1, 1)
    # by hand: conv -> (3, 2, 4); bn -> ((3-1)/2*2, (2-0)/1*1-1, (4+1)/0.5+0.5) = (2, 1, 10.5); relu
    want = torch.tensor([2.0, 1.0, 10.5]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(net[:2](x), want)
        assert fold_batchnorm(net) == 1
        assert isinstance(net[1], nn.Sequential) and isinstance(net[1][0], nn.ReLU)
        assert net[2] is lone  # not after a conv: kept
        assert torch.allclose(net[:2](x), want, atol=1e-6)
    with pytest.raises(ValueError, match="training mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))
