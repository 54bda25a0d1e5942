"""Make and evaluate the CAMs of one trained variant and seed (the ``eval_cam`` stage).

1. load ``<train.out_dir>/<variant>/seed<seed>/model.pt`` into a :class:`~sslib.models.CAMNet`
   (eval mode: DRS stays in layer4, the training-only DRS after stage 2 is off);
2. for every split in ``cam.splits``: multi-scale flipped CAMs of every image, stored as
   ``<cam.out_dir>/<variant>/seed<seed>/<split>/<name>.npz`` (:mod:`sslib.cam`); with
   ``train.devices > 1`` each torchrun process makes its share (images rank::world);
3. rank 0 sweeps the background threshold over each split (:mod:`sslib.evaluate`) and
   writes ``reports/eval_cam/<variant>/seed<seed>/metrics.json`` (DVC metrics: mIoU at
   the best and at the fixed threshold, precision, recall, over-activation, per class)
   and ``sweep.csv`` (DVC plots: mIoU against threshold per split), only when every
   split is done; the CAM time (machine-dependent) goes to
   ``reports/timings/eval_cam/<variant>-seed<seed>.json`` instead.

Shell::

    python -m sslib.eval_cam --variant ssc --seed 0
    torchrun --nproc-per-node 4 -m sslib.eval_cam --variant ssc --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from . import distributed, paths
from .config import ConfigError, Params, load, thresholds_from, variant_config
from .io import DataError, remove_stale_temps, write_json

__all__ = ["run", "eval_cam", "eval_splits", "cam_dir", "eval_report_dir", "load_trained", "METRICS", "SWEEP"]

METRICS = "metrics.json"
SWEEP = "sweep.csv"


def cam_dir(params: Params, variant: str, seed: int) -> Path:
    """``<cam.out_dir>/<variant>/seed<seed>``: the CAM files of one run (a folder per split)."""
    return Path(params.cam.out_dir) / variant / f"seed{seed}"


def eval_splits(params: Params) -> list[str]:
    """``cam.splits`` with ``train`` / ``val`` resolved to ``data.train_split`` / ``data.val_split``."""
    return [params.data.train_split if s == "train" else params.data.val_split if s == "val" else s
            for s in params.cam.splits]


def eval_report_dir(variant: str, seed: int) -> Path:
    """``reports/eval_cam/<variant>/seed<seed>``: metrics.json and sweep.csv."""
    return paths.reports("eval_cam") / "eval_cam" / variant / f"seed{seed}"


def load_trained(params: Params, variant: str, seed: int, device: torch.device | str = "cpu"):
    """The trained CAM network (eval mode) and decoder (or None) of one run, and its classes.

    Returns:
        ``(net, decoder, classes)``. Raises DataError naming model.pt if it is missing.
    """
    from .models import CAMNet, Decoder
    from .train_cam import MODEL, run_dir

    path = run_dir(params.train, variant, seed) / MODEL
    if not path.is_file():
        raise DataError(f"{path}: no trained model (run `dvc repro train_cam@{variant}-{seed}`)")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    v = variant_config(params, variant)
    classes = list(ck["classes"])
    # the stored weights replace the init: no backbone file is needed here
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = CAMNet(len(classes), drs_delta=v.drs_delta, weights="none",
                     frozen_stages=0, bn_eval=False)
    net.load_state_dict(ck["net"])
    net.to(device).eval()
    decoder = None
    if ck.get("decoder") is not None:
        decoder = Decoder(len(classes))
        decoder.load_state_dict(ck["decoder"])
        decoder.to(device).eval()
    return net, decoder, classes


def eval_cam(params: Params, variant: str, seed: int, *, progress: bool = True) -> dict:
    """Make the CAMs of every split in ``cam.splits`` and evaluate them (see the module doc).

    Returns:
        The metrics dict written to metrics.json (on rank 0; other ranks return {}).
    """
    from .cam import make_cams
    from .data import build_dataset
    from .data.transforms import EvalTransform
    from .evaluate import evaluate_split, summarize_sweep, write_metrics, write_sweep_csv

    dist = distributed.init()
    net, _, classes = load_trained(params, variant, seed, dist.device)
    out = cam_dir(params, variant, seed)
    splits = eval_splits(params)
    if dist.is_main:
        remove_stale_temps(out, recursive=True)  # what a killed run left
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()  # no rank writes before the clean-up
    t0 = time.perf_counter()
    for split in splits:
        ds = build_dataset(params.data, split, transform=EvalTransform(), with_mask=False)
        make_cams(net, ds, out, split, scales=params.cam.scales, flip=params.cam.flip,
                  batch_size=params.cam.batch_size,
                  device=dist.device, rank=dist.rank, world=dist.world_size,
                  progress=progress and dist.is_main)
    cam_time = time.perf_counter() - t0
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
    if not dist.is_main:
        return {}

    ths = thresholds_from(*params.evaluate.thresholds)
    names = ["background", *classes]
    summaries = {}
    for split in splits:
        conf = evaluate_split(out, build_dataset(params.data, split), split, ths, progress=progress)
        summaries[split] = summarize_sweep(conf, ths, names, params.evaluate.fixed_threshold)
    rep = eval_report_dir(variant, seed)
    write_sweep_csv(rep / SWEEP, summaries)
    write_json(paths.timings_path("eval_cam", f"{variant}-seed{seed}"),
               {"cam_time_s": round(cam_time, 2), "splits": splits})
    metrics = {"variant": variant, "seed": seed,
               **{split: {k: summaries[split][k] for k in ("best", "fixed")} for split in splits}}
    write_metrics(rep / METRICS, metrics)
    return metrics


def run(params: Params, variant: str, seed: int, params_path: str | Path = "params.yaml",
        progress: bool = True) -> dict:
    """:func:`eval_cam` in this process, or under ``torchrun`` when ``train.devices > 1``."""
    if params.train.devices > 1:
        distributed.launch_with_params("sslib.eval_cam", params, ["--variant", variant, "--seed", seed],
                                       nproc_per_node=params.train.devices)
        return json.loads((eval_report_dir(variant, seed) / METRICS).read_text())
    return eval_cam(params, variant, seed, progress=progress)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sslib.eval_cam", description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        metrics = eval_cam(load(paths.enter_root(args.params)), args.variant, args.seed,
                           progress=os.environ.get("RANK", "0") == "0")
    except (ConfigError, DataError) as e:
        print(f"eval_cam: error: {e}", file=sys.stderr)
        return 1
    if metrics:
        print(json.dumps({k: metrics[k] for k in ("variant", "seed")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
