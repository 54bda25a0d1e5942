"""The full training step of each training stage at the paper's sizes, fp32 against bf16.

    python benchmarks/bench_gpu_step.py [--device cuda] [--steps cam,cam_official,irn,seg]
        [--dtypes fp32,bf16] [--changes contiguous,target_grad,foreach,fused,cudnn_benchmark,compile]
        [--floor] [--profile] [--repeats 10] [--warmup 2] [--size voc|tiny] [--seg-batch N]
        [--vgg-weights weights/vgg19-dcbb9e9d.pth]

Each step is what the stage runs, on random data of the training shape (random-init
weights unless a file is given: the cost does not depend on the values), networks and
images in channels_last as the stages put them:

* ``cam``: SSC's CAM step at the VOC size (batch 6, crop 512, 20 classes, ~64 superpixels
  per image): ResNet-50 CAMNet with DRS (2 frozen stages, frozen BatchNorm, as with
  ImageNet weights), the 256-wide decoder, the VGG-19 perceptual loss built once, the
  alignment loss, then the SGD and Adam steps;
* ``cam_official``: the same step as the official code computes it: the perceptual
  loss's VGG-19 built and its weights loaded from the file every step, and the dense
  one-hot alignment (``benchmarks/bench_alignment.py``) with the erosion on the host;
* ``irn``: IRN's boundary step (ResNet-50 frozen, batch 16, crop 512, radius 10);
* ``seg``: DeepLabV2-R101 at output stride 8 (batch ``--seg-batch``, crop 512, 21 classes),
  masked cross-entropy; ``seg_beco``: the two co-trained networks of BECO's loss.

bf16 is ``torch.autocast`` (as the stages with ``amp: true``; on the CPU too, where it is
slow). ``--changes`` times each step again with one change at a time against the stages'
set-up (the speed-up of each, separately):

* ``contiguous``: networks and images in the default layout, not channels_last (undoes
  a kept choice);
* ``target_grad``: the perceptual loss's target features computed with autograd on, not
  under ``no_grad`` (undoes a kept choice; CAM steps only);
* ``foreach``: the optimisers' multi-tensor (``foreach``) implementation (torch's default
  on CUDA; the CPU default is the per-parameter loop);
* ``fused``: the fused optimiser kernels (``fused=True``);
* ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark`` on (CUDA only);
* ``compile``: ``torch.compile`` on the trained networks (default mode; compilation
  falls in the warm-up steps).

``--floor`` counts the step's floating-point operations (``torch.utils.flop_counter``,
forward and backward, matmuls and convolutions) and measures the device's dense matmul
rate in that dtype (4096 x 4096 GEMMs; 1024 on the CPU): the floor is FLOPs / rate (for bf16
the faster of the bf16 and fp32 rates: a CPU without bf16 instructions multiplies bf16
matrices at ~1 GFLOP/s, and a step could always stay in fp32), and ``x floor`` is the
step's time over it. ``--profile`` prints the operators that take the most time in one
step of each step and dtype as the stages run it (``torch.profiler``).

Prints a table: ms per step (median of ``--repeats`` after ``--warmup`` steps, and their
range), images per second, the speed-up against the stages' set-up, and the CUDA allocator's peak
(``-`` on the CPU). ``--size tiny`` runs the same code at toy sizes (a quick check on a
CPU). No asserts.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZES = {  # batch, crop, classes per stage
    "voc": {"cam": (6, 512, 20), "irn": (16, 512, 20), "seg": (16, 512, 21)},
    "tiny": {"cam": (2, 64, 5), "irn": (2, 96, 5), "seg": (2, 64, 5)},
}
#: one change at a time against the stages' set-up (module docstring)
CHANGES = ("contiguous", "target_grad", "foreach", "fused", "cudnn_benchmark", "compile")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _superpixels(n: int, size: int, device, count: int = 64) -> torch.Tensor:
    side = max(1, int(count ** 0.5))
    cell = -(-size // side)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((yy // cell) * side + xx // cell).expand(n, size, size).contiguous().to(device)


def _labels(n: int, c: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(n, c)
    for i in range(n):
        y[i, torch.randperm(c, generator=g)[:2]] = 1
    return y.to(device)


def _host_erode(mask: torch.Tensor, k: int) -> torch.Tensor:
    """The official erosion: on the host (NumPy), one map at a time, then back to the device."""
    from scipy.ndimage import binary_erosion

    m = mask.cpu().numpy()
    out = np.stack([binary_erosion(x, np.ones((k, k), bool)) for x in m])
    return torch.from_numpy(out).to(mask.device)


def _official_alignment(cams, sp, labels, threshold=0.3, erosion=8):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
    import benchmarks.bench_alignment as ba

    orig = ba.erode
    ba.erode = _host_erode
    try:
        return ba.dense_alignment_loss(cams, sp, labels, threshold, erosion)
    finally:
        ba.erode = orig


def _layout(change: str | None) -> torch.memory_format:
    return torch.contiguous_format if change == "contiguous" else torch.channels_last


def _opt_kwargs(change: str | None) -> dict:
    """The stages build their optimisers with torch's defaults; ``foreach``/``fused`` set them."""
    return {"foreach": True} if change == "foreach" else {"fused": True} if change == "fused" else {}


