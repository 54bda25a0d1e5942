"""A toy segmentation training crop for tests/test_extensions.py (a plugin: sslib's public API only).

``center_crop``: the centred window of ``share`` of the image's area (the image's own aspect),
resized to the crop, flipped at random; never padded.
"""
import math
from dataclasses import dataclass

from sslib.config import num
from sslib.data.crops import ResizedCropTransform
from sslib.registry import register_seg_crop


@dataclass
class CenterCropSettings:
    share: float = num(gt=0, le=1)


class CenterCrop(ResizedCropTransform):
    def __init__(self, share, crop_size, hflip):
        super().__init__((share, share), (1.0, 1.0), crop_size, hflip)

    def window(self, h, w):
        s = math.sqrt(self.area[0])
        ch, cw = max(1, round(h * s)), max(1, round(w * s))
        return (h - ch) // 2, (w - cw) // 2, ch, cw


@register_seg_crop("center_crop", settings=CenterCropSettings)
def center_crop(settings, crop_size, hflip):
    return CenterCrop(settings.share, crop_size, hflip)
