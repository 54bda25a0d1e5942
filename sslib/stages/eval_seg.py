"""Segment the val split with one downstream run's network(s) and score it (the ``eval_seg`` stage).

One run, top to bottom (BECO's ``test.py`` with its multi-scale ``test_step``):

1. model: the run's :func:`sslib.models.load_seg_nets`, of which the networks the
   segmentation method declares (``inference_nets``, :mod:`sslib.seg_methods`; all of
   them: one for ``ce``, BECO's two) have their logits averaged;
2. for every val image (first resized to ``eval_seg.resize`` squared when it is not 0, SSC's
   512): the logits at ``eval_seg.scales`` (and flipped with ``flip``), each resized to the
   image and fused pixel-wise (``fusion``: max, BECO's, or mean;
   :func:`sslib.inference.multiscale_logits`), brought back to the image's own size; the
   prediction is their argmax;
3. with ``crf``: the dense CRF on the fused softmax (BECO's settings,
   :func:`sslib.crf.crf_prob`) on the real image, or with ``crf_image: beco`` on the
   official code's uint8-wrapped mean-subtracted image (:func:`sslib.crf.beco_crf_image`);
   the CRF runs in ``workers`` processes while the network goes on (a bounded queue);
4. the prediction (after the CRF, if on) as a VOC-palette PNG per image under
   :func:`sslib.paths.seg_prediction_dir` (the format of VOC's evaluation server);
5. ``metrics.json`` under :func:`sslib.paths.seg_eval_reports`: mIoU, per-class IoU,
   precision and recall against the ground truth, with and without the CRF.

With ``eval_seg.selection: best_on_val`` (SSC's) the run's model is the epoch whose val
mIoU was best during training (``train_seg`` scored val after every epoch): the model was
selected on the split it is scored on, and the metrics say so (``selection``). The last
epoch's networks are scored too, with the same protocol (``last``: mIoU with and without the
CRF); the predictions written are the selected model's.

The predictions are remade on every run (a settings change or a new model changes them all).

Shell::

    python -m sslib.stages.eval_seg --variant ssc --seed 0
"""
from __future__ import annotations

import sys
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from .. import paths
from ..config import Params, to_dict
from ..io import DataError, remove_stale_temps, write_json
from ..formats import save_png, voc_palette
from ..pool import cpu_workers, executor
from . import common

__all__ = ["run", "eval_seg", "segment", "inference_nets"]


