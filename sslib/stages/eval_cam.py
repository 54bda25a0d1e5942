"""Make and evaluate the CAMs of one trained variant and seed (the ``eval_cam`` stage).

1. load the run's ``model.pt`` into a :class:`~sslib.models.CAMNet` (eval mode: DRS
   stays in layer4, the training-only DRS after stage 2 is off);
2. for every split in ``eval_cam.splits``: multi-scale flipped CAMs of every image,
   stored under :func:`sslib.paths.cam_dir` as ``<split>/<name>.npz`` (:mod:`sslib.cam`);
   with ``runs.devices > 1`` each torchrun process makes its share (images rank::world);
3. rank 0 sweeps the background threshold over each split (:mod:`sslib.evaluate`) and
   writes :func:`sslib.paths.eval_reports` ``metrics.json`` (DVC metrics, per split:
   ``best`` and ``fixed``, the scores at the best and at the fixed threshold: mIoU,
   precision, recall, ``background_fp_rate``, per class where it applies; and
   ``cam_contrast``, the mean CAM on the class's own pixels and on ground-truth
   background; for a run with a decoder, the val split's ``reconstruction``: mean PSNR
   and SSIM of the decoder's image against the input) and ``sweep.csv`` (DVC plots: mIoU
   against threshold per split), only
   when every split is done; the CAM time (machine-dependent) goes to
   ``reports/timings/eval_cam/`` instead.

Shell::

    python -m sslib.stages.eval_cam --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.stages.eval_cam --variant ssc --seed 0
"""
from __future__ import annotations

import sys
import time

import torch

from .. import distributed, paths
from ..config import Params, thresholds_from
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

    return load_trained(paths.model(params, variant, seed), device)


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


def _evaluate(params: Params, out, names: list[str], progress: bool) -> dict[str, dict]:
    """Per split: :func:`sslib.evaluate.summarize_sweep` of the stored CAMs under ``out``,
    with ``cam_contrast`` (:func:`sslib.evaluate.contrast_summary`) added, both from one pass
    over the CAM files (:func:`sslib.evaluate.sweep_and_contrast`)."""
    from ..data import build_dataset
    from ..evaluate import summarize_sweep, sweep_and_contrast

    ths = thresholds_from(*params.eval_cam.thresholds)
    summaries = {}
    for split in splits(params):
        conf, contrast = sweep_and_contrast(out, build_dataset(params.data, split), split, ths, progress=progress)
        summaries[split] = {**summarize_sweep(conf, ths, names, params.eval_cam.fixed_threshold),
                            "cam_contrast": contrast}
    return summaries


def _reconstruction(params: Params, net, decoder, device, progress: bool) -> dict[str, dict]:
    """``{val split: {"reconstruction": {"psnr", "ssim"}}}`` for a run with a decoder, else {}
    (:func:`sslib.evaluate.reconstruction_quality`)."""
    from ..data import build_dataset
    from ..data.transforms import EvalTransform
    from ..evaluate import reconstruction_quality

    split = params.data.val_split
    if decoder is None or split not in splits(params):
        return {}
    ds = build_dataset(params.data, split, transform=EvalTransform(), with_mask=False)
    return {split: {"reconstruction": reconstruction_quality(net, decoder, ds, device, progress)}}


def eval_cam(params: Params, variant: str, seed: int, *, progress: bool = True) -> dict:
    """Make the CAMs of every split in ``eval_cam.splits`` and evaluate them (see the module doc).

    Returns:
        The metrics dict written to metrics.json (on rank 0; other ranks return {}).
    """
    from ..evaluate import write_sweep_csv

    dist = distributed.init()
    net, decoder, classes = load_run(params, variant, seed, dist.device)
    out = paths.cam_dir(params, variant, seed)
    if dist.is_main:
        remove_stale_temps(out, recursive=True)  # what a killed run left
    distributed.barrier()  # no rank writes before the clean-up
    cam_time = _make_cams(params, net, out, dist, progress)
    distributed.barrier()
    if not dist.is_main:
        return {}

    summaries = _evaluate(params, out, ["background", *classes], progress)
    rep = paths.eval_reports(variant, seed)
    write_sweep_csv(rep / paths.SWEEP, summaries)
    write_json(paths.timings("eval_cam", paths.run_name(variant, seed)),
               {"cam_time_s": round(cam_time, 2), "splits": splits(params)})
    metrics = {"variant": variant, "seed": seed,
               **{split: {k: summaries[split][k] for k in ("best", "fixed", "cam_contrast")}
                  for split in splits(params)}}
    for split, extra in _reconstruction(params, net, decoder, dist.device, progress).items():
        metrics[split].update(extra)
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
