"""Superpixels: computation, lossless storage, parallel + resumable precomputation, figure helpers."""
import hashlib
import json
import os

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from sslib import superpixels as sp
from sslib.config import SuperpixelConfig, defaults
from sslib.io import DataError
from sslib.formats import read_rgb, save_jpeg, save_png


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


SLIC = defaults(SuperpixelConfig, method="slic", slic={"n_segments": 12, "compactness": 10.0, "sigma": 1.0})
FELZ = defaults(SuperpixelConfig, method="felzenszwalb", felzenszwalb={"scale": 50.0, "sigma": 0.5, "min_size": 20})


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
    few = sp.compute(img, defaults(SuperpixelConfig, method="slic", slic={"n_segments": 4}))
    many = sp.compute(img, defaults(SuperpixelConfig, method="slic", slic={"n_segments": 60}))
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
        from sslib.formats import read_rgb
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


def test_changed_params_recompute_everything_unchanged_inputs_are_reused(tmp_path):
    items = make_items(tmp_path / "images", n=3)
    out = tmp_path / "sp"
    sp.precompute(items, out, SLIC, workers=1, progress=False)
    (out / "meta.json").unlink()  # interrupted, but now with other parameters
    other = defaults(SuperpixelConfig, method="slic", slic={"n_segments": 30})
    stats = sp.precompute(items, out, other, workers=1, progress=False)
    assert (stats["n_computed"], stats["n_reused"]) == (3, 0)
    assert json.loads((out / "meta.json").read_text())["params"]["n_segments"] == 30
    # a finished run started again: maps made from the same parameters and image bytes are kept
    before = _age(out)
    stats = sp.precompute(items, out, other, workers=1, progress=False)
    assert (stats["n_computed"], stats["n_reused"]) == (0, 3)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == before
    # an input whose bytes changed (same shape) is recomputed, the others are not
    save_png(items[1][1], blocks_image(seed=99))
    stats = sp.precompute(items, out, other, workers=1, progress=False)
    assert (stats["n_computed"], stats["n_reused"]) == (1, 2)
    np.testing.assert_array_equal(sp.load(sp.path_for(out, "im1")),
                                  sp.compute(blocks_image(seed=99), other))
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
    assert not out.exists()  # nothing is written into out_dir before every image succeeded
    assert sp.staging_dir(out).is_dir()


# --------------------------------------------------------------------------- staging / tags
def make_jpegs(folder, n=8, h=24, w=32):
    """n tiny JPEGs (h, w) written with save_jpeg; returns [(name, path)]."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        p = folder / f"im{i}.jpg"
        save_jpeg(p, blocks_image(seed=i, h=h, w=w))
        items.append((f"im{i}", p))
    return items


def snapshot(folder):
    """{file name: bytes} of every file directly in ``folder`` (maps, meta.json, .params.json)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


SLIC_B = defaults(SuperpixelConfig, method="slic", slic={"n_segments": 30, "compactness": 5.0, "sigma": 0.5})


def assert_same_maps(a, b, names):
    for n in names:
        np.testing.assert_array_equal(sp.load(sp.path_for(a, n)), sp.load(sp.path_for(b, n)))
        assert sp.path_for(a, n).read_bytes() == sp.path_for(b, n).read_bytes()
    assert sorted(p.name for p in a.glob("*.png")) == sorted(f"{n}.png" for n in names)


def test_staging_dir_is_a_sibling_of_out_dir(tmp_path):
    assert sp.staging_dir("artifacts/superpixels") == sp.Path("artifacts/superpixels.partial")
    assert sp.staging_dir(tmp_path / "sp") == tmp_path / "sp.partial"
    assert sp.staging_dir(tmp_path / "sp" / ".") == tmp_path / "sp.partial"


def test_save_with_tags_load_reads_tagged_and_untagged_maps(tmp_path):
    ids = np.arange(6 * 7).reshape(6, 7) % 5
    sp.save(tmp_path / "old.png", ids)  # format 1: no text chunk
    sp.save(tmp_path / "new.png", ids, tag="t" * 32, source="s" * 32)
    for name in ("old.png", "new.png"):
        np.testing.assert_array_equal(sp.load(tmp_path / name, expected_shape=(6, 7)), ids)
    assert sp.read_tags(tmp_path / "old.png") == (None, None, (6, 7))
    assert sp.read_tags(tmp_path / "new.png") == ("t" * 32, "s" * 32, (6, 7))
    tag = sp.params_tag(SLIC)
    assert len(tag) == 32 and tag != sp.params_tag(SLIC_B) and tag == sp.params_tag(SLIC)


