"""The reconstruction decoder of SSC's CAM-driven reconstruction module.

From the CAM logits (N, C, h, w), not detached (the reconstruction loss trains the CAM
network too), to an RGB image (N, 3, 16h, 16w) in [-1, 1], as the official
``net/decoder.py``:

* 3x3 conv block C -> 256 (reflection padding, no bias), layer norm, ReLU;
* one residual block: x + [conv block 256 -> 256 with ReLU, conv block 256 -> 256 without];
* four up-sampling stages 256 -> 256 -> 128 -> 64 -> 32 (with ``width`` W instead of 256:
  W -> W -> W/2 -> W/4 -> W/8), each a 4x4 stride-2 transposed
  conv (no bias), instance norm (no affine), ReLU, and a 3x3 conv block (zero padding,
  bias) with layer norm and ReLU;
* a 3x3 conv to 3 channels (bias) and tanh.

"Layer norm" is the official per-sample normalisation over (C, H, W) with a per-channel
affine map (weight drawn from U(0, 1), bias 0), see :class:`LayerNorm2d`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Decoder", "LayerNorm2d", "ConvBlock", "ResBlock"]


class LayerNorm2d(nn.Module):
    """Per-sample normalisation over (C, H, W), then a per-channel affine map.

    The official module computes ``(x - mean) / (std + eps)`` with the unbiased std over
    the C*H*W values of a sample. This one is one fused ``F.group_norm`` call with a single
    group, ``(x - mean) / sqrt(var + eps**2)`` with the biased variance: the denominators
    differ by a relative 1/(2 C H W) (the estimator) and by where eps enters
    (``sqrt(std**2 + eps**2)`` vs ``std + eps``: equal for std >> eps, both ~eps for
    std << eps, off by at most a factor sqrt(2) at std = eps). In exchange it keeps no
    intermediate copies for backward and runs in float32 under autocast.

    Args:
        channels: C.
        eps: the official eps (added to the std); the variance gets ``eps**2``.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.rand(channels))  # U(0, 1), as the official init
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        return F.group_norm(x, 1, self.weight, self.bias, self.eps * self.eps)


class ConvBlock(nn.Sequential):
    """3x3 conv (stride 1, padding 1), :class:`LayerNorm2d`, optional ReLU: (N, Cin, H, W) -> (N, Cout, H, W)."""

    def __init__(self, cin: int, cout: int, *, relu: bool = True, padding_mode: str = "zeros",
                 bias: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, 1, 1, bias=bias, padding_mode=padding_mode),
                                   LayerNorm2d(cout)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """x + ConvBlock(no ReLU)(ConvBlock(x)): (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBlock(channels, channels), ConvBlock(channels, channels, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class UpStage(nn.Sequential):
    """x2 up-sampling: (N, Cin, H, W) -> (N, Cout, 2H, 2W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.ConvTranspose2d(cin, cin, 4, 2, 1, bias=False), nn.InstanceNorm2d(cin),
                         nn.ReLU(inplace=True), ConvBlock(cin, cout))


class Decoder(nn.Module):
    """CAM logits -> RGB image in [-1, 1] at 16x their resolution.

    Args:
        num_classes: C, channels of the CAMs.
        width: W, channels of the stem and the first up-sampling stage; the stages then
            halve: W -> W -> W/2 -> W/4 -> W/8. 256 is the published decoder; a narrower
            one (``model.decoder_width``) is a documented deviation for CPU runs, where the
            256-wide decoder is about 70 % of an SSC training step. A multiple of 8.

    ``forward(cams)`` with cams (N, C, h, w) (h, w >= 2: the first conv pads by
    reflection) returns (N, 3, 16h, 16w).
    """

    def __init__(self, num_classes: int, width: int = 256) -> None:
        super().__init__()
        if width < 8 or width % 8:
            raise ValueError(f"decoder width must be a positive multiple of 8, got {width}")
        w = width
        self.stem = nn.Sequential(ConvBlock(num_classes, w, padding_mode="reflect", bias=False), ResBlock(w))
        self.up = nn.Sequential(UpStage(w, w), UpStage(w, w // 2), UpStage(w // 2, w // 4), UpStage(w // 4, w // 8))
        self.head = nn.Conv2d(w // 8, 3, 3, 1, 1)

    def forward(self, cams: Tensor) -> Tensor:
        """(N, C, h, w) -> (N, 3, 16h, 16w) in [-1, 1]."""
        return torch.tanh(self.head(self.up(self.stem(cams))))
