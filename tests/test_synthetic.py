"""The synthetic "context" data set: determinism, VOC layout, masks vs meta, the context
statistic, occlusion handling, and distinct background contexts. Tiny sizes throughout."""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslib.config import SyntheticConfig, defaults
from sslib.data import synthetic as syn
from sslib.formats import read_lines, read_png_labels, read_rgb

TINY = {"n_train": 8, "n_val": 4, "image_size": 64}
C = len(syn.CLASSES)


def _cfg(root: Path, **kw) -> SyntheticConfig:
    return defaults(SyntheticConfig, out_dir=str(root), **{**TINY, **kw})


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _meta(root: Path) -> dict:
    return json.loads((root / "meta.json").read_text())


def _renders(n: int, **kw):
    cfg = defaults(SyntheticConfig, out_dir="unused", **{**TINY, **kw})
    return [syn.render_image(np.random.default_rng([123, 7, i]), cfg) for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "out"
    summary = syn.generate(_cfg(root), progress=False)
    return root, _meta(root), summary


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path, tiny):
    root, _, _ = tiny
    again = tmp_path / "again"
    syn.generate(_cfg(again), progress=False)
    a, b = _files(root), _files(again)
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]

    other = tmp_path / "other"
    syn.generate(_cfg(other, seed=1), progress=False)
    c = _files(other)
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert jpgs and all(a[k] != c[k] for k in jpgs)


def test_images_do_not_depend_on_generation_order():
    cfg = defaults(SyntheticConfig, out_dir="unused", **TINY)
    late = [syn.render_image(np.random.default_rng([0, 0, i]), cfg) for i in (3, 2, 1)]
    early = syn.render_image(np.random.default_rng([0, 0, 3]), cfg)
    np.testing.assert_array_equal(late[0][0], early[0])
    np.testing.assert_array_equal(late[0][1], early[1])
    assert late[0][2] == early[2]


# --------------------------------------------------------------------------- layout
def test_lists_name_exactly_the_written_images(tiny):
    root, meta, summary = tiny
    lists = {s: read_lines(root / "ImageSets" / "Segmentation" / f"{s}.txt") for s in ("train", "val")}
    assert lists["train"] == [f"train_{i:05d}" for i in range(TINY["n_train"])]
    assert lists["val"] == [f"val_{i:05d}" for i in range(TINY["n_val"])]
    names = set(lists["train"]) | set(lists["val"])
    assert {p.stem for p in (root / "JPEGImages").iterdir()} == names
    assert {p.stem for p in (root / "SegmentationClass").iterdir()} == names
    assert [r["name"] for r in meta["images"]] == lists["train"] + lists["val"]
    assert meta["classes"] == list(syn.CLASSES) and meta["contexts"] == list(syn.CONTEXTS)
    assert meta["preferred_context"] == syn.PREFERRED_CONTEXT
    assert "out_dir" not in meta["config"] and meta["config"]["seed"] == 0
    assert summary["images"] == {"train": TINY["n_train"], "val": TINY["n_val"]}
    assert not [p for p in root.rglob(".*") if p.is_file()]  # no temporaries left


def test_masks_are_voc_palette_pngs_matching_meta(tiny):
    root, meta, _ = tiny
    for rec in meta["images"]:
        img = read_rgb(root / "JPEGImages" / f"{rec['name']}.jpg")
        path = root / "SegmentationClass" / f"{rec['name']}.png"
        with Image.open(path) as im:
            assert im.mode == "P"
            assert np.array_equal(np.array(im.getpalette(), np.uint8).reshape(-1, 3)[:256], syn.voc_palette())
        mask = read_png_labels(path)
        assert img.shape == (64, 64, 3) and mask.shape == img.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= set(range(C + 1)) | {255}
        visible = [o for o in rec["objects"] if o["visible"]]
        assert visible, rec["name"]
        in_mask = {syn.CLASSES[k - 1] for k in np.unique(mask) if 0 < k <= C}
        assert in_mask == {o["class"] for o in visible} == set(rec["classes"])
        for k, name in enumerate(syn.CLASSES, 1):  # exact pixel accounting per class
            assert (mask == k).sum() == sum(o["visible_px"] for o in visible if o["class"] == name)
        assert (mask == 255).any()  # the boundary band


def test_voc_palette():
    pal = syn.voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0] and pal[15].tolist() == [192, 128, 128]
    assert pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal}) == 256


def test_regenerating_smaller_removes_stale_files(tmp_path):
    root = tmp_path / "out"
    syn.generate(_cfg(root, n_train=6, n_val=3), progress=False)
    syn.generate(_cfg(root, n_train=3, n_val=2), progress=False)
    fresh = tmp_path / "fresh"
    syn.generate(_cfg(fresh, n_train=3, n_val=2), progress=False)
    assert _files(root) == _files(fresh)