def test_corrupt_jpeg_leaves_out_dir_intact_and_rerun_resumes(tmp_path):
    """The probe: a full run with A, then B with a truncated JPEG, then B again once fixed."""
    items = make_jpegs(tmp_path / "images")
    names = [n for n, _ in items]
    out = tmp_path / "sp"
    sp.precompute(items, out, SLIC, workers=1, progress=False)
    before = snapshot(out)
    assert "meta.json" in before and len([k for k in before if k.endswith(".png")]) == 8

    bad = items[5][1]
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])
    with pytest.raises(DataError, match="im5.jpg"):
        sp.precompute(items, out, SLIC_B, workers=1, progress=False)
    assert snapshot(out) == before  # every old map byte-identical, the old meta.json kept
    staged = sorted(p.name for p in sp.staging_dir(out).glob("*.png"))
    assert staged == [f"im{i}.png" for i in range(5)]  # what was computed before the failure

    bad.write_bytes(good_bytes)
    stats = sp.precompute(items, out, SLIC_B, workers=1, progress=False)
    assert (stats["n_reused"], stats["n_computed"]) == (5, 3)
    assert not sp.staging_dir(out).exists()
    scratch = sp.precompute(items, tmp_path / "scratch", SLIC_B, workers=1, progress=False)
    assert_same_maps(out, tmp_path / "scratch", names)
    assert (out / "meta.json").read_bytes() == (tmp_path / "scratch" / "meta.json").read_bytes()
    assert {k: v for k, v in stats.items() if k not in ("n_reused", "n_computed")} == \
        {k: v for k, v in scratch.items() if k not in ("n_reused", "n_computed")}


