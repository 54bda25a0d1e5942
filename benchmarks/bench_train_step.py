"""Where a CAM-training step spends its time: classifier, decoder, perceptual loss, alignment.

    python benchmarks/bench_train_step.py [--crop 192] [--batch 6] [--classes 6] [--repeats 5]
        [--backbone efficientnet_lite0] [--loss-network efficientnet_lite0] [--decoder-width 64]
    python benchmarks/bench_train_step.py --crop 512 --classes 20 --repeats 3 \
        --backbone resnet50 --loss-network vgg19 --decoder-width 256   # the VOC step

Each part is timed forward + backward (median of ``--repeats`` after one warm-up) on
random inputs of the training shape, in the order a step runs them:

* ``classifier``: CAMNet (``--backbone``, DRS) forward, classification loss, backward;
* ``decoder``: the reconstruction decoder from the CAM logits, forward + backward (with an
  L1 loss, whose own cost is negligible);
* ``perceptual``: the perceptual loss (``--loss-network``) on the decoder output, forward + backward
  (the gradient stops at the decoder output);
* ``alignment``: alignment_loss on the CAM logits, forward + backward (to the CAMs);
* ``l1 rec loss``: the pixel loss used instead of ``perceptual`` in the ablation.

Prints a table (ms per step and share of the full ssc step); no asserts. Runs on the
CPU unless ``--device cuda``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sslib.losses import alignment_loss, classification_loss
from sslib.models import CAMNet, Decoder, DRSSettings, build_reconstruction_loss


def _median_ms(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--backbone", default="efficientnet_lite0", help="resnet50 | efficientnet_lite0")
    ap.add_argument("--loss-network", default="efficientnet_lite0", help="vgg19 | efficientnet_lite0")
    ap.add_argument("--decoder-width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--superpixels", type=int, default=100, help="superpixels per image (square grid)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels-last", action="store_true", help="networks and images in channels_last memory format")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    import warnings

    warnings.filterwarnings("ignore")  # random-init warnings of the weights loader
    n, c, s = args.batch, args.classes, args.crop
    image = torch.randn(n, 3, s, s, device=device)
    labels = (torch.rand(n, c) < 2 / c).float()
    labels[:, 0] = 1
    side = max(1, int(args.superpixels ** 0.5))
    cell = -(-s // side)
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    sp = ((yy // cell) * side + xx // cell).expand(n, s, s).contiguous().to(device)

    weights = "packaged" if args.backbone == "efficientnet_lite0" else "none"  # the frozen groups as in a run
    net = CAMNet(c, backbone=args.backbone, expansion=("drs", DRSSettings(0.55)), weights=weights).to(device).train()
    decoder = Decoder(c, width=args.decoder_width).to(device).train()
    perceptual = build_reconstruction_loss("perceptual", "none", args.loss_network).to(device)
    l1 = build_reconstruction_loss("l1").to(device)
    if args.channels_last:
        fmt = torch.channels_last
        net, decoder, perceptual = (m.to(memory_format=fmt) for m in (net, decoder, perceptual))
        image = image.contiguous(memory_format=fmt)
    cams_fixed = net(image)[1].detach()

    def classifier():
        scores, _ = net(image)
        classification_loss(scores, labels.to(device)).backward()

    def dec():
        decoder(cams_fixed.requires_grad_()).abs().mean().backward()

    rec_fixed = decoder(cams_fixed).detach()

    def perc():
        perceptual(rec_fixed.requires_grad_(), image).backward()

    def pix():
        l1(rec_fixed.requires_grad_(), image).backward()

    def align():
        alignment_loss(cams_fixed.requires_grad_(), sp, labels).backward()

    parts = {"classifier": classifier, "decoder": dec, "perceptual": perc, "alignment": align,
             "l1 rec loss": pix}
    ms = {k: _median_ms(f, device, args.repeats) for k, f in parts.items()}
    total = sum(ms[k] for k in ("classifier", "decoder", "perceptual", "alignment"))
    print(f"CAM training step, batch {n}, crop {s}, {c} classes, {device} "
          f"({torch.get_num_threads()} threads{', channels_last' if args.channels_last else ''}), median of {args.repeats}")
    print("| part | ms / step | share of the ssc step |\n|---|---:|---:|")
    for k, v in ms.items():
        share = f"{100 * v / total:.0f} %" if k != "l1 rec loss" else "(instead of perceptual)"
        print(f"| {k} | {v:.1f} | {share} |")
    print(f"| ssc step (sum of the first four) | {total:.1f} | 100 % |")


if __name__ == "__main__":
    main()