def inference_nets(params: Params, nets: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """The trained networks whose logits are averaged: the method's ``inference_nets`` (None: all)."""
    from ..seg_methods import inference_nets as which

    return which(params.train_seg.method, nets)


def _crf_image(image: np.ndarray, which: str) -> np.ndarray:
    from ..crf import beco_crf_image

    return image if which == "real" else beco_crf_image(image)


def _crf_task(task: tuple[np.ndarray, np.ndarray, str, dict]) -> np.ndarray:
    """(image uint8 (H, W, 3), prob (K, H, W) float32, crf_image, settings) -> (H, W) uint8 labels."""
    from ..crf import crf_prob

    image, prob, which, s = task
    q = crf_prob(_crf_image(image, which), prob, **s)
    return np.argmax(q, axis=0).astype(np.uint8)


def _crf_kwargs(params: Params) -> dict[str, Any]:
    c = params.eval_seg.crf_settings
    return {"t": c.iterations, "gauss_sxy": c.gauss_sxy, "gauss_compat": c.gauss_compat,
            "bilateral_sxy": c.bilateral_sxy, "bilateral_srgb": c.bilateral_srgb,
            "bilateral_compat": c.bilateral_compat}


def segment(params: Params, nets: list[torch.nn.Module], sample: dict, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """One image (a sample with ``image`` (H, W, 3) uint8) -> (prediction (H, W) uint8, softmax (K, H, W) float32)."""
    from ..inference import image_logits

    cfg = params.eval_seg
    logits = image_logits(lambda x: sum(n(x) for n in nets) / len(nets), sample["image"], device,
                          scales=cfg.scales, fusion=cfg.fusion, flip=cfg.flip, resize=cfg.resize)
    prob = logits.softmax(0)
    return prob.argmax(0).to(torch.uint8).cpu().numpy(), prob.cpu().numpy()


def _summary(r: dict, classes: tuple[str, ...]) -> dict:
    """The scalars of :func:`sslib.metrics.scores` and a per-class {iou, precision, recall}."""
    keep = ("miou", "mean_precision", "mean_recall", "pixel_accuracy", "background_fp_rate")
    per_class = {n: {"iou": r["iou"][j], "precision": r["precision"][j], "recall": r["recall"][j]}
                 for j, n in enumerate(classes)}
    return {**{key: r[key] for key in keep}, "per_class": per_class}


def _predict_all(params: Params, nets: list[torch.nn.Module], ds, device: torch.device, out, k: int,
                 progress: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Predict, CRF (in a process pool, a bounded queue) and save every image of ``ds`` under
    ``out`` (None: save nothing); return the (K, K) confusions without and with the CRF
    (zeros when it is off)."""
    from tqdm.auto import tqdm

    from ..metrics import confusion_matrix

    cfg = params.eval_seg
    conf_raw, conf_crf = np.zeros((k, k), np.int64), np.zeros((k, k), np.int64)
    workers = cpu_workers(cfg.workers)
    pool = executor(workers, spawn=True) if cfg.crf and workers > 1 else None
    pending: deque[tuple[dict, Future | np.ndarray]] = deque()
    kw, palette = _crf_kwargs(params), voc_palette()

    def finish(sample: dict, result: Future | np.ndarray) -> None:
        pred = result.result() if isinstance(result, Future) else result
        if out is not None:
            save_png(out / f"{sample['name']}.png", pred, palette=palette)
        if cfg.crf:
            conf_crf[...] += confusion_matrix(pred, np.asarray(sample["mask"]), k)

    try:
        for i in tqdm(range(len(ds)), desc=desc, unit="img", disable=not progress):
            s = ds[i]
            if s.get("mask") is None:
                raise DataError(f"{params.data.val_split}: image {s['name']} has no ground-truth mask to score against")
            pred, prob = segment(params, nets, s, device)
            conf_raw += confusion_matrix(pred, np.asarray(s["mask"]), k)
            if not cfg.crf:
                finish(s, pred)
                continue
            task = (s["image"], prob, cfg.crf_image, kw)
            pending.append((s, pool.submit(_crf_task, task) if pool else _crf_task(task)))
            while len(pending) > 2 * workers or (pending and not pool):
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return conf_raw, conf_crf


def eval_seg(params: Params, variant: str, seed: int, *, progress: bool = True) -> dict:
    """Predict, store and score the val split for run (``variant``, ``seed``); return the metrics.

    Raises:
        DataError: the run's model is missing or unreadable, an image or mask is unreadable.
        ImportError: ``crf`` is on and pydensecrf is missing (says what to install).
    """
    from ..crf import INSTALL_HINT, crf_available
    from ..data import build_dataset, dataset_classes
    from ..metrics import scores
    from ..models import load_seg_nets

    cfg = params.eval_seg
    if cfg.crf and not crf_available():
        raise ImportError(f"eval_seg.crf is on but the dense CRF is not installed: {INSTALL_HINT} "
                          "(or set eval_seg.crf: false)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = paths.seg_model(params, variant, seed)
    selected = cfg.selection == "best_on_val"
    nets = inference_nets(params, load_seg_nets(model, device))
    selection = _selection(model, params.data.val_split) if selected else None
    classes = ("background", *dataset_classes(params.data))
    split = params.data.val_split
    ds = build_dataset(params.data, split)
    out = paths.seg_prediction_dir(params, variant, seed)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    for old in out.glob("*.png"):
        old.unlink()
    t0 = time.perf_counter()
    conf_raw, conf_crf = _predict_all(params, nets, ds, device, out, len(classes), progress,
                                      f"eval_seg {variant} seed {seed}")
    seconds = time.perf_counter() - t0
    raw = scores(conf_raw, classes)
    final = scores(conf_crf, classes) if cfg.crf else raw
    metrics = {"variant": variant, "seed": seed, "split": split, "images": len(ds), "miou": final["miou"],
               "crf": cfg.crf, "settings": {k: v for k, v in to_dict(cfg).items() if k not in ("out_dir", "workers")},
               "final": _summary(final, classes), "no_crf": _summary(raw, classes)}
    if selection is not None:  # the last epoch's model, scored the same way (its predictions not kept)
        last = inference_nets(params, load_seg_nets(model, device, which="last_nets"))
        l_raw, l_crf = _predict_all(params, last, ds, device, None, len(classes), progress,
                                    f"eval_seg {variant} seed {seed} (last epoch)")
        l_raw_s = scores(l_raw, classes)
        metrics["selection"] = selection
        metrics["last"] = {"miou": (scores(l_crf, classes) if cfg.crf else l_raw_s)["miou"],
                           "no_crf_miou": l_raw_s["miou"]}
    write_json(paths.seg_eval_reports(variant, seed) / paths.METRICS, metrics)
    write_json(paths.timings("eval_seg", paths.run_name(variant, seed)),
               {"seconds": round(seconds, 2), "images_per_s": round(len(ds) / max(seconds, 1e-9), 2)})
    return metrics


def _selection(model, split: str) -> dict:
    """What ``model.pt`` says of its selection, and the sentence the reports print."""
    sel = torch.load(model, map_location="cpu", weights_only=True).get("selection")
    if not isinstance(sel, dict) or "epoch" not in sel:
        raise DataError(f"{model}: eval_seg.selection is best_on_val but the model holds no selection "
                        "(train it again with this setting: dvc repro)")
    epochs = len(sel["val_miou"])
    return {"rule": "best_on_val", "split": split, "epoch": int(sel["epoch"]), "epochs": epochs,
            "val_miou": [float(x) for x in sel["val_miou"]],
            "statement": f"the model was selected on {split}, the split it is scored on: epoch {sel['epoch']} of "
                         f"{epochs}, the best of train_seg's per-epoch {split} mIoU"}


def run(params: Params, variant: str, seed: int, progress: bool = True) -> dict:
    """Evaluate one run in this process."""
    return eval_seg(params, variant, seed, progress=progress)


def main(argv: list[str] | None = None) -> int:
    return common.cli("eval_seg", __doc__, lambda p, a: {k: v for k, v in eval_seg(p, a.variant, a.seed).items()
                                                         if k in ("variant", "seed", "miou")},
                      argv, common.add_run_args, errors=(ImportError,))


if __name__ == "__main__":
    sys.exit(main())
