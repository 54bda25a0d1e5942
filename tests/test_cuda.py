"""The GPU path: every network's AMP training step and the inference kernels on CUDA,
each against the same computation in fp32 on the CPU.

Marked ``cuda``: skipped without a GPU, with the reason shown (``pytest -m cuda -rs``).
``SSC_TEST_DEVICE=cpu`` runs them on the CPU instead (fp32 against fp32), which checks the
tests themselves where no GPU is at hand. On CUDA the training steps run under bf16
autocast, as the stages do with ``amp: true``; losses must agree within bf16 tolerance and
gradients point the same way (cosine > 0.99); fp32 inference agrees to float rounding.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F

DEVICE = os.environ.get("SSC_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE is None, reason="needs a CUDA GPU (SSC_TEST_DEVICE=cpu checks these tests on the CPU)")]
AMP = DEVICE == "cuda"
LOSS_RTOL = 3e-2 if AMP else 1e-5


def _autocast():
    return torch.autocast("cuda", dtype=torch.bfloat16) if AMP else torch.autocast("cpu", enabled=False)


def _twins(build):
    """The same module (same seed) on the CPU and on DEVICE."""
    torch.manual_seed(0)
    cpu = build()
    return cpu, copy.deepcopy(cpu).to(DEVICE)


def _grads(module) -> torch.Tensor:
    return torch.cat([p.grad.detach().float().flatten().cpu() for p in module.parameters() if p.grad is not None])


def _same_direction(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.norm() > 0
    cos = F.cosine_similarity(a, b, dim=0).item()
    assert cos > (0.99 if AMP else 1 - 1e-5), cos


def _close(cpu: torch.Tensor, dev: torch.Tensor, rtol: float = LOSS_RTOL) -> None:
    torch.testing.assert_close(dev.detach().float().cpu(), cpu.detach().float(), rtol=rtol, atol=rtol * 1e-2)


def _images(n: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g)


def test_cam_step_with_reconstruction_and_alignment():
    from sslib.losses import alignment_loss, classification_loss
    from sslib.models import CAMNet, Decoder, build_reconstruction_loss

    def build():
        return torch.nn.ModuleDict({
            "net": CAMNet(3, backbone="efficientnet_lite0", weights="packaged", frozen_stages=4, bn_eval=True),
            "dec": Decoder(3, width=64),
            "rec": build_reconstruction_loss("perceptual", loss_network="efficientnet_lite0")})

    cpu, dev = _twins(build)
    x = _images(2, 160)
    label = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    sp = (torch.arange(160)[:, None] // 20 * 8 + torch.arange(160)[None] // 20).expand(2, -1, -1).contiguous()
    losses = []
    for m, device in ((cpu, "cpu"), (dev, DEVICE)):
        xi = x.to(device)
        with _autocast() if device == DEVICE else torch.autocast("cpu", enabled=False):
            scores, cams = m["net"](xi)
            cls = classification_loss(scores.float(), label.to(device))
            rec = m["rec"](m["dec"](cams.contiguous()).float(), xi)
        align = alignment_loss(cams.float(), sp.to(device), label)
        total = cls + rec + align
        total.backward()
        losses.append(torch.stack([cls, rec, align]))
    _close(losses[0], losses[1])
    _same_direction(_grads(cpu["net"]), _grads(dev["net"]))
    _same_direction(_grads(cpu["dec"]), _grads(dev["dec"]))


def test_irn_step():
    from sslib.affinity import affinity_loss
    from sslib.models import BoundaryNet

    cpu, dev = _twins(lambda: BoundaryNet("efficientnet_lite0", weights="packaged"))
    x = _images(2, 128)
    g = torch.Generator().manual_seed(2)
    label = torch.randint(0, 3, (2, 32, 32), generator=g)
    label[:, :4] = 255
    out = []
    for m, device in ((cpu, "cpu"), (dev, DEVICE)):
        with _autocast() if device == DEVICE else torch.autocast("cpu", enabled=False):
            logits = m(x.to(device))
        loss = affinity_loss(logits.float(), label.to(device), radius=10)["total"]
        loss.backward()
        out.append(loss)
    _close(out[0], out[1])
    _same_direction(_grads(cpu), _grads(dev))


@pytest.mark.filterwarnings("ignore:train_seg.backbone_weights. none:UserWarning")
@pytest.mark.parametrize("backbone, stride", [("efficientnet_lite0", 16), ("resnet101", 8)])
def test_segmentation_step(backbone, stride):
    from sslib.losses import seg_cross_entropy
    from sslib.models.deeplab import DeepLabV2

    weights = "packaged" if backbone == "efficientnet_lite0" else "none"
    cpu, dev = _twins(lambda: DeepLabV2(5, backbone, weights=weights, output_stride=stride))
    x = _images(2, 96)
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 5, (2, 96, 96), generator=g)
    mask = torch.rand(2, 96, 96, generator=g) > 0.3
    out = []
    for m, device in ((cpu, "cpu"), (dev, DEVICE)):
        with _autocast() if device == DEVICE else torch.autocast("cpu", enabled=False):
            logits = m(x.to(device))
        full = F.interpolate(logits.float(), size=(96, 96), mode="bilinear", align_corners=False)
        loss = seg_cross_entropy(full, target.to(device), mask.to(device))
        loss.backward()
        out.append(loss)
    _close(out[0], out[1])
    _same_direction(_grads(cpu), _grads(dev))


def test_cam_inference():
    from sslib.cam import multiscale_cams
    from sslib.models import CAMNet

    cpu, dev = _twins(lambda: CAMNet(3, backbone="efficientnet_lite0", weights="packaged").eval())
    x = _images(2, 128)
    with torch.no_grad():
        ref = multiscale_cams(cpu, x, scales=(1.0, 0.5), flip=True)
        got = multiscale_cams(dev, x.to(DEVICE), scales=(1.0, 0.5), flip=True)
    for a, b in zip(ref, got):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-3)


def test_random_walk():
    from sslib.affinity import random_walk

    g = torch.Generator().manual_seed(4)
    cams = torch.rand(3, 24, 32, generator=g)
    boundary = torch.rand(24, 32, generator=g)
    ref = random_walk(cams, boundary, radius=5, beta=10.0, exp_times=5)
    got = random_walk(cams.to(DEVICE), boundary.to(DEVICE), radius=5, beta=10.0, exp_times=5)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-5)


def test_segmentation_inference():
    from sslib.inference import multiscale_logits
    from sslib.models.deeplab import DeepLabV2

    cpu, dev = _twins(lambda: DeepLabV2(5, "efficientnet_lite0", weights="packaged", output_stride=16).eval())
    x = _images(1, 100)
    with torch.no_grad():
        ref = multiscale_logits(cpu, x, scales=(0.5, 1.0, 1.5), fusion="max", flip=True)
        got = multiscale_logits(dev, x.to(DEVICE), scales=(0.5, 1.0, 1.5), fusion="max", flip=True)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-3, atol=1e-3)
