"""Timings of superpixel computation / precomputation and of the confusion matrix.

Plain script, no asserts on timings::

    python benchmarks/bench_superpixels.py [--repeats 5] [--n-images 40] [--workers 1 2]

Prints one table: what was timed, input size, time per item or throughput, and the
peak resident memory so far (``resource.getrusage``; "children" covers the precompute
worker processes).
"""
from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sslib import superpixels as sp
from sslib.config import SuperpixelConfig, defaults
from sslib.formats import save_jpeg
from sslib.metrics import confusion_matrix


def textured_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8: smooth colour field + a few flat rectangles + pixel noise."""
    coarse = rng.random((max(2, h // 16), max(2, w // 16), 3))
    ys = np.linspace(0, coarse.shape[0] - 1, h)
    xs = np.linspace(0, coarse.shape[1] - 1, w)
    yi, xi = np.floor(ys).astype(int), np.floor(xs).astype(int)
    yi1, xi1 = np.minimum(yi + 1, coarse.shape[0] - 1), np.minimum(xi + 1, coarse.shape[1] - 1)
    fy, fx = (ys - yi)[:, None, None], (xs - xi)[None, :, None]
    img = ((1 - fy) * (1 - fx) * coarse[yi][:, xi] + (1 - fy) * fx * coarse[yi][:, xi1]
           + fy * (1 - fx) * coarse[yi1][:, xi] + fy * fx * coarse[yi1][:, xi1]) * 255
    for _ in range(4):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def peak_rss_mib() -> tuple[float, float]:
    """(self, children) peak RSS in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale)


ROWS: list[tuple[str, str, str, str]] = []


def row(what: str, size: str, result: str) -> None:
    s, c = peak_rss_mib()
    ROWS.append((what, size, result, f"{s:.0f} / {c:.0f}"))
    print(f"  {what:<34} {size:<12} {result:<22}", file=sys.stderr, flush=True)


def time_calls(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    ap.add_argument("--n-images", type=int, default=40, help="images for the precompute run")
    ap.add_argument("--precompute-size", type=int, nargs=2, default=[375, 500], metavar=("H", "W"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    cfgs = {m: defaults(SuperpixelConfig, method=m) for m in ("slic", "felzenszwalb")}  # params.yaml's

    # ---- compute
    for h, w in [(128, 128), (375, 500)]:
        img = textured_image(rng, h, w)
        for m, cfg in cfgs.items():
            sec = time_calls(lambda: sp.compute(img, cfg), args.repeats)
            k = int(sp.compute(img, cfg).max()) + 1
            row(f"compute {m} (K={k})", f"{h}x{w}", f"{sec * 1e3:8.1f} ms/image")

    # ---- precompute
    h, w = args.precompute_size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = []
        for i in range(args.n_images):
            p = tmp / "images" / f"img{i:03d}.jpg"
            save_jpeg(p, textured_image(rng, h, w))
            items.append((p.stem, p))
        for m, cfg in cfgs.items():
            for nw in args.workers:
                out = tmp / f"out_{m}_{nw}"
                t0 = time.perf_counter()
                sp.precompute(items, out, cfg, workers=nw, progress=False)
                sec = time.perf_counter() - t0
                row(f"precompute {m} workers={nw}", f"{args.n_images}x{h}x{w}",
                    f"{args.n_images / sec:8.1f} images/s")

    # ---- confusion matrix
    shape = (6, 512, 512)
    gt = rng.integers(0, 21, size=shape).astype(np.uint8)
    gt[rng.random(shape) < 0.05] = 255
    pred = rng.integers(0, 21, size=shape).astype(np.uint8)
    sec = time_calls(lambda: confusion_matrix(pred, gt, 21), args.repeats)
    row("confusion_matrix numpy uint8", "6x512x512", f"{sec * 1e3:8.1f} ms/batch")
    pred64, gt64 = pred.astype(np.int64), gt.astype(np.int64)
    sec = time_calls(lambda: confusion_matrix(pred64, gt64, 21), args.repeats)
    row("confusion_matrix numpy int64", "6x512x512", f"{sec * 1e3:8.1f} ms/batch")
    import torch

    tp_, tg_ = torch.from_numpy(pred64), torch.from_numpy(gt64)
    sec = time_calls(lambda: confusion_matrix(tp_, tg_, 21), args.repeats)
    row(f"confusion_matrix torch cpu ({torch.get_num_threads()} thr)", "6x512x512", f"{sec * 1e3:8.1f} ms/batch")
    if torch.cuda.is_available():
        tp_, tg_ = tp_.cuda(), tg_.cuda()

        def cuda_call():
            confusion_matrix(tp_, tg_, 21)
            torch.cuda.synchronize()

        sec = time_calls(cuda_call, args.repeats)
        row("confusion_matrix torch cuda", "6x512x512", f"{sec * 1e3:8.1f} ms/batch")

    print(f"python {platform.python_version()}, {platform.machine()}, "
          f"{__import__('os').cpu_count()} cpus, repeats={args.repeats} (median)")
    head = ("what", "size", "time / throughput", "peak RSS MiB self / children")
    widths = [max(len(r[i]) for r in [head, *ROWS]) for i in range(4)]
    for r in [head, tuple("-" * n for n in widths), *ROWS]:
        print("  ".join(c.ljust(n) for c, n in zip(r, widths)).rstrip())


if __name__ == "__main__":
    main()
