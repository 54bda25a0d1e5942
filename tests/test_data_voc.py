"""VOC 2012 reader (and the synthetic set, which shares its layout) on tiny fixtures."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import (H, W, data_cfg, make_mask, make_synthetic, make_voc, write_labels,
                           write_lists)
from sslib.data import VOC_CLASSES, build_dataset
from sslib.data.prepare import prepare
from sslib.data.transforms import EvalTransform, TrainTransform
from sslib.data.voc import VOCDataset, voc_palette
from sslib.io import DataError
from sslib.formats import save_png

MASKS = {"a": make_mask([1]), "b": make_mask([15, 20]), "c": make_mask([7, 1, 12]), "d": make_mask([3])}
LISTS = {"train": ["a", "b", "c"], "val": ["d"]}


@pytest.fixture
def voc(tmp_path):
    make_voc(tmp_path / "root", MASKS, LISTS)
    cfg = data_cfg(tmp_path)
    prepare(cfg, progress=False)
    return cfg


def test_palette_is_the_standard_voc_colour_map():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0]
    assert pal[15].tolist() == [192, 128, 128] and pal[20].tolist() == [0, 64, 128]
    assert pal[255].tolist() == [224, 224, 192]


def test_reader_labels_masks_and_shapes(voc, tmp_path):
    ds = build_dataset(voc, "train")
    assert isinstance(ds, VOCDataset) and len(ds) == 3 and ds.names == ["a", "b", "c"]
    assert ds.classes == VOC_CLASSES and ds.num_classes == 20
    item = ds[2]
    assert item["name"] == "c"
    assert isinstance(item["image"], np.ndarray) and item["image"].shape == (H, W, 3)
    assert item["image"].dtype == np.uint8
    assert item["label"].dtype == torch.float32 and item["label"].shape == (20,)
    assert torch.nonzero(item["label"]).ravel().tolist() == [0, 6, 11]  # classes 1, 7, 12
    # the palette PNG is read as its indices (class ids), not colours
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (H, W)
    assert np.array_equal(item["mask"].numpy(), MASKS["c"])
    assert set(torch.unique(item["mask"]).tolist()) == {0, 1, 7, 12, 255}
    assert "superpixels" not in item
    assert ds.image_path("c") == tmp_path / "root" / "JPEGImages" / "c.jpg"
    assert ds.mask_path("c").parent.name == "SegmentationClass"
    val = build_dataset(voc, "val", with_mask=False)
    assert val.names == ["d"] and "mask" not in val[0]
    assert torch.nonzero(val[0]["label"]).ravel().tolist() == [2]


def test_transform_output_and_dataloader(voc):
    ds = build_dataset(voc, "train", transform=TrainTransform((16, 24), 16))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (3, 16, 16) and batch["mask"].dtype == torch.int64
    assert batch["label"].shape == (3, 20) and batch["name"] == ["a", "b", "c"]
    item = build_dataset(voc, "val", transform=EvalTransform())[0]
    assert item["image"].shape == (3, H, W) and item["mask"].shape == (H, W)


def test_split_list_and_mask_lookup_order(tmp_path):
    root, prepared = tmp_path / "root", tmp_path / "prepared"
    masks = {n: make_mask([1]) for n in "pqrs"}
    make_voc(root, masks, {"train": ["p", "q", "r", "s"], "train_aug": ["p"]})
    cfg = data_cfg(tmp_path)
    write_labels(prepared, VOC_CLASSES, {n: [0] for n in "pqrs"})
    # lists: <prepared_dir>/lists/ wins over ImageSets/Segmentation/
    assert build_dataset(cfg, "train_aug").names == ["p"]
    write_lists(prepared / "lists", {"train_aug": ["q", "r", "s"]})
    ds = build_dataset(cfg, "train_aug")
    assert ds.names == ["q", "r", "s"] and ds.list_path == prepared / "lists" / "train_aug.txt"
    # masks: <prepared>/SegmentationClassAug, then <root>/SegmentationClassAug, then SegmentationClass
    save_png(prepared / "SegmentationClassAug" / "q.png", make_mask([2]), palette=voc_palette())
    save_png(root / "SegmentationClassAug" / "q.png", make_mask([3]), palette=voc_palette())
    save_png(root / "SegmentationClassAug" / "r.png", make_mask([3]), palette=voc_palette())
    ds = build_dataset(cfg, "train_aug")
    assert ds.mask_path("q") == prepared / "SegmentationClassAug" / "q.png"
    assert ds.mask_path("r") == root / "SegmentationClassAug" / "r.png"
    assert ds.mask_path("s") == root / "SegmentationClass" / "s.png"
    assert ds.mask_path("nope") is None
    assert set(np.unique(ds[0]["mask"].numpy())) == {0, 2, 255}
    assert set(np.unique(ds[1]["mask"].numpy())) == {0, 3, 255}
    assert set(np.unique(ds[2]["mask"].numpy())) == {0, 1, 255}


def test_missing_image_names_the_entry_and_list(tmp_path):
    root = make_voc(tmp_path / "root", MASKS, {"train": ["a", "ghost", "b"], "val": ["d"]})
    with pytest.raises(DataError) as e:
        VOCDataset(root, "train", prepared_dir=tmp_path / "prepared")
    msg = str(e.value)
    assert "ghost" in msg and str(root / "ImageSets" / "Segmentation" / "train.txt") in msg
    assert str(root / "JPEGImages" / "ghost.jpg") in msg


def test_corrupt_jpeg_raises_on_getitem_naming_the_file(voc, tmp_path):
    bad = tmp_path / "root" / "JPEGImages" / "b.jpg"
    bad.write_bytes(b"this is not a jpeg")
    ds = build_dataset(voc, "train")  # construction does not decode images
    ds[0]
    with pytest.raises(DataError, match=str(bad)):
        ds[1]


def test_missing_label_cache_says_how_to_build_it(tmp_path):
    make_voc(tmp_path / "root", MASKS, LISTS)
    cfg = data_cfg(tmp_path)
    with pytest.raises(DataError) as e:
        build_dataset(cfg, "train")
    msg = str(e.value)
    assert str(tmp_path / "prepared" / "labels.json") in msg
    assert "dvc repro prepare" in msg and "python -m sslib.stages.prepare" in msg


def test_stale_label_cache(tmp_path):
    make_voc(tmp_path / "root", MASKS, LISTS)
    cfg = data_cfg(tmp_path)
    write_labels(tmp_path / "prepared", VOC_CLASSES, {"a": [0]})
    with pytest.raises(DataError, match="stale"):
        build_dataset(cfg, "train")
    write_labels(tmp_path / "prepared", ("cat", "dog"), {n: [] for n in MASKS})
    with pytest.raises(DataError, match="other classes"):
        build_dataset(cfg, "train")


def test_missing_split_list_says_how_to_create_it(voc, tmp_path):
    with pytest.raises(DataError) as e:
        build_dataset(voc, "train_aug")
    msg = str(e.value)
    assert str(tmp_path / "root" / "ImageSets" / "Segmentation" / "train_aug.txt") in msg
    assert "data.sbd_root" in msg
    with pytest.raises(DataError, match="one image name per line"):
        build_dataset(voc, "holdout")


def test_mask_with_wrong_shape(voc, tmp_path):
    save_png(tmp_path / "root" / "SegmentationClass" / "a.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match="a.png"):
        build_dataset(voc, "train")[0]


def test_synthetic_classes_from_meta(tmp_path):
    classes = ["circle", "square", "star"]
    root = make_synthetic(tmp_path / "syn", classes, {"x": make_mask([3]), "y": make_mask([1, 2])},
                          {"train": ["x"], "val": ["y"]})
    cfg = data_cfg(tmp_path, "synthetic", root=root)
    prepare(cfg, progress=False)
    ds = build_dataset(cfg, "val")
    assert ds.classes == tuple(classes) and ds.num_classes == 3
    assert ds[0]["label"].tolist() == [1.0, 1.0, 0.0]
    (root / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json"):
        build_dataset(cfg, "val")


def test_superpixels_are_loaded(voc, tmp_path):
    sp_dir = tmp_path / "sp"
    ids = (np.arange(H * W).reshape(H, W) // 7).astype(np.uint16)  # ids up to 85, > 255 not needed
    ids[0, 0] = 300
    for n in MASKS:
        save_png(sp_dir / f"{n}.png", ids)
    item = build_dataset(voc, "train", superpixel_dir=sp_dir, with_mask=False)[0]
    assert "mask" not in item
    assert item["superpixels"].dtype == torch.int64 and np.array_equal(item["superpixels"].numpy(), ids)
    out = build_dataset(voc, "train", superpixel_dir=sp_dir, transform=TrainTransform((20, 20), 24))[0]
    sp = out["superpixels"].numpy()
    assert sp.shape == (24, 24) and np.array_equal(np.unique(sp), np.arange(sp.max() + 1))
    save_png(sp_dir / "a.png", ids[:10])
    with pytest.raises(DataError, match="a.png"):
        build_dataset(voc, "train", superpixel_dir=sp_dir)[0]


def test_mask_png_is_palette_mode(voc, tmp_path):
    with Image.open(tmp_path / "root" / "SegmentationClass" / "b.png") as im:
        assert im.mode == "P"  # the fixture is a real VOC-style indexed PNG
