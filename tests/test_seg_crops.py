"""The segmentation training crops (``train_seg.crop``): SSC's resized crop covers 50-75 % of
the image's area at an aspect of 3/4-4/3, is resized to the crop and never padded; the
rescale-and-crop pads; both are entries of one table."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslib.data.crops import ResizedCropSettings, ResizedCropTransform
from sslib.formats import IGNORE_INDEX
from sslib.registry import SEG_CROPS

SSC = ((0.5, 0.75), (3 / 4, 4 / 3))


def _sample(h: int, w: int) -> dict:
    g = np.random.default_rng(0)
    label = g.integers(0, 5, (h, w))
    return {"name": "x", "image": g.integers(0, 256, (h, w, 3), dtype=np.uint8),
            "pseudo_label": label, "confidence": (label % 2).astype(np.int64)}


@pytest.mark.parametrize("hw", [(375, 500), (500, 375), (480, 640), (333, 333)])
def test_the_window_covers_50_to_75_percent_at_aspect_3_4_to_4_3_inside_the_image(hw):
    h, w = hw
    crop = ResizedCropTransform(*SSC, crop_size=512)
    torch.manual_seed(0)
    wins = np.array([crop.window(h, w) for _ in range(3000)])
    top, left, ch, cw = wins.T
    assert (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
    share, aspect = ch * cw / (h * w), cw / ch
    tol = 2 / min(ch.min(), cw.min())  # rounding each side to whole pixels
    assert share.min() >= 0.5 - tol and share.max() <= 0.75 + tol
    assert aspect.min() >= 3 / 4 - tol and aspect.max() <= 4 / 3 + tol
    # the draws fill the ranges, not one corner of them (windows that do not fit are drawn
    # again, so large shares are rarer on a non-square image: no uniformity claimed)
    assert share.min() < 0.52 and share.max() > 0.73
    assert aspect.min() < 0.78 and aspect.max() > 1.28
    assert len({(t, l) for t, l in zip(top, left)}) > 100


def test_a_window_that_cannot_fit_falls_back_inside_the_image():
    """A 40 x 400 strip: no window of aspect <= 4/3 and >= 50 % of the area fits; the
    fallback stays inside the image (never padded)."""
    crop = ResizedCropTransform(*SSC, crop_size=64)
    torch.manual_seed(1)
    for _ in range(200):
        top, left, ch, cw = crop.window(40, 400)
        assert 0 <= top and top + ch <= 40 and 0 <= left and left + cw <= 400 and ch * cw > 0


def test_the_crop_is_resized_to_the_crop_size_with_no_padding():
    crop = SEG_CROPS.create("resized_crop", ResizedCropSettings(area=[0.5, 0.75], aspect=[0.75, 4 / 3]), 64, True)
    torch.manual_seed(2)
    for _ in range(50):
        out = crop(_sample(75, 100))
        assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32
        assert out["pseudo_label"].shape == (64, 64) and out["confidence"].shape == (64, 64)
        assert (out["pseudo_label"] != IGNORE_INDEX).all() and (out["confidence"] != IGNORE_INDEX).all()
        # labels are resized by nearest neighbour: their values are the input's
        assert set(out["pseudo_label"].unique().tolist()) <= set(range(5))
        # image and labels come from the same window: the confidence is the label's parity
        assert torch.equal(out["confidence"], out["pseudo_label"] % 2)


def test_the_window_is_the_zoomed_image_region():
    """Without flip, the output image is the window of the input resized (checked against a
    window drawn with the same seed, resized independently by PIL)."""
    from PIL import Image

    from sslib.data.transforms import normalize

    crop = ResizedCropTransform(*SSC, crop_size=32, hflip=False)
    s = _sample(60, 80)
    torch.manual_seed(3)
    top, left, ch, cw = crop.window(60, 80)
    torch.manual_seed(3)
    out = crop(s)
    win = s["image"][top:top + ch, left:left + cw]
    ref = normalize(np.asarray(Image.fromarray(win).resize((32, 32), Image.Resampling.BILINEAR)))
    assert np.allclose(out["image"].numpy().transpose(1, 2, 0), ref, atol=1e-6)


def test_the_scale_crop_pads_and_the_padding_is_labelled_255():
    from sslib.data.crops import ScaleCropSettings

    crop = SEG_CROPS.create("scale_crop", ScaleCropSettings(scale_range=[0.5, 0.5]), 64, False)
    out = crop(_sample(60, 80))  # rescaled to 30 x 40: most of the 64 crop is padding
    pad = out["pseudo_label"] == IGNORE_INDEX
    assert pad.float().mean() == pytest.approx(1 - 30 * 40 / 64 ** 2, abs=1e-6)
    assert (out["confidence"][pad] == IGNORE_INDEX).all()


def test_an_unknown_crop_is_refused_with_the_key_and_the_known_names():
    from sslib import config

    with pytest.raises(config.ConfigError, match=r"train_seg.crop: unknown segmentation training crop 'ssc' "
                                                 r"\(known: scale_crop, resized_crop\)"):
        config.load(overrides={"train_seg": {"crop": "ssc"}})


def test_bad_crop_ranges_are_refused_naming_the_key():
    from sslib import config

    with pytest.raises(config.ConfigError, match=r"train_seg.crops.resized_crop.area"):
        config.load(overrides={"train_seg": {"crops": {"resized_crop": {"area": [0.75, 0.5]}}}})
    with pytest.raises(config.ConfigError, match=r"train_seg.crops.resized_crop.area\[1\]"):
        config.load(overrides={"train_seg": {"crops": {"resized_crop": {"area": [0.5, 1.5]}}}})
