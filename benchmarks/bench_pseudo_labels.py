"""Images per second of the make_pseudo_labels step (boundary map, random walk, labels, mask).

    python benchmarks/bench_pseudo_labels.py [--device cpu|cuda] [--backbone efficientnet_lite0|resnet50]
                                             [--size 256 256] [--exp-times 5] [--images 10] [--threads T]

Times :func:`sslib.stages.make_pseudo_labels.pseudo_label` per image, and its parts: the
boundary network on the image and its flip (random-init weights: the time does not depend
on them), :func:`sslib.affinity.random_walk` of K = 3 stride-4 maps, and
:func:`sslib.affinity.walk_to_labels` + :func:`sslib.pseudo_labels.confidence_mask`. The
default is the synthetic default's case (Lite0, 256 x 256, 32 steps); VOC's is
``--backbone resnet50 --size 375 500 --exp-times 8 --pad-to 512``. File reading and PNG
writing are not included (the stage's timings JSON has the whole stage). Prints a markdown
table; no asserts.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sslib import config
from sslib.affinity import random_walk, walk_to_labels
from sslib.models import BoundaryNet
from sslib.pseudo_labels import confidence_mask
from sslib.stages.make_pseudo_labels import pseudo_label


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats):
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="efficientnet_lite0", choices=["efficientnet_lite0", "resnet50"])
    ap.add_argument("--size", type=int, nargs=2, default=[256, 256])
    ap.add_argument("--exp-times", type=int, default=5)
    ap.add_argument("--pad-to", type=int, default=0)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    params = config.load(overrides={"make_pseudo_labels": {"exp_times": a.exp_times, "pad_to": a.pad_to}})
    torch.manual_seed(0)
    net = BoundaryNet(a.backbone, weights="none").to(device).eval()
    h, w = a.size
    image = torch.randn(3, h, w, device=device)
    h4, w4 = (h + 3) // 4, (w + 3) // 4
    cam = {"keys": torch.tensor([0, 4, 9]).numpy(), "cam": torch.rand(3, h4, w4).numpy()}
    cams = torch.from_numpy(cam["cam"]).to(device)
    keys = torch.from_numpy(cam["keys"]).to(device)
    with torch.no_grad():
        pseudo_label(params, net, image, cam)  # warm-up
        boundary = net.boundary(image[None], pad_to=a.pad_to or None)[0, 0]
        walked = random_walk(cams, boundary, exp_times=a.exp_times)
        t_all = _time(lambda: pseudo_label(params, net, image, cam), device, a.images)
        t_b = _time(lambda: net.boundary(image[None], pad_to=a.pad_to or None), device, a.images)
        t_w = _time(lambda: random_walk(cams, boundary, exp_times=a.exp_times), device, a.images)

        def labels_and_mask():
            scores, label = walk_to_labels(walked, keys, (h, w), 0.25)
            confidence_mask(scores, label, 0.5)

        t_m = _time(labels_and_mask, device, a.images)
    print(f"{a.backbone}, {h} x {w}, {2 ** a.exp_times} steps, {device}, threads {torch.get_num_threads()}\n")
    print("| part | ms per image |\n|---|---|")
    for name, t in (("boundary (image + flip)", t_b), ("random walk", t_w), ("labels + confidence mask", t_m),
                    ("pseudo_label, all", t_all)):
        print(f"| {name} | {t * 1e3:.1f} |")
    print(f"\n{1 / t_all:.1f} images per second (median of {a.images})")


if __name__ == "__main__":
    main()
