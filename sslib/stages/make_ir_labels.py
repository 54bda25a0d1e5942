"""Make the IR labels of one downstream run (the ``make_ir_labels`` stage).

The first pseudo-label stage (IRN's ``cam_to_ir_label``, which SSC keeps), run for every
variant and seed of ``runs.downstream``:

1. for every image of ``data.train_split``: its CAM file from :func:`sslib.paths.cam_dir`
   (the ``eval_cam`` stage's ``<split>/<name>.npz``), whose classes must be the image's
   label (else :class:`sslib.io.DataError` naming the file), and the IR label of
   :func:`sslib.pseudo_labels.ir_label` with ``make_ir_labels.fg_threshold`` /
   ``bg_threshold`` and the dense CRF of ``make_ir_labels.crf``, written atomically to
   :func:`label_file` (``<make_ir_labels.out_dir>/<variant>/seed<seed>/<name>.png``, an
   8-bit VOC-palette PNG: class ids, 0 background, 255 ignored);
2. the quality of the labels against the ground-truth masks (images without a mask are
   skipped): ``precision`` of the confident (non-255) pixels, their ``coverage`` of the
   valid ground truth, and ``confident_share``, the share of all label pixels that are
   confident; written to :func:`sslib.paths.ir_label_reports` ``metrics.json`` (DVC
   metrics) only when every label is made. The time (machine-dependent) goes to
   ``reports/timings/make_ir_labels/``.

**Resumable.** A label that exists and reads back at its image's size is kept, so a
killed run continues where it stopped (stale temporary files are removed first), also
under ``dvc repro`` (the folder is a ``persist`` output). The settings the labels were made
with, and a stamp of the CAM files (names, sizes, modification times), are kept in
``meta.json`` beside them; when they differ from the current ones nothing is kept.

**CPU processes.** The dense CRF runs on the CPU, over ``make_ir_labels.workers``
processes (0: one per core); the stage does not shard over DDP ranks (``runs.devices`` is
not read).

Shell::

    python -m sslib.stages.make_ir_labels --variant ssc --seed 0
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import paths
from ..config import Params, to_dict
from ..io import DataError, write_json
from ..pseudo_labels import files_stamp
from . import common

__all__ = ["run", "make_ir_labels", "label_file", "crf_params", "label_image", "quality"]

#: the settings file kept beside the labels
META = common.META


def label_file(params: Params, variant: str, seed: int, name: str) -> Path:
    """``<make_ir_labels.out_dir>/<variant>/seed<seed>/<name>.png``: one image's IR label."""
    return paths.ir_label_dir(params, variant, seed) / f"{name}.png"


def crf_params(params: Params):
    """``make_ir_labels.crf`` as :class:`sslib.crf.CRFParams`."""
    from ..crf import CRFParams

    c = params.make_ir_labels.crf
    return CRFParams(t=c.iterations, gt_prob=c.gt_prob, gauss_sxy=c.gauss_sxy, gauss_compat=c.gauss_compat,
                     bilateral_sxy=c.bilateral_sxy, bilateral_srgb=c.bilateral_srgb,
                     bilateral_compat=c.bilateral_compat)


def label_image(params: Params, sample: dict, cam_file: Path, crf: Callable[..., np.ndarray] | None = None) -> np.ndarray:
    """The (H, W) uint8 IR label of one data-set sample (``image`` uint8, ``label``) from its CAM file.

    Raises:
        DataError naming ``cam_file``: missing, unreadable, of another size, or its classes
        are not the image's label.
    """
    from ..cam import load_cam
    from ..crf import crf_label
    from ..pseudo_labels import ir_label

    image = np.asarray(sample["image"])
    c = load_cam(cam_file, image.shape[:2], sample["label"])
    cfg = params.make_ir_labels
    return ir_label(image, c["high_res"], c["keys"], fg_threshold=cfg.fg_threshold, bg_threshold=cfg.bg_threshold,
                    crf=crf or crf_label, crf_params=crf_params(params))


def _settings(params: Params, variant: str, seed: int) -> dict[str, Any]:
    """What the labels depend on besides the CAMs: kept in ``meta.json``."""
    cfg = {k: v for k, v in to_dict(params.make_ir_labels).items() if k not in ("out_dir", "workers")}
    cams = paths.cam_dir(params, variant, seed)
    return {"variant": variant, "seed": seed, "split": params.data.train_split, "cam_dir": str(cams),
            "cams": files_stamp(cams / params.data.train_split, "*.npz"), **cfg}


def _prepare_folder(params: Params, variant: str, seed: int) -> bool:
    """Remove stale temporary files and write ``meta.json``; whether existing labels may be kept."""
    return common.prepare_folder(paths.ir_label_dir(params, variant, seed), _settings(params, variant, seed),
                                 ["*.png"])


def _done(path: Path, size: tuple[int, int]) -> bool:
    """Whether ``path`` holds a readable IR label of ``size``."""
    from ..pseudo_labels import load_ir_label

    if not path.is_file():
        return False
    try:
        load_ir_label(path, size)
    except DataError:
        return False
    return True


