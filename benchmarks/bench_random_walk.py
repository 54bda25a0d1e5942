"""random_walk (sparse stencil) against IRN's dense transition matrix, at VOC size.

    python benchmarks/bench_random_walk.py [--device cpu|cuda] [--repeats 3] [--dense-squarings N] [--threads T]

A 375 x 500 image at stride 4 is 94 x 125 = 11,750 pixels; K = 3 maps, radius 5, beta 10,
exp_times 8 (256 steps), a synthetic boundary (low noise and rings) and Gaussian CAMs. The
dense implementation is IRN's ``propagate_to_edge`` rebuilt here on the tensors' device:
COO entries (affinities, their transposes, the identity) on the padded grid made dense,
cropped to the image, raised to beta, column-normalised, squared ``exp_times`` times,
one product with the maps; TF32 off. Its affinities come from
:func:`sslib.affinity.boundary_to_affinity` (what is compared is the walk).

A dense walk at VOC size is 8 squarings of an 11,750^2 matrix, ~26 TFLOP: on the CPU it
runs ``--dense-squarings`` (default 1 there, all on CUDA) and the table extrapolates the
time to build + 8 squarings + product (marked ``~``); its peak memory is reached in the
first squaring (four N x N matrices live). A half-size case (47 x 63) runs fully everywhere
and gives the accuracy column (max |sparse - dense| / max |dense|). The dense runs and the
peak memory are measured in a fresh subprocess per run (growth of the peak RSS on the CPU,
the CUDA allocator's peak on a GPU). Prints a markdown table; no asserts.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sslib.affinity import boundary_to_affinity, pair_indices, random_walk, search_paths

CASES = {"VOC 375x500": (94, 125), "half 188x250": (47, 63)}
RADIUS, BETA, EXP_TIMES, K = 5, 10, 8, 3


def make_inputs(size, device, k=K, seed=0):
    """Boundary: 0.05 noise plus two rings of ~0.9; CAMs: one Gaussian blob per class."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    b = 0.05 * torch.rand(h, w, generator=g)
    cams = []
    for i in range(k):
        cy, cx = (0.3 + 0.4 * torch.rand(2, generator=g)) * torch.tensor([h, w])
        rad = (0.15 + 0.1 * torch.rand((), generator=g)) * min(h, w)
        dist = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        if i < 2:
            b = torch.maximum(b, 0.9 * torch.exp(-((dist - rad) ** 2) / (2 * 1.5 ** 2)))
        cams.append(torch.exp(-(dist / rad) ** 2))
    return torch.stack(cams).to(device), b.to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def dense_random_walk(cams, boundary, radius=RADIUS, beta=BETA, exp_times=EXP_TIMES, squarings=None,
                      phases=None):
    """IRN's dense walk; ``squarings`` (default ``exp_times``) of them run; ``phases`` gets times (s)."""
    dev = cams.device
    squarings = exp_times if squarings is None else squarings
    clock = [time.perf_counter()]

    def mark(name):
        if phases is not None:
            _sync(dev)
            now = time.perf_counter()
            phases[name] = phases.get(name, 0.0) + now - clock[0]
            clock[0] = now

    h, w = boundary.shape
    r = radius
    big_h, big_w = h + r, w + 2 * r
    n = big_h * big_w
    padded = F.pad(boundary[None, None], (r, r, 0, r), value=1.0)
    aff = boundary_to_affinity(padded, r).reshape(-1)                       # (D * P,)
    src, dst = pair_indices((big_h, big_w), r)
    src, dst = src.to(dev), dst.to(dev)
    ind_from, ind_to = src.repeat(len(dst)), dst.reshape(-1)
    diag = torch.arange(n, device=dev)
    indices = torch.cat([torch.stack([ind_from, ind_to]), torch.stack([diag, diag]),
                         torch.stack([ind_to, ind_from])], 1)
    values = torch.cat([aff, torch.ones(n, device=dev), aff])
    dense = torch.sparse_coo_tensor(indices, values, (n, n)).to_dense()
    dense = dense.view(big_h, big_w, big_h, big_w)[:-r, r:-r, :-r, r:-r].reshape(h * w, h * w)
    scaled = dense.pow(beta)
    trans = scaled / scaled.sum(0, keepdim=True)
    mark("build")
    for _ in range(squarings):
        trans = trans @ trans
        mark("squarings")
    x = (cams * (1 - boundary)).reshape(len(cams), -1)
    out = (x @ trans).view(-1, h, w)
    mark("product")
    return out


