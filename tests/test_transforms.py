"""Training / evaluation transforms: joint geometry, padding, superpixel ids, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from data_fixtures import COLOURS
from sslib.config import AugmentConfig
from sslib.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform,
                                   build_train_transform)


def blocks(h=40, w=60):
    """2 x 3 blocks of classes 1..6; image colour encodes the class; superpixel ids 100k + 7."""
    mask = np.zeros((h, w), np.int64)
    for r in range(2):
        for c in range(3):
            mask[r * h // 2:(r + 1) * h // 2, c * w // 3:(c + 1) * w // 3] = 1 + 3 * r + c
    return {"name": "x", "image": COLOURS[mask], "mask": mask, "superpixels": mask * 100 + 7,
            "label": torch.ones(3)}


def denormalise(img: torch.Tensor) -> np.ndarray:
    return (img.numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN) * 255


def test_shapes_and_passthrough():
    out = TrainTransform((30, 90), 48)(blocks())
    assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (48, 48) and out["mask"].dtype == torch.int64
    assert out["superpixels"].shape == (48, 48) and out["superpixels"].dtype == torch.int64
    assert out["name"] == "x" and out["label"].shape == (3,)
    only_image = TrainTransform((30, 90), 24)({"image": blocks()["image"]})
    assert set(only_image) == {"image"} and only_image["image"].shape == (3, 24, 24)


@pytest.mark.parametrize("seed", range(12))
def test_image_mask_and_superpixels_stay_aligned(seed):
    torch.manual_seed(seed)
    out = TrainTransform((30, 90), 48)(blocks())
    img, mask, sp = denormalise(out["image"]), out["mask"].numpy(), out["superpixels"].numpy()
    # mask and superpixels: the same partition (both nearest, same geometry), padding included
    pairs = set(zip(sp.ravel().tolist(), mask.ravel().tolist()))
    assert len(pairs) == len(np.unique(sp)) == len(np.unique(mask))
    # image colour = mask class away from class edges (bicubic blurs the edges)
    interior = (ndimage.maximum_filter(mask, 5) == ndimage.minimum_filter(mask, 5)) & (mask != 255)
    assert interior.sum() > 100
    dist = ((img[interior][:, None, :] - COLOURS[1:7][None].astype(np.float32)) ** 2).sum(-1)
    assert np.array_equal(dist.argmin(1) + 1, mask[interior])


def test_padding_values():
    sample = blocks(20, 30)
    torch.manual_seed(0)
    out = TrainTransform((10, 10), 32)(sample)  # 20 x 30 -> 7 x 10, padded into 32 x 32
    mask, sp, img = out["mask"].numpy(), out["superpixels"].numpy(), out["image"].numpy()
    pad = mask == 255
    assert pad.sum() == 32 * 32 - 7 * 10
    assert np.all(img[:, pad] == 0) and np.all(img[:, ~pad] != 0)
    pad_ids = np.unique(sp[pad])
    assert len(pad_ids) == 1 and pad_ids[0] not in sp[~pad]
    # the image block is a 7 x 10 rectangle, placed at random
    rows, cols = np.nonzero(~pad)
    assert rows.max() - rows.min() == 6 and cols.max() - cols.min() == 9


def test_superpixel_ids_consecutive_after_crop():
    sample = blocks()
    sample["superpixels"] = (np.arange(40 * 60).reshape(40, 60) // 3) * 11 + 500  # many, large ids
    for seed in range(5):
        torch.manual_seed(seed)
        sp = TrainTransform((40, 80), 32)(sample)["superpixels"].numpy()
        assert np.array_equal(np.unique(sp), np.arange(sp.max() + 1))


def test_deterministic_under_manual_seed():
    t = TrainTransform((30, 90), 48)

    def run(seed):
        torch.manual_seed(seed)
        return t(blocks())

    a, b, c = run(3), run(3), run(4)
    for k in ("image", "mask", "superpixels"):
        assert torch.equal(a[k], b[k])
    assert any(not torch.equal(a[k], c[k]) for k in ("image", "mask"))


def test_flip_probability():
    sample = blocks(20, 30)
    sample["mask"] = np.where(np.arange(30) < 15, 1, 2)[None].repeat(20, 0)

    def left_class(t, seed):
        torch.manual_seed(seed)
        m = t(sample)["mask"].numpy()
        return int(m[m != 255].reshape(20, 30)[0, 0])  # no resize (long side 30), height padded

    flips = [left_class(TrainTransform((30, 30), 30), s) for s in range(40)]
    assert set(flips) == {1, 2}
    assert {left_class(TrainTransform((30, 30), 30, hflip=False), s) for s in range(10)} == {1}


def test_eval_transform_normalises():
    image = np.zeros((4, 5, 3), np.uint8)
    image[1, 2] = (255, 0, 128)
    out = EvalTransform()({"image": image, "mask": np.ones((4, 5), np.uint8), "name": "n"})
    assert out["image"].shape == (3, 4, 5) and out["image"].dtype == torch.float32
    expect = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert np.allclose(out["image"][:, 1, 2].numpy(), expect, atol=1e-6)
    assert out["mask"].dtype == torch.int64 and out["name"] == "n"


def test_build_train_transform_and_validation():
    t = build_train_transform(AugmentConfig(resize_long=[20, 40], hflip=False, crop_size=16))
    assert (t.resize_long, t.crop_size, t.hflip) == ((20, 40), 16, False)
    with pytest.raises(ValueError):
        TrainTransform((40, 20), 16)
    with pytest.raises(ValueError):
        TrainTransform((20, 40), 16)({"image": np.zeros((4, 4, 3), np.uint8), "mask": np.zeros((3, 4))})
