"""CAM expansions: what a CAM backbone applies to its features to spread the activation
beyond the most discriminative part (``ssc.expansion``, the table :data:`sslib.registry.EXPANSIONS`).

An expansion's factory takes its settings (``ssc.expansions.<name>``, a dataclass, or
nothing) and returns an ``nn.Module`` mapping (N, C, H, W) features to features of the
same shape, or None for no expansion. The backbone applies that one module at the points
it declares (:mod:`sslib.models.backbones`: ResNet-50 after every ``layer4`` bottleneck and,
in training, after ``layer2``; Lite0 on the head's output). A module without parameters or
buffers leaves the network's state-dict keys as they are.

The built-in entries:

* ``drs`` (:class:`DRS`, settings :class:`DRSSettings`): SSC's DRS suppression
  ``min(x, delta * max_hw(x))`` (:func:`drs`);
* ``none``: no expansion (the plain CAM).

:func:`build_expansion` builds one from its name and settings (a settings dataclass or a
plain mapping, as model.pt records it: :func:`expansion_record`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..config import from_dict, num, to_dict
from ..registry import EXPANSIONS, register_expansion

__all__ = ["drs", "DRS", "DRSSettings", "build_expansion", "expansion_settings", "expansion_record"]


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


class DRS(nn.Module):
    """:func:`drs` with a fixed ``delta`` (no parameters, no buffers)."""

    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta = float(delta)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W) capped per channel."""
        return drs(x, self.delta)

    def extra_repr(self) -> str:
        return f"delta={self.delta}"


@dataclass
class DRSSettings:
    """``ssc.expansions.drs``."""

    delta: float = num(gt=0, le=1)


@register_expansion("drs", settings=DRSSettings)
def _drs(settings: DRSSettings) -> nn.Module:
    return DRS(settings.delta)


@register_expansion("none")
def _none() -> None:
    return None


def expansion_settings(name: str, settings: Any = None) -> Any:
    """The settings dataclass of the expansion ``name`` from ``settings``: that dataclass, a
    mapping of it (checked as params are), or None for an entry without settings."""
    entry = EXPANSIONS.get(name)
    if entry.settings is None:
        if settings not in (None, {}):
            raise ValueError(f"the CAM expansion {name!r} takes no settings, got {settings!r}")
        return None
    if isinstance(settings, Mapping):
        settings = from_dict(entry.settings, dict(settings), f"ssc.expansions.{name}")
    if not isinstance(settings, entry.settings):
        raise TypeError(f"the CAM expansion {name!r} needs its settings {entry.settings.__name__}, got {settings!r}")
    return settings


def build_expansion(name: str, settings: Any = None) -> nn.Module | None:
    """The expansion module ``name`` (:data:`~sslib.registry.EXPANSIONS`) with ``settings``
    (as :func:`expansion_settings` takes them); None for no expansion."""
    settings = expansion_settings(name, settings)
    entry = EXPANSIONS.get(name)
    return entry.factory() if entry.settings is None else entry.factory(settings)


def expansion_record(name: str, settings: Any = None) -> dict:
    """``{"name", "settings"}`` as model.pt records an expansion (settings a plain dict or None)."""
    return {"name": name, "settings": to_dict(settings) if settings is not None else None}
