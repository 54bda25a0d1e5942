"""A toy pseudo-label refiner for tests/test_refiners.py (a plugin: sslib's public API only).

``max_pool``: the stride-4 CAMs smoothed by a 3x3 max pool, then the usual background rule
(:func:`sslib.affinity.walk_to_labels`); no boundary network.
"""
from dataclasses import dataclass

import torch.nn.functional as F

from sslib.affinity import walk_to_labels
from sslib.config import num
from sslib.refiners import Refined
from sslib.registry import register_refiner


@dataclass
class MaxPoolSettings:
    bg_threshold: float = num(gt=0, lt=1)


@register_refiner("max_pool", settings=MaxPoolSettings, needs_boundary_net=False)
def max_pool(settings, cams, keys, image, net=None):
    pooled = F.max_pool2d(cams[None], 3, stride=1, padding=1)[0] if len(keys) else cams
    scores, label = walk_to_labels(pooled, keys, tuple(image.shape[-2:]), settings.bg_threshold)
    return Refined(scores, label)