def sparse_time(size, device, repeats):
    cams, b = make_inputs(size, device)
    times = []
    for i in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        random_walk(cams, b, RADIUS, BETA, EXP_TIMES)
        _sync(device)
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def in_subprocess(impl: str, size, device: str, save: Path, squarings: int | None = None,
                  threads: int | None = None) -> dict:
    """One run in a fresh process: peak memory (MiB) and, for the dense walk, its phase times.

    The walked maps are saved to ``save`` (for the accuracy column).
    """
    code = f"""
import json, torch
import benchmarks.bench_random_walk as b
torch.backends.cuda.matmul.allow_tf32 = False
if {threads!r} is not None:
    torch.set_num_threads({threads!r})
dev = torch.device({device!r})
cams, bd = b.make_inputs({tuple(size)!r}, dev)
if dev.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:  # Linux: reset the high-water mark (ru_maxrss would include the parent's, from fork)
    import psutil; base = psutil.Process().memory_info().rss
    open("/proc/self/clear_refs", "w").write("5")
phases = {{}}
if {impl!r} == "dense":
    out = b.dense_random_walk(cams, bd, squarings={squarings!r}, phases=phases)
else:
    out = b.random_walk(cams, bd, b.RADIUS, b.BETA, b.EXP_TIMES)
if dev.type == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    peak = int(hwm.split()[1]) * 1024 - base
torch.save(out.cpu(), {str(save)!r})
print(json.dumps({{"peak": peak / 2**20, "phases": phases}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--dense-squarings", type=int, default=None,
                    help="squarings the dense walk runs at VOC size (default: all on CUDA, 1 on the CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    voc_squarings = args.dense_squarings
    if voc_squarings is None:
        voc_squarings = EXP_TIMES if device.type == "cuda" else 1
    print(f"device {device}, threads {torch.get_num_threads()}, radius {RADIUS}, beta {BETA}, "
          f"exp_times {EXP_TIMES} ({2 ** EXP_TIMES} steps), K = {K}, "
          f"{search_paths(RADIUS).num_directions} directions\n")
    rows = []
    tmp = tempfile.TemporaryDirectory(prefix="bench_rw_")
    for case, size in CASES.items():
        n = size[0] * size[1]
        t = sparse_time(size, device, args.repeats)
        s_path, d_path = Path(tmp.name) / f"sparse_{n}.pt", Path(tmp.name) / f"dense_{n}.pt"
        mem = in_subprocess("sparse", size, args.device, s_path, threads=args.threads)["peak"]
        squarings = voc_squarings if case.startswith("VOC") else EXP_TIMES
        dense = in_subprocess("dense", size, args.device, d_path, squarings, args.threads)
        ph = dense["phases"]
        per_sq = ph.get("squarings", 0.0) / max(squarings, 1)
        t_dense = ph["build"] + per_sq * EXP_TIMES + ph["product"]
        approx = "~" if squarings < EXP_TIMES else ""
        err = ""
        if squarings == EXP_TIMES:
            s, d = torch.load(s_path), torch.load(d_path)
            err = f"{((s - d).abs().max() / d.abs().max()).item():.1e}"
        rows.append((case, n, "sparse stencil (ours)", f"{t * 1e3:.0f}", f"{mem:.1f}", err))
        rows.append((case, n, f"dense (IRN), {squarings} of {EXP_TIMES} squarings run",
                     f"{approx}{t_dense * 1e3:.0f}", f"{dense['peak']:.1f}", ""))
        rows.append((case, n, "speed-up, memory ratio", f"{t_dense / t:.0f}x",
                     f"{dense['peak'] / max(mem, 1e-3):.0f}x", ""))
        print(f"{case}: dense N x N = {n * n * 4 / 2**20:.0f} MiB per matrix; dense phases (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in ph.items()), flush=True)
    print()
    print("| case | N | implementation | time ms | peak MiB | max err / max |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


if __name__ == "__main__":
    main()
