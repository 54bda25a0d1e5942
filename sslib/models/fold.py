"""Folding eval-mode BatchNorm into the convolution before it, for inference.

In eval mode ``bn(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and
``b' = (b - m) * g / sqrt(v + eps) + beta`` per output channel (g, beta: the BN's affine
parameters; m, v: its running statistics). Folding removes one memory-bound pass over
every activation: on the 2-core CPU a BatchNorm pass cost ~18 % of the EfficientNet-Lite0
CAM forward (``python -m cProfile -m sslib.stages.eval_cam``). The maps change only by
float rounding (~1e-5 relative, checked in tests/test_fold.py).

The pairs are found structurally: inside each module, a ``Conv2d`` child registered
directly before a ``BatchNorm2d`` child of its output width (how timm's EfficientNet
blocks, timm/torchvision ResNets and the downsample ``Sequential`` are built, and how
they run: conv, then its norm). timm's ``BatchNormAct2d`` also holds its activation
(and a dropout): those stay, in place of the norm. Only for networks in eval mode, never
for one that trains: the folded network has no BatchNorm left to update, and its state
dict has other keys (load weights first, then fold).
"""
from __future__ import annotations

from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm"]


def _remainder(bn: nn.BatchNorm2d) -> nn.Module:
    """What runs after the normalisation in ``bn`` (timm's BatchNormAct2d: drop, then act)."""
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
            if m is not None and not isinstance(m, nn.Identity)]
    return nn.Sequential(*rest) if rest else nn.Identity()


def fold_batchnorm(net: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d (see the module doc).

    Args:
        net: a network in eval mode (raises ValueError otherwise).

    Returns:
        The number of folded pairs.
    """
    if net.training:
        raise ValueError("fold_batchnorm: the network is in training mode (folding is for inference)")
    folded = 0
    for parent in list(net.modules()):
        kids = list(parent.named_children())
        for (name_c, conv), (name_b, bn) in zip(kids, kids[1:]):
            if (type(conv) is nn.Conv2d and type(bn) in (nn.BatchNorm2d, BatchNormAct2d) and bn.track_running_stats
                    and bn.num_features == conv.out_channels and bn.running_mean is not None):
                setattr(parent, name_c, fuse_conv_bn_eval(conv, bn))
                setattr(parent, name_b, _remainder(bn))
                folded += 1
    return folded
