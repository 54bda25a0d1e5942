"""Rehearsal of presets/voc.yaml: a tiny fake VOC 2012 + SBD tree through every stage by
`dvc repro` in a temporary copy of the repository (see tests/rehearsal.py)."""
from __future__ import annotations

import pytest

from dvc_files import dvc, ran
from rehearsal import check_tables, preset_copy
from sslib.stages import PER_RUN, STAGES

pytestmark = pytest.mark.slow


def test_voc_preset_from_the_downloads_to_the_paper_table(tmp_path, preset_weights):
    """VOC 2012 (train 3, val 2) + SBD (3 more train images, .mat masks): prepare builds
    train_aug (6 images) and SegmentationClassAug, then every stage of presets/voc.yaml."""
    from data_fixtures import make_mask, make_sbd, make_voc

    repo = preset_copy(tmp_path / "voc", "voc", preset_weights)
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
    check_tables(repo, "voc", "72.7")
