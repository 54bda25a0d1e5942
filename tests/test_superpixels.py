"""Superpixels: computation, lossless storage, parallel + resumable precomputation, figure helpers."""
import json
import os

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from sslib import superpixels as sp
from sslib.config import FelzenszwalbConfig, SlicConfig, SuperpixelConfig
from sslib.io import DataError, save_png


def blocks_image(seed: int = 0, h: int = 32, w: int = 40) -> np.ndarray:
    """(h, w, 3) uint8: four coloured blocks plus a little noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float64)
    img[: h // 2, : w // 2] = (220, 30, 30)
    img[: h // 2, w // 2:] = (30, 200, 40)
    img[h // 2:, : w // 3] = (40, 40, 210)
    img[h // 2:, w // 3:] = (230, 220, 60)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


SLIC = SuperpixelConfig(method="slic", slic=SlicConfig(n_segments=12, compactness=10.0, sigma=1.0))
FELZ = SuperpixelConfig(method="felzenszwalb",
                        felzenszwalb=FelzenszwalbConfig(scale=50.0, sigma=0.5, min_size=20))


# --------------------------------------------------------------------------- compute
@pytest.mark.parametrize("cfg", [SLIC, FELZ], ids=["slic", "felzenszwalb"])
def test_compute_ids_are_consecutive_and_cover_the_image(cfg):
    img = blocks_image()
    ids = sp.compute(img, cfg)
    assert ids.shape == img.shape[:2] and ids.dtype == np.int64
    k = ids.max() + 1
    assert ids.min() == 0 and np.array_equal(np.unique(ids), np.arange(k))
    assert k > 1
    np.testing.assert_array_equal(ids, sp.compute(img, cfg))  # deterministic


def test_methods_are_selectable_and_differ():
    img = blocks_image()
    a, b = sp.compute(img, SLIC), sp.compute(img, FELZ)
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="uint8"):
        sp.compute(img.astype(np.float32), SLIC)


def test_parameters_matter():
    img = blocks_image()
    few = sp.compute(img, SuperpixelConfig(method="slic", slic=SlicConfig(n_segments=4)))
    many = sp.compute(img, SuperpixelConfig(method="slic", slic=SlicConfig(n_segments=60)))
    assert many.max() > few.max()


# --------------------------------------------------------------------------- storage
def test_save_load_round_trip_is_exact_beyond_255(tmp_path):
    ids = (np.arange(32 * 40).reshape(32, 40) * 47).astype(np.int64)  # up to 60113
    assert ids.max() > 255
    p = sp.path_for(tmp_path, "img0")
    assert p == tmp_path / "img0.png"
    sp.save(p, ids)
    back = sp.load(p, expected_shape=(32, 40))
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, ids)


def test_save_refuses_ids_that_do_not_fit_16_bits(tmp_path):
    ids = np.zeros((4, 4), np.int64)
    ids[0, 0] = 70000
    with pytest.raises(ValueError, match="16-bit"):
        sp.save(tmp_path / "x.png", ids)
    assert not (tmp_path / "x.png").exists()


def test_load_wrong_shape_names_file_and_shapes(tmp_path):
    p = tmp_path / "a.png"
    sp.save(p, np.zeros((32, 40), np.int64))
    with pytest.raises(DataError) as e:
        sp.load(p, expected_shape=(40, 32))
    msg = str(e.value)
    assert str(p) in msg and "(32, 40)" in msg and "(40, 32)" in msg


def test_load_corrupt_or_missing_names_file(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png" * 3)
    with pytest.raises(DataError, match="bad.png"):
        sp.load(p)
    with pytest.raises(DataError, match="missing.png"):
        sp.load(tmp_path / "missing.png")


# --------------------------------------------------------------------------- precompute
def make_items(folder, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        p = folder / f"im{i}.png"
        save_png(p, blocks_image(seed=i))
        items.append((f"im{i}", p))
    return items


def test_precompute_serial_and_parallel_give_identical_files(tmp_path):
    items = make_items(tmp_path / "images")
    s1 = sp.precompute(items, tmp_path / "w1", SLIC, workers=1, progress=False)
    s2 = sp.precompute(items, tmp_path / "w2", SLIC, workers=2, progress=False)
    for name, img_path in items:
        b1 = sp.path_for(tmp_path / "w1", name).read_bytes()
        assert b1 == sp.path_for(tmp_path / "w2", name).read_bytes()
        ids = sp.load(sp.path_for(tmp_path / "w1", name))
        from sslib.io import read_rgb
        np.testing.assert_array_equal(ids, sp.compute(read_rgb(img_path), SLIC))
    assert (tmp_path / "w1" / "meta.json").read_bytes() == (tmp_path / "w2" / "meta.json").read_bytes()
    meta = json.loads((tmp_path / "w1" / "meta.json").read_text())
    assert meta["method"] == "slic" and meta["params"]["n_segments"] == 12
    assert meta["count"] == 5
    assert meta["n_superpixels_min"] <= meta["n_superpixels_mean"] <= meta["n_superpixels_max"]
    total_k = sum(int(sp.load(sp.path_for(tmp_path / "w1", n)).max()) + 1 for n, _ in items)
    assert meta["mean_superpixel_area"] == pytest.approx(5 * 32 * 40 / total_k)
    assert s1["n_computed"] == s2["n_computed"] == 5 and s1["n_reused"] == 0
    assert {k: v for k, v in s1.items() if k in meta} == meta


def _age(folder):
    """Set every PNG's mtime far in the past; return {name: mtime_ns}."""
    out = {}
    for p in folder.glob("*.png"):
        os.utime(p, ns=(10**18, 10**18))
        out[p.name] = p.stat().st_mtime_ns
    return out


