"""A toy CAM expansion, loaded as a plugin (``plugins: [tests/toys/toy_expansion.py]``).

``toy_cap`` caps each channel of each sample at ``ratio`` times its spatial mean:
``min(x, ratio * mean_hw(x))``. Imports only sslib's public API.
"""
from dataclasses import dataclass

import torch
from torch import nn

from sslib.config import num
from sslib.registry import register_expansion


@dataclass
class ToyCapSettings:
    ratio: float = num(ge=1)


class ToyCap(nn.Module):
    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(x, x.mean(dim=(2, 3), keepdim=True) * self.ratio)


@register_expansion("toy_cap", settings=ToyCapSettings)
def toy_cap(settings: ToyCapSettings) -> nn.Module:
    return ToyCap(settings.ratio)
