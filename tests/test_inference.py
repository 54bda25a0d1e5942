"""Multi-scale inference: max / mean fusion by hand, flips, scale 1.0, argument checks."""
import pytest
import torch
import torch.nn.functional as F

from sslib.inference import multiscale_logits, predict


def stride2_forward(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, h, w) -> (N, 2, h/2, w/2): a deterministic, scale- and flip-sensitive 'network'.

    Class 0 is a 2x2 average pool of channel 0; class 1 adds a left-to-right ramp (so the
    map is not flip-symmetric) scaled by the input width (so it depends on the scale).
    """
    pooled = F.avg_pool2d(x, 2)
    ramp = torch.linspace(0, 1, pooled.shape[-1], dtype=x.dtype, device=x.device)
    c0 = pooled[:, :1]
    c1 = pooled[:, 1:2] * 0.5 + ramp * x.shape[-1] / 10
    return torch.cat([c0, c1], dim=1)


def resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.fixture
def image() -> torch.Tensor:
    return torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(0))


def hand_members(image, scales, flip=False):
    """Every member computed by hand: resize, forward (flipped back), resize to the image."""
    h, w = image.shape[-2:]
    out = []
    for s in scales:
        x = image if s == 1 else resize(image, (round(h * s), round(w * s)))
        out.append(resize(stride2_forward(x), (h, w)))
        if flip:
            out.append(resize(stride2_forward(x.flip(-1)).flip(-1), (h, w)))
    return torch.stack(out)


def test_max_fusion_matches_hand_computation(image):
    scales = (0.5, 0.75, 1.0, 1.25, 1.5)
    got = multiscale_logits(stride2_forward, image, scales, fusion="max")
    members = hand_members(image, scales)
    assert got.shape == (2, 2, 12, 16)
    torch.testing.assert_close(got, members.max(dim=0).values)
    # the scales really differ, so the max is not just one member
    assert not any(torch.equal(got, m) for m in members)


def test_mean_fusion_matches_hand_computation(image):
    scales = (0.5, 1.0, 1.5)
    got = multiscale_logits(stride2_forward, image, scales, fusion="mean")
    torch.testing.assert_close(got, hand_members(image, scales).mean(dim=0))


def test_flip_members_are_flipped_back(image):
    scales = (0.75, 1.0)
    got = multiscale_logits(stride2_forward, image, scales, fusion="mean", flip=True)
    members = hand_members(image, scales, flip=True)
    assert members.shape[0] == 4  # each flipped copy is one more member
    torch.testing.assert_close(got, members.mean(dim=0))
    # the forward is not flip-symmetric: without flipping back the result would differ
    unflipped = resize(stride2_forward(image.flip(-1)), (12, 16))
    assert not torch.allclose(members[1], unflipped)


def test_scale_one_is_forward_itself(image):
    direct = resize(stride2_forward(image), (12, 16))
    for fusion in ("max", "mean"):
        torch.testing.assert_close(multiscale_logits(stride2_forward, image, (1.0,), fusion), direct)
    identity = lambda x: x[:, :2] * 3  # full-resolution logits: nothing is resized at all
    assert torch.equal(multiscale_logits(identity, image, (1.0,)), image[:, :2] * 3)


def test_predict_is_argmax():
    logits = torch.tensor([[[[0.1, 2.0]], [[0.5, -1.0]], [[0.3, 2.0]]]])  # (1, 3, 1, 2)
    labels = predict(logits)
    assert labels.dtype == torch.int64 and labels.shape == (1, 1, 2)
    assert labels.tolist() == [[[1, 0]]]


@pytest.mark.parametrize("kwargs, match", [
    ({"scales": ()}, "scales"),
    ({"scales": (1.0, 0.0)}, "scales"),
    ({"scales": (-0.5,)}, "scales"),
    ({"scales": (float("nan"),)}, "scales"),
    ({"fusion": "median"}, "fusion"),
])
def test_bad_arguments_raise(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        multiscale_logits(stride2_forward, image, **kwargs)


def test_bad_shapes_raise(image):
    with pytest.raises(ValueError, match="image"):
        multiscale_logits(stride2_forward, image[0])
    with pytest.raises(ValueError, match="forward"):
        multiscale_logits(lambda x: x[0], image)
    with pytest.raises(ValueError, match="predict"):
        predict(image[0])


# --------------------------------------------------------------------------- one image, SSC's resize
def test_image_logits_resizes_first_and_brings_the_logits_back():
    """resize = 16: the forward sees the PIL-bilinear 16 x 16 image (normalised), and the
    logits come back to the image's 12 x 20 by bilinear upsampling (computed here by hand)."""
    import numpy as np
    from PIL import Image

    from sslib.data.transforms import normalize
    from sslib.inference import image_logits

    g = np.random.default_rng(0)
    img = g.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    seen = []

    def forward(x):
        seen.append(x.clone())
        return x[:, :2] * 2.0

    out = image_logits(forward, img, torch.device("cpu"), resize=16)
    small = normalize(np.asarray(Image.fromarray(img).resize((16, 16), Image.Resampling.BILINEAR)))
    x = torch.from_numpy(small.transpose(2, 0, 1).copy())[None]
    assert torch.allclose(seen[0], x)
    expected = F.interpolate(x[:, :2] * 2.0, size=(12, 20), mode="bilinear", align_corners=False)[0]
    assert out.shape == (2, 12, 20) and torch.allclose(out, expected, atol=1e-6)
    # 0: the image at its own size, no resize on either side
    same = image_logits(forward, img, torch.device("cpu"))
    assert torch.allclose(same, torch.from_numpy(normalize(img).transpose(2, 0, 1)[:2] * 2.0), atol=1e-6)


def test_confusion_counts_pairs_and_skips_ignored_pixels():
    from sslib.inference import confusion

    target = torch.tensor([[0, 1, 2], [255, 1, 1]])
    pred = torch.tensor([[0, 2, 2], [1, 1, 0]])
    expected = torch.zeros(3, 3, dtype=torch.int64)
    for t, p in [(0, 0), (1, 2), (2, 2), (1, 1), (1, 0)]:
        expected[t, p] += 1
    assert torch.equal(confusion(pred, target, 3), expected)
