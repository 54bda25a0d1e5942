"""CAM evaluation (sslib.evaluate): the threshold sweep against per-threshold confusion matrices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslib.cam import cam_path, save_cam
from sslib.config import thresholds_from
from sslib.evaluate import (activation_contrast, cam_labels, contrast_summary, evaluate_split, image_contrast,
                            summarize_sweep, sweep_and_contrast, sweep_confusion, write_sweep_csv)
from sslib.io import DataError
from sslib.metrics import confusion_matrix


def test_thresholds_from():
    ths = thresholds_from(0.05, 0.95, 0.05)
    assert len(ths) == 19 and ths[0] == 0.05 and ths[-1] == 0.95 and ths[3] == 0.2


def test_cam_labels_background_wins_ties():
    high = torch.tensor([[[0.2, 0.5, 0.1]], [[0.3, 0.4, 0.1]]])   # (K=2, 1, 3)
    keys = torch.tensor([4, 1])
    assert cam_labels(high, keys, 0.3).tolist() == [[0, 5, 0]]    # 0.3 is not > 0.3
    assert cam_labels(high, keys, 0.25).tolist() == [[2, 5, 0]]
    assert cam_labels(torch.zeros(0, 2, 2), torch.zeros(0, dtype=torch.long), 0.1).tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize("k", [0, 1, 3])
def test_sweep_equals_per_threshold_confusion(k):
    rng = np.random.default_rng(k)
    high = torch.from_numpy(rng.random((k, 23, 31)).astype(np.float32))
    high[:, 0, :5] = 0.5                                           # ties with a threshold
    keys = torch.from_numpy(rng.choice(6, size=k, replace=False))
    gt = torch.from_numpy(rng.integers(0, 7, (23, 31)))
    gt[rng.random((23, 31)) < 0.1] = 255
    ths = thresholds_from(0.05, 0.95, 0.05)
    conf = sweep_confusion(high, keys, gt, ths, 7)
    assert conf.shape == (19, 7, 7)
    for i, t in enumerate(ths):
        want = confusion_matrix(cam_labels(high, keys, t).numpy(), gt.numpy(), 7)
        np.testing.assert_array_equal(conf[i].numpy(), want)


def test_summarize_sweep_picks_best_and_fixed_threshold():
    # 2 classes (bg, a); threshold 0: all predicted a; threshold 1: half right
    conf = torch.tensor([[[0, 10], [0, 10]],                       # iou bg 0, a 0.5 -> 0.25
                         [[8, 2], [2, 8]],                          # 8/12, 8/12 -> 0.667
                         [[10, 0], [10, 0]]])                       # 0.5, 0 -> 0.25
    s = summarize_sweep(conf, [0.1, 0.2, 0.3], ["background", "a"], fixed_threshold=0.3)
    assert s["best"]["threshold"] == 0.2 and s["best"]["miou"] == pytest.approx(2 / 3, abs=1e-5)
    assert s["fixed"]["threshold"] == 0.3 and s["fixed"]["miou"] == pytest.approx(0.25)
    assert s["best"]["iou"] == {"background": pytest.approx(2 / 3, abs=1e-5), "a": pytest.approx(2 / 3, abs=1e-5)}
    assert s["miou_per_threshold"] == [0.25, pytest.approx(2 / 3, abs=1e-5), 0.25]
    # a's false positives at threshold 0.1 all lie on background: over-activation 1
    assert s["best"]["over_activation"]["a"] == 1.0 and s["fixed"]["over_activation"]["a"] is None  # no fp
    # background false-positive rate: bg row [0, 10] -> 1; [8, 2] -> 2/10; [10, 0] -> 0
    assert s["best"]["background_fp_rate"] == pytest.approx(0.2) and s["fixed"]["background_fp_rate"] == 0.0
    # precision at 0.2: bg 8/10, a 8/10; at 0.3: bg 10/20, a never predicted (None)
    assert s["best"]["precision"] == {"background": 0.8, "a": 0.8} and s["best"]["mean_precision"] == 0.8
    assert s["fixed"]["precision"] == {"background": 0.5, "a": None} and s["fixed"]["mean_precision"] == 0.5
    with pytest.raises(ValueError, match="fixed threshold 0.4"):
        summarize_sweep(conf, [0.1, 0.2, 0.3], ["background", "a"], fixed_threshold=0.4)


def test_summarize_sweep_background_fp_rate_is_none_without_background_pixels():
    conf = torch.tensor([[[0, 0], [3, 5]]])                        # no ground-truth background pixel
    s = summarize_sweep(conf, [0.5], ["background", "a"], fixed_threshold=0.5)
    assert s["best"]["background_fp_rate"] is None and s["fixed"]["background_fp_rate"] is None
    assert s["best"]["precision"] == {"background": 0.0, "a": 1.0}


def test_write_sweep_csv(tmp_path):
    s = {"train": {"thresholds": [0.1, 0.2], "miou_per_threshold": [0.5, None]},
         "val": {"thresholds": [0.1, 0.2], "miou_per_threshold": [0.25, 0.125]}}
    write_sweep_csv(tmp_path / "s.csv", s)
    assert (tmp_path / "s.csv").read_text() == "threshold,train_miou,val_miou\n0.1,0.50000,0.25000\n0.2,,0.12500\n"


class MaskData:
    classes = ["a", "b"]

    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        return {"name": f"im{i}", "mask": self.masks[i]}


def test_evaluate_split_accumulates_over_images_and_names_missing_files(tmp_path):
    masks = [np.array([[0, 1], [2, 255]], np.uint8), np.array([[1, 1], [0, 0]], np.uint8)]
    save_cam(cam_path(tmp_path, "val", "im0"), np.array([0, 1]), np.zeros((2, 1, 1)),
             np.array([[[0.9, 0.1], [0.2, 0.0]], [[0.0, 0.0], [0.8, 0.0]]]))
    save_cam(cam_path(tmp_path, "val", "im1"), np.array([0]), np.zeros((1, 1, 1)),
             np.array([[[1.0, 0.6], [0.0, 0.7]]]))
    conf = evaluate_split(tmp_path, MaskData(masks), "val", [0.5, 0.65], progress=False)
    # t = 0.5: im0 -> [[1, 0], [2, ignored]]; im1 -> [[1, 1], [0, 1]]
    want = np.zeros((3, 3), np.int64)
    for p, g in [(1, 0), (0, 1), (2, 2), (1, 1), (1, 1), (0, 0), (1, 0)]:
        want[g, p] += 1
    np.testing.assert_array_equal(conf[0].numpy(), want)
    assert int(conf[1].sum()) == 7 and int(conf[1][1, 0]) == 2      # im1: 0.6 <= 0.65 -> background
    (tmp_path / "val" / "im1.npz").unlink()
    with pytest.raises(DataError, match="im1.npz: CAM file missing"):
        evaluate_split(tmp_path, MaskData(masks), "val", [0.5], progress=False)


def test_threshold_labels_is_the_one_background_rule():
    """Background where the largest CAM is at or below the threshold (ties go to background),
    for one threshold or many at once; no present class means all background."""
    from sslib.evaluate import strongest_class, threshold_labels

    maps = torch.tensor([[[0.2, 0.9], [0.5, 0.1]], [[0.4, 0.3], [0.5, 0.0]]])  # (K=2, 2, 2)
    keys = torch.tensor([3, 7])
    value, label = strongest_class(maps, keys)
    assert torch.equal(value, torch.tensor([[0.4, 0.9], [0.5, 0.1]])) and label.tolist() == [[8, 4], [4, 4]]
    assert threshold_labels(value, label, 0.4).tolist() == [[0, 4], [4, 0]]
    many = threshold_labels(value, label, torch.tensor([0.0, 0.5, 0.95]))
    assert many.shape == (3, 2, 2)
    assert many[1].tolist() == [[0, 4], [0, 0]] and many[2].sum() == 0
    for i, t in enumerate([0.0, 0.5, 0.95]):
        assert torch.equal(many[i], threshold_labels(value, label, t))
    empty_v, empty_l = strongest_class(torch.zeros(0, 2, 3), torch.zeros(0, dtype=torch.long))
    assert threshold_labels(empty_v, empty_l, 0.0).tolist() == [[0, 0, 0], [0, 0, 0]]


# --------------------------------------------------------------------------- activation contrast
def test_image_contrast_per_present_class():
    mask = np.array([[0, 0, 1], [2, 255, 1]])                      # 255: neither object nor background
    high = np.array([[[0.2, 0.4, 1.0], [0.0, 0.9, 0.5]],           # class 0 (label 1): own 1.0, 0.5
                     [[0.1, 0.3, 0.0], [0.8, 0.7, 0.0]],           # class 1 (label 2): own 0.8
                     [[0.6, 0.6, 0.6], [0.6, 0.6, 0.6]]])          # class 4: no pixels of its own
    inside, background = image_contrast(high, np.array([0, 1, 4]), mask)
    np.testing.assert_allclose(inside, [0.75, 0.8])
    np.testing.assert_allclose(background, [0.3, 0.2])
    none_in, none_bg = image_contrast(high, np.array([0, 1, 4]), np.where(mask == 0, 1, mask))  # no background
    assert none_in.shape == none_bg.shape == (0,)
    empty_in, empty_bg = image_contrast(np.zeros((0, 2, 3)), np.zeros(0, np.int64), mask)
    assert empty_in.shape == empty_bg.shape == (0,)


def test_activation_contrast_means_over_image_class_pairs(tmp_path):
    masks = [np.array([[0, 0], [1, 2]]), np.array([[0, 2], [2, 2]])]
    save_cam(cam_path(tmp_path, "val", "im0"), np.array([0, 1]), np.zeros((2, 1, 1)),
             np.array([[[0.2, 0.4], [1.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]))
    save_cam(cam_path(tmp_path, "val", "im1"), np.array([1]), np.zeros((1, 1, 1)),
             np.array([[[0.5, 0.9], [0.6, 0.3]]]))
    c = activation_contrast(tmp_path, MaskData(masks), "val")
    # pairs: (im0, class 0): inside 1.0, bg 0.3; (im0, class 1): 1.0, 0.0; (im1, class 1): 0.6, 0.5
    assert c["inside"] == pytest.approx((1.0 + 1.0 + 0.6) / 3, abs=1e-3)
    assert c["background"] == pytest.approx((0.3 + 0.0 + 0.5) / 3, abs=1e-3)
    assert c["ratio"] == pytest.approx(c["inside"] / c["background"])
    j = contrast_summary(tmp_path, MaskData(masks), "val")
    assert j == {k: pytest.approx(v, abs=1e-5) for k, v in c.items()}
    conf, both = sweep_and_contrast(tmp_path, MaskData(masks), "val", [0.1, 0.5, 0.95], progress=False)
    assert both == j  # one pass gives what the two separate passes give
    assert torch.equal(conf, evaluate_split(tmp_path, MaskData(masks), "val", [0.1, 0.5, 0.95], progress=False))
    assert conf[1].sum() == 8  # every pixel of both images counted once


def test_activation_contrast_without_pairs_or_background_activation(tmp_path):
    save_cam(cam_path(tmp_path, "val", "im0"), np.array([0]), np.zeros((1, 1, 1)),
             np.array([[[0.0, 0.0], [1.0, 0.5]]]))
    only_object = MaskData([np.array([[0, 0], [1, 1]])])        # no activation on background
    c = activation_contrast(tmp_path, only_object, "val")
    assert c["inside"] == pytest.approx(0.75, abs=1e-3) and c["background"] == 0.0 and c["ratio"] == float("inf")
    assert contrast_summary(tmp_path, only_object, "val")["ratio"] is None  # JSON has no inf
    no_background = MaskData([np.array([[1, 1], [1, 1]])])
    assert all(np.isnan(x) for x in activation_contrast(tmp_path, no_background, "val").values())
    assert contrast_summary(tmp_path, no_background, "val") == {"inside": None, "background": None, "ratio": None}


# --------------------------------------------------------------------------- reconstruction quality
def test_psnr_and_ssim_by_hand():
    from sslib.evaluate import psnr_ssim

    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (24, 20, 3))
    psnr, ssim = psnr_ssim(image + 0.1, image)  # mse = 0.01 -> 20 dB
    assert psnr == pytest.approx(20.0) and 0 < ssim < 1
    psnr, ssim = psnr_ssim(image, image)
    assert psnr == float("inf") and ssim == pytest.approx(1.0)
    # a worse reconstruction scores lower on both
    noisy = np.clip(image + rng.normal(0, 0.2, image.shape), 0, 1)
    assert psnr_ssim(noisy, image)[0] < 20.0 and psnr_ssim(noisy, image)[1] < psnr_ssim(image + 0.1, image)[1]


def test_reconstruction_quality_crops_the_decoder_output_and_compares_in_rgb():
    """A "decoder" that returns the image itself (padded to 16x the CAM size, in [-1, 1]) and
    one that returns it darkened by 0.1 in RGB: PSNR inf / 20 dB."""
    from sslib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from sslib.evaluate import reconstruction_quality

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    data = [{"image": (rgb - mean) / std}]

    class Net(torch.nn.Module):
        def forward(self, x):  # (1, 3, 40, 50) -> CAMs (1, 1, 3, 4), and the image on the side
            self.x = x
            return None, torch.zeros(1, 1, 3, 4)

    net = Net()

    def decoder(shift):
        def rebuild(cams):
            out = torch.zeros(1, 3, 16 * cams.shape[2], 16 * cams.shape[3])
            out[..., :40, :50] = (net.x * std + mean - shift) * 2 - 1
            return out
        return rebuild

    same = reconstruction_quality(net, decoder(0.0), data)
    assert (same["psnr"] is None or same["psnr"] > 100) and same["ssim"] == pytest.approx(1.0)  # float round-off only
    darker = reconstruction_quality(net, decoder(0.1), data)
    assert darker["psnr"] == pytest.approx(20.0, abs=1e-3) and darker["ssim"] < 1.0
    assert reconstruction_quality(net, decoder(0.0), []) == {"psnr": None, "ssim": None}
