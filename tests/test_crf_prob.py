"""Dense CRF on probabilities (BECO's post-processing) and BECO's wrapped CRF image."""
import numpy as np
import pytest

from sslib.crf import BECO_MEAN_RGB, SegCRFParams, beco_crf_image, crf_available, crf_prob

needs_crf = pytest.mark.skipif(not crf_available(),
                               reason="pydensecrf is not installed (pip install pydensecrf2)")


def halves_image(h: int = 8, w: int = 8) -> np.ndarray:
    """(h, w, 3) uint8: a dark left half and a bright right half."""
    img = np.empty((h, w, 3), np.uint8)
    img[:, : w // 2] = (20, 30, 40)
    img[:, w // 2:] = (230, 220, 210)
    return img


def halves_truth(h: int = 8, w: int = 8) -> np.ndarray:
    """(h, w) int64: 0 on the left half, 1 on the right half."""
    lab = np.zeros((h, w), np.int64)
    lab[:, w // 2:] = 1
    return lab


def noisy_prob(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """(2, H, W) float32 softmax that favours truth (0.7) except on ~15% flipped pixels."""
    rng = np.random.default_rng(seed)
    lab = np.where(rng.random(truth.shape) < 0.15, 1 - truth, truth)
    p1 = np.where(lab == 1, 0.7, 0.3).astype(np.float32)
    return np.stack([1 - p1, p1])


def test_beco_defaults():
    assert SegCRFParams().kwargs() == {"t": 10, "gauss_sxy": 1, "gauss_compat": 3, "bilateral_sxy": 67,
                                       "bilateral_srgb": 3, "bilateral_compat": 4}


@needs_crf
def test_crf_prob_cleans_noise_along_the_colour_edge():
    img, truth = halves_image(), halves_truth()
    prob = noisy_prob(truth)
    assert (prob.argmax(0) != truth).sum() >= 3  # there is noise to clean
    q = crf_prob(img, prob, **SegCRFParams().kwargs())
    assert q.shape == (2, 8, 8) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
    assert (q >= 0).all()
    np.testing.assert_array_equal(q.argmax(0), truth)


@needs_crf
def test_confident_one_hot_is_kept():
    img = halves_image()
    lab = np.zeros((8, 8), np.int64)
    lab[:, 2:5] = 2  # a stripe that ignores the colour edge: confident unaries win
    prob = np.eye(3, dtype=np.float32)[lab].transpose(2, 0, 1)
    q = crf_prob(img, prob)
    np.testing.assert_array_equal(q.argmax(0), lab)
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)


@needs_crf
def test_single_class_is_all_ones():
    q = crf_prob(halves_image(), np.ones((1, 8, 8), np.float32))
    assert q.shape == (1, 8, 8) and (q == 1).all()


def test_crf_prob_checks_its_arguments():
    img, prob = halves_image(), noisy_prob(halves_truth())
    with pytest.raises(ValueError, match="uint8 image"):
        crf_prob(img.astype(np.float32), prob)
    with pytest.raises(ValueError, match="uint8 image"):
        crf_prob(img[..., :2], prob)
    with pytest.raises(ValueError, match="shape"):
        crf_prob(img, prob[:, :4])
    with pytest.raises(ValueError, match="shape"):
        crf_prob(img, prob[0])
    with pytest.raises(ValueError, match="floating"):
        crf_prob(img, (prob > 0.5).astype(np.int64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        crf_prob(img, prob * 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        crf_prob(img, np.full_like(prob, np.nan))
    with pytest.raises(ValueError, match="t must"):
        crf_prob(img, prob, t=-1)


def test_beco_crf_image_by_hand():
    img = np.array([[[200, 200, 200], [100, 100, 100], [0, 0, 0], [122, 117, 104]]], np.uint8)
    # R: 200 - 122.675 = 77.325 -> 77;  100 - 122.675 = -22.675 -> -22 -> 234;  0 -> -122 -> 134
    # G: 200 - 116.669 = 83.331 -> 83;  100 - 116.669 = -16.669 -> -16 -> 240;  0 -> -116 -> 140
    # B: 200 - 104.008 = 95.992 -> 95;  100 - 104.008 =  -4.008 ->  -4 -> 252;  0 -> -104 -> 152
    # last: 122 - 122.675 = -0.675 -> 0; 117 - 116.669 = 0.331 -> 0; 104 - 104.008 -> 0
    expected = np.array([[[77, 83, 95], [234, 240, 252], [134, 140, 152], [0, 0, 0]]], np.uint8)
    out = beco_crf_image(img)
    assert out.dtype == np.uint8 and out.shape == img.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)
    assert BECO_MEAN_RGB == (122.675, 116.669, 104.008)


def test_beco_crf_image_checks_its_argument():
    with pytest.raises(ValueError, match="uint8 image"):
        beco_crf_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 image"):
        beco_crf_image(np.zeros((4, 4), np.uint8))
