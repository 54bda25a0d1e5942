"""Confusion matrix and scores, checked against hand-computed values."""
import json
import math

import numpy as np
import pytest
import torch

from sslib.metrics import confusion_matrix, scores, scores_table

# 3 classes (0 = background), one ignored pixel.
GT = np.array([[0, 0, 0, 1, 1],
               [1, 1, 2, 2, 255]])
PRED = np.array([[0, 1, 2, 2, 1],
                 [1, 0, 2, 0, 2]])
# (gt, pred) pairs: (0,0) (0,1) (0,2) (1,2) (1,1) (1,1) (1,0) (2,2) (2,0); (255,2) skipped
#            pred 0  1  2
CONF = np.array([[1, 1, 1],   # gt 0
                 [1, 2, 1],   # gt 1
                 [1, 0, 1]])  # gt 2
# tp = [1, 2, 1], gt_pixels (row sums) = [3, 4, 2], pred_pixels (column sums) = [3, 3, 3]
# fp = [2, 1, 2], fn = [2, 2, 1]
# IoU = tp / (tp + fp + fn) = [1/5, 2/5, 1/4]; mIoU = (0.2 + 0.4 + 0.25) / 3
# precision = [1/3, 2/3, 1/3]; recall = [1/3, 2/4, 1/2]; pixel accuracy = 4/9
# over-activation: class 1: conf[0,1] / fp1 = 1/1; class 2: conf[0,2] / fp2 = 1/2; mean 3/4
# background false-positive rate: (conf[0,1] + conf[0,2]) / row 0 = 2/3


def test_confusion_matrix_hand_computed():
    conf = confusion_matrix(PRED, GT, 3)
    assert isinstance(conf, np.ndarray) and conf.dtype == np.int64
    np.testing.assert_array_equal(conf, CONF)


def test_confusion_matrix_tiny_binary_any_shape():
    gt = np.array([0, 1, 1, 1], np.uint8)
    pred = np.array([1, 1, 0, 1], np.uint8)
    # (0,1) (1,1) (1,0) (1,1) -> row 0: [0, 1]; row 1: [1, 2]
    expected = np.array([[0, 1],
                         [1, 2]])
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 2), expected)
    np.testing.assert_array_equal(confusion_matrix(pred.reshape(2, 1, 2), gt.reshape(2, 1, 2), 2), expected)


def test_ignore_index_skips_pixels_whatever_the_prediction():
    gt = np.array([[255, 255, 1], [0, 255, 1]])
    pred = np.array([[0, 200, 1], [0, 255, 0]])  # out-of-range predictions only on ignored pixels
    # (1,1) (0,0) (1,0) -> row 0: [1, 0]; row 1: [1, 1]
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 2), [[1, 0], [1, 1]])
    # another ignore value: 255 is then an invalid ground truth
    np.testing.assert_array_equal(
        confusion_matrix(np.array([0, 1]), np.array([-1, 1]), 2, ignore_index=-1), [[0, 0], [0, 1]])
    with pytest.raises(ValueError, match="ground truth value 255"):
        confusion_matrix(np.array([0, 1]), np.array([255, 1]), 2, ignore_index=-1)
    # all pixels ignored: an all-zero matrix
    np.testing.assert_array_equal(confusion_matrix(np.zeros(3, int), np.full(3, 255), 2), np.zeros((2, 2)))


