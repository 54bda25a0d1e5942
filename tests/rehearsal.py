"""What the rehearsals of the paper presets share (tests/test_rehearsal_voc.py,
tests/test_rehearsal_coco.py): a tiny fake VOC 2012 + SBD tree and a tiny fake COCO 2014
download, each run through every stage of its preset (`presets/voc.yaml`,
`presets/coco.yaml`) by `dvc repro` in a temporary copy of the repository, from the raw
layout to reports/paper_table.md.

Only the sizes are tiny (images, crops, epochs, one variant and seed): the preset's data
layout, splits, networks (ResNet-50 CAM network, VGG-19 perceptual loss, IRN on ResNet-50,
BECO's two DeepLabV2-ResNet-101), superpixels (Felzenszwalb merged to 64), CAM scales,
CRF and label thresholds are the preset's. The ImageNet weights files cannot be
downloaded here: :func:`write_weights` writes randomly initialised torchvision state dicts under the
file names the presets expect (the loaders check keys and shapes, not values).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dvc_files import copy_repo, set_params

#: the preset's settings at tiny size (what a rehearsal may change: sizes and counts only)
TINY = {
    "synthetic": {"n_train": 2, "n_val": 1, "image_size": 32},  # the synthetic stage still runs: keep it short
    "superpixels": {"workers": 1},
    "augment": {"resize_long": [32, 48], "crop_size": 32},
    "runs": {"variants": ["ssc"], "seeds": [0], "downstream": {"variants": ["ssc"], "seeds": [0]}},
    "train_cam": {"epochs": 1, "batch_size": 2},
    "ssc": {"warmup_epochs": 0},
    "train_irn": {"epochs": 1, "batch_size": 2, "crop_size": 32, "radius": 4},
    # BECO: 1 warm-up epoch, then online labels; SSC's resized crop; val scored after each epoch
    "train_seg": {"epochs": 2, "batch_size": 2, "crop_size": 32, "methods": {"beco": {"warm_up_epochs": 1}}},
    "eval_seg": {"workers": 1, "resize": 48},  # the preset's 512 at a tiny size
}


def write_weights(out: Path) -> Path:
    """torchvision-shaped ResNet-50, VGG-19 and ResNet-101 state dicts (random values) under
    the presets' file names, in ``out`` (the ``preset_weights`` fixture of conftest.py)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    for name, build in (("resnet50-0676ba61.pth", torchvision.models.resnet50),
                        ("vgg19-dcbb9e9d.pth", torchvision.models.vgg19),
                        ("resnet101-cd907fc2.pth", torchvision.models.resnet101)):
        torch.save(build().state_dict(), out / name)
    return out


def preset_copy(dst: Path, preset: str, weights: Path) -> Path:
    copy_repo(dst)
    (dst / "weights").symlink_to(weights, target_is_directory=True)
    r = subprocess.run([sys.executable, "-m", "sslib.config", "preset", f"presets/{preset}.yaml"],
                       cwd=dst, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    set_params(dst, TINY)
    return dst


def check_tables(repo: Path, dataset: str, paper: str) -> None:
    table = (repo / "reports/paper_table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| ssc |"))
    assert paper in row and "not run here" not in row, table  # the paper's number applies here
    rows = (repo / "reports/paper_table.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["ssc"]
    seg = json.loads((repo / "reports/eval_seg/ssc/seed0/metrics.json").read_text())
    assert seg["crf"] is True and 0 <= seg["no_crf"]["miou"] <= 1
    train = json.loads((repo / "reports/train_seg/ssc/seed0/metrics.json").read_text())
    assert (train["method"], train["backbone"], train["output_stride"]) == ("beco", "resnet101", 8)
    assert (train["crop"], train["selection"], train["batch"]) == ("resized_crop", "best_on_val", 2)
    assert train["crop_settings"] == {"area": [0.5, 0.75], "aspect": [0.75, 1.333333]}
    assert len(train["selected"]["val_miou"]) == 2 and seg["selection"]["epoch"] == train["selected"]["epoch"]
    assert seg["settings"]["resize"] == 48 and "selected on" in seg["selection"]["statement"]
    assert "Model selection on" in table and "last epoch (val)" in table
    assert "resnet101-cd907fc2.pth" in train["init"]
    stats = json.loads((repo / "reports/data_stats.json").read_text())
    assert stats["dataset"] == dataset, stats
    meta = json.loads((repo / "artifacts/superpixels/meta.json").read_text())
    assert meta["method"] == "felzenszwalb" and meta["params"]["max_regions"] == 64