def _maybe_compile(net: torch.nn.Module, change: str | None):
    return torch.compile(net) if change == "compile" else net


def _forward_with_target_grad(self, x, target):
    """PerceptualLoss.forward with the target's features computed with autograd on (the VGG-19
    form the CAM step uses: no per-layer normalisation, inputs under 1024 px)."""
    ft = self.features(target.detach())
    fx = self.features(x)
    return sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(self.layer_weights, fx, ft))


def cam_step(device, size, vgg_file, official: bool, change: str | None = None):
    from sslib.losses import alignment_loss, classification_loss
    from sslib.models import CAMNet, Decoder, build_reconstruction_loss

    n, s, c = SIZES[size]["cam"]
    fmt = _layout(change)
    net = CAMNet(c, backbone="resnet50", weights="none", frozen_stages=2, bn_eval=True).to(device, memory_format=fmt)
    dec = Decoder(c, width=256 if size == "voc" else 32).to(device)

    def build_rec():
        rec = build_reconstruction_loss("perceptual", vgg_file, "vgg19").to(device)
        if change == "target_grad":
            rec.perceptual.forward = types.MethodType(_forward_with_target_grad, rec.perceptual)
        return rec

    rec_once = build_rec()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                          **_opt_kwargs(change))
    dopt = torch.optim.Adam(dec.parameters(), lr=1e-4, **_opt_kwargs(change))
    fnet, fdec = _maybe_compile(net, change), _maybe_compile(dec, change)
    x = torch.randn(n, 3, s, s, device=device).contiguous(memory_format=fmt)
    y, sp = _labels(n, c, device), _superpixels(n, s, device)
    y_cpu = y.cpu()

    def step(autocast):
        rec = build_rec() if official else rec_once
        with autocast():
            scores, cams = fnet(x)
            loss = classification_loss(scores.float(), y) + rec(fdec(cams.contiguous()).float(), x)
        cams = cams.float()
        loss = loss + (_official_alignment(cams, sp, y) if official else alignment_loss(cams, sp, y_cpu))
        opt.zero_grad(set_to_none=True)
        dopt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dopt.step()

    return step, n


