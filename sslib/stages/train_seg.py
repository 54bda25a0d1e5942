"""Train the segmentation network of one downstream run on its pseudo labels (the ``train_seg`` stage).

One run, top to bottom (BECO's co-training as SSC's ``segmentation/main.py`` runs it, or
plain CE):

1. data: the train split's images with the run's pseudo labels and confidence masks (the
   ``make_pseudo_labels`` stage's PNGs; a missing one stops the run before training, a
   mis-sized or unreadable one when it is first drawn, with :class:`sslib.io.DataError`
   naming the file), augmented by the chosen crop (``train_seg.crop``, an entry of
   :data:`sslib.registry.SEG_CROPS`, settings ``train_seg.crops.<crop>``): ``scale_crop``
   rescales by a factor from ``scale_range``, flips and crops ``crop_size`` (padding smaller
   images); ``resized_crop``, SSC's, takes a window of 50-75 % of the image's area at an
   aspect of 3/4-4/3 and resizes it to ``crop_size`` (never padded). Pixels labelled 255
   (padding, ignored) are in no loss;
2. model: :class:`sslib.models.DeepLabV2` on ``train_seg.backbone`` with ImageNet weights
   (``backbone_weights``; never a COCO-pretrained DeepLab), BatchNorm training (each GPU's
   own statistics under DDP, SSC's; SyncBatchNorm with ``sync_bn``); as many networks as
   the method declares (``beco``: two);
3. optimiser: SGD over every parameter (the head at ``lr * head_lr_mult``), momentum,
   weight decay, the poly schedule down to ``min_lr`` (BECO's PolyLR); the batch is the
   whole step's, or each process's with ``batch_per_device`` (SSC: 16 per GPU);
4. loss, on the logits upsampled to the crop: the chosen method's step
   (``train_seg.method``, an entry of :data:`sslib.registry.SEG_METHODS`,
   :mod:`sslib.seg_methods`, with its settings ``train_seg.methods.<method>``):

   * ``ce``: cross-entropy on the pseudo label, only inside the confidence mask
     with ``confidence: true`` (:func:`sslib.losses.seg_cross_entropy`);
   * ``beco``: BECO's co-training (:mod:`sslib.beco`): ClassMix of image pairs
     (offline labels during ``warm_up_epochs``; after it, online labels of the two
     networks' averaged logits, confident above ``online_threshold``, and a boundary
     band x(1 + ``boundary_weight``) around the pasted regions), each network's CE inside
     the mask plus the other network's argmax outside it. Not done: BECO's photometric
     augmentation of the mixed images (``mix_aug``: albumentations colour transforms);

5. with ``eval_seg.selection: best_on_val`` (SSC's), after every epoch the val split's
   mIoU of the networks' averaged logits (scale 1.0 after ``eval_seg.resize``, no flip, no
   CRF: SSC's ``val_step``), sharded over the processes; the networks of the best epoch
   (the first of equal ones) are kept in :func:`sslib.paths.seg_best`;
6. per epoch an atomic checkpoint; at the end ``model.pt`` (``{"nets", "model", "method",
   "variant", "seed"}``, read by :func:`sslib.models.load_seg_nets`; with selection ``nets``
   are the selected epoch's, ``last_nets`` the last epoch's and ``selection`` says which
   epoch and every epoch's val mIoU), then ``losses.csv`` (with ``val_miou`` when selecting)
   and ``metrics.json`` under :func:`sslib.paths.seg_reports` (with the initialisation).

The loop (sampling, poly lr, resume, NaN stop, checkpoints, DDP, AMP, timings) is
:func:`sslib.training.fit`, and the run's shape around it (the start, the reports, the entry
points) :mod:`sslib.stages._training`, both shared with ``train_cam`` and ``train_irn``. The BECO step's
random draws (which images are mixed, which classes pasted) come from a generator seeded
by (seed, step), so an interrupted run resumes to the weights of an uninterrupted one.

Shell::

    python -m sslib.stages.train_seg --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.stages.train_seg --variant ssc --seed 0
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import paths, training
from ..config import Params
from ..distributed import DistInfo
from ..io import DataError
from . import _training, common

__all__ = ["run", "train_seg", "loss_names", "method_settings", "run_settings", "selecting", "global_batch", "init_record"]


def loss_names(method: str) -> tuple[str, ...]:
    """The loss terms a step of ``method`` logs after the total (the entry's ``loss_names``)."""
    from ..seg_methods import loss_names as names

    return names(method)


def method_settings(params: Params) -> dict[str, Any]:
    """``{"method": name, <its settings>...}``: how the run trains (metrics, fingerprint)."""
    from ..config import chosen, to_dict

    t = params.train_seg
    _, settings = chosen(t, "method")
    return {"method": t.method, **(to_dict(settings) if settings is not None else {})}


def run_settings(params: Params) -> dict[str, Any]:
    """:func:`method_settings` and ``crop``, ``crop_settings`` (the chosen crop's) and
    ``selection`` (``eval_seg.selection``): what a run's metrics record of how it trained."""
    from ..config import chosen, to_dict

    t = params.train_seg
    _, crop = chosen(t, "crop")
    return {**method_settings(params), "crop": t.crop, "crop_settings": to_dict(crop) if crop is not None else {},
            "selection": params.eval_seg.selection}


def selecting(params: Params) -> bool:
    """Whether the run keeps the epoch best on val (``eval_seg.selection: best_on_val``)."""
    return params.eval_seg.selection == "best_on_val"


def global_batch(t, world_size: int) -> int:
    """The whole step's batch: ``batch_size``, or ``batch_size`` per process with ``batch_per_device``."""
    return t.batch_size * world_size if t.batch_per_device else t.batch_size


def _run(params: Params, variant: str, seed: int) -> _training.TrainingRun:
    """Run (``variant``, ``seed``) and its files: ``paths.seg_dir(...)``, ``paths.seg_checkpoint(...)``,
    ``paths.seg_model(...)``, ``paths.seg_reports(...)``."""
    return _training.TrainingRun("train_seg", variant, seed, paths.seg_dir(params, variant, seed),
                                 paths.seg_checkpoint(params, variant, seed), paths.seg_model(params, variant, seed),
                                 paths.seg_reports(variant, seed))


def init_record(params: Params) -> str:
    """What the backbone started from, for the metrics (``imagenet: <file>`` or ``random``)."""
    w = params.train_seg.backbone_weights
    if w == "none":
        return "random"
    return "imagenet: packaged efficientnet-lite0 file" if w == "packaged" else f"imagenet: {Path(w).name}"


def _dataset(params: Params, variant: str, seed: int) -> Dataset:
    """Train images with ``pseudo_label`` and ``confidence`` (crop, crop) int64 maps, augmented."""
    from ..config import chosen
    from ..data import LabelMapDataset, build_dataset, dataset_classes
    from ..data.crops import make_crop
    from ..pseudo_labels import load_confidence_mask, load_pseudo_label

    t = params.train_seg
    k = len(dataset_classes(params.data)) + 1
    _, crop = chosen(t, "crop")
    base = build_dataset(params.data, params.data.train_split, with_mask=False)
    labels = LabelMapDataset(base, "pseudo_label", lambda n: paths.pseudo_label_file(params, variant, seed, n),
                             lambda p, hw: load_pseudo_label(p, hw, k))
    return LabelMapDataset(labels, "confidence", lambda n: paths.confidence_mask_file(params, variant, seed, n),
                           load_confidence_mask, make_crop(t.crop, crop, t.crop_size, t.hflip))


def _check_files(params: Params, variant: str, seed: int, names: list[str]) -> None:
    """Raise DataError naming the first missing pseudo label or confidence mask, before training."""
    for what, file in (("pseudo label", paths.pseudo_label_file), ("confidence mask", paths.confidence_mask_file)):
        missing = [n for n in names if not file(params, variant, seed, n).is_file()]
        if missing:
            raise DataError(f"{file(params, variant, seed, missing[0])}: {what} file missing ({len(missing)} of "
                            f"{len(names)} missing; run the make_pseudo_labels stage for {variant} seed {seed})")


def _fingerprint(params: Params, variant: str, seed: int) -> dict:
    """What a checkpoint must agree with to be resumed (not the output paths or worker count)."""
    meta = paths.pseudo_label_dir(params, variant, seed) / common.META
    train = {**_training.train_settings(params.train_seg), "methods": run_settings(params)}
    if selecting(params):
        train["val"] = {"split": params.data.val_split, "resize": params.eval_seg.resize}
    return {"variant": variant, "seed": seed, "train": train,
            "data": _training.data_settings(params.data), "pseudo_labels": _training.file_md5(meta)}


def _build(params: Params, num_classes: int, device: torch.device, world_size: int):
    """The network(s) and one SGD over them (groups hold ``base_lr`` and ``min_lr``)."""
    from ..models import DeepLabV2
    from ..seg_methods import net_names

    t = params.train_seg
    nets, groups = {}, []
    for name in net_names(t.method):
        net = DeepLabV2(num_classes, t.backbone, weights=t.backbone_weights, output_stride=t.output_stride)
        if t.sync_bn and world_size > 1 and device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = net.to(device, memory_format=torch.channels_last)  # 20 % faster CPU step (docs/measurements.md)
        backbone, head = net.param_groups()
        groups += [{"params": backbone, "lr": t.lr, "base_lr": t.lr, "min_lr": t.min_lr},
                   {"params": head, "lr": t.lr * t.head_lr_mult, "base_lr": t.lr * t.head_lr_mult,
                    "min_lr": t.min_lr}]
        nets[name] = net
    opt = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return nets, opt


def train_seg(params: Params, variant: str, seed: int, *, progress: bool = True,
              stop_after_epochs: int | None = None) -> dict:
    """Train the segmentation network(s) of run (``variant``, ``seed``); resume its checkpoint if any.

    Writes ``paths.seg_checkpoint(...)`` each epoch and ``paths.seg_model(...)`` at the end;
    rank 0 also writes ``paths.seg_reports(...)/losses.csv`` and ``metrics.json``.

    Returns:
        The metrics dict, or ``{"stopped_at_epoch": e}`` when ``stop_after_epochs`` ended it.

    Raises:
        DataError: a pseudo label or confidence mask is missing, unreadable or mis-sized (named).
        WeightsError: the backbone's ImageNet weights file is missing or does not fit (named).
        NonFiniteLossError: a loss became NaN/inf (with ``train_seg.stop_on_nonfinite``).
    """
    from dataclasses import replace

    from .. import distributed
    from ..config import chosen
    from ..data import dataset_classes

    t, job = params.train_seg, _run(params, variant, seed)
    entry, method = chosen(t, "method")
    batch = global_batch(t, distributed.init().world_size)
    dist = job.start(batch, check=lambda dist: _check_batch_multiple(t, batch, dist))
    k = len(dataset_classes(params.data)) + 1
    dataset = _dataset(params, variant, seed)
    _check_files(params, variant, seed, dataset.names)
    fingerprint = _fingerprint(params, variant, seed)
    torch.manual_seed(seed)
    nets, opt = _build(params, k, dist.device, dist.world_size)
    names = loss_names(t.method)
    settings = job.fit_settings(t, fingerprint, names, progress=progress, stop_after_epochs=stop_after_epochs)
    settings = replace(settings, batch_size=batch)
    scorer = None
    if selecting(params):
        settings = replace(settings, epoch_metrics=("val_miou",))
        scorer = _BestOnVal(params, list(nets.values()), dist, paths.seg_best(params, variant, seed), k)
    result = training.fit(settings, dataset, nets, {"opt": opt}, entry.factory(method, seed), after_epoch=scorer)
    model = {"backbone": t.backbone, "output_stride": t.output_stride, "num_classes": k}
    saved = {"model": model, "method": t.method, "variant": variant, "seed": seed}
    about = {**model, "init": init_record(params), "batch": batch}
    if scorer is not None and result.finished:
        about["selected"] = {"split": params.data.val_split, **scorer.selected(result.history)}
    metrics = job.finish(result, dist, t.epochs, names, lambda: _model_file(nets, saved, scorer, result.history),
                         settings=run_settings(params), about=about)
    if scorer is not None and result.finished and dist.is_main:
        scorer.path.unlink(missing_ok=True)  # model.pt holds the selected networks now
    return metrics


def _model_file(nets: dict, saved: dict, scorer: "_BestOnVal | None", history: list[dict]) -> dict:
    """What ``model.pt`` holds: the networks (with selection on val: the selected epoch's as
    ``nets``, the last epoch's as ``last_nets``, and ``selection``) and ``saved``."""
    last = [training.unwrap(n).state_dict() for n in nets.values()]
    if scorer is None:
        return {"nets": last, **saved}
    kept = _read_best(scorer.path)
    return {"nets": kept["nets"], **saved, "last_nets": last,
            "selection": {"rule": "best_on_val", "epoch": kept["epoch"], "val_miou": [r["val_miou"] for r in history]}}


def _best_epoch(scores: list[float]) -> int:
    """The 1-based epoch of the best score (the first of equal ones; NaN never best)."""
    best, epoch = -math.inf, 1
    for i, x in enumerate(scores):
        if x > best:
            best, epoch = x, i + 1
    return epoch


def _read_best(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: the networks of the best val epoch are missing (deleted during the run?); "
                        "train the run again") from None


class _BestOnVal:
    """After each epoch: the val mIoU of the networks' averaged logits (SSC's ``val_step``:
    scale 1.0 after ``eval_seg.resize``, no flip, no CRF), this process's share of the
    images (``rank::world``, confusions summed over the processes); the networks are saved
    to ``path`` when the score beats every earlier epoch's."""

    def __init__(self, params: Params, nets: list[torch.nn.Module], dist: DistInfo, path: Path, k: int):
        from ..data import build_dataset

        self.params, self.nets, self.dist, self.path, self.k = params, nets, dist, path, k
        self.data = build_dataset(params.data, params.data.val_split)
        self.mine = range(dist.rank, len(self.data), dist.world_size)

    @staticmethod
    def selected(history: list[dict]) -> dict:
        """``{"rule", "epoch", "val_miou"}`` of a finished run's history."""
        scores = [row["val_miou"] for row in history]
        return {"rule": "best_on_val", "epoch": _best_epoch(scores), "val_miou": scores}

    def __call__(self, epoch: int, history: list[dict]) -> dict[str, float]:
        miou = self.score()
        if _best_epoch([*(row["val_miou"] for row in history), miou]) == epoch and self.dist.is_main:
            nets = [training.unwrap(n) for n in self.nets]
            training.save({"epoch": epoch, "val_miou": miou, "nets": [n.state_dict() for n in nets]}, self.path)
        return {"val_miou": miou}

    def score(self) -> float:
        """The val mIoU of the networks as they are now (every process gets the same number)."""
        from ..inference import confusion, image_logits
        from ..metrics import scores

        nets, device = [training.unwrap(n) for n in self.nets], self.dist.device
        for n in nets:
            n.eval()
        conf = torch.zeros(self.k, self.k, dtype=torch.int64, device=device)
        for i in self.mine:
            s = self.data[i]
            if s.get("mask") is None:
                raise DataError(f"{self.params.data.val_split}: image {s['name']} has no ground-truth mask "
                                "(eval_seg.selection: best_on_val scores val after every epoch)")
            logits = image_logits(lambda x: sum(n(x) for n in nets) / len(nets), s["image"], device,
                                  resize=self.params.eval_seg.resize)
            gt = torch.as_tensor(np.asarray(s["mask"]), device=device)
            conf += confusion(logits.argmax(0), gt, self.k)
        for n in nets:
            n.train()
        if self.dist.world_size > 1:
            import torch.distributed as tdist

            tdist.all_reduce(conf)
        return float(scores(conf.cpu().numpy())["miou"])


def _check_batch_multiple(t, batch: int, dist: DistInfo) -> None:
    """Each process's share of the batch must be a multiple of the method's ``batch_multiple``
    (BECO mixes pairs of images)."""
    from ..config import ConfigError, chosen

    multiple = chosen(t, "method")[0].get("batch_multiple", 1)
    if (batch // dist.world_size) % multiple:
        raise ConfigError(f"train_seg.batch_size: the segmentation method {t.method!r} needs each process's batch "
                          f"to be a multiple of {multiple}; {batch} over {dist.world_size} processes is not")


def run(params: Params, variant: str, seed: int, progress: bool = True) -> dict:
    """Train one run in this process, or under ``torchrun`` when ``runs.devices > 1``."""
    return _training.run("train_seg", train_seg, paths.seg_reports, params, variant, seed, progress)


def main(argv: list[str] | None = None) -> int:
    return _training.main("train_seg", __doc__, train_seg, argv)


if __name__ == "__main__":
    sys.exit(main())