def test_resume_recomputes_only_what_is_missing(tmp_path):
    items = make_items(tmp_path / "images")
    out = tmp_path / "sp"
    sp.precompute(items, out, SLIC, workers=1, progress=False)
    reference = sp.path_for(out, "im2").read_bytes()
    before = _age(out)
    # simulate an interrupted run: no meta.json, one map missing, one map half-written
    (out / "meta.json").unlink()
    sp.path_for(out, "im2").unlink()
    sp.path_for(out, "im4").write_bytes(b"garbage")
    stats = sp.precompute(items, out, SLIC, workers=1, progress=False)
    assert (stats["n_computed"], stats["n_reused"]) == (2, 3)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert sorted(after) == sorted(before)
    changed = {n for n in after if after[n] != before[n]}
    assert changed == {"im2.png", "im4.png"}
    assert sp.path_for(out, "im2").read_bytes() == reference
    assert (out / "meta.json").is_file()


def test_changed_params_or_complete_run_recompute_everything(tmp_path):
    items = make_items(tmp_path / "images", n=3)
    out = tmp_path / "sp"
    sp.precompute(items, out, SLIC, workers=1, progress=False)
    (out / "meta.json").unlink()  # interrupted, but now with other parameters
    other = SuperpixelConfig(method="slic", slic=SlicConfig(n_segments=30))
    stats = sp.precompute(items, out, other, workers=1, progress=False)
    assert (stats["n_computed"], stats["n_reused"]) == (3, 0)
    assert json.loads((out / "meta.json").read_text())["params"]["n_segments"] == 30
    # meta.json present: a finished run; starting again recomputes (inputs may have changed)
    stats = sp.precompute(items, out, other, workers=1, progress=False)
    assert stats["n_computed"] == 3
    # switching method: also everything
    stats = sp.precompute(items, out, FELZ, workers=1, progress=False)
    assert stats["n_computed"] == 3 and stats["method"] == "felzenszwalb"


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_input_image_names_it(tmp_path, workers):
    items = make_items(tmp_path / "images", n=3)
    bad = tmp_path / "images" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    items.insert(1, ("broken", bad))
    out = tmp_path / "sp"
    with pytest.raises(DataError, match="broken.jpg"):
        sp.precompute(items, out, SLIC, workers=workers, progress=False)
    assert not (out / "meta.json").exists()


def test_invalid_names_are_rejected(tmp_path):
    items = make_items(tmp_path / "images", n=1)
    with pytest.raises(ValueError, match="duplicate"):
        sp.precompute(items + items, tmp_path / "sp", SLIC, workers=1, progress=False)
    with pytest.raises(ValueError, match="invalid"):
        sp.precompute([("../x", items[0][1])], tmp_path / "sp", SLIC, workers=1, progress=False)


# --------------------------------------------------------------------------- figure helpers
def test_boundaries_of_two_regions():
    ids = np.zeros((4, 5), np.int64)
    ids[:, 3:] = 1  # vertical edge between columns 2 and 3
    expected = np.zeros((4, 5), bool)
    expected[:, 2] = expected[:, 3] = True  # both sides of the edge
    np.testing.assert_array_equal(sp.boundaries(ids), expected)

    ids = np.zeros((3, 3), np.int64)
    ids[1, 1] = 7  # a single-pixel island: itself and its 4-neighbours
    expected = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    np.testing.assert_array_equal(sp.boundaries(ids), expected)


def test_boundaries_match_skimage_thick():
    ids = sp.compute(blocks_image(), FELZ)
    np.testing.assert_array_equal(sp.boundaries(ids), find_boundaries(ids, mode="thick"))


def test_mean_fill_hand_computed():
    img = np.array([[[0, 0, 0], [10, 20, 30], [100, 100, 100]],
                    [[2, 4, 6], [11, 0, 0], [200, 0, 50]]], np.uint8)
    ids = np.array([[0, 0, 1],
                    [0, 2, 1]])
    # region 0: (0,0,0), (10,20,30), (2,4,6) -> mean (4, 8, 12)
    # region 1: (100,100,100), (200,0,50) -> mean (150, 50, 75)
    # region 2: (11,0,0) alone
    expected = np.array([[[4, 8, 12], [4, 8, 12], [150, 50, 75]],
                         [[4, 8, 12], [11, 0, 0], [150, 50, 75]]], np.uint8)
    out = sp.mean_fill(img, ids)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    # float images keep the exact mean; rounding for integers: (1 + 2) / 2 = 1.5 -> 2
    f = sp.mean_fill(np.array([[1.0, 2.0]]), np.array([[0, 0]]))
    np.testing.assert_array_equal(f, [[1.5, 1.5]])
    i = sp.mean_fill(np.array([[1, 2]], np.uint8), np.array([[0, 0]]))
    np.testing.assert_array_equal(i, [[2, 2]])