def irn_step(device, size, change: str | None = None):
    from sslib.affinity import affinity_loss
    from sslib.models import BoundaryNet

    n, s, _ = SIZES[size]["irn"]
    fmt = _layout(change)
    net = BoundaryNet("resnet50", weights="none").to(device, memory_format=fmt)
    opt = torch.optim.SGD(net.param_groups()[1], lr=0.1, **_opt_kwargs(change))
    fnet = _maybe_compile(net, change)
    x = torch.randn(n, 3, s, s, device=device).contiguous(memory_format=fmt)
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 3, (n, s // 4, s // 4), generator=g).to(device)

    def step(autocast):
        with autocast():
            logits = fnet(x)
        loss = affinity_loss(logits.float(), lab, radius=10)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, n


def seg_step(device, size, batch, beco: bool, change: str | None = None):
    from sslib.beco import beco_loss
    from sslib.losses import seg_cross_entropy
    from sslib.models.deeplab import DeepLabV2

    n, s, c = SIZES[size]["seg"]
    n = batch or n
    fmt = _layout(change)
    nets = [DeepLabV2(c, "resnet101", weights="none", output_stride=8).to(device, memory_format=fmt)
            for _ in range(2 if beco else 1)]
    opt = torch.optim.SGD([p for m in nets for p in m.parameters()], lr=0.01, momentum=0.9, weight_decay=1e-4,
                          **_opt_kwargs(change))
    fnets = [_maybe_compile(m, change) for m in nets]
    x = torch.randn(n, 3, s, s, device=device).contiguous(memory_format=fmt)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, c, (n, s, s), generator=g).to(device)
    mask = (torch.rand(n, s, s, generator=g) > 0.5).to(device)
    band = torch.zeros(n, s, s, device=device)

    def up(z):
        return F.interpolate(z.float(), size=(s, s), mode="bilinear", align_corners=False)

    def step(autocast):
        with autocast():
            outs = [m(x) for m in fnets]
        if beco:
            loss = beco_loss(up(outs[0]), up(outs[1]), target, mask.float(), band)["total"]
        else:
            loss = seg_cross_entropy(up(outs[0]), target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, n


def _autocast(device: str, dtype: str):
    dev_type = torch.device(device).type
    if dtype == "bf16":
        return lambda: torch.autocast(dev_type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _time(step, device, dtype: str, repeats: int, warmup: int) -> tuple[float, float, float, float | None]:
    """Median, min and max ms per step after ``warmup`` steps, and the CUDA peak in GiB (None on the CPU)."""
    autocast = _autocast(device, dtype)
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        step(autocast)
    _sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(autocast)
        _sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None
    return statistics.median(times), min(times), max(times), peak


def step_flops(step, device) -> int:
    """Floating-point operations of one fp32 step (forward and backward; matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(contextlib.nullcontext)
    _sync(device)
    return counter.get_total_flops()


def matmul_rate(device: str, dtype: str, repeats: int = 5) -> float:
    """The device's dense GEMM rate in FLOP/s for ``dtype`` (median of ``repeats`` n x n products;
    n = 4096 on a GPU, 1024 on the CPU, where fp32 saturates by then and bf16 runs at ~1 GFLOP/s
    without bf16 instructions)."""
    n = 4096 if torch.device(device).type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


def profile_table(step, device, dtype: str, rows: int = 12) -> str:
    """The operators with the most self time in one step."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        step(_autocast(device, dtype))
        _sync(device)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", default="cam,cam_official,irn,seg", help="comma-separated: cam, cam_official, irn, seg, seg_beco")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--changes", default="", help=f"comma-separated, each timed alone against the stages' set-up: {', '.join(CHANGES)}")
    ap.add_argument("--floor", action="store_true", help="count FLOPs and give the time against the device's GEMM rate")
    ap.add_argument("--profile", action="store_true", help="print the operators that take the most time in one step")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--size", default="voc", choices=sorted(SIZES))
    ap.add_argument("--seg-batch", type=int, default=None, help="segmentation batch (default: 16 at voc size)")
    ap.add_argument("--vgg-weights", default=None, help="torchvision's vgg19 state dict (default: random weights in a temporary file)")
    args = ap.parse_args()
    changes = [c for c in args.changes.split(",") if c]
    unknown = sorted(set(changes) - set(CHANGES))
    if unknown:
        ap.error(f"unknown --changes {unknown}; choose from {', '.join(CHANGES)}")
    warnings.filterwarnings("ignore")  # random-init warnings of the weights loaders
    logging.getLogger("sslib").setLevel(logging.ERROR)  # ... and their log lines
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        vgg = args.vgg_weights
        if vgg is None:  # the official step loads a file every step: give it one of the real size
            import torchvision

            vgg = f"{tmp}/vgg19-random.pth"
            torch.save(torchvision.models.vgg19().state_dict(), vgg)
        builders = {"cam": lambda ch: cam_step(args.device, args.size, vgg, False, ch),
                    "cam_official": lambda ch: cam_step(args.device, args.size, vgg, True, ch),
                    "irn": lambda ch: irn_step(args.device, args.size, ch),
                    "seg": lambda ch: seg_step(args.device, args.size, args.seg_batch, False, ch),
                    "seg_beco": lambda ch: seg_step(args.device, args.size, args.seg_batch, True, ch)}
        rates = {d: matmul_rate(args.device, d) for d in {"fp32", *args.dtypes.split(",")}} if args.floor else {}
        floor_rate = {d: max(r, rates["fp32"]) for d, r in rates.items()}  # bf16 may always fall back to fp32
        print(f"training steps on {args.device} ({args.size} size; {torch.get_num_threads()} CPU threads), "
              f"median of {args.repeats} after {args.warmup} warm-up steps")
        for d, r in rates.items():
            print(f"dense {d} GEMM rate: {r / 1e12:.4f} TFLOP/s")
        print("| step | change | dtype | ms / step | min - max | images / s | vs stages | TFLOP / step | x floor | peak GiB |\n"
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        profiles = []
        for name in args.steps.split(","):
            base, flops = {}, None
            for change in [None] + changes:
                if change == "target_grad" and not name.startswith("cam"):
                    continue
                if change == "cudnn_benchmark" and not cuda:
                    continue
                torch.backends.cudnn.benchmark = change == "cudnn_benchmark"
                step, n = builders[name](change)
                if args.floor and change is None:
                    flops = step_flops(step, args.device)
                for dtype in args.dtypes.split(","):
                    ms, lo, hi, peak = _time(step, args.device, dtype, args.repeats, args.warmup)
                    base.setdefault(dtype, ms)
                    floor = f"{ms / (1000 * flops / floor_rate[dtype]):.1f}" if flops else "-"
                    print(f"| {name} | {change or 'stages'} | {dtype} | {ms:.1f} | {lo:.0f} - {hi:.0f} | {1000 * n / ms:.2f} | "
                          f"{base[dtype] / ms:.2f}x | {flops / 1e12 if flops else float('nan'):.3g} | {floor} | "
                          f"{'-' if peak is None else f'{peak:.1f}'} |", flush=True)
                    if args.profile and change is None:
                        profiles.append((f"{name} {change or 'stages'} {dtype}",
                                         profile_table(step, args.device, dtype)))
                del step
                if cuda:
                    torch.cuda.empty_cache()
        for title, table in profiles:
            print(f"\n## {title}\n{table}")


if __name__ == "__main__":
    main()
