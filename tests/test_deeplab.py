"""DeepLabV2: the dilated ResNet-101 (output stride 8, every block dilated), the summed ASPP head,
and the network's shapes, with random weights on tiny inputs."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from sslib.models.deeplab import ASPP_RATES, ASPPV2, DeepLabV2, dilate_resnet


@pytest.fixture(autouse=True)
def _quiet_and_single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "weights: none means random initialisation"
        yield
    torch.set_num_threads(threads)


def _uniform(module: nn.Module) -> nn.Module:
    """Every conv weight 1 / fan-in, no bias; BatchNorm the identity (eval): an impulse then
    spreads exactly over the receptive field with positive values (no ReLU cuts it)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / (m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]))
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
            m.reset_running_stats()
    return module.eval()


def _extent(layer: nn.Module, channels: int, size: int) -> int:
    """Half-width of the response of ``layer`` to an impulse at the centre of a size x size grid."""
    x = torch.zeros(1, channels, size, size)
    x[0, :, size // 2, size // 2] = 1.0
    with torch.no_grad():
        y = layer(x)[0].abs().sum(0)
    rows = torch.nonzero(y.sum(1) > 0)[:, 0]
    assert y.shape == (size, size)  # stride 1: the grid is kept
    return int(rows.max() - size // 2)


def test_output_stride_8_dilates_every_block_of_layer3_and_layer4():
    net = dilate_resnet(torchvision.models.resnet101(), 8)
    for layer, d, n in ((net.layer3, 2, 23), (net.layer4, 4, 3)):
        assert len(layer) == n
        for block in layer:  # the first block too (torchvision would leave it at the previous dilation)
            assert block.conv2.dilation == (d, d) and block.conv2.padding == (d, d) and block.conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (1, 1)
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv2.dilation == (1, 1)


def test_receptive_field_of_the_dilated_layers():
    """Each bottleneck's 3x3 conv at dilation d widens the field by d on each side: layer4
    (3 blocks, d = 4) by 12 grid cells, three blocks of layer3 (d = 2) by 6."""
    net = dilate_resnet(torchvision.models.resnet101(), 8)
    assert _extent(_uniform(net.layer4), 1024, 41) == 3 * 4
    assert _extent(_uniform(net.layer3[1:4]), 1024, 25) == 3 * 2  # layer3[0] changes the channels
    plain = torchvision.models.resnet101(replace_stride_with_dilation=[False, True, True])
    assert _extent(_uniform(plain.layer4), 1024, 41) == 2 + 2 * 4  # torchvision: first block at dilation 2


@pytest.mark.parametrize("size, out", [(65, 9), (64, 8), (33, 5)])
def test_resnet101_deeplab_has_output_stride_8(size, out):
    net = DeepLabV2(21, "resnet101", weights="none").eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 3, size, size))
        full = net.full(torch.randn(1, 3, size, size))
    assert logits.shape == (1, 21, out, out) and full.shape == (1, 21, size, size)


def test_output_stride_16_dilates_layer4_only():
    net = dilate_resnet(torchvision.models.resnet101(), 16)
    assert net.layer3[0].conv2.stride == (2, 2) and all(b.conv2.dilation == (2, 2) for b in net.layer4)
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        dilate_resnet(torchvision.models.resnet101(), 32)


@pytest.mark.parametrize("stride", [8, 16])
def test_lite0_deeplab_shapes(stride):
    net = DeepLabV2(7, "efficientnet_lite0", weights="none", output_stride=stride).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 64, 48))
    assert logits.shape == (2, 7, 64 // stride, 48 // stride)


def test_aspp_is_the_sum_of_four_dilated_convs():
    torch.manual_seed(0)
    head = ASPPV2(16, 5)
    assert [c.dilation for c in head.convs] == [(r, r) for r in ASPP_RATES] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    w = torch.cat([c.weight.flatten() for c in head.convs])
    assert abs(float(w.std()) - 0.01) < 0.001 and all(float(c.bias.abs().max()) == 0 for c in head.convs)
    for c in head.convs:  # biases are trained: make them visible in the check
        nn.init.normal_(c.bias)
    x = torch.randn(2, 16, 9, 11)
    want = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r) for c, r in zip(head.convs, ASPP_RATES))
    got = head(x)
    assert got.shape == (2, 5, 9, 11)
    torch.testing.assert_close(got, want)


def test_param_groups_split_backbone_and_head():
    net = DeepLabV2(3, "efficientnet_lite0", weights="none")
    backbone, head = net.param_groups()
    assert len(head) == 8 and {id(p) for p in head} == {id(p) for p in net.head.parameters()}
    assert len(backbone) + len(head) == len(list(net.parameters()))


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="unknown segmentation backbone 'vgg16'"):
        DeepLabV2(3, "vgg16")