# --------------------------------------------------------------------------- context correlation
@pytest.mark.parametrize("prob", [1.0, 0.0])
def test_context_prob_extremes(tmp_path, prob):
    root = tmp_path / "out"
    summary = syn.generate(_cfg(root, n_train=12, context_prob=prob), progress=False)
    meta = _meta(root)
    objs = [o for r in meta["images"] for o in r["objects"] if o["visible"]]
    share = np.mean([o["context"] == syn.PREFERRED_CONTEXT[o["class"]] for o in objs])
    assert share == prob
    assert summary["share_in_preferred"] == prob
    assert summary["mismatched_images"] == (0 if prob == 1.0 else len(meta["images"]))
    table = syn.summarize(meta)
    diag = sum(table.loc[c, syn.PREFERRED_CONTEXT[c]] for c in syn.CLASSES)
    assert table.to_numpy().sum() == len(objs) and diag == (len(objs) if prob == 1.0 else 0)


def test_default_context_prob_share():
    renders = _renders(150, context_prob=0.85)
    objs = [o for _, _, info in renders for o in info["objects"] if o["visible"]]
    share = np.mean([o["preferred"] for o in objs])
    assert 0.77 <= share <= 0.93
    assert any(len(info["contexts"]) == 2 for _, _, info in renders)
    assert any(len(info["classes"]) > 1 for _, _, info in renders)
    counts = {c: sum(o["class"] == c for o in objs) for c in syn.CLASSES}
    assert min(counts.values()) > 0.5 * len(objs) / C  # roughly balanced classes


def test_summarize_and_context_stats(tiny):
    _, meta, summary = tiny
    table = syn.summarize(meta)
    assert list(table.index) == list(syn.CLASSES) and list(table.columns) == list(syn.CONTEXTS)
    n_vis = sum(o["visible"] for r in meta["images"] for o in r["objects"])
    assert table.to_numpy().sum() == n_vis == sum(summary["class_counts"].values())
    assert syn.summarize(meta, split="val").to_numpy().sum() < n_vis
    stats = syn.context_stats(meta)
    json.dumps(stats)
    assert stats["images"] == len(meta["images"]) and 0 <= stats["share_in_preferred"] <= 1
    assert stats["mismatched_images"] == summary["mismatched_images"]


# --------------------------------------------------------------------------- occlusion
def test_hidden_objects_never_reach_the_mask(monkeypatch):
    def pile_up(rng, obj, placed, region_map):  # every object near the centre: many are hidden
        n = region_map.shape[0]
        obj.place(n / 2 + rng.uniform(-3, 3), n / 2 + rng.uniform(-3, 3), n)

    monkeypatch.setattr(syn, "_place", pile_up)
    renders = _renders(30, min_objects=4, max_objects=4, scale_range=[0.3, 0.8])
    min_px = syn._min_visible_px(64)
    hidden = 0
    for img, mask, info in renders:
        vis = [o for o in info["objects"] if o["visible"]]
        hid = [o for o in info["objects"] if not o["visible"]]
        hidden += len(hid)
        assert vis and all(o["visible_px"] == 0 for o in hid)
        for o in vis:
            assert o["visible_px"] >= max(min_px, syn.MIN_VISIBLE_FRAC * o["area_px"])
        present = {syn.CLASSES[k - 1] for k in np.unique(mask) if 0 < k <= C}
        assert present == {o["class"] for o in vis}
        for k, name in enumerate(syn.CLASSES, 1):
            assert (mask == k).sum() == sum(o["visible_px"] for o in vis if o["class"] == name)
    assert hidden > 0  # the case was exercised


def test_objects_overlap_sometimes():
    renders = _renders(60)
    partly = [o for _, _, info in renders for o in info["objects"]
              if o["visible"] and o["visible_px"] < 0.6 * o["area_px"]]
    assert partly


# --------------------------------------------------------------------------- contexts
def test_contexts_have_distinct_mean_colours():
    renders = _renders(90, context_prob=1.0, min_objects=1, max_objects=1)
    pix: dict[str, list[np.ndarray]] = {c: [] for c in syn.CONTEXTS}
    for img, mask, info in renders:
        if len(info["contexts"]) == 1 and info["objects"][0]["preferred"]:
            pix[info["contexts"][0]].append(img[mask == 0].astype(float))
    means = {c: np.concatenate(v).mean(0) for c, v in pix.items() if v}
    assert set(means) == set(syn.CONTEXTS)
    for a, b in combinations(means, 2):
        assert np.linalg.norm(means[a] - means[b]) > 15, (a, b, means[a], means[b])
    for c, v in pix.items():  # textured, not flat
        assert np.concatenate(v).std(0).mean() > 5, c


def test_read_meta_and_samples_read_what_generate_wrote(tiny, tmp_path):
    tiny = tiny[0]
    assert syn.read_meta(tiny) == _meta(tiny)
    shown = syn.samples(tiny, "val", 3)
    names = read_lines(tiny / "ImageSets" / "Segmentation" / "val.txt")[:3]
    assert [n for n, *_ in shown] == names
    name, image, mask = shown[0]
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64) and mask.dtype == np.uint8
    assert np.array_equal(mask, read_png_labels(tiny / "SegmentationClass" / f"{name}.png"))
    from sslib.io import DataError

    with pytest.raises(DataError, match="meta.json: missing"):
        syn.read_meta(tmp_path)
