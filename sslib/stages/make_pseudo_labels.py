"""Make the pseudo labels and confidence masks of one downstream run (the ``make_pseudo_labels`` stage).

The chosen refiner (``make_pseudo_labels.refiner``, an entry of
:data:`sslib.registry.REFINERS`, :mod:`sslib.refiners`) followed by BECO's ``gen_mask``, for
every image of ``data.train_split``:

1. the run's stride-4 CAMs of the present classes (the ``eval_cam`` stage's file; a
   missing, corrupt or mis-labelled one stops the stage naming it);
2. the refiner's scores and pseudo label of them, with its settings
   (``make_pseudo_labels.refiners.<refiner>``). The default ``random_walk`` is IRN's
   ``make_sem_seg_labels``: the boundary map of the image at stride 4 from the run's trained
   boundary network (``train_irn``'s ``model.pt``; missing: :class:`sslib.io.DataError`
   naming it), averaged with that of the flipped image, the CAMs walked on it
   (:func:`sslib.affinity.random_walk`), upsampled, normalised by the global maximum, a
   constant ``bg_threshold`` background plane prepended, argmax
   (:func:`sslib.affinity.walk_to_labels`). A refiner that declares no
   ``needs_boundary_net`` (``cams``) needs no boundary network, and then ``make_ir_labels``
   and ``train_irn`` do not run at all;
3. BECO's confidence mask of it (:func:`sslib.pseudo_labels.confidence_mask`, ratio
   ``mask_ratio``): the most confident half of each label's pixels.

The label goes to :func:`sslib.paths.pseudo_label_file` (8-bit VOC-palette PNG of class
ids) and the mask to :func:`sslib.paths.confidence_mask_file` (8-bit PNG, 255 = confident),
each atomically; no score dumps are kept.

Then, on rank 0, the quality against the ground-truth masks (images without one are
skipped): the pseudo labels' confusion matrix and :func:`sslib.metrics.scores` (mIoU,
precision, recall, background false-positive rate), and the confident pixels' precision
and coverage; written to :func:`sslib.paths.pseudo_label_reports` ``metrics.json``.

**Resumable.** An image whose label and mask both exist and read back at its size is
skipped, so an interrupted run continues where it stopped (also under ``dvc repro``: the
folder is a ``persist`` output). ``meta.json`` keeps the
settings, the boundary network's digest (when the refiner uses one) and a stamp of the CAM files (names, sizes and
modification times); when any changed, nothing is kept. **Sharded.** Under torchrun (``runs.devices > 1``) rank r makes images r, r + W, ...
and rank 0 measures once all are done; the files are the same as one process makes.

Shell::

    python -m sslib.stages.make_pseudo_labels --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.stages.make_pseudo_labels --variant ssc --seed 0
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed, paths
from ..config import Params, chosen, to_dict
from ..io import DataError, write_json
from ..formats import save_png, voc_palette
from ..pseudo_labels import files_stamp
from . import common

__all__ = ["run", "make_pseudo_labels", "pseudo_label", "quality", "needs_boundary_net", "refiner_settings"]


def _md5(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


def needs_boundary_net(params: Params) -> bool:
    """Whether the chosen refiner reads the run's boundary network (``train_irn``'s model)."""
    entry, _ = chosen(params.make_pseudo_labels, "refiner")
    return bool(entry.get("needs_boundary_net", False))


def refiner_settings(params: Params) -> dict[str, Any]:
    """``{"refiner": name, <its settings>..., "mask_ratio"}``: what the labels and masks are made with."""
    cfg = params.make_pseudo_labels
    _, settings = chosen(cfg, "refiner")
    return {"refiner": cfg.refiner, **(to_dict(settings) if settings is not None else {}),
            "mask_ratio": cfg.mask_ratio}


def _settings(params: Params, variant: str, seed: int) -> dict[str, Any]:
    """What the outputs depend on besides the images: kept in ``meta.json``."""
    cams = paths.cam_dir(params, variant, seed)
    out = {"variant": variant, "seed": seed, "split": params.data.train_split, "cam_dir": str(cams),
           "cams": files_stamp(cams / params.data.train_split, "*.npz")}
    if needs_boundary_net(params):
        out["boundary_net"] = _md5(paths.irn_model(params, variant, seed))
    return {**out, **refiner_settings(params)}


@torch.no_grad()
def pseudo_label(params: Params, net: torch.nn.Module | None, image: torch.Tensor, cam: dict[str, np.ndarray]
                 ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """One image's boundary map, pseudo label and confidence mask, by the chosen refiner.

    Args:
        net: the boundary network in eval mode (None when the refiner needs none).
        image: (3, H, W) normalised image on the network's device.
        cam: the image's CAM file (:func:`sslib.cam.load_cam`): ``keys`` (K,), ``cam``
            (K, ceil(H/4), ceil(W/4)).

    Returns:
        ``(boundary, label, mask)``: (h4, w4) float in [0, 1] (None when the refiner uses no
        boundary map), (H, W) int64 class ids (0 background), (H, W) bool (True = confident),
        on the image's device.
    """
    from ..pseudo_labels import confidence_mask
    from ..refiners import Refined  # the built-in refiners (in the stage's code fingerprint)

    cfg = params.make_pseudo_labels
    entry, settings = chosen(cfg, "refiner")
    keys = torch.from_numpy(cam["keys"]).to(image.device)
    cams = torch.from_numpy(cam["cam"]).to(image.device)
    refined: Refined = entry.factory(settings, cams, keys, image, net)
    return refined.boundary, refined.label, confidence_mask(refined.scores, refined.label, cfg.mask_ratio)


def _done(params: Params, variant: str, seed: int, name: str, size: tuple[int, int]) -> bool:
    """Whether both outputs of image ``name`` exist and read back at ``size``."""
    from ..pseudo_labels import load_confidence_mask, load_ir_label

    try:
        load_ir_label(paths.pseudo_label_file(params, variant, seed, name), size)
        load_confidence_mask(paths.confidence_mask_file(params, variant, seed, name), size)
    except DataError:
        return False
    return True


def _make(params: Params, variant: str, seed: int, keep: bool, dist, progress: bool) -> dict[str, int]:
    """This rank's share of the images; returns ``{"made", "kept"}`` counts."""
    from tqdm.auto import tqdm

    from ..cam import cam_path, load_cam, shard
    from ..data import EvalTransform, build_dataset
    from ..models import load_boundary_net
    from ..pseudo_labels import save_confidence_mask

    split = params.data.train_split
    cams = paths.cam_dir(params, variant, seed)
    ds = build_dataset(params.data, split, transform=EvalTransform(), with_mask=False)
    net = load_boundary_net(paths.irn_model(params, variant, seed), dist.device) if needs_boundary_net(params) else None
    counts = {"made": 0, "kept": 0}
    for i in tqdm(shard(len(ds), dist.rank, dist.world_size), desc=f"pseudo labels {split}", unit="img",
                  disable=not progress):
        s = ds[i]
        size = tuple(s["image"].shape[-2:])
        if keep and _done(params, variant, seed, s["name"], size):
            counts["kept"] += 1
            continue
        cam = load_cam(cam_path(cams, split, s["name"]), size, s["label"])
        _, label, mask = pseudo_label(params, net, s["image"].to(dist.device), cam)
        save_png(paths.pseudo_label_file(params, variant, seed, s["name"]),
                 label.cpu().numpy().astype(np.uint8), palette=voc_palette())
        save_confidence_mask(paths.confidence_mask_file(params, variant, seed, s["name"]), mask.cpu().numpy())
        counts["made"] += 1
    return counts


