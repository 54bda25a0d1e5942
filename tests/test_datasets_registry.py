"""The data sets as a table (sslib.registry.DATASETS): what each entry declares, and an
unknown name refused naming data.dataset and the known names."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sslib import config
from sslib.data import COCO_CLASSES, VOC_CLASSES, dataset_classes
from sslib.registry import DATASETS


def test_the_entries_and_what_they_declare():
    assert DATASETS.names() == ["synthetic", "voc", "coco"]
    assert [DATASETS.get(n).get("uses_sbd") for n in DATASETS.names()] == [False, True, False]
    assert [DATASETS.get(n).get("generated") for n in DATASETS.names()] == [True, False, False]
    voc = config.defaults(config.DataConfig, dataset="voc", root="x", sbd_root="")
    coco = config.defaults(config.DataConfig, dataset="coco", root="x", sbd_root="")
    assert dataset_classes(voc) == VOC_CLASSES and dataset_classes(coco) == COCO_CLASSES
    assert DATASETS.get("voc").factory is DATASETS.get("synthetic").factory  # both in VOC's layout
    assert DATASETS.get("coco").factory is not DATASETS.get("voc").factory


def test_an_unknown_data_set_is_refused_naming_the_key_and_the_known_names(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "cityscapes"}}))
    with pytest.raises(config.ConfigError, match=r"data.dataset: unknown data set 'cityscapes' \(known: synthetic, voc, coco\)"):
        config.load(path)


def test_sbd_is_refused_for_a_data_set_that_does_not_use_it(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "coco", "root": "x", "sbd_root": "sbd"}}))
    with pytest.raises(config.ConfigError, match=r"data.sbd_root: is only used with data.dataset = voc"):
        config.load(path)
