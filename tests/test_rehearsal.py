"""Rehearsals of the paper presets: a tiny fake VOC 2012 + SBD tree and a tiny fake COCO 2014
download, each run through every stage of its preset (`presets/voc.yaml`,
`presets/coco.yaml`) by `dvc repro` in a temporary copy of the repository, from the raw
layout to reports/paper_table.md.

Only the sizes are tiny (images, crops, epochs, one variant and seed): the preset's data
layout, splits, networks (ResNet-50 CAM network, VGG-19 perceptual loss, IRN on ResNet-50,
BECO's two DeepLabV2-ResNet-101), superpixels (Felzenszwalb merged to 64), CAM scales,
CRF and label thresholds are the preset's. The ImageNet weights files cannot be
downloaded here: the fixture writes randomly initialised torchvision state dicts under the
file names the presets expect (the loaders check keys and shapes, not values).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dvc_files import copy_repo, dvc, ran, set_params
from sslib.stages import PER_RUN, STAGES

pytestmark = pytest.mark.slow

#: the preset's settings at tiny size (what a rehearsal may change: sizes and counts only)
TINY = {
    "synthetic": {"n_train": 2, "n_val": 1, "image_size": 32},  # the synthetic stage still runs: keep it short
    "superpixels": {"workers": 1},
    "augment": {"resize_long": [32, 48], "crop_size": 32},
    "runs": {"variants": ["ssc"], "seeds": [0], "downstream": {"variants": ["ssc"], "seeds": [0]}},
    "train_cam": {"epochs": 1, "batch_size": 2},
    "ssc": {"warmup_epochs": 0},
    "train_irn": {"epochs": 1, "batch_size": 2, "crop_size": 32, "radius": 4},
    "train_seg": {"epochs": 2, "batch_size": 2, "crop_size": 32},  # BECO: 1 warm-up epoch, then online labels
    "eval_seg": {"workers": 1},
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """torchvision-shaped ResNet-50, VGG-19 and ResNet-101 state dicts (random values) under
    the presets' file names."""
    import torch
    import torchvision

    out = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    for name, build in (("resnet50-0676ba61.pth", torchvision.models.resnet50),
                        ("vgg19-dcbb9e9d.pth", torchvision.models.vgg19),
                        ("resnet101-cd907fc2.pth", torchvision.models.resnet101)):
        torch.save(build().state_dict(), out / name)
    return out


def _preset_copy(dst: Path, preset: str, weights: Path) -> Path:
    copy_repo(dst)
    (dst / "weights").symlink_to(weights, target_is_directory=True)
    r = subprocess.run([sys.executable, "-m", "sslib.config", "preset", f"presets/{preset}.yaml"],
                       cwd=dst, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    set_params(dst, TINY)
    return dst


def _check_tables(repo: Path, dataset: str, paper: str) -> None:
    table = (repo / "reports/paper_table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| ssc |"))
    assert paper in row and "not run here" not in row, table  # the paper's number applies here
    rows = (repo / "reports/paper_table.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["ssc"]
    seg = json.loads((repo / "reports/eval_seg/ssc/seed0/metrics.json").read_text())
    assert seg["crf"] is True and 0 <= seg["no_crf"]["miou"] <= 1
    train = json.loads((repo / "reports/train_seg/ssc/seed0/metrics.json").read_text())
    assert (train["method"], train["backbone"], train["output_stride"]) == ("beco", "resnet101", 8)
    assert "resnet101-cd907fc2.pth" in train["init"]
    stats = json.loads((repo / "reports/data_stats.json").read_text())
    assert stats["dataset"] == dataset, stats
    meta = json.loads((repo / "artifacts/superpixels/meta.json").read_text())
    assert meta["method"] == "felzenszwalb" and meta["params"]["max_regions"] == 64


def test_voc_preset_from_the_downloads_to_the_paper_table(tmp_path, weights):
    """VOC 2012 (train 3, val 2) + SBD (3 more train images, .mat masks): prepare builds
    train_aug (6 images) and SegmentationClassAug, then every stage of presets/voc.yaml."""
    from data_fixtures import make_mask, make_sbd, make_voc

    repo = _preset_copy(tmp_path / "voc", "voc", weights)
    voc = {f"2007_00000{i}": make_mask([1 + i, 15]) for i in range(5)}
    sbd = {f"2008_00000{i}": make_mask([7 + i]) for i in range(3)}
    make_voc(repo / "data/VOCdevkit/VOC2012", voc,
             {"train": list(voc)[:3], "val": list(voc)[3:]}, images_only=sbd)
    make_sbd(repo / "data/benchmark_RELEASE/dataset", sbd, {"train": list(sbd)[:2], "val": list(sbd)[2:]})
    r = dvc(repo, "repro")
    assert ran(r) >= {f"{s}@ssc-0" if s in PER_RUN else s for s in STAGES}
    lists = (repo / "artifacts/prepared/lists/train_aug.txt").read_text().split()
    assert sorted(lists) == sorted([*list(voc)[:3], *sbd])
    assert len(list((repo / "artifacts/pseudo_labels/ssc/seed0/labels").glob("*.png"))) == 6
    assert len(list((repo / "artifacts/seg_predictions/ssc/seed0").glob("*.png"))) == 2
    _check_tables(repo, "voc", "72.7")


def test_coco_preset_from_the_downloads_to_the_paper_table(tmp_path, weights):
    """COCO 2014 as downloaded (train2014/, val2014/, annotations/instances_*.json: 4 + 2
    images, a crowd box among them): prepare paints the masks, then every stage of
    presets/coco.yaml."""
    from data_fixtures import make_coco_download

    repo = _preset_copy(tmp_path / "coco", "coco", weights)
    boxes = {"train2014": {f"COCO_train2014_00000000000{i}": [(1, (2, 2, 12, 18), 0), (18 + i, (14, 4, 28, 16), 0)]
                           for i in range(4)},
             "val2014": {"COCO_val2014_000000000001": [(1, (3, 3, 13, 17), 0), (62, (15, 2, 27, 18), 1)],
                         "COCO_val2014_000000000002": [(18, (4, 4, 24, 16), 0)]}}
    masks = make_coco_download(repo / "data/coco2014", boxes)
    dvc(repo, "repro")
    got = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        repo / "artifacts/prepared/SegmentationClass/val2014/COCO_val2014_000000000001.png"))
    assert np.array_equal(got, masks["COCO_val2014_000000000001"])  # the crowd chair stays background
    assert len(list((repo / "artifacts/pseudo_labels/ssc/seed0/labels").glob("*.png"))) == 4
    assert len(list((repo / "artifacts/seg_predictions/ssc/seed0").glob("*.png"))) == 2
    _check_tables(repo, "coco", "47.0")
