"""What each variant sees, reconstructs and is pulled toward, on a few images (the
``inspect_cams`` stage).

For each image (by name, or evenly spaced images of the split) and each variant (one
seed): the image, its ground truth and superpixel boundaries; each class's stored CAM
(the ``eval_cam`` stage's multi-scale CAM, :func:`sslib.paths.cam_dir`); the decoder's
reconstruction of the image from the single-scale CAM logits (variants with
reconstruction); and the alignment target of activation self-modulation
(:func:`sslib.losses.alignment_maps`): the superpixel-averaged CAM and the reliable region
(CAM > ``align_threshold``, eroded), whose maximum is the target. Writes nothing: the
notebook (``notebooks/19_inspect_cams.py``) draws the records with
:func:`sslib.viz.inspect_figure`. Shell (prints the images and variants it shows)::

    python -m sslib.stages.inspect_cams [--split val] [--names a b] [--seed 0] [--variants ssc cam]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .. import paths
from ..config import Params, variant_config
from . import common

__all__ = ["VariantView", "ImageView", "resolve_split", "select", "run", "main"]


@dataclass
class VariantView:
    """One variant on one image."""

    variant: str
    #: (H, W, 3) uint8 decoder output, or None for a variant without reconstruction
    reconstruction: np.ndarray | None
    #: (class, (H, W) stored CAM in [0, 1]) of each class of the CAM file
    cams: list[tuple[str, np.ndarray]]
    #: (class, averaged, target, reliable) per present class: (H2, W2) maps at half resolution
    aligned: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class ImageView:
    """One image and every variant's view of it (a record for :func:`sslib.viz.inspect_figure`)."""

    name: str
    split: str
    #: (H, W, 3) uint8
    image: np.ndarray
    #: (H, W) ground-truth class ids
    mask: np.ndarray
    #: (H, W) bool superpixel boundaries
    boundaries: np.ndarray
    #: the present classes' names
    classes: list[str]
    variants: list[VariantView] = field(default_factory=list)


def resolve_split(params: Params, split: str) -> str:
    """``train`` / ``val`` -> ``data.train_split`` / ``data.val_split``; any other name as is
    (:func:`sslib.data.resolve_split`, which the notebook reaches through here)."""
    from ..data import resolve_split as resolve

    return resolve(params.data, split)


def select(names: Sequence[str], all_names: Sequence[str], split: str, n_images: int) -> list[int]:
    """Indices of ``names`` in ``all_names``, or ``n_images`` evenly spaced indices when
    ``names`` is empty; ValueError naming the names not in the split."""
    missing = [n for n in names if n not in all_names]
    if missing:
        raise ValueError(f"names: not in split {split!r}: {missing}")
    if names:
        return [list(all_names).index(n) for n in names]
    return [int(i) for i in np.linspace(0, len(all_names) - 1, n_images, dtype=int)]


def _view(params: Params, variant: str, seed: int, model, sample: dict, split: str, classes) -> VariantView:
    import torch

    from ..cam import cam_path, load_cam
    from ..losses import alignment_maps
    from ..viz import denormalize

    net, decoder, _ = model
    vc = variant_config(params, variant)
    stored = load_cam(cam_path(paths.cam_dir(params, variant, seed), split, sample["name"]))
    h, w = sample["image"].shape[-2:]
    with torch.no_grad():
        _, cams = net(sample["image"][None])
        maps = alignment_maps(cams, sample["superpixels"][None], sample["label"][None],
                              vc.align_threshold, vc.align_erosion)
        rec = decoder(cams) if decoder is not None else None
    keys = np.flatnonzero(sample["label"].numpy())
    return VariantView(
        variant=variant,
        reconstruction=denormalize(rec[0], tanh=True)[:h, :w] if rec is not None else None,
        cams=[(classes[k], m) for k, m in zip(stored["keys"], stored["high_res"])],
        aligned=[(classes[k], maps["averaged"][0, k].numpy(), maps["target"][0, k].numpy(),
                  maps["reliable"][0, k].numpy()) for k in keys])


def run(params: Params, split: str = "val", names: Sequence[str] = (), n_images: int = 2, seed: int = 0,
        variants: Sequence[str] = ()) -> list[ImageView]:
    """An :class:`ImageView` per image: ``names`` of ``split`` (``train`` / ``val`` or a
    split name), or ``n_images`` evenly spaced images when empty; each with a
    :class:`VariantView` per variant of ``variants`` (empty: ``runs.variants``), trained
    with ``seed``."""
    from ..data import build_dataset
    from ..data.transforms import EvalTransform
    from ..superpixels import boundaries
    from .eval_cam import load_run

    split = resolve_split(params, split)
    variants = list(variants) or list(params.runs.variants)
    ds = build_dataset(params.data, split, transform=EvalTransform(), superpixel_dir=params.superpixels.out_dir)
    raw = build_dataset(params.data, split)
    index = select(list(names), ds.names, split, n_images)
    models = {v: load_run(params, v, seed) for v in variants}
    records = []
    for i in index:
        s, r = ds[i], raw[i]
        keys = np.flatnonzero(s["label"].numpy())
        rec = ImageView(name=s["name"], split=split, image=r["image"], mask=r["mask"].numpy(),
                        boundaries=boundaries(s["superpixels"].numpy()), classes=[ds.classes[k] for k in keys])
        rec.variants = [_view(params, v, seed, models[v], s, split, ds.classes) for v in variants]
        records.append(rec)
    return records


def main(argv: list[str] | None = None) -> int:
    def add_args(ap):
        ap.add_argument("--split", default="val", help="train / val (data.train_split / data.val_split) or a name")
        ap.add_argument("--names", nargs="*", default=[], help="image names (default: evenly spaced images)")
        ap.add_argument("--n-images", type=int, default=2)
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--variants", nargs="*", default=[], help="default: runs.variants")

    def call(params, args):
        records = run(params, args.split, args.names, args.n_images, args.seed, args.variants)
        return {"split": records[0].split if records else resolve_split(params, args.split),
                "images": [r.name for r in records],
                "variants": [v.variant for v in records[0].variants] if records else []}

    return common.cli("inspect_cams", __doc__, call, argv, add_args, errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
