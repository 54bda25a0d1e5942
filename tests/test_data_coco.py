"""COCO 2014 reader and its prepare step on a tiny fixture."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from data_fixtures import H, W, data_cfg, make_coco, make_mask, read_json, write_lists
from sslib.data import COCO_CLASSES, build_dataset
from sslib.data.prepare import prepare
from sslib.data.coco import COCODataset, subset_of
from sslib.io import DataError
from sslib.formats import save_png

TRAIN = {"COCO_train2014_000000000009": make_mask([1, 80]),
         "COCO_train2014_000000000025": make_mask([52]),
         "COCO_train2014_000000000030": make_mask([], border=False)}
VAL = {"COCO_val2014_000000000042": make_mask([18, 1]), "COCO_val2014_000000000073": make_mask([3])}


@pytest.fixture
def coco(tmp_path):
    make_coco(tmp_path / "coco", TRAIN, VAL)  # train under train2014/, val under JPEGImages/val2014/
    return data_cfg(tmp_path, "coco", root=tmp_path / "coco")


def test_classes():
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert COCO_CLASSES[0] == "person" and COCO_CLASSES[79] == "toothbrush"
    assert COCO_CLASSES[51] == "carrot" and COCO_CLASSES[62] == "tv"


def test_prepare_and_read(coco, tmp_path):
    summary = prepare(coco, progress=False)
    assert summary["images"] == {"train": 3, "val": 2}
    assert summary["class_counts"]["train"]["person"] == 1
    assert summary["class_counts"]["val"]["person"] == 1
    cache = read_json(tmp_path / "prepared" / "labels.json")
    assert cache["classes"] == list(COCO_CLASSES)
    assert cache["labels"] == {
        "COCO_train2014_000000000009": [0, 79], "COCO_train2014_000000000025": [51],
        "COCO_train2014_000000000030": [],
        "COCO_val2014_000000000042": [0, 17], "COCO_val2014_000000000073": [2]}
    assert (tmp_path / "prepared" / "lists" / "val.txt").read_text().split() == list(VAL)

    train = build_dataset(coco, "train")
    assert isinstance(train, COCODataset) and train.num_classes == 80 and len(train) == 3
    item = train[0]
    assert item["image"].shape == (H, W, 3) and item["label"].shape == (80,)
    assert torch.nonzero(item["label"]).ravel().tolist() == [0, 79]
    assert item["mask"].dtype == torch.int64
    assert np.array_equal(item["mask"].numpy(), TRAIN["COCO_train2014_000000000009"])
    assert train[2]["label"].sum() == 0
    assert train.image_path(train.names[0]) == tmp_path / "coco" / "train2014" / f"{train.names[0]}.jpg"

    val = build_dataset(coco, "val")
    assert val.image_dir == tmp_path / "coco" / "JPEGImages" / "val2014"
    assert val.mask_path(val.names[1]) == tmp_path / "coco" / "SegmentationClass" / "val2014" / f"{val.names[1]}.png"
    assert torch.nonzero(val[0]["label"]).ravel().tolist() == [0, 17]


def test_subset_split_names(coco, tmp_path):
    prepare(coco, progress=False)
    write_lists(tmp_path / "coco" / "ImageSets", {"train_small": ["COCO_train2014_000000000025"]})
    ds = build_dataset(coco, "train_small")
    assert ds.names == ["COCO_train2014_000000000025"] and ds.image_dir.name == "train2014"
    assert subset_of("val_1k") == "val2014"
    with pytest.raises(DataError, match="'train' or 'val'"):
        build_dataset(coco, "test")


def test_errors(coco, tmp_path):
    root = tmp_path / "coco"
    with pytest.raises(DataError, match="labels.json"):
        build_dataset(coco, "train")
    (root / "SegmentationClass" / "val2014" / "COCO_val2014_000000000073.png").unlink()
    with pytest.raises(DataError) as e:
        prepare(coco, progress=False)
    assert "COCO_val2014_000000000073" in str(e.value) and "val.txt" in str(e.value)
    (root / "ImageSets" / "train.txt").write_text("COCO_train2014_000000000009\nCOCO_train2014_999\n")
    with pytest.raises(DataError, match="COCO_train2014_999"):
        COCODataset(root, "train", prepared_dir=tmp_path / "prepared")
    bad = make_mask([81])
    save_png(root / "SegmentationClass" / "train2014" / "COCO_train2014_000000000009.png", bad)
    (root / "ImageSets" / "train.txt").write_text("COCO_train2014_000000000009\n")
    (root / "ImageSets" / "val.txt").write_text("\n")  # an empty split is an error, naming its list
    with pytest.raises(DataError, match=r"val\.txt: split list is empty"):
        prepare(coco, progress=False)
    (root / "ImageSets" / "val.txt").write_text("COCO_val2014_000000000042\n")
    with pytest.raises(DataError, match=r"\[81\]"):
        prepare(coco, progress=False)


def test_missing_image_folder(tmp_path):
    make_coco(tmp_path / "coco", TRAIN, VAL, val_under_jpegimages=False)
    cfg = data_cfg(tmp_path, "coco", root=tmp_path / "coco")
    prepare(cfg, progress=False)
    assert build_dataset(cfg, "val").image_dir == tmp_path / "coco" / "val2014"
    shutil.rmtree(tmp_path / "coco" / "train2014")
    with pytest.raises(DataError, match="JPEGImages/train2014"):
        build_dataset(cfg, "train")