def test_out_of_range_and_bad_inputs_raise():
    with pytest.raises(ValueError, match="prediction value 3"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="prediction value -1"):
        confusion_matrix(np.array([0, -1]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="ground truth value 5"):
        confusion_matrix(np.array([0, 1]), np.array([5, 1]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros(4, int), 3)
    with pytest.raises(TypeError, match="integers"):
        confusion_matrix(np.zeros(4, float), np.zeros(4, int), 3)
    with pytest.raises(TypeError, match="both"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), np.zeros(4, int), 3)
    with pytest.raises(ValueError, match="prediction value 3"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


def test_torch_numpy_parity():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, size=(3, 17, 19))
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.integers(0, 5, size=gt.shape)
    ref = confusion_matrix(pred, gt, 5)
    assert ref.sum() == (gt != 255).sum()
    out = confusion_matrix(torch.from_numpy(pred).to(torch.uint8), torch.from_numpy(gt).to(torch.uint8), 5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64 and out.device == torch.device("cpu")
    np.testing.assert_array_equal(out.numpy(), ref)
    # torch matrices go straight into scores
    assert json.dumps(scores(out)) == json.dumps(scores(ref))  # (nan != nan, so compare text)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(PRED), torch.from_numpy(GT), 3).numpy(), CONF)


def test_accumulation_is_a_sum():
    a = confusion_matrix(PRED[:1], GT[:1], 3)
    b = confusion_matrix(PRED[1:], GT[1:], 3)
    np.testing.assert_array_equal(a + b, CONF)


def test_scores_hand_computed():
    r = scores(CONF, ["bg", "cat", "dog"])
    assert r["class_names"] == ["bg", "cat", "dog"] and r["num_classes"] == 3 and r["background"] == 0
    assert r["iou"] == pytest.approx([1 / 5, 2 / 5, 1 / 4])
    assert r["miou"] == pytest.approx((0.2 + 0.4 + 0.25) / 3)
    assert r["precision"] == pytest.approx([1 / 3, 2 / 3, 1 / 3])
    assert r["recall"] == pytest.approx([1 / 3, 1 / 2, 1 / 2])
    assert r["pixel_accuracy"] == pytest.approx(4 / 9)
    assert math.isnan(r["over_activation"][0])
    assert r["over_activation"][1:] == pytest.approx([1.0, 0.5])
    assert r["mean_over_activation"] == pytest.approx(0.75)
    assert r["background_fp_rate"] == pytest.approx(2 / 3)
    assert r["tp"] == [1, 2, 1] and r["fp"] == [2, 1, 2] and r["fn"] == [2, 2, 1]
    assert r["gt_pixels"] == [3, 4, 2] and r["pred_pixels"] == [3, 3, 3]
    assert r["fp_on_background"] == [1, 1, 1] and r["total_pixels"] == 9
    assert r["confusion"] == CONF.tolist()
    # plain Python types: JSON round trip
    back = json.loads(json.dumps(r))
    assert back["iou"] == r["iou"] and back["miou"] == r["miou"]
    assert all(type(x) is float for x in r["iou"] + r["precision"] + r["recall"])


def test_absent_classes_are_nan_and_excluded_from_miou():
    # class 3: absent from gt and prediction; class 4: predicted but never in gt
    conf = np.zeros((5, 5), np.int64)
    conf[:3, :3] = CONF
    conf[1, 4] = 2  # two "cat" pixels predicted as class 4
    # class 4: tp 0, fp 2 (both on gt 1, none on background), fn 0
    r = scores(conf)
    assert r["class_names"] == ["0", "1", "2", "3", "4"]
    assert math.isnan(r["iou"][3]) and math.isnan(r["precision"][3]) and math.isnan(r["recall"][3])
    assert math.isnan(r["over_activation"][3])
    assert r["iou"][4] == 0.0 and r["precision"][4] == 0.0 and math.isnan(r["recall"][4])
    assert r["over_activation"][4] == 0.0
    # class 1 now has fn 4: IoU 2 / (2 + 1 + 4)
    assert r["iou"][:3] == pytest.approx([1 / 5, 2 / 7, 1 / 4])
    assert r["miou"] == pytest.approx((1 / 5 + 2 / 7 + 1 / 4 + 0.0) / 4)  # class 3 left out
    assert r["mean_over_activation"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)


#                     pred 0  1  2
SPILL = np.array([[6, 3, 1],   # gt 0: 10 background pixels, 3 + 1 = 4 claimed by a class
                  [2, 5, 0],   # gt 1
                  [0, 1, 2]])  # gt 2
# background_fp_rate = 4 / 10 = 0.4 (= 1 - 6/10)
# column sums [8, 9, 3] -> precision = [6/8, 5/9, 2/3]; mean_precision = (3/4 + 5/9 + 2/3) / 3
# over-activation: class 1: fp = 9 - 5 = 4, 3 on background -> 3/4; class 2: fp 1, on background 1 -> 1
# with background = 2: 1 - conf[2, 2] / row 2 = 1 - 2/3 = 1/3


def test_background_fp_rate_and_precision_hand_computed():
    r = scores(SPILL, ["bg", "cat", "dog"])
    assert r["background_fp_rate"] == pytest.approx(0.4)
    assert r["precision"] == pytest.approx([6 / 8, 5 / 9, 2 / 3])
    assert r["mean_precision"] == pytest.approx((3 / 4 + 5 / 9 + 2 / 3) / 3)
    assert r["over_activation"][1:] == pytest.approx([3 / 4, 1.0])
    assert type(r["background_fp_rate"]) is float
    assert scores(SPILL, background=2)["background_fp_rate"] == pytest.approx(1 / 3)
    assert scores(np.diag([5, 2, 1]))["background_fp_rate"] == 0.0  # no spill
    assert scores(np.array([[0, 4], [0, 1]]))["background_fp_rate"] == 1.0  # all background claimed
    torch_r = scores(torch.from_numpy(SPILL))
    assert torch_r["background_fp_rate"] == pytest.approx(0.4)


def test_background_fp_rate_is_nan_without_background_pixels():
    no_bg_pixels = np.array([[0, 0, 0],   # gt 0 never occurs
                             [1, 3, 0],
                             [0, 2, 4]])
    r = scores(no_bg_pixels)
    assert math.isnan(r["background_fp_rate"])
    assert r["precision"] == pytest.approx([0.0, 3 / 5, 1.0])
    assert math.isnan(scores(SPILL, background=None)["background_fp_rate"])
    assert math.isnan(scores(np.zeros((3, 3), np.int64))["background_fp_rate"])
    assert math.isnan(json.loads(json.dumps(r))["background_fp_rate"])  # NaN survives the round trip


def test_no_background_and_empty_matrix():
    r = scores(CONF, background=None)
    assert all(math.isnan(x) for x in r["over_activation"]) and math.isnan(r["mean_over_activation"])
    assert r["fp_on_background"] == [0, 0, 0]
    assert r["iou"] == pytest.approx([1 / 5, 2 / 5, 1 / 4])
    e = scores(np.zeros((2, 2), np.int64))
    assert math.isnan(e["miou"]) and math.isnan(e["pixel_accuracy"]) and e["total_pixels"] == 0
    with pytest.raises(ValueError, match="class names"):
        scores(CONF, ["a", "b"])
    with pytest.raises(ValueError, match="square"):
        scores(np.zeros((2, 3), np.int64))


def test_scores_table():
    df = scores_table(scores(CONF, ["bg", "cat", "dog"]))
    assert list(df.columns) == ["iou", "precision", "recall", "over_activation"]
    assert list(df.index) == ["bg", "cat", "dog"]
    assert df.loc["cat", "iou"] == pytest.approx(0.4)
    assert df.loc["dog", "over_activation"] == pytest.approx(0.5)
    assert np.isnan(df.loc["bg", "over_activation"])
