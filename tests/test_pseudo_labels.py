"""Pseudo labels (sslib.pseudo_labels, sslib.crf): IR labels, the dense CRF, confidence masks,
IR-label quality and the PNG formats."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sslib.crf import CRFParams, crf_available, crf_label
from sslib.io import DataError
from sslib.formats import save_png
from sslib.pseudo_labels import (confidence_mask, ir_label, ir_label_counts, ir_label_quality, ir_label_scores,
                                 keep_count, load_confidence_mask, load_ir_label, save_confidence_mask,
                                 save_ir_label, score_margin, threshold_argmax)


def identity_crf(image, labels, n_labels, **params):
    return labels


def image(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------- IR labels

# two classes (ids 2 and 5, so labels 3 and 6), eight pixels covering every case
CAM0 = [[0.9, 0.2, 0.02, 0.30],
        [0.5, 0.05, 0.6, 0.0]]
CAM1 = [[0.2, 0.25, 0.04, 0.1],
        [0.5, 0.0, 0.7, 0.0]]


def test_threshold_argmax_plane_wins_ties_and_first_class_wins_ties():
    cams = np.array([CAM0, CAM1], np.float32)
    assert threshold_argmax(cams, 0.30).tolist() == [[1, 0, 0, 0], [1, 0, 2, 0]]   # 0.30 ties the plane
    assert threshold_argmax(cams, 0.05).tolist() == [[1, 2, 0, 1], [1, 0, 2, 0]]   # 0.05 ties the plane
    assert threshold_argmax(np.zeros((0, 2, 3)), 0.3).tolist() == [[0, 0, 0], [0, 0, 0]]


def test_ir_label_rule_with_identity_crf():
    cams = np.array([CAM0, CAM1], np.float32)
    out = ir_label(image(2, 4), cams, np.array([2, 5]), fg_threshold=0.30, bg_threshold=0.05, crf=identity_crf)
    # fg ids [[3,0,0,0],[3,0,6,0]], bg ids [[3,6,0,3],[3,0,6,0]]
    assert out.dtype == np.uint8
    assert out.tolist() == [[3, 255, 0, 255], [3, 0, 6, 0]]
    # torch inputs: the same
    out_t = ir_label(image(2, 4), torch.tensor(cams), torch.tensor([2, 5]), fg_threshold=0.30,
                     bg_threshold=0.05, crf=identity_crf)
    assert out_t.tolist() == out.tolist()


def test_ir_label_combines_the_two_refined_maps_as_irn():
    calls = []
    fg_map = np.array([[1, 1, 0, 0]])
    bg_map = np.array([[1, 0, 1, 0]])

    def scripted(img, labels, n_labels, **params):
        calls.append((labels.copy(), n_labels, params))
        return fg_map if len(calls) == 1 else bg_map

    cams = np.array([[[0.9, 0.2, 0.2, 0.01]]], np.float32)
    out = ir_label(image(1, 4), cams, np.array([0]), fg_threshold=0.3, bg_threshold=0.1, crf=scripted,
                   crf_params={"t": 3})
    # fg class wins whatever bg says; fg bg + bg class -> 255; both bg -> 0
    assert out.tolist() == [[1, 1, 255, 0]]
    assert [c[0].tolist() for c in calls] == [[[1, 0, 0, 0]], [[1, 1, 1, 0]]]
    assert all(c[1] == 2 for c in calls)
    assert calls[0][2] == {**CRFParams().kwargs(), "t": 3}


def test_ir_label_without_classes_is_background_and_runs_no_crf():
    def fail(*a, **k):
        raise AssertionError("CRF called")

    out = ir_label(image(3, 2), np.zeros((0, 3, 2)), np.zeros(0, np.int64), crf=fail)
    assert out.tolist() == [[0, 0]] * 3


def test_ir_label_checks_shapes():
    with pytest.raises(ValueError, match="do not match"):
        ir_label(image(2, 4), np.zeros((1, 2, 5)), np.array([0]), crf=identity_crf)
    with pytest.raises(ValueError, match="uint8"):
        ir_label(image(2, 4).astype(np.float32), np.zeros((1, 2, 4)), np.array([0]), crf=identity_crf)
    with pytest.raises(ValueError, match="outside"):
        ir_label(image(2, 4), np.ones((1, 2, 4)), np.array([0]), crf=lambda i, l, n, **k: l + 5)
    with pytest.raises(TypeError):
        ir_label(image(2, 4), np.ones((1, 2, 4)), np.array([0]), crf=identity_crf, crf_params={"sigma": 1})


# ----------------------------------------------------------------------------------------------- CRF

def two_colour_halves():
    img = np.zeros((20, 20, 3), np.uint8)
    img[:, :10] = (200, 40, 40)
    img[:, 10:] = (40, 40, 200)
    clean = np.zeros((20, 20), np.int64)
    clean[:, 10:] = 1
    noisy = clean.copy()
    flip = np.random.default_rng(1).random((20, 20)) < 0.15
    noisy[flip] = 1 - noisy[flip]
    return img, clean, noisy


def test_crf_smooths_noisy_labels_along_colour():
    pytest.importorskip("pydensecrf")
    img, clean, noisy = two_colour_halves()
    out = crf_label(img, noisy, 2)
    assert out.dtype == np.int64 and out.shape == (20, 20)
    wrong_before = int((noisy != clean).sum())
    assert wrong_before > 30
    assert int((out != clean).sum()) <= 2
    # a Fortran-ordered image gives the same result
    assert np.array_equal(crf_label(np.asfortranarray(img), noisy, 2), out)
    # a read-only image (as sslib.formats.read_rgb may return) too
    ro = img.copy()
    ro.flags.writeable = False
    assert np.array_equal(crf_label(ro, noisy, 2), out)


def test_crf_single_label_and_argument_checks():
    img, _, noisy = two_colour_halves()
    assert crf_label(img, np.zeros((20, 20), np.int64), 1).tolist() == [[0] * 20] * 20
    with pytest.raises(ValueError, match="uint8"):
        crf_label(img.astype(np.float32), noisy, 2)
    with pytest.raises(ValueError, match="labels must lie"):
        crf_label(img, noisy + 1, 2)
    with pytest.raises(ValueError, match="labels are"):
        crf_label(img, noisy[:5], 2)


def test_missing_pydensecrf_says_what_to_install(monkeypatch):
    for name in ("pydensecrf", "pydensecrf.densecrf", "pydensecrf.utils"):
        monkeypatch.setitem(sys.modules, name, None)       # import fails as if not installed
    img, _, noisy = two_colour_halves()
    with pytest.raises(ImportError, match=r"pip install pydensecrf2 \(its import name is pydensecrf\)"):
        crf_label(img, noisy, 2)
    assert crf_available() is False


# ---------------------------------------------------------------------------------- confidence masks

# three maps (background plane 0.25 first); pixel: scores -> margin, winner
SCORES = np.array([
    [[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]],
    [[0.9, 0.5, 0.7, 0.3], [0.6, 0.1, 0.2, 0.0]],
    [[0.1, 0.4, 0.0, 0.3], [0.0, 0.8, 0.1, 0.0]],
], np.float32)
# margins: .65 .1 .45 .05 (tie .3/.3 at the top: the next lower is .25) | .35 .55 .05 .25
MARGINS = [[0.65, 0.1, 0.45, 0.05], [0.35, 0.55, 0.05, 0.25]]


def test_score_margin_as_beco():
    np.testing.assert_allclose(score_margin(SCORES).numpy(), MARGINS, atol=1e-6)
    one = np.full((1, 1, 2), 0.4, np.float32)
    np.testing.assert_allclose(score_margin(one).numpy(), [[0.4, 0.4]])   # a single map: margin = score


def test_confidence_mask_keeps_the_largest_margins_per_predicted_label():
    pred = SCORES.argmax(0)
    assert pred.tolist() == [[1, 1, 1, 1], [1, 2, 0, 0]]
    mask = confidence_mask(SCORES, pred, ratio=0.5)
    # label 1: 5 pixels -> keep 2 (.65, .45); label 2: 1 pixel -> keep 0; label 0: 2 -> keep 1 (.25)
    assert mask.dtype == np.bool_
    assert mask.tolist() == [[True, False, True, False], [False, False, False, True]]
    # class ids instead of map indices group the pixels the same way
    ids = np.array([0, 3, 6])[pred]
    assert confidence_mask(SCORES, ids).tolist() == mask.tolist()
    # torch in, torch out
    t = confidence_mask(torch.tensor(SCORES), torch.tensor(pred))
    assert isinstance(t, torch.Tensor) and t.tolist() == mask.tolist()
    assert confidence_mask(SCORES, pred, ratio=1.0).all()
    assert not confidence_mask(SCORES, pred, ratio=0.0).any()
    # ratio 0.8: label 1 keeps int(5 // 1.25) = 4 (all but the .05), label 2 keeps 0, label 0 keeps 1
    assert confidence_mask(SCORES, pred, ratio=0.8).tolist() == [[True, True, True, False],
                                                                 [True, False, False, True]]


def test_confidence_mask_ties_go_to_earlier_pixels():
    scores = np.full((1, 2, 3), 0.5, np.float32)
    pred = np.zeros((2, 3), np.int64)
    assert confidence_mask(scores, pred).tolist() == [[True, True, True], [False, False, False]]


def test_keep_count_is_beco_floor_division():
    assert [keep_count(n, 0.5) for n in range(6)] == [0, 0, 1, 1, 2, 2]
    assert keep_count(10, 0.3) == 2 and math.floor(10 * 0.3) == 3     # 10 // (1 / 0.3) = 2.0
    assert keep_count(7, 1.0) == 7 and keep_count(7, 0) == 0
    with pytest.raises(ValueError):
        keep_count(3, 1.5)


def test_confidence_mask_checks_shapes():
    with pytest.raises(ValueError, match="pred is"):
        confidence_mask(SCORES, np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="scores"):
        score_margin(np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------ quality

def test_ir_label_quality_counts_and_scores():
    ir = np.array([[1, 255, 0], [2, 1, 255]])
    gt = np.array([[1, 1, 0], [255, 2, 0]])
    counts = ir_label_counts(ir, gt)
    assert counts == {"valid": 5, "confident": 3, "correct": 2}
    q = ir_label_quality(ir, gt)
    assert q["precision"] == pytest.approx(2 / 3) and q["coverage"] == pytest.approx(3 / 5)
    assert ir_label_counts(torch.tensor(ir), torch.tensor(gt)) == counts
    summed = {k: 2 * v for k, v in counts.items()}
    assert ir_label_scores(summed) == pytest.approx(q)
    empty = ir_label_scores({"valid": 0, "confident": 0, "correct": 0})
    assert math.isnan(empty["precision"]) and math.isnan(empty["coverage"])
    with pytest.raises(ValueError):
        ir_label_counts(ir, gt[:1])


# ------------------------------------------------------------------------------------------ storage

def test_confidence_mask_png_round_trip(tmp_path):
    mask = np.random.default_rng(2).random((5, 7)) < 0.4
    p = tmp_path / "m" / "a.png"
    save_confidence_mask(p, mask)
    assert np.array_equal(load_confidence_mask(p, size=(5, 7)), mask)
    with Image.open(p) as im:
        assert im.mode == "L" and set(np.unique(np.asarray(im)).tolist()) == {0, 255}
    assert [f.name for f in p.parent.iterdir()] == ["a.png"]
    one_bit = tmp_path / "one.png"
    Image.fromarray(mask).save(one_bit)                               # a 1-bit PNG reads too
    assert np.array_equal(load_confidence_mask(one_bit), mask)
    save_confidence_mask(tmp_path / "t.png", torch.tensor(mask))
    assert np.array_equal(load_confidence_mask(tmp_path / "t.png"), mask)


def test_confidence_mask_loader_names_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.png: confidence mask file missing"):
        load_confidence_mask(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        load_confidence_mask(bad)
    ok = tmp_path / "ok.png"
    save_confidence_mask(ok, np.ones((4, 6), bool))
    with pytest.raises(DataError, match=r"ok.png: the confidence mask is \(4, 6\), the image is \(6, 4\)"):
        load_confidence_mask(ok, size=(6, 4))
    labels = tmp_path / "labels.png"
    save_png(labels, np.array([[0, 1, 7]], np.uint8))
    with pytest.raises(DataError, match="labels.png: not a confidence mask"):
        load_confidence_mask(labels)
    rgb = tmp_path / "rgb.png"
    save_png(rgb, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="rgb.png"):
        load_confidence_mask(rgb)
    with pytest.raises(ValueError):
        save_confidence_mask(tmp_path / "x.png", np.array([[0, 2]]))


def test_ir_label_png_round_trip_and_errors(tmp_path):
    label = np.array([[0, 3, 255], [6, 0, 255]], np.uint8)
    p = tmp_path / "ir" / "a.png"
    save_ir_label(p, label)
    out = load_ir_label(p, size=(2, 3))
    assert out.dtype == np.uint8 and out.tolist() == label.tolist()
    with Image.open(p) as im:
        assert im.mode == "P"
    with pytest.raises(DataError, match="nope.png: IR label file missing"):
        load_ir_label(tmp_path / "nope.png")
    with pytest.raises(DataError, match="a.png: the IR label is"):
        load_ir_label(p, size=(3, 2))
    wide = tmp_path / "wide.png"
    save_png(wide, np.array([[0, 300]], np.uint16))
    with pytest.raises(DataError, match="wide.png: expected an 8-bit"):
        load_ir_label(wide)
