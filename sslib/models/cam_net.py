"""The CAM network: ResNet-50 (output stride 16) with DRS and a 1x1 classifier.

As in the official SSC code (IRN's ``resnet50_cam`` with SSC's ``resnet50_drs``):

* torchvision's ResNet-50 with strides (2, 2, 2, 1): ``layer4`` keeps the resolution
  (stride 1 in its first block's 3x3 conv and downsample conv, no dilation), so the
  CAMs are 1/16 of the input;
* stages as in IRN: stage 1 = conv1, bn1, relu, maxpool, layer1; stage 2 = layer2;
  stage 3 = layer3; stage 4 = layer4. With ``frozen_stages = 2`` stages 1-2 get no
  gradient (their output is detached, their parameters have ``requires_grad=False``);
* DRS (discriminative region suppression) ``min(x, delta * max_hw(x))`` per sample and
  channel, the max not detached: (a) on the stage-2 output, in training only (the
  official training ``Net`` applies it, the inference ``CAM`` class does not), and (b)
  after the final ReLU of every ``layer4`` bottleneck, in training and inference;
* a 1x1 conv 2048 -> C without bias gives the CAM logits; their spatial mean gives the
  class scores (the official code averages the logits; for a bias-free 1x1 conv this
  equals classifying the averaged features).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from .weights import BACKBONE_KEY, RESNET50_FILES, load_weights

__all__ = ["CAMNet", "DRSBottleneck", "drs", "load_trained"]


def drs(x: Tensor, delta: float) -> Tensor:
    """DRS suppression ``min(x, delta * max_hw(x))``.

    Args:
        x: (N, C, H, W) non-negative activations (after a ReLU).
        delta: suppression ratio in (0, 1].

    Returns:
        (N, C, H, W): each channel of each sample capped at ``delta`` times its spatial
        maximum. The maximum is part of the graph (not detached), as in the official code.
    """
    return torch.minimum(x, x.amax(dim=(2, 3), keepdim=True) * delta)


class DRSBottleneck(nn.Module):
    """A torchvision ResNet bottleneck whose final ReLU is followed by :func:`drs`.

    Takes over the submodules of ``block`` under the same names, so state-dict keys are
    torchvision's.
    """

    def __init__(self, block: Bottleneck, delta: float) -> None:
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.conv3, self.bn3 = block.conv3, block.bn3
        self.relu = block.relu
        self.downsample = block.downsample
        self.delta = delta

    def forward(self, x: Tensor) -> Tensor:
        """(N, Cin, H, W) -> (N, 4 * planes, H', W')."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return drs(self.relu(out), self.delta)


