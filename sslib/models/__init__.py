"""Networks and reconstruction losses of SSC.

* :class:`CAMNet`: a backbone (ResNet-50 or EfficientNet-Lite0, output stride 16, see
  :mod:`sslib.models.backbones`) with a CAM expansion (DRS or none, :mod:`sslib.models.expansions`)
  and a 1x1 classifier; ``scores, cams = net(images)``;
* :class:`BoundaryNet`: IRN's class-boundary branch on a frozen backbone; ``logits = net(images)``
  at stride 4, ``net.boundary(images)`` flip-averaged probabilities (:mod:`sslib.models.irn`);
* :class:`DeepLabV2`: the segmentation network (ResNet-101 at stride 8 or Lite0, the summed
  ASPP head); ``logits = net(images)`` at the output stride, ``net.full(images)`` upsampled
  (:mod:`sslib.models.deeplab`); :func:`load_seg_nets` reads a trained run's;
* :class:`Decoder`: CAM logits -> RGB image in [-1, 1] (CAM-driven reconstruction);
* :func:`build_reconstruction_loss`: ``loss(rec, image)``, perceptual (VGG-19 or Lite0), L1 or L2;
* :func:`fold_batchnorm`: eval-mode BatchNorm folded into the conv before it (the
  inference loaders ``load_trained``, ``load_boundary_net``, ``load_seg_nets`` apply it);
* :mod:`sslib.models.weights`: local torchvision weights files (never downloaded), the
  packaged Lite0 file, :class:`WeightsError`.
"""
from __future__ import annotations

from .backbones import BACKBONES, ExpandedBottleneck, build_backbone
from .cam_net import CAMNet, load_trained
from .deeplab import DeepLabV2, load_seg_nets
from .decoder import Decoder, LayerNorm2d
from ..registry import EXPANSIONS
from .expansions import DRS, DRSSettings, build_expansion, drs
from .fold import fold_batchnorm
from .irn import BoundaryNet, load_boundary_net
from .perceptual import (
    LOSS_NETWORKS, VGG_LAYER_INDICES, VGG_LAYER_NAMES, VGG_LAYER_WEIGHTS, PerceptualLoss, ReconstructionLoss,
    build_reconstruction_loss, imagenet_to_tanh, tanh_to_imagenet,
)
from .weights import WeightsError, load_weights

__all__ = [
    "BACKBONES", "LOSS_NETWORKS", "EXPANSIONS", "build_backbone", "CAMNet", "ExpandedBottleneck", "drs", "DRS",
    "DRSSettings", "build_expansion", "load_trained", "Decoder", "LayerNorm2d", "PerceptualLoss", "ReconstructionLoss",
    "build_reconstruction_loss", "tanh_to_imagenet", "imagenet_to_tanh", "VGG_LAYER_INDICES",
    "VGG_LAYER_NAMES", "VGG_LAYER_WEIGHTS", "WeightsError", "load_weights",
    "BoundaryNet", "load_boundary_net", "DeepLabV2", "load_seg_nets", "fold_batchnorm",
]
