"""How the ``make_pseudo_labels`` stage turns a run's CAMs into pseudo labels: the
:data:`sslib.registry.REFINERS` table (``make_pseudo_labels.refiner`` chooses one,
``make_pseudo_labels.refiners.<name>`` holds its settings).

A refiner is a function ``refine(settings, cams, keys, image, net=None) -> Refined``:

* ``cams``: (K, ceil(H/4), ceil(W/4)) float32 stride-4 CAMs of the image's K present classes
  (a CAM file's ``cam``), on the image's device;
* ``keys``: (K,) int64 0-based class ids of those maps;
* ``image``: (3, H, W) normalised image;
* ``net``: the run's trained boundary network (``train_irn``'s model) in eval mode when the
  entry declares ``needs_boundary_net=True``, else None (and ``train_irn`` does not run);

and returns :class:`Refined`: ``scores`` (K + 1, H, W) (plane 0 background, from which
BECO's confidence mask is drawn), ``label`` (H, W) int64 class ids (0 background), and
``boundary`` (the boundary map, or None).

The built-in entries:

* ``random_walk`` (IRN): the boundary map of the image at stride 4 (flip-averaged,
  :meth:`sslib.models.BoundaryNet.boundary`, padded to ``pad_to``), the CAMs walked on it
  (:func:`sslib.affinity.random_walk` with ``radius``, ``beta``, ``exp_times``), then
  :func:`sslib.affinity.walk_to_labels` with ``bg_threshold``;
* ``cams``: the CAMs as they are through :func:`sslib.affinity.walk_to_labels` (upsampled by
  4, normalised by the global maximum, a constant ``bg_threshold`` background plane,
  argmax): no boundary network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .config import num
from .registry import register_refiner

__all__ = ["Refined", "RandomWalkSettings", "CamsSettings", "random_walk", "cams"]


class Refined(NamedTuple):
    """A refiner's result: (K + 1, H, W) scores, (H, W) int64 labels, the boundary map or None."""

    scores: torch.Tensor
    label: torch.Tensor
    boundary: torch.Tensor | None = None


@dataclass
class RandomWalkSettings:
    """IRN's random walk on the boundary network's map (``make_pseudo_labels.refiners.random_walk``)."""

    radius: int = num(ge=2)
    beta: float = num(gt=0)
    exp_times: int = num(ge=0)
    bg_threshold: float = num(gt=0, lt=1)
    pad_to: int = num(ge=0)


@dataclass
class CamsSettings:
    """The CAMs as they are (``make_pseudo_labels.refiners.cams``)."""

    bg_threshold: float = num(gt=0, lt=1)


@register_refiner("random_walk", settings=RandomWalkSettings, needs_boundary_net=True)
def random_walk(settings: RandomWalkSettings, cams: torch.Tensor, keys: torch.Tensor, image: torch.Tensor,
                net: torch.nn.Module | None = None) -> Refined:
    """IRN's ``make_sem_seg_labels``: the CAMs walked on the image's boundary map (see the module doc)."""
    from .affinity import random_walk as walk, walk_to_labels

    h, w = image.shape[-2:]
    boundary = net.boundary(image[None], pad_to=settings.pad_to or None)[0, 0]
    if len(keys):
        walked = walk(cams, boundary, radius=settings.radius, beta=settings.beta, exp_times=settings.exp_times)
    else:
        walked = cams
    scores, label = walk_to_labels(walked, keys, (h, w), settings.bg_threshold)
    return Refined(scores, label, boundary)


@register_refiner("cams", settings=CamsSettings, needs_boundary_net=False)
def cams(settings: CamsSettings, cams: torch.Tensor, keys: torch.Tensor, image: torch.Tensor,
         net: torch.nn.Module | None = None) -> Refined:
    """The CAMs upsampled as they are, with the constant background plane (see the module doc)."""
    from .affinity import walk_to_labels

    scores, label = walk_to_labels(cams, keys, tuple(image.shape[-2:]), settings.bg_threshold)
    return Refined(scores, label)
