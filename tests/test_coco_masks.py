"""COCO class masks from the instance annotations (sslib.data.coco_masks) and COCO as
downloaded through the prepare stage: images + instances JSON, no lists, no masks."""
import json
import sys

import numpy as np
import pytest

from data_fixtures import H, W, data_cfg, make_coco_download, read_json

pytest.importorskip("pycocotools", reason="pycocotools (the coco extra) is not installed")

from sslib.data import coco_masks  # noqa: E402
from sslib.data.coco import COCODataset  # noqa: E402
from sslib.data.prepare import prepare  # noqa: E402
from sslib.io import DataError
from sslib.formats import read_png_labels

TRAIN = {  # category 1 = person (class 1), 13 = stop sign (class 12), 90 = toothbrush (class 80)
    "COCO_train2014_000000000001": [(1, (2, 2, 12, 10), 0), (13, (8, 4, 20, 16), 0)],   # 13 painted on top of 1
    "COCO_train2014_000000000002": [(90, (0, 0, 30, 20), 0), (1, (5, 5, 15, 15), 1)],   # crowd: stays 90's class
    "COCO_train2014_000000000003": [],                                                 # no annotation: background
}
VAL = {"COCO_val2014_000000000004": [(13, (1, 1, 4, 4), 0)]}


def test_category_ids_are_coco_80_renumbered_in_order():
    assert len(coco_masks.COCO_CATEGORY_IDS) == 80
    assert coco_masks.CATEGORY_TO_CLASS[1] == 1 and coco_masks.CATEGORY_TO_CLASS[11] == 11
    assert coco_masks.CATEGORY_TO_CLASS[13] == 12      # 12 is unused
    assert coco_masks.CATEGORY_TO_CLASS[90] == 80
    assert not {12, 26, 29, 30, 45, 66, 68, 69, 71, 83} & set(coco_masks.CATEGORY_TO_CLASS)


def test_masks_painted_in_order_crowd_dropped(tmp_path):
    expected = make_coco_download(tmp_path, {"train2014": TRAIN})
    ann = tmp_path / "annotations/instances_train2014.json"
    entries = {e.name: e for e in coco_masks.image_entries(coco_masks.load_instances(ann), ann)}
    m1 = coco_masks.class_mask(entries["COCO_train2014_000000000001"])
    hand = np.zeros((H, W), np.uint8)
    hand[2:10, 2:12] = 1
    hand[4:16, 8:20] = 12
    assert np.array_equal(m1, hand) and np.array_equal(m1, expected["COCO_train2014_000000000001"])
    m2 = coco_masks.class_mask(entries["COCO_train2014_000000000002"])
    assert np.all(m2 == 80)                       # the crowd box inside it is not painted
    assert not coco_masks.class_mask(entries["COCO_train2014_000000000003"]).any()


def test_uncompressed_rle_decodes_like_the_box(tmp_path):
    make_coco_download(tmp_path, {"train2014": {"a": [(5, (3, 2, 9, 7), 1)]}})
    ann = tmp_path / "annotations/instances_train2014.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["iscrowd"] = 0               # an RLE that is painted
    entry = coco_masks.image_entries(data, ann)[0]
    m = coco_masks.class_mask(entry)
    hand = np.zeros((H, W), np.uint8)
    hand[2:7, 3:9] = 5
    assert np.array_equal(m, hand)


def test_write_masks_resumes_and_remakes_for_another_file(tmp_path):
    expected = make_coco_download(tmp_path, {"train2014": TRAIN})
    ann, out = tmp_path / "annotations/instances_train2014.json", tmp_path / "masks"
    first = coco_masks.write_class_masks(ann, tmp_path / "train2014", out, workers=1, progress=False)
    assert first == {"images": 3, "written": 3, "kept": 0}
    for name, m in expected.items():
        assert np.array_equal(read_png_labels(out / f"{name}.png"), m)
    assert coco_masks.write_class_masks(ann, tmp_path / "train2014", out, workers=1, progress=False)["kept"] == 3
    (out / "COCO_train2014_000000000002.png").write_bytes(b"broken")   # a killed write: made again
    again = coco_masks.write_class_masks(ann, tmp_path / "train2014", out, workers=1, progress=False)
    assert again == {"images": 3, "written": 1, "kept": 2}
    data = json.loads(ann.read_text())
    data["annotations"] = data["annotations"][:1]                      # another instances file
    ann.write_text(json.dumps(data) + " ")
    remade = coco_masks.write_class_masks(ann, tmp_path / "train2014", out, workers=1, progress=False)
    assert remade["written"] == 3
    assert not read_png_labels(out / "COCO_train2014_000000000002.png").any()


def test_prepare_coco_from_the_downloads(tmp_path):
    root = tmp_path / "root"
    expected = make_coco_download(root, {"train2014": TRAIN, "val2014": VAL})
    summary = prepare(data_cfg(tmp_path, "coco", root=root), progress=False, workers=1)
    assert summary["images"] == {"train": 3, "val": 1}
    prepared = tmp_path / "prepared"
    assert (prepared / "lists/train.txt").read_text().split() == sorted(TRAIN)
    labels = read_json(prepared / "labels.json")["labels"]
    assert labels["COCO_train2014_000000000001"] == [0, 11] and labels["COCO_train2014_000000000002"] == [79]
    assert labels["COCO_train2014_000000000003"] == [] and labels["COCO_val2014_000000000004"] == [11]
    ds = COCODataset(root, "train", prepared_dir=prepared)
    name = "COCO_train2014_000000000001"
    assert ds.mask_path(name) == prepared / "SegmentationClass/train2014" / f"{name}.png"
    sample = ds[ds.names.index(name)]
    assert np.array_equal(np.asarray(sample["mask"]), expected[name])


@pytest.mark.parametrize("damage, named", [
    ("unknown_category", ["instances_train2014.json", "category id 12"]),
    ("missing_image", ["instances_train2014.json", "COCO_train2014_000000000002.jpg"]),
    ("truncated", ["instances_train2014.json", "not a complete JSON file"]),
])
def test_bad_annotations_are_named(tmp_path, damage, named):
    root = tmp_path / "root"
    make_coco_download(root, {"train2014": TRAIN, "val2014": VAL})
    ann = root / "annotations/instances_train2014.json"
    if damage == "unknown_category":
        data = json.loads(ann.read_text())
        data["annotations"][0]["category_id"] = 12
        ann.write_text(json.dumps(data))
    elif damage == "missing_image":
        (root / "train2014/COCO_train2014_000000000002.jpg").unlink()
    else:
        ann.write_bytes(ann.read_bytes()[:-40])
    with pytest.raises(DataError) as e:
        prepare(data_cfg(tmp_path, "coco", root=root), progress=False, workers=1)
    assert all(s in str(e.value) for s in named), str(e.value)
    assert not (tmp_path / "prepared/labels.json").exists()


def test_without_pycocotools_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[coco\]"'):
        coco_masks.require_pycocotools()