def quality(params: Params, variant: str, seed: int, progress: bool = False) -> dict[str, Any]:
    """The stored pseudo labels and masks against the ground truth (see the module doc)."""
    from tqdm.auto import tqdm

    from ..data import build_dataset
    from ..metrics import confusion_matrix, scores
    from ..pseudo_labels import ir_label_counts, ir_label_scores, load_confidence_mask, load_ir_label

    ds = build_dataset(params.data, params.data.train_split)
    k = ds.num_classes + 1
    conf = np.zeros((k, k), np.int64)
    counts = {"valid": 0, "confident": 0, "correct": 0}
    kept, pixels, with_mask = 0, 0, 0
    for i in tqdm(range(len(ds)), desc="pseudo-label quality", unit="img", disable=not progress):
        s = ds[i]
        size = s["image"].shape[:2]
        label = load_ir_label(paths.pseudo_label_file(params, variant, seed, s["name"]), size).astype(np.int64)
        mask = load_confidence_mask(paths.confidence_mask_file(params, variant, seed, s["name"]), size)
        kept, pixels = kept + int(mask.sum()), pixels + mask.size
        if "mask" not in s:
            continue
        with_mask += 1
        gt = np.asarray(s["mask"])
        conf += confusion_matrix(label, gt, k)
        # the confident pixels as an IR label: label where confident, ignored elsewhere
        for key, v in ir_label_counts(np.where(mask, label, 255), gt).items():
            counts[key] += v
    result = {}
    if with_mask:
        sc = scores(conf, ("background", *ds.classes))
        result = {key: sc[key] for key in ("miou", "mean_precision", "mean_recall", "pixel_accuracy",
                                            "background_fp_rate")}
        for key in ("iou", "precision", "recall"):  # per class, by name
            result[key] = dict(zip(sc["class_names"], sc[key]))
    return {**result,
            "confident": ir_label_scores(counts),
            "confident_share": kept / pixels if pixels else float("nan"),
            "images": len(ds), "images_with_mask": with_mask}


