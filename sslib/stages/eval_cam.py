"""Make and evaluate the CAMs of one trained variant and seed (the ``eval_cam`` stage).

1. load the run's ``model.pt`` into a :class:`~sslib.models.CAMNet` (eval mode: DRS
   stays in layer4, the training-only DRS after stage 2 is off);
2. for every split in ``eval_cam.splits``: multi-scale flipped CAMs of every image,
   stored under :func:`sslib.paths.cam_dir` as ``<split>/<name>.npz`` (:mod:`sslib.cam`);
   with ``runs.devices > 1`` each torchrun process makes its share (images rank::world);
3. rank 0 sweeps the background threshold over each split (:mod:`sslib.evaluate`) and
   writes :func:`sslib.paths.eval_reports` ``metrics.json`` (DVC metrics: mIoU at the
   best and at the fixed threshold, precision, recall, over-activation, per class) and
   ``sweep.csv`` (DVC plots: mIoU against threshold per split), only when every split
   is done; the CAM time (machine-dependent) goes to ``reports/timings/eval_cam/`` instead.

Shell::

    python -m sslib.stages.eval_cam --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.stages.eval_cam --variant ssc --seed 0
"""
from __future__ import annotations

import sys
import time

import torch

from .. import distributed, paths
from ..config import Params, thresholds_from, variant_config
from ..io import remove_stale_temps, write_json
from . import common

__all__ = ["run", "eval_cam", "splits", "load_run"]


def splits(params: Params) -> list[str]:
    """``eval_cam.splits`` as split names (``train`` / ``val`` -> ``data.train_split`` / ``data.val_split``)."""
    from ..data import split_name

    return [split_name(params.data, key) for key in params.eval_cam.splits]


def load_run(params: Params, variant: str, seed: int, device: torch.device | str = "cpu"):
    """``(net, decoder, classes)`` of one trained run (see :func:`sslib.models.load_trained`)."""
    from ..models import load_trained

    return load_trained(paths.model(params, variant, seed), variant_config(params, variant).drs_delta, device)


def _make_cams(params: Params, net, out, dist, progress: bool) -> float:
    """Every split's CAMs (this rank's share); returns the seconds it took."""
    from ..cam import make_cams
    from ..data import build_dataset
    from ..data.transforms import EvalTransform

    c, t0 = params.eval_cam, time.perf_counter()
    for split in splits(params):
        ds = build_dataset(params.data, split, transform=EvalTransform(), with_mask=False)
        make_cams(net, ds, out, split, scales=c.scales, flip=c.flip, batch_size=c.batch_size,
                  device=dist.device, rank=dist.rank, world=dist.world_size, progress=progress and dist.is_main)
    return time.perf_counter() - t0


def eval_cam(params: Params, variant: str, seed: int, *, progress: bool = True) -> dict:
    """Make the CAMs of every split in ``eval_cam.splits`` and evaluate them (see the module doc).

    Returns:
        The metrics dict written to metrics.json (on rank 0; other ranks return {}).
    """
    from ..data import build_dataset
    from ..evaluate import evaluate_split, summarize_sweep, write_sweep_csv

    dist = distributed.init()
    net, _, classes = load_run(params, variant, seed, dist.device)
    out = paths.cam_dir(params, variant, seed)
    if dist.is_main:
        remove_stale_temps(out, recursive=True)  # what a killed run left
    distributed.barrier()  # no rank writes before the clean-up
    cam_time = _make_cams(params, net, out, dist, progress)
    distributed.barrier()
    if not dist.is_main:
        return {}

    ths = thresholds_from(*params.eval_cam.thresholds)
    names = ["background", *classes]
    summaries = {}
    for split in splits(params):
        conf = evaluate_split(out, build_dataset(params.data, split), split, ths, progress=progress)
        summaries[split] = summarize_sweep(conf, ths, names, params.eval_cam.fixed_threshold)
    rep = paths.eval_reports(variant, seed)
    write_sweep_csv(rep / paths.SWEEP, summaries)
    write_json(paths.timings("eval_cam", paths.run_name(variant, seed)),
               {"cam_time_s": round(cam_time, 2), "splits": splits(params)})
    metrics = {"variant": variant, "seed": seed,
               **{split: {k: summaries[split][k] for k in ("best", "fixed")} for split in splits(params)}}
    write_json(rep / paths.METRICS, metrics)
    return metrics


def run(params: Params, variant: str, seed: int, progress: bool = True) -> dict:
    """:func:`eval_cam` in this process, or under ``torchrun`` when ``runs.devices > 1``."""
    return distributed.run_here_or_torchrun("eval_cam", params, variant, seed,
                                            lambda: eval_cam(params, variant, seed, progress=progress),
                                            paths.eval_reports(variant, seed) / paths.METRICS)


def main(argv: list[str] | None = None) -> int:
    def call(params, args):
        metrics = eval_cam(params, args.variant, args.seed, progress=distributed.is_rank0())
        return {k: metrics[k] for k in ("variant", "seed")} if metrics else None

    return common.cli("eval_cam", __doc__, call, argv, common.add_run_args)


if __name__ == "__main__":
    sys.exit(main())
