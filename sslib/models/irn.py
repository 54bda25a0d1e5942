"""IRNet's class-boundary branch (Ahn et al., CVPR 2019) on the project's backbones.

:class:`BoundaryNet` predicts one class-boundary logit per stride-4 pixel from five feature
maps of a fully frozen backbone (:meth:`sslib.models.backbones.Backbone.taps`), as the edge
branch (``fc_edge1 .. fc_edge6``) of IRN's ``net/resnet50_irn.py``:

* every tap ``i``: a bias-free 1x1 conv to 32 channels, ``GroupNorm(4, 32)``, resampled to
  stride 4, ReLU (:class:`EdgeTap`; IRN's order: the resampling sits between the norm and
  the ReLU). Taps deeper than stride 4 are upsampled bilinearly by ``stride / 4``
  (``align_corners=False``) and cropped at the bottom/right to the stride-4 grid, which is
  the size of the first stride-4 tap, ``(ceil(H/4), ceil(W/4))``; stride-4 taps are used as
  they are;
* the five 32-channel maps concatenated (160 channels), then a 1x1 conv *with* bias to one
  logit (IRN's ``fc_edge6``).

The backbone is built without a CAM expansion (no DRS), every group frozen
(``requires_grad=False``) and all of it kept in eval mode, also in :meth:`BoundaryNet.train`
(fixed BatchNorm statistics); the taps are computed without autograd, which is IRN's
``.detach()`` of ``x1 .. x5``. Only the edge branch trains (:meth:`BoundaryNet.param_groups`).

**Where this follows IRN's code rather than the brief it was written from:**

* *Inference.* The brief asked for "the mean of the sigmoids of the image and its flip".
  IRN's ``EdgeDisplacement.forward`` takes the sigmoid of the *mean of the logits*:
  ``sigmoid(edge[0] / 2 + edge[1].flip(-1) / 2)``. :meth:`BoundaryNet.boundary` does the
  latter. It also runs the image and its flip as one batch of two, crops both logit maps to
  ``((H - 1) // 4 + 1, (W - 1) // 4 + 1)`` before flipping back, and (optionally,
  ``pad_to``) zero-pads the normalised images at the bottom/right to IRN's crop size first
  (``crop_size=512`` there; zero is the mean colour).
* *Taps.* IRN's five taps are the stem after the max pool (``x1``, 64 ch, stride 4) and
  the outputs of ``layer1`` (stride 4), ``layer2`` (8), ``layer3`` (16) and ``layer4``
  (16, strides ``(2, 2, 2, 1)``); the stem and ``layer1`` are two taps, not one.
* *Freezing.* IRN does not switch ``requires_grad`` off: it detaches every tap, hands only
  the branch parameters to the optimiser and keeps ``self.backbone.eval()`` in ``train``
  (with ``FixedBatchNorm``). Here the parameters are also marked frozen; the gradients are
  the same.
* IRN trains this branch jointly with a displacement-field branch (``fc_dp*``); that branch
  and IRN's affinity losses are not part of this module.

**Deviation (Lite0).** IRN has no tap finer than stride 4. Lite0's first tap (block group
0, stride 2; see :mod:`sslib.models.backbones` for the choice) is brought down to stride 4
by a 2x2 average pool (``ceil_mode``, so odd sizes give ``ceil(H/4)``), in place of the
upsampling, between the norm and the ReLU. For even sizes this equals bilinear resampling
by 1/2 with ``align_corners=False``, the same interpolation as the upsampled taps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone, build_backbone

__all__ = ["BoundaryNet", "EdgeTap", "load_boundary_net", "EDGE_CHANNELS", "EDGE_STRIDE"]

#: channels of each tap after its 1x1 conv, and the GroupNorm groups over them (IRN's)
EDGE_CHANNELS = 32
EDGE_GROUPS = 4
#: output stride of the boundary map
EDGE_STRIDE = 4


class EdgeTap(nn.Module):
    """One tap of the boundary branch: (N, C_in, h, w) at ``stride`` -> (N, 32, h4, w4) at stride 4.

    ``conv`` (1x1, no bias) -> ``norm`` (GroupNorm(4, 32)) -> to stride 4 -> ReLU, with
    "to stride 4": bilinear upsampling by ``stride // 4`` (``align_corners=False``) for
    ``stride > 4``, nothing for 4, a ``4 // stride`` average pool (``ceil_mode``) for
    ``stride < 4``; then a crop to ``size``.

    Args:
        in_channels: C_in of the tap.
        stride: the tap's stride w.r.t. the input, a power of two.
        out_channels, groups: the conv's output channels and the GroupNorm's groups.
    """

    def __init__(self, in_channels: int, stride: int, out_channels: int = EDGE_CHANNELS,
                 groups: int = EDGE_GROUPS) -> None:
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"a tap's stride must be a power of two, got {stride}")
        self.stride = int(stride)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.GroupNorm(groups, out_channels)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """(N, C_in, h, w) -> (N, 32, *size); ``size`` is the stride-4 grid (h4, w4)."""
        x = self.norm(self.conv(x))
        if self.stride > EDGE_STRIDE:
            x = F.interpolate(x, scale_factor=self.stride // EDGE_STRIDE, mode="bilinear", align_corners=False)
        elif self.stride < EDGE_STRIDE:
            k = EDGE_STRIDE // self.stride
            x = F.avg_pool2d(x, k, k, ceil_mode=True)
        return F.relu(x[..., :size[0], :size[1]])


class BoundaryNet(nn.Module):
    """IRN's class-boundary network: a frozen backbone and the trainable edge branch.

    Args:
        backbone: ``resnet50`` or ``efficientnet_lite0``
            (:func:`~sslib.models.backbones.build_backbone`, with no CAM expansion and every
            group frozen).
        weights: the backbone's ImageNet weights, as :class:`~sslib.models.CAMNet`'s: a local
            file (ResNet-50), ``"packaged"`` (Lite0), ``"none"`` (random init, warned about)
            or None when a trained state dict is loaded next. IRN uses the ImageNet backbone,
            not the CAM network's.

    Attributes:
        backbone: the frozen :class:`~sslib.models.backbones.Backbone` (always in eval mode);
        edge_taps: one :class:`EdgeTap` per backbone tap (IRN's ``fc_edge1 .. fc_edge5``);
        edge_fuse: Conv2d(5 * 32, 1, 1) with bias (IRN's ``fc_edge6``).

    ``forward(x)`` with x (N, 3, H, W) ImageNet-normalised returns the boundary logits
    (N, 1, ceil(H/4), ceil(W/4)); :meth:`boundary` gives flip-averaged probabilities.
    """

    stride = EDGE_STRIDE

    def __init__(self, backbone: Literal["resnet50", "efficientnet_lite0"] = "resnet50",
                 weights: str | None = "none") -> None:
        super().__init__()
        self.backbone: Backbone = build_backbone(backbone, expansion=None, weights=weights,
                                                 frozen_stages="all", bn_eval=True)
        self.backbone.requires_grad_(False)  # the groups cover every module; this says it outright
        strides = tuple(self.backbone.tap_strides)
        if EDGE_STRIDE not in strides:
            raise ValueError(f"{backbone}: no tap at stride {EDGE_STRIDE} (taps at {strides})")
        self._grid_tap = strides.index(EDGE_STRIDE)
        self.edge_taps = nn.ModuleList(EdgeTap(c, s) for c, s in zip(self.backbone.tap_channels, strides))
        self.edge_fuse = nn.Conv2d(len(strides) * EDGE_CHANNELS, 1, 1, bias=True)
        self.train()

    def train(self, mode: bool = True) -> "BoundaryNet":
        """Set the edge branch's mode; the backbone stays in eval mode (IRN's ``train``)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Trainable parameters as :meth:`CAMNet.param_groups <sslib.models.CAMNet.param_groups>`:
        ``(backbone, head)``; the backbone's list is empty (frozen), the head is the edge
        branch (``edge_taps`` and ``edge_fuse``)."""
        head = [p for m in (self.edge_taps, self.edge_fuse) for p in m.parameters() if p.requires_grad]
        return [], head

    def features(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) -> the backbone's five taps, without autograd (IRN's detached ``x1 .. x5``)."""
        with torch.no_grad():
            return self.backbone.taps(x)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) ImageNet-normalised -> boundary logits (N, 1, ceil(H/4), ceil(W/4))."""
        taps = self.features(x)
        size = tuple(taps[self._grid_tap].shape[-2:])
        return self.edge_fuse(torch.cat([m(t, size) for m, t in zip(self.edge_taps, taps)], dim=1))

    @torch.no_grad()
    def boundary(self, x: Tensor, pad_to: int | None = None) -> Tensor:
        """Boundary probabilities at stride 4, averaged over the image and its horizontal flip.

        IRN's ``EdgeDisplacement``: ``sigmoid((f(x) + flip(f(flip(x)))) / 2)``, the sigmoid of
        the mean logit (not the mean of the two sigmoids; see the module docstring), so
        ``boundary(flip(x)) == flip(boundary(x))``.

        Args:
            x: (N, 3, H, W) ImageNet-normalised images.
            pad_to: if given, the images (and their flips) are zero-padded at the bottom and
                right to at least ``pad_to x pad_to`` before the network (IRN: 512, its crop
                size); the result is cropped back.

        Returns:
            (N, 1, ceil(H/4), ceil(W/4)) in [0, 1].
        """
        n, (h, w) = x.shape[0], x.shape[-2:]
        h4, w4 = (h - 1) // EDGE_STRIDE + 1, (w - 1) // EDGE_STRIDE + 1
        pair = torch.cat([x, x.flip(-1)])
        if pad_to is not None:
            pair = F.pad(pair, [0, max(0, pad_to - w), 0, max(0, pad_to - h)])
        logits = self(pair)[..., :h4, :w4]
        return torch.sigmoid((logits[:n] + logits[n:].flip(-1)) / 2)


def load_boundary_net(path: str | Path, device: torch.device | str = "cpu") -> BoundaryNet:
    """A trained :class:`BoundaryNet` in eval mode, on ``device``, for inference only (the
    backbone's BatchNorm folded into its convs, :func:`sslib.models.fold.fold_batchnorm`).

    ``path`` holds ``{"net": state_dict, "model": {"backbone": ...}, ...}`` (read with
    ``weights_only=True``); ``model.backbone`` (default ``resnet50``) says which backbone to
    build. The stored weights replace the initialisation, so no ImageNet file is needed.
    Raises :class:`sslib.io.DataError` naming ``path`` if it is missing.
    """
    from ..io import DataError
    from .fold import fold_batchnorm

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no trained boundary network (train the IRN boundary branch first)")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = ck.get("model") or {}
    net = BoundaryNet(backbone=model.get("backbone", "resnet50"), weights=None)
    net.load_state_dict(ck["net"])
    fold_batchnorm(net.eval())  # the frozen backbone's BatchNorm folded into its convs (inference only)
    return net.to(device, memory_format=torch.channels_last)  # 10 % faster on the CPU
