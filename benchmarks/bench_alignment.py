"""alignment_loss against a dense one-hot implementation (the official algorithm) at the VOC batch.

    python benchmarks/bench_alignment.py [--device cpu|cuda] [--repeats 5]

``pack=False`` is the path taken when the labels are on a GPU. Batch: 6 images x 20 classes, 512 x 512 crop (superpixels downsampled to 256 x 256),
CAMs 32 x 32 (output stride 16), ~100-200 Voronoi superpixels per image, ~2 present
classes per image. Times forward + backward (median of the repeats); peak memory is
measured in a fresh subprocess per implementation (growth of the peak RSS on the CPU, the CUDA
allocator's peak on a GPU). Prints a table; no asserts.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from sslib.losses import alignment_loss, erode


def dense_alignment_loss(cams, superpixels, labels, threshold=0.3, erosion=8):
    """The official algorithm, device-agnostic: a one-hot (N, K, P) superpixel matrix and matmuls."""
    sp = F.interpolate(superpixels[:, None].float(), scale_factor=0.5, mode="nearest")[:, 0].long()
    n, c = cams.shape[:2]
    h2, w2 = sp.shape[-2:]
    k = int(sp.max()) + 1
    onehot = F.one_hot(sp.flatten(1), k).permute(0, 2, 1).float()            # (N, K, P)
    pred = F.interpolate(cams, size=(h2, w2), mode="bilinear", align_corners=False)
    score = pred.reshape(n, c, -1) * labels[:, :, None]
    weights = onehot / onehot.sum(2, keepdim=True).clamp_min(1e-5)           # (N, K, P)
    sums = score @ onehot.transpose(1, 2)                                    # (N, C, K)
    averaged = (sums[..., None] * weights[:, None]).sum(2) * labels[:, :, None]

    def norm(x):
        x = x.clamp_min(0)
        return x / (x.amax(2, keepdim=True) + 1e-5)

    cam, averaged = norm(score), norm(averaged)
    present = labels == 1
    cam_p, avg_p = cam[present], averaged[present].detach()
    reliable = erode((cam_p.detach() > threshold).reshape(-1, h2, w2), erosion).reshape(len(cam_p), -1)
    target = torch.maximum(avg_p, cam_p.detach() * reliable)
    return F.mse_loss(cam_p, target)


def make_batch(device, n=6, c=20, size=512, cam=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    cams = torch.randn(n, c, cam, cam, generator=g).to(device).requires_grad_()
    from scipy.spatial import cKDTree  # Voronoi cells of random seeds, without a big distance array

    yx = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"), -1).reshape(-1, 2)
    sps = []
    for i in range(n):
        k = int(torch.randint(100, 201, (), generator=g))
        pts = (torch.rand(k, 2, generator=g) * size).numpy()
        sps.append(torch.from_numpy(cKDTree(pts).query(yx.numpy())[1]).reshape(size, size).long())
    labels = torch.zeros(n, c)
    for i in range(n):
        labels[i, torch.randperm(c, generator=g)[:2]] = 1
    return cams, torch.stack(sps).to(device), labels.to(device)


def masked(cams, sp, labels):
    """Ours without packing: every map computed, absent ones masked (what runs with labels on a GPU)."""
    return alignment_loss(cams, sp, labels, pack=False)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_impl(fn, device, repeats):
    cams, sp, labels = make_batch(device)
    times = []
    for r in range(repeats + 1):
        cams.grad = None
        _sync(device)
        t0 = time.perf_counter()
        fn(cams, sp, labels).backward()
        _sync(device)
        if r:  # the first run warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory(name: str, device: str) -> float:
    """MiB: peak memory of one forward + backward, in a fresh process."""
    code = f"""
import json, torch
import benchmarks.bench_alignment as b
dev = torch.device({device!r})
fn = {{"dense": b.dense_alignment_loss, "ours": b.alignment_loss, "masked": b.masked}}[{name!r}]
cams, sp, labels = b.make_batch(dev)
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:  # Linux: reset the high-water mark (ru_maxrss would include the parent's, from fork)
    import psutil; base = psutil.Process().memory_info().rss
    open("/proc/self/clear_refs", "w").write("5")
fn(cams, sp, labels).backward()
if dev.type == "cuda":
    peak = torch.cuda.max_memory_allocated() - base
else:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    peak = int(hwm.split()[1]) * 1024 - base
print(json.dumps(peak / 2**20))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    cams, sp, labels = make_batch(device)
    a, b = alignment_loss(cams, sp, labels), dense_alignment_loss(cams, sp, labels)
    print(f"device {device}, threads {torch.get_num_threads()}, |ours - dense| = {abs(a.item() - b.item()):.2e}")
    rows = []
    impls = (("alignment_loss (ours)", "ours", alignment_loss), ("ours, pack=False", "masked", masked),
             ("dense one-hot", "dense", dense_alignment_loss))
    for name, key, fn in impls:
        rows.append((name, time_impl(fn, device, args.repeats), peak_memory(key, args.device)))
    print(f"{'implementation':24s} {'fwd+bwd ms':>11s} {'peak MiB':>9s}")
    for name, t, mem in rows:
        print(f"{name:24s} {t * 1e3:11.1f} {mem:9.1f}")
    for i in (0, 1):
        print(f"{rows[i][0]}: {rows[2][1] / rows[i][1]:.1f}x faster than dense, "
              f"{rows[2][2] / max(rows[i][2], 1e-9):.1f}x less memory")


if __name__ == "__main__":
    main()