def make_pseudo_labels(params: Params, variant: str, seed: int, *, progress: bool = True) -> dict:
    """Make one run's pseudo labels and masks, then measure them (see the module doc).

    Returns:
        The metrics dict written to metrics.json (on every rank).

    Raises:
        DataError naming the file: the boundary network or a CAM file is missing or bad.
    """
    dist = distributed.init()
    t0 = time.perf_counter()
    out = paths.pseudo_label_dir(params, variant, seed)
    model = paths.irn_model(params, variant, seed)
    if needs_boundary_net(params) and not model.is_file():  # before any rank writes
        raise DataError(f"{model}: no trained boundary network (run the train_irn stage for {variant} seed {seed})")
    if dist.is_main:
        keep = common.prepare_folder(out, _settings(params, variant, seed), ["labels/*.png", "masks/*.png"])
    distributed.barrier()
    if not dist.is_main:
        keep = True  # rank 0 removed what may not be kept
    counts = _make(params, variant, seed, keep, dist, progress and dist.is_main)
    if dist.world_size > 1:  # the totals over the ranks
        import torch.distributed as tdist

        total = torch.tensor([counts["made"], counts["kept"]], dtype=torch.int64, device=dist.device)
        tdist.all_reduce(total)
        counts = {"made": int(total[0]), "kept": int(total[1])}
    distributed.barrier()
    metrics_path = paths.pseudo_label_reports(variant, seed) / paths.METRICS
    if dist.is_main:
        metrics = {"variant": variant, "seed": seed,
                   params.data.train_split: quality(params, variant, seed, progress)}
        write_json(paths.timings("make_pseudo_labels", paths.run_name(variant, seed)),
                   {"time_s": round(time.perf_counter() - t0, 2), "world_size": dist.world_size, **counts})
        write_json(metrics_path, metrics)
    distributed.barrier()
    return json.loads(metrics_path.read_text())


def run(params: Params, variant: str, seed: int, progress: bool = True) -> dict:
    """One run in this process, or under ``torchrun`` when ``runs.devices > 1``."""
    return distributed.run_here_or_torchrun(
        "make_pseudo_labels", params, variant, seed,
        lambda: make_pseudo_labels(params, variant, seed, progress=progress),
        paths.pseudo_label_reports(variant, seed) / paths.METRICS)


def main(argv: list[str] | None = None) -> int:
    def call(params, args):
        metrics = make_pseudo_labels(params, args.variant, args.seed, progress=distributed.is_rank0())
        if distributed.is_rank0():  # printed once, not by every rank
            return {"variant": args.variant, "seed": args.seed, **metrics[params.data.train_split]}
        return None

    return common.cli("make_pseudo_labels", __doc__, call, argv, common.add_run_args)


if __name__ == "__main__":
    sys.exit(main())