class CAMNet(nn.Module):
    """ResNet-50 CAM network (IRN/SSC ``resnet50_cam.Net`` with DRS).

    Args:
        num_classes: C, foreground classes (no background).
        drs_delta: DRS ratio; 0 switches DRS off entirely (plain ReLUs: the plain CAM).
        weights: torchvision ResNet-50 state-dict file, or ``"none"`` for random init
            (warned about; see :mod:`sslib.models.weights`). ``fc.*`` in the file is ignored.
        frozen_stages: 0, 1 or 2 stages without gradient. 2 is the official behaviour
            (stem + layer1 + layer2 fixed, their output detached); 1 fixes stem + layer1;
            0 trains everything. conv1/bn1 are fixed whenever this is >= 1.
            ``"auto"``: 2 with a weights file, 0 with ``"none"`` (fixed random features
            would carry no information).
        bn_eval: BatchNorm layers use their stored running statistics and never update
            them, even in ``train()`` mode (IRN/SSC's ``FixedBatchNorm``). As there, the
            affine weight/bias of BN layers in trained stages (layer3, layer4) still get
            gradients; those of frozen stages do not. ``"auto"``: True with a weights file,
            False with ``"none"`` (randomly initialised statistics, mean 0 and variance 1,
            describe nothing, so batch statistics are used instead). BN layers of frozen
            stages are always kept in eval mode.

    Attributes:
        conv1, bn1, relu, maxpool, layer1..layer4: torchvision's modules (same state-dict
            keys as torchvision, minus ``fc``); ``classifier``: Conv2d(2048, C, 1, bias=False).
        frozen_stages, bn_eval: the resolved settings.

    ``forward(x)`` with x (N, 3, H, W) returns ``(scores (N, C), cams (N, C, h, w))`` with
    h, w = H/16, W/16 (rounded up), ``scores = cams.mean((2, 3))``; cams are the raw logits.
    """

    def __init__(self, num_classes: int, drs_delta: float = 0.55, weights: str = "none",
                 frozen_stages: int | Literal["auto"] = "auto",
                 bn_eval: bool | Literal["auto"] = "auto") -> None:
        super().__init__()
        pretrained = weights != "none"
        if frozen_stages == "auto":
            frozen_stages = 2 if pretrained else 0
        if bn_eval == "auto":
            bn_eval = pretrained
        if frozen_stages not in (0, 1, 2) or isinstance(frozen_stages, bool):
            raise ValueError(f"frozen_stages must be 0, 1, 2 or 'auto', got {frozen_stages!r}")
        if drs_delta < 0:
            raise ValueError(f"drs_delta must be >= 0, got {drs_delta}")
        self.num_classes = num_classes
        self.drs_delta = float(drs_delta)
        self.frozen_stages = int(frozen_stages)
        self.bn_eval = bool(bn_eval)

        # zero-init of each block's last BN (random init only; loaded weights replace it): the
        # residual branches start as identities, which lets a from-scratch net learn in few steps
        net = torchvision.models.resnet50(zero_init_residual=True)
        net.fc = nn.Identity()  # unused; dropped so the file's fc.* is not needed
        load_weights(net, weights, param_key=BACKBONE_KEY, what="ResNet-50 backbone",
                     files=RESNET50_FILES, rename=lambda k: None if k.startswith("fc.") else k)
        # strides (2, 2, 2, 1): layer4 keeps the layer3 resolution (no dilation, as official)
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        if self.drs_delta > 0:
            net.layer4 = nn.Sequential(*(DRSBottleneck(b, self.drs_delta) for b in net.layer4))

        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.classifier = nn.Conv2d(2048, num_classes, 1, bias=False)
        self._apply_freeze()
        self.train()

    # ------------------------------------------------------------------ structure
    def stages(self) -> list[list[nn.Module]]:
        """The four stages (IRN grouping) as lists of modules."""
        return [[self.conv1, self.bn1, self.relu, self.maxpool, self.layer1],
                [self.layer2], [self.layer3], [self.layer4]]

    def _frozen_modules(self) -> list[nn.Module]:
        return [m for stage in self.stages()[:self.frozen_stages] for m in stage]

    def _apply_freeze(self) -> None:
        for m in self._frozen_modules():
            m.requires_grad_(False)

    def train(self, mode: bool = True) -> "CAMNet":
        """Set train/eval mode; BN stays in eval where fixed, frozen stages stay frozen."""
        super().train(mode)
        if mode:
            roots = [self] if self.bn_eval else self._frozen_modules()
            for root in roots:
                for m in root.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        self._apply_freeze()
        return self

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Trainable parameters: (backbone, classifier); the classifier gets 10x the lr."""
        head = [p for p in self.classifier.parameters() if p.requires_grad]
        ids = {id(p) for p in head}
        body = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return body, head

    # ------------------------------------------------------------------ forward
    def features(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) ImageNet-normalised images -> (N, 2048, H/16, W/16) features."""
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        if self.frozen_stages == 1:
            x = x.detach()
        x = self.layer2(x)
        if self.frozen_stages == 2:
            x = x.detach()
        if self.training and self.drs_delta > 0:
            x = drs(x, self.drs_delta)
        return self.layer4(self.layer3(x))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) -> (scores (N, C), cams (N, C, H/16, W/16)); scores = GAP(cams)."""
        cams = self.classifier(self.features(x))
        return cams.mean(dim=(2, 3)), cams


def load_trained(path: str | Path, drs_delta: float, device: torch.device | str = "cpu"):
    """A trained run's CAM network (eval mode), its decoder (or None) and its classes.

    ``path`` is the ``model.pt`` the ``train_cam`` stage writes (``{"net", "decoder",
    "classes", ...}``), read with ``weights_only=True``. The stored weights replace the
    initialisation, so no ImageNet file is needed here.

    Returns:
        ``(net, decoder, classes)``. Raises :class:`sslib.io.DataError` naming ``path`` if
        it is missing.
    """
    import warnings

    from ..io import DataError
    from .decoder import Decoder

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no trained model (run the train_cam stage first)")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    classes = list(ck["classes"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random init" warnings: the weights come next
        net = CAMNet(len(classes), drs_delta=drs_delta, weights="none", frozen_stages=0, bn_eval=False)
    net.load_state_dict(ck["net"])
    net.to(device).eval()
    decoder = None
    if ck.get("decoder") is not None:
        decoder = Decoder(len(classes))
        decoder.load_state_dict(ck["decoder"])
        decoder.to(device).eval()
    return net, decoder, classes
