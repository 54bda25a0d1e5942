"""A toy segmentation method for tests/test_seg_methods.py (a plugin: sslib's public API only).

``smooth_ce``: one network, label-smoothed cross-entropy on the confident pixels' pseudo labels.
"""
from dataclasses import dataclass

import torch.nn.functional as F

from sslib.config import num
from sslib.registry import register_seg_method
from sslib.seg_methods import targets, upsample


@dataclass
class SmoothCESettings:
    smoothing: float = num(ge=0, lt=1)


@register_seg_method("smooth_ce", settings=SmoothCESettings, nets=("net",), loss_names=("ce",), batch_multiple=1,
                     inference_nets=None)
def smooth_ce(settings, seed):
    def step(batch, ctx):
        image, label, conf = targets(batch, ctx.device)
        with ctx.autocast():
            logits = ctx.modules["net"](image)
        target = label.masked_fill(~conf, 255)
        loss = F.cross_entropy(upsample(logits, label.shape[-2:]), target, ignore_index=255,
                               label_smoothing=settings.smoothing)
        return loss, loss.detach().reshape(1)

    return step
