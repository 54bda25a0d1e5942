"""Rehearsal of presets/coco.yaml: a tiny fake COCO 2014 download through every stage by
`dvc repro` in a temporary copy of the repository (see tests/rehearsal.py)."""
from __future__ import annotations

import numpy as np
import pytest

from dvc_files import dvc
from rehearsal import check_tables, preset_copy

pytestmark = pytest.mark.slow


def test_coco_preset_from_the_downloads_to_the_paper_table(tmp_path, preset_weights):
    """COCO 2014 as downloaded (train2014/, val2014/, annotations/instances_*.json: 4 + 2
    images, a crowd box among them): prepare paints the masks, then every stage of
    presets/coco.yaml."""
    from data_fixtures import make_coco_download

    repo = preset_copy(tmp_path / "coco", "coco", preset_weights)
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
    check_tables(repo, "coco", "47.0")