def _label_one(params: Params, variant: str, seed: int, i: int, keep: bool,
               crf: Callable[..., np.ndarray] | None) -> str:
    """Make (or keep) the IR label of train image ``i``; returns ``"made"`` or ``"kept"``."""
    from ..cam import cam_path
    from ..pseudo_labels import save_ir_label

    split = params.data.train_split
    s = _train_set(params.data)[i]
    target = label_file(params, variant, seed, s["name"])
    if keep and _done(target, s["image"].shape[:2]):
        return "kept"
    save_ir_label(target, label_image(params, s, cam_path(paths.cam_dir(params, variant, seed), split, s["name"]), crf))
    return "made"


def _label_task(task: tuple) -> str:
    """:func:`_label_one` of a pool worker (the real dense CRF)."""
    return _label_one(*task, None)


_TRAIN_SETS: dict[str, Any] = {}


def _train_set(data_cfg):
    """The train split without masks (one per process and data config: pool workers build
    theirs once)."""
    from ..data import build_dataset

    key = repr(data_cfg)
    if key not in _TRAIN_SETS:
        _TRAIN_SETS.clear()
        _TRAIN_SETS[key] = build_dataset(data_cfg, data_cfg.train_split, with_mask=False)
    return _TRAIN_SETS[key]


def _make_labels(params: Params, variant: str, seed: int, keep: bool,
                 crf: Callable[..., np.ndarray] | None, progress: bool) -> dict[str, int]:
    """Every train image's IR label; returns ``{"made", "kept"}`` counts.

    With the real CRF (``crf`` None) and ``make_ir_labels.workers`` other than 1, the images
    are spread over a pool of processes (0: one per core); a stand-in CRF runs here.
    """
    from ..pool import cpu_workers, map_tasks

    n = len(_train_set(params.data))
    workers = min(cpu_workers(params.make_ir_labels.workers), n) if crf is None else 1
    tasks = [(params, variant, seed, i, keep) for i in range(n)]
    fn = _label_task if crf is None else (lambda task: _label_one(*task, crf))
    # small chunks: the last one keeps a single worker busy while the others idle
    results = map_tasks(fn, tasks, workers, chunksize=max(1, min(4, n // (4 * max(workers, 1)))), ordered=False,
                        spawn=True, desc=f"IR labels {params.data.train_split}", progress=progress)
    counts = {"made": 0, "kept": 0}
    for r in results:
        counts[r] += 1
    return counts


def quality(params: Params, variant: str, seed: int, progress: bool = False) -> dict[str, Any]:
    """The stored labels against the ground truth (see the module doc); ``images_with_mask``
    counts the images that had one."""
    from tqdm.auto import tqdm

    from ..data import build_dataset
    from ..formats import IGNORE_INDEX
    from ..pseudo_labels import ir_label_counts, ir_label_scores, load_ir_label

    ds = build_dataset(params.data, params.data.train_split)
    total, pixels, confident, with_mask = {"valid": 0, "confident": 0, "correct": 0}, 0, 0, 0
    for i in tqdm(range(len(ds)), desc="IR label quality", unit="img", disable=not progress):
        s = ds[i]
        ir = load_ir_label(label_file(params, variant, seed, s["name"]), s["image"].shape[:2])
        pixels, confident = pixels + ir.size, confident + int((ir != IGNORE_INDEX).sum())
        if "mask" in s:
            with_mask += 1
            for k, v in ir_label_counts(ir, np.asarray(s["mask"])).items():
                total[k] += v
    return {**ir_label_scores(total), "confident_share": confident / pixels if pixels else float("nan"),
            "images": len(ds), "images_with_mask": with_mask}


def make_ir_labels(params: Params, variant: str, seed: int, *, progress: bool = True,
                   crf: Callable[..., np.ndarray] | None = None) -> dict:
    """Make one run's IR labels and measure them (see the module doc).

    Args:
        crf: a stand-in for :func:`sslib.crf.crf_label` (tests); by default the dense CRF,
            which needs pydensecrf (checked before the first image).

    Returns:
        The metrics dict written to metrics.json.
    """
    if crf is None:
        from ..crf import INSTALL_HINT, crf_available

        if not crf_available():
            raise ImportError(f"make_ir_labels needs the dense CRF module pydensecrf: {INSTALL_HINT}")
    t0 = time.perf_counter()
    keep = _prepare_folder(params, variant, seed)
    counts = _make_labels(params, variant, seed, keep, crf, progress)
    write_json(paths.timings("make_ir_labels", paths.run_name(variant, seed)),
               {"time_s": round(time.perf_counter() - t0, 2), **counts})
    metrics = {"variant": variant, "seed": seed, params.data.train_split: quality(params, variant, seed, progress)}
    write_json(paths.ir_label_reports(variant, seed) / paths.METRICS, metrics)
    return metrics


def run(params: Params, variant: str, seed: int, progress: bool = True,
        crf: Callable[..., np.ndarray] | None = None) -> dict:
    """:func:`make_ir_labels` in this process (the stage does not use several devices)."""
    return make_ir_labels(params, variant, seed, progress=progress, crf=crf)


def main(argv: list[str] | None = None) -> int:
    def call(params, args):
        metrics = make_ir_labels(params, args.variant, args.seed)
        return {"variant": args.variant, "seed": args.seed, **metrics[params.data.train_split]}

    return common.cli("make_ir_labels", __doc__, call, argv, common.add_run_args, errors=(ImportError,))


if __name__ == "__main__":
    sys.exit(main())
