"""Pretrained weights from local torchvision state-dict files; nothing is ever downloaded.

A weights parameter (``model.backbone_weights``, ``model.vgg_weights``) is either

* ``"none"``: an explicit choice of random initialisation. It is allowed but announced
  loudly (``warnings.warn`` and ``logging.warning``): results are then not comparable
  to the paper, which starts from ImageNet weights;
* a path to one of torchvision's ImageNet files (see :data:`RESNET50_FILES`,
  :data:`VGG19_FILES`), loaded with ``torch.load(map_location="cpu", weights_only=True)``
  and ``load_state_dict`` (strict for the parts the network uses).

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
    "load_weights", "warn_random_init",
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


def _read_state_dict(path: str, param_key: str, what: str, files: Sequence[str]) -> dict[str, torch.Tensor]:
    p = Path(path).expanduser()
    shown = f"{path!r}" + ("" if p.is_absolute() else f" (resolved: {p.resolve()})")
    if not p.exists():
        raise WeightsError(f"{param_key}: weights file {shown} does not exist. Put the {what} "
                           f"weights there: {_where_to_get(param_key, files)}")
    if not p.is_file():
        raise WeightsError(f"{param_key}: {shown} is not a file; {_where_to_get(param_key, files)}")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a pickle that is not a plain state dict
        raise WeightsError(f"{param_key}: cannot read {shown} as a state dict "
                           f"({type(e).__name__}: {e})") from None
    if not isinstance(sd, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise WeightsError(f"{param_key}: {shown} is not a torchvision state dict "
                           f"(a mapping of names to tensors, e.g. {files[0]})")
    return dict(sd)


def _listing(keys: Sequence[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_weights(module: nn.Module, path: str, *, param_key: str, what: str,
                 files: Sequence[str], rename: Callable[[str], str | None] | None = None) -> bool:
    """Load a local torchvision state-dict file into ``module`` (strict), or keep random init.

    Args:
        module: the network (part) whose ``state_dict`` keys the renamed file keys must match
            exactly (every key present, none extra, same shapes).
        path: the file, or ``"none"`` for random initialisation (warned about).
        param_key: the params.yaml key, for messages (e.g. ``model.backbone_weights``).
        what: what the weights are for, for messages (e.g. ``ResNet-50 backbone``).
        files: torchvision file names that fit, for messages.
        rename: maps a file key to a module key, or to None to drop it (e.g. ``fc.*``).

    Returns:
        True if weights were loaded, False for ``"none"``.

    Raises:
        WeightsError: missing or unreadable file, or keys/shapes that do not fit.
    """
    if path == "none":
        warn_random_init(param_key, what)
        return False
    sd = _read_state_dict(path, param_key, what, files)
    if rename is not None:
        sd = {new: v for k, v in sd.items() if (new := rename(k)) is not None}
    own = module.state_dict()
    # BatchNorm's counter is optional in older files; load_state_dict fills it in
    needed = {k for k in own if not k.endswith("num_batches_tracked")}
    missing, unexpected = needed - sd.keys(), sd.keys() - own.keys()
    if missing or unexpected:
        parts = ([f"missing {len(missing)} keys ({_listing(list(missing))})"] if missing else []) + \
                ([f"unexpected {len(unexpected)} keys ({_listing(list(unexpected))})"] if unexpected else [])
        raise WeightsError(f"{param_key}: {path!r} does not fit the {what}: {'; '.join(parts)}. "
                           f"Expected torchvision's {' or '.join(files)}")
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
           if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise WeightsError(f"{param_key}: {path!r} does not fit the {what}: shape mismatch in "
                           f"{_listing(bad, 3)} (file vs network). Expected torchvision's "
                           f"{' or '.join(files)}")
    module.load_state_dict(sd, strict=True)
    log.info("%s: loaded %s weights from %s", param_key, what, path)
    return True