def test_corrupt_jpeg_with_workers_leaves_out_dir_intact(tmp_path):
    items = make_jpegs(tmp_path / "images", n=6)
    out = tmp_path / "sp"
    sp.precompute(items, out, SLIC, workers=1, progress=False)
    before = snapshot(out)
    good_bytes = items[2][1].read_bytes()
    items[2][1].write_bytes(good_bytes[: len(good_bytes) // 2])
    with pytest.raises(DataError, match="im2.jpg"):
        sp.precompute(items, out, SLIC_B, workers=2, progress=False)
    assert snapshot(out) == before
    items[2][1].write_bytes(good_bytes)
    sp.precompute(items, out, SLIC_B, workers=2, progress=False)
    sp.precompute(items, tmp_path / "scratch", SLIC_B, workers=1, progress=False)
    assert_same_maps(out, tmp_path / "scratch", [n for n, _ in items])
    assert not sp.staging_dir(out).exists()


def test_interrupt_leaves_out_dir_intact_and_resumes(tmp_path, monkeypatch):
    items = make_jpegs(tmp_path / "images", n=5)
    out = tmp_path / "sp"
    sp.precompute(items, out, SLIC, workers=1, progress=False)
    before = snapshot(out)
    real, calls = sp.compute, []

    def interrupted(image, cfg):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(image, cfg)

    monkeypatch.setattr(sp, "compute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sp.precompute(items, out, SLIC_B, workers=1, progress=False)
    monkeypatch.setattr(sp, "compute", real)
    assert snapshot(out) == before
    stats = sp.precompute(items, out, SLIC_B, workers=1, progress=False)
    assert (stats["n_reused"], stats["n_computed"]) == (2, 3)
    sp.precompute(items, tmp_path / "scratch", SLIC_B, workers=1, progress=False)
    assert_same_maps(out, tmp_path / "scratch", [n for n, _ in items])


def _stale_maps(kind, items):
    """{name: (H, W) map} that look plausible in a folder but must not be reused for SLIC_B."""
    name, img_path = items[1]
    h, w = read_rgb(img_path).shape[:2]
    tag, source = sp.params_tag(SLIC_B), hashlib.md5(img_path.read_bytes()).hexdigest()
    ids = np.zeros((h, w), np.int64)
    ids[:, w // 2:] = 1
    if kind == "other_params":
        return name, ids, dict(tag=sp.params_tag(SLIC), source=source)
    if kind == "untagged":
        return name, ids, {}
    if kind == "other_source":
        return name, ids, dict(tag=tag, source="0" * 32)
    if kind == "wrong_shape":
        return name, np.zeros((h + 1, w), np.int64), dict(tag=tag, source=source)
    raise AssertionError(kind)


@pytest.mark.parametrize("where", ["staging", "out_dir"])
@pytest.mark.parametrize("kind", ["other_params", "untagged", "other_source", "wrong_shape", "garbage"])
def test_stale_map_is_never_reused(tmp_path, where, kind):
    items = make_jpegs(tmp_path / "images", n=3)
    out = tmp_path / "sp"
    folder = sp.staging_dir(out) if where == "staging" else out
    folder.mkdir(parents=True)
    if kind == "garbage":
        name = items[1][0]
        sp.path_for(folder, name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    else:
        name, ids, tags = _stale_maps(kind, items)
        sp.save(sp.path_for(folder, name), ids, **tags)
    stats = sp.precompute(items, out, SLIC_B, workers=1, progress=False)
    assert (stats["n_reused"], stats["n_computed"]) == (0, 3)
    sp.precompute(items, tmp_path / "scratch", SLIC_B, workers=1, progress=False)
    assert_same_maps(out, tmp_path / "scratch", [n for n, _ in items])
    assert not sp.staging_dir(out).exists()


def test_current_map_in_staging_is_reused_and_moved(tmp_path):
    items = make_jpegs(tmp_path / "images", n=3)
    sp.precompute(items, tmp_path / "ref", SLIC_B, workers=1, progress=False)
    out = tmp_path / "sp"
    sp.staging_dir(out).mkdir(parents=True)
    ref = sp.path_for(tmp_path / "ref", "im0").read_bytes()
    sp.path_for(sp.staging_dir(out), "im0").write_bytes(ref)
    stats = sp.precompute(items, out, SLIC_B, workers=1, progress=False)
    assert (stats["n_reused"], stats["n_computed"]) == (1, 2)
    assert_same_maps(out, tmp_path / "ref", [n for n, _ in items])


def test_unlisted_maps_are_removed_after_success_not_before(tmp_path):
    items = make_jpegs(tmp_path / "images", n=4)
    out = tmp_path / "sp"
    sp.precompute(items, out, SLIC, workers=1, progress=False)
    before = snapshot(out)
    fewer = items[:2]
    bad = tmp_path / "images" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        sp.precompute(fewer + [("broken", bad)], out, SLIC_B, workers=1, progress=False)
    assert snapshot(out) == before  # im2, im3 still there after the failed run
    stats = sp.precompute(fewer, out, SLIC_B, workers=1, progress=False)
    assert stats["count"] == 2 and stats["n_reused"] == 2  # from staging
    assert sorted(p.name for p in out.glob("*.png")) == ["im0.png", "im1.png"]
    # a folder that is not ours (no marker files) keeps foreign PNGs
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    save_png(foreign / "keep.png", np.zeros((3, 3), np.uint8))
    sp.precompute(fewer, foreign, SLIC_B, workers=1, progress=False)
    assert sorted(p.name for p in foreign.glob("*.png")) == ["im0.png", "im1.png", "keep.png"]


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


# --------------------------------------------------------------------------- merging (presets: Felzenszwalb <= 64)
def test_merge_regions_by_hand():
    """Four 1-pixel regions of colours 0, 10, 200, 210 in a row, at most 2: the two Ward costs
    of 150 (0|10 and 200|210) go before 54,150 (10|200), the lower ids first."""
    from sslib.superpixels import merge_regions

    image = np.array([[[0] * 3, [10] * 3, [200] * 3, [210] * 3]], np.uint8)
    ids = np.array([[0, 1, 2, 3]])
    assert merge_regions(ids, image, 2).tolist() == [[0, 0, 1, 1]]
    assert merge_regions(ids, image, 3).tolist() == [[0, 0, 1, 2]]
    assert merge_regions(ids, image, 4) is not None and merge_regions(ids, image, 9).tolist() == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="max_regions"):
        merge_regions(ids, image, 0)


def test_merge_regions_first_step_is_the_cheapest_adjacent_pair():
    """Against a brute-force search over every adjacent pair: one merge (K -> K-1) joins the
    pair of least Ward cost."""
    from sslib.superpixels import merge_regions

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    ids = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 3, 0), 3, 1)   # 16 blocks of 3x3
    n = np.bincount(ids.ravel()).astype(float)
    mu = np.stack([np.bincount(ids.ravel(), image[..., c].ravel().astype(float)) for c in range(3)], 1) / n[:, None]
    best = min(((n[a] * n[b] / (n[a] + n[b]) * ((mu[a] - mu[b]) ** 2).sum(), a, b)
                for a in range(16) for b in range(a + 1, 16) if abs(a - b) == 4 or (b == a + 1 and b % 4)))
    out = merge_regions(ids, image, 15)
    _, a, b = best
    assert out.max() == 14
    assert (out[ids == a][0] == out[ids == b][0]) and len(np.unique(out[(ids == a) | (ids == b)])) == 1
    others = [r for r in range(16) if r not in (a, b)]
    assert len({int(out[ids == r][0]) for r in others}) == 14  # nothing else merged


def test_felzenszwalb_with_max_regions_gives_connected_unions_of_its_regions():
    from skimage.measure import label

    from sslib.superpixels import compute

    rng = np.random.default_rng(1)
    image = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    cfg = defaults(SuperpixelConfig, method="felzenszwalb")
    cfg.felzenszwalb.scale, cfg.felzenszwalb.min_size = 10.0, 5
    raw = compute(image, cfg)
    cfg.felzenszwalb.max_regions = 8
    merged = compute(image, cfg)
    assert raw.max() + 1 > 8 and merged.max() + 1 == 8
    assert sorted(np.unique(merged)) == list(range(8))
    for r in range(int(raw.max()) + 1):  # every raw region lies in one merged region
        assert len(np.unique(merged[raw == r])) == 1
    # and merged regions are connected as the raw ones are (Felzenszwalb's: 8-neighbourhood;
    # the merge joins 4-adjacent regions only)
    assert all(label(raw == r, connectivity=2).max() == 1 for r in range(int(raw.max()) + 1))
    for m in range(8):
        assert label(merged == m, connectivity=2).max() == 1
    assert np.array_equal(compute(image, cfg), merged)  # deterministic
