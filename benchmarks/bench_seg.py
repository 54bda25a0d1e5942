"""The segmentation network's training step and its inference speed (single scale, multi-scale, CRF).

    python benchmarks/bench_seg.py [--device cpu|cuda] [--backbone resnet101|efficientnet_lite0]
                                   [--output-stride 8] [--batch 2] [--crop 512] [--steps 3]
                                   [--size 375 500] [--images 3] [--amp] [--beco] [--threads T]

* **Training step**: :class:`sslib.models.DeepLabV2` (random-init weights: the time does not
  depend on them) on ``--batch`` random ``--crop`` crops: forward, logits upsampled, the
  masked cross-entropy (:func:`sslib.losses.seg_cross_entropy`), backward and an SGD step
  with momentum; with ``--beco`` two networks and BECO's step without the online-label pass
  (:func:`sslib.beco.class_mix` + :func:`sslib.beco.beco_loss`). ``--amp``: bfloat16 autocast
  (CUDA). Median ms per step after one warm-up step, images per second, peak memory (CUDA).
* **Inference** of ``--images`` images of ``--size``: one scale, BECO's five scales (max
  fusion, :func:`sslib.inference.multiscale_logits`), and the five scales plus the dense CRF
  (:func:`sslib.crf.crf_prob`, BECO's settings, 21 classes; when pydensecrf is installed).

The default is the issue's case (ResNet-101 at stride 8, batch 2, 512 crops, VOC-sized
images); the synthetic default is ``--backbone efficientnet_lite0 --output-stride 16 --batch 8
--crop 192 --size 256 256 --classes 7``. Prints a markdown table; no asserts.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from sslib.beco import beco_loss, class_mix
from sslib.crf import crf_available, crf_prob
from sslib.inference import multiscale_logits
from sslib.losses import seg_cross_entropy
from sslib.models import DeepLabV2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _autocast(device: torch.device, amp: bool):
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else contextlib.nullcontext()


def train_step(a, device: torch.device):
    """A closure running one training step of the benchmark's network(s)."""
    nets = [DeepLabV2(a.classes, a.backbone, weights=None, output_stride=a.output_stride).to(device).train()
            for _ in range(2 if a.beco else 1)]
    opt = torch.optim.SGD([p for n in nets for p in n.parameters()], lr=0.01, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    image = torch.randn(a.batch, 3, a.crop, a.crop, device=device)
    label = torch.randint(0, a.classes, (a.batch, a.crop, a.crop), device=device, generator=g)
    mask = torch.rand(a.batch, a.crop, a.crop, device=device, generator=g) > 0.5

    def up(x):
        return F.interpolate(x.float(), size=(a.crop, a.crop), mode="bilinear", align_corners=False)

    def step():
        with _autocast(device, a.amp):
            if a.beco:
                m = class_mix(image, label, mask.float(), p=0.5, generator=g)
                loss = beco_loss(up(nets[0](m["image"])), up(nets[1](m["image"])), m["label"], m["mask"], m["band"])["total"]
            else:
                loss = seg_cross_entropy(up(nets[0](image)), label, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="resnet101", choices=["resnet101", "efficientnet_lite0"])
    ap.add_argument("--output-stride", type=int, default=8, choices=[8, 16])
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=2, default=[375, 500])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--beco", action="store_true")
    ap.add_argument("--skip-inference", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    rows = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    s = _time(train_step(a, device), device, a.steps)
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else "n/a"
    what = f"train step ({'BECO, 2 nets' if a.beco else 'CE'}, batch {a.batch}, crop {a.crop}{', bf16' if a.amp else ''})"
    rows.append((what, s * 1000, a.batch / s, peak))
    if not a.skip_inference:
        net = DeepLabV2(a.classes, a.backbone, weights=None, output_stride=a.output_stride).to(device).eval()
        image = torch.randn(1, 3, *a.size, device=device)
        rgb = np.random.default_rng(0).integers(0, 256, (*a.size, 3), dtype=np.uint8)

        def infer(scales, crf):
            def go():
                for _ in range(a.images):
                    with torch.no_grad(), _autocast(device, a.amp):
                        logits = multiscale_logits(net, image, scales, fusion="max")
                    prob = logits[0].float().softmax(0).cpu().numpy()
                    if crf:
                        crf_prob(rgb, prob)
            return go

        cases = [("inference, 1 scale", (1.0,), False), ("inference, 5 scales (max)", (0.5, 0.75, 1.0, 1.25, 1.5), False)]
        if crf_available():
            cases.append(("inference, 5 scales + CRF", (0.5, 0.75, 1.0, 1.25, 1.5), True))
        for name, scales, crf in cases:
            s = _time(infer(scales, crf), device, 1) / a.images
            rows.append((f"{name} ({a.size[0]}x{a.size[1]})", s * 1000, 1 / s, "n/a"))
    print(f"DeepLabV2 {a.backbone} OS{a.output_stride}, {a.classes} classes, device {device}, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| what | ms | images/s | peak memory |\n|---|---|---|---|")
    for name, ms, ips, peak in rows:
        print(f"| {name} | {ms:.0f} | {ips:.2f} | {peak} |")


if __name__ == "__main__":
    main()
