"""The full training step of each training stage at the paper's sizes, fp32 against bf16.

    python benchmarks/bench_gpu_step.py [--device cuda] [--steps cam,cam_official,irn,seg]
        [--dtypes fp32,bf16] [--repeats 10] [--size voc|tiny] [--vgg-weights weights/vgg19-dcbb9e9d.pth]

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
slow). Prints a table: ms per step (median of ``--repeats`` after two warm-ups), images
per second, and the CUDA allocator's peak (``-`` on the CPU). ``--size tiny`` runs the
same code at toy sizes (a quick check on a CPU). No asserts.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZES = {  # batch, crop, classes per stage
    "voc": {"cam": (6, 512, 20), "irn": (16, 512, 20), "seg": (16, 512, 21)},
    "tiny": {"cam": (2, 64, 5), "irn": (2, 96, 5), "seg": (2, 64, 5)},
}
CL = torch.channels_last


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


def cam_step(device, size, vgg_file, official: bool):
    from sslib.losses import alignment_loss, classification_loss
    from sslib.models import CAMNet, Decoder, build_reconstruction_loss

    n, s, c = SIZES[size]["cam"]
    net = CAMNet(c, backbone="resnet50", weights="none", frozen_stages=2, bn_eval=True).to(device, memory_format=CL)
    dec = Decoder(c, width=256 if size == "voc" else 32).to(device)
    rec_once = build_reconstruction_loss("perceptual", vgg_file, "vgg19").to(device)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    dopt = torch.optim.Adam(dec.parameters(), lr=1e-4)
    x = torch.randn(n, 3, s, s, device=device).contiguous(memory_format=CL)
    y, sp = _labels(n, c, device), _superpixels(n, s, device)
    y_cpu = y.cpu()

    def step(autocast):
        rec = build_reconstruction_loss("perceptual", vgg_file, "vgg19").to(device) if official else rec_once
        with autocast():
            scores, cams = net(x)
            loss = classification_loss(scores.float(), y) + rec(dec(cams.contiguous()).float(), x)
        cams = cams.float()
        loss = loss + (_official_alignment(cams, sp, y) if official else alignment_loss(cams, sp, y_cpu))
        opt.zero_grad(set_to_none=True)
        dopt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dopt.step()

    return step, n


def irn_step(device, size):
    from sslib.affinity import affinity_loss
    from sslib.models import BoundaryNet

    n, s, _ = SIZES[size]["irn"]
    net = BoundaryNet("resnet50", weights="none").to(device, memory_format=CL)
    opt = torch.optim.SGD(net.param_groups()[1], lr=0.1)
    x = torch.randn(n, 3, s, s, device=device).contiguous(memory_format=CL)
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 3, (n, s // 4, s // 4), generator=g).to(device)

    def step(autocast):
        with autocast():
            logits = net(x)
        loss = affinity_loss(logits.float(), lab, radius=10)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, n


def seg_step(device, size, batch, beco: bool):
    from sslib.beco import beco_loss
    from sslib.losses import seg_cross_entropy
    from sslib.models.deeplab import DeepLabV2

    n, s, c = SIZES[size]["seg"]
    n = batch or n
    nets = [DeepLabV2(c, "resnet101", weights="none", output_stride=8).to(device, memory_format=CL)
            for _ in range(2 if beco else 1)]
    opt = torch.optim.SGD([p for m in nets for p in m.parameters()], lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(n, 3, s, s, device=device).contiguous(memory_format=CL)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, c, (n, s, s), generator=g).to(device)
    mask = (torch.rand(n, s, s, generator=g) > 0.5).to(device)
    band = torch.zeros(n, s, s, device=device)

    def up(z):
        return F.interpolate(z.float(), size=(s, s), mode="bilinear", align_corners=False)

    def step(autocast):
        with autocast():
            outs = [m(x) for m in nets]
        if beco:
            loss = beco_loss(up(outs[0]), up(outs[1]), target, mask.float(), band)["total"]
        else:
            loss = seg_cross_entropy(up(outs[0]), target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, n


def _time(step, device, dtype: str, repeats: int) -> tuple[float, float | None]:
    dev_type = torch.device(device).type
    if dtype == "bf16":
        def autocast():
            return torch.autocast(dev_type, dtype=torch.bfloat16)
    else:
        def autocast():
            return contextlib.nullcontext()
    cuda = dev_type == "cuda"
    for _ in range(2):
        step(autocast)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(autocast)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None
    return 1000 * statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", default="cam,cam_official,irn,seg", help="comma-separated: cam, cam_official, irn, seg, seg_beco")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--size", default="voc", choices=sorted(SIZES))
    ap.add_argument("--seg-batch", type=int, default=None, help="segmentation batch (default: 16 at voc size)")
    ap.add_argument("--vgg-weights", default=None, help="torchvision's vgg19 state dict (default: random weights in a temporary file)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # random-init warnings of the weights loaders
    torch.manual_seed(0)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        vgg = args.vgg_weights
        if vgg is None:  # the official step loads a file every step: give it one of the real size
            import torchvision

            vgg = f"{tmp}/vgg19-random.pth"
            torch.save(torchvision.models.vgg19().state_dict(), vgg)
        builders = {"cam": lambda: cam_step(args.device, args.size, vgg, False),
                    "cam_official": lambda: cam_step(args.device, args.size, vgg, True),
                    "irn": lambda: irn_step(args.device, args.size),
                    "seg": lambda: seg_step(args.device, args.size, args.seg_batch, False),
                    "seg_beco": lambda: seg_step(args.device, args.size, args.seg_batch, True)}
        print(f"training steps on {args.device} ({args.size} size; {torch.get_num_threads()} CPU threads), "
              f"median of {args.repeats}")
        print("| step | dtype | ms / step | images / s | peak GiB |\n|---|---|---:|---:|---:|")
        for name in args.steps.split(","):
            step, n = builders[name]()
            for dtype in args.dtypes.split(","):
                ms, peak = _time(step, args.device, dtype, args.repeats)
                print(f"| {name} | {dtype} | {ms:.1f} | {1000 * n / ms:.1f} | {'-' if peak is None else f'{peak:.1f}'} |",
                      flush=True)
            del step
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
