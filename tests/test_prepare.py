"""The prepare stage: label cache, lists, VOC + SBD train_aug, errors, atomic re-runs, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from data_fixtures import data_cfg, make_mask, make_sbd, make_voc, read_json
from sslib.data import VOC_CLASSES, build_dataset
from sslib.data.prepare import prepare
from sslib.data.prepare import read_sbd_mat
from sslib.stages.prepare import main
from sslib.data.voc import voc_palette
from sslib.io import DataError
from sslib.formats import read_png_labels, save_png

# VOC: train a, b; val c, d.   SBD: train b, e, c; val f, d.
VOC_MASKS = {"a": make_mask([1]), "b": make_mask([2, 3]), "c": make_mask([4]), "d": make_mask([5])}
VOC_LISTS = {"train": ["a", "b"], "val": ["c", "d"], "trainval": ["a", "b", "c", "d"]}
SBD_MASKS = {  # SBD masks have no 255 band; b's differs from VOC's on purpose
    "b": make_mask([9], border=False), "c": make_mask([4], border=False), "d": make_mask([5], border=False),
    "e": make_mask([6, 20], border=False), "f": make_mask([15], border=False),
}
SBD_LISTS = {"train": ["b", "e", "c"], "val": ["f", "d"]}


@pytest.fixture
def voc_sbd(tmp_path):
    root = make_voc(tmp_path / "root", VOC_MASKS, VOC_LISTS,
                    images_only={n: SBD_MASKS[n] for n in ("e", "f")})
    sbd = make_sbd(tmp_path / "sbd", SBD_MASKS, SBD_LISTS)
    return data_cfg(tmp_path, root=root, sbd=sbd, train_split="train_aug")


def lines(path):
    return path.read_text().split()


def test_voc_sbd_train_aug(voc_sbd, tmp_path):
    summary = prepare(voc_sbd, progress=False)
    prepared = tmp_path / "prepared"
    expected = sorted(({"b", "e", "c"} | {"f", "d"} | {"a", "b"}) - {"c", "d"})
    assert expected == ["a", "b", "e", "f"]
    assert lines(prepared / "lists" / "train_aug.txt") == expected
    assert lines(prepared / "lists" / "train.txt") == ["a", "b"]
    assert lines(prepared / "lists" / "val.txt") == ["c", "d"]
    assert lines(prepared / "lists" / "trainval.txt") == ["a", "b", "c", "d"]
    aug = prepared / "SegmentationClassAug"
    assert sorted(p.stem for p in aug.glob("*.png")) == expected
    for n in expected:  # 8-bit palette PNGs with the VOC palette
        with Image.open(aug / f"{n}.png") as im:
            assert im.mode == "P"
            assert np.array_equal(np.array(im.getpalette()[:768], np.uint8).reshape(-1, 3), voc_palette())
    # VOC's own PNG where one exists (with its 255 band), SBD's .mat otherwise
    assert np.array_equal(read_png_labels(aug / "a.png"), VOC_MASKS["a"])
    assert np.array_equal(read_png_labels(aug / "b.png"), VOC_MASKS["b"])
    assert np.array_equal(read_png_labels(aug / "e.png"), SBD_MASKS["e"])
    assert np.array_equal(read_png_labels(aug / "f.png"), SBD_MASKS["f"])
    cache = read_json(prepared / "labels.json")
    assert cache["classes"] == list(VOC_CLASSES)
    assert cache["labels"] == {"a": [0], "b": [1, 2], "c": [3], "d": [4], "e": [5, 19], "f": [14]}
    assert summary["images"] == {"train": 2, "val": 2, "train_aug": 4, "trainval": 4}
    assert summary["train_aug_sources"] == {"voc_png": 2, "sbd_mat": 2}
    assert summary["class_counts"]["train_aug"]["aeroplane"] == 1
    assert summary["class_counts"]["train_aug"]["tvmonitor"] == 1
    assert read_json(prepared / "summary.json") == summary
    # and the data set reads train_aug with the built masks
    ds = build_dataset(voc_sbd, "train_aug")
    assert ds.names == expected and ds.mask_path("e") == aug / "e.png"
    assert ds[2]["label"].nonzero().ravel().tolist() == [5, 19]


def test_read_sbd_mat(tmp_path):
    from data_fixtures import write_mat

    write_mat(tmp_path / "x.mat", SBD_MASKS["e"])
    seg = read_sbd_mat(tmp_path / "x.mat")
    assert seg.dtype == np.int64 and np.array_equal(seg, SBD_MASKS["e"])
    (tmp_path / "y.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match="y.mat"):
        read_sbd_mat(tmp_path / "y.mat")


def test_voc_without_sbd(tmp_path):
    make_voc(tmp_path / "root", VOC_MASKS, VOC_LISTS)
    cfg = data_cfg(tmp_path)
    summary = prepare(cfg, progress=False)
    assert summary["images"] == {"train": 2, "val": 2, "trainval": 4}
    assert not (tmp_path / "prepared" / "SegmentationClassAug").exists()
    assert sorted(p.name for p in (tmp_path / "prepared" / "lists").iterdir()) == [
        "train.txt", "trainval.txt", "val.txt"]
    # asking for train_aug without SBD says how to get it
    with pytest.raises(DataError, match="sbd_root"):
        prepare(data_cfg(tmp_path, train_split="train_aug"), progress=False)


def test_parallel_gives_the_same_result(voc_sbd, tmp_path):
    serial = prepare(voc_sbd, progress=False, workers=1)
    cache = read_json(tmp_path / "prepared" / "labels.json")
    assert prepare(voc_sbd, progress=False, workers=2) == serial
    assert read_json(tmp_path / "prepared" / "labels.json") == cache


@pytest.mark.parametrize("what", ["image", "mask", "mat"])
def test_corrupt_file_is_named(voc_sbd, tmp_path, what):
    bad = {"image": tmp_path / "root" / "JPEGImages" / "b.jpg",
           "mask": tmp_path / "root" / "SegmentationClass" / "c.png",
           "mat": tmp_path / "sbd" / "cls" / "e.mat"}[what]
    bad.write_bytes(b"\x89PNG garbage" if what == "mask" else b"garbage")
    with pytest.raises(DataError, match=str(bad)):
        prepare(voc_sbd, progress=False)


def test_truncated_jpeg_is_caught(voc_sbd, tmp_path):
    path = tmp_path / "root" / "JPEGImages" / "a.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match=str(path)):
        prepare(voc_sbd, progress=False)


def test_list_entry_without_files(voc_sbd, tmp_path):
    (tmp_path / "root" / "ImageSets" / "Segmentation" / "val.txt").write_text("c\nd\nzz\n")
    with pytest.raises(DataError, match="'zz'"):
        prepare(voc_sbd, progress=False)
    # an SBD-only entry with an image but neither a VOC PNG nor a .mat
    (tmp_path / "root" / "ImageSets" / "Segmentation" / "val.txt").write_text("c\nd\n")
    (tmp_path / "sbd" / "cls" / "f.mat").unlink()
    with pytest.raises(DataError) as e:
        prepare(voc_sbd, progress=False)
    assert "'f'" in str(e.value) and "f.mat" in str(e.value)


def test_bad_mask_values_and_shape(tmp_path):
    make_voc(tmp_path / "root", VOC_MASKS, VOC_LISTS)
    bad = make_mask([1])
    bad[5, 5] = 42
    save_png(tmp_path / "root" / "SegmentationClass" / "a.png", bad, palette=voc_palette())
    with pytest.raises(DataError, match=r"a\.png.*\[42\]"):
        prepare(data_cfg(tmp_path), progress=False)
    save_png(tmp_path / "root" / "SegmentationClass" / "a.png", bad[:10])
    with pytest.raises(DataError, match=r"a\.png.*shape"):
        prepare(data_cfg(tmp_path), progress=False)


def test_failed_run_keeps_earlier_outputs_and_rerun_removes_stale(voc_sbd, tmp_path):
    prepared = tmp_path / "prepared"
    prepare(voc_sbd, progress=False)
    before = {p: p.read_bytes() for p in prepared.rglob("*") if p.is_file()}
    (tmp_path / "root" / "SegmentationClass" / "d.png").write_bytes(b"broken")
    with pytest.raises(DataError):
        prepare(voc_sbd, progress=False)
    after = {p: p.read_bytes() for p in prepared.rglob("*") if p.is_file()}
    assert after == before  # nothing removed, nothing half-written, no temporary files left
    # a complete run without SBD drops the earlier train_aug outputs
    save_png(tmp_path / "root" / "SegmentationClass" / "d.png", VOC_MASKS["d"], palette=voc_palette())
    prepare(data_cfg(tmp_path), progress=False)
    assert not (prepared / "lists" / "train_aug.txt").exists()
    assert not (prepared / "SegmentationClassAug").exists()
    assert set(read_json(prepared / "labels.json")["labels"]) == {"a", "b", "c", "d"}


def test_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # main() makes the project root the working directory
    make_voc(tmp_path / "root", VOC_MASKS, VOC_LISTS)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"dataset": "voc", "root": str(tmp_path / "root"),
                                               "prepared_dir": str(tmp_path / "out")}}))
    assert main(["--params", str(params), "--no-progress"]) == 0
    assert '"train": 2' in capsys.readouterr().out
    assert (tmp_path / "out" / "labels.json").is_file()
    (tmp_path / "root" / "JPEGImages" / "a.jpg").unlink()
    assert main(["--params", str(params), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "'a'" in err and "train.txt" in err


def test_empty_split_is_rejected_naming_the_list(tmp_path, monkeypatch, capsys):
    """The user's probe: an empty train list used to pass `prepare` and fail much later."""
    make_voc(tmp_path / "root", VOC_MASKS, VOC_LISTS)
    cfg = data_cfg(tmp_path)
    prepare(cfg, progress=False)
    before = {p: p.read_bytes() for p in (tmp_path / "prepared").rglob("*") if p.is_file()}
    (tmp_path / "root" / "ImageSets" / "Segmentation" / "train.txt").write_text("\n# nothing\n")
    with pytest.raises(DataError, match=r"Segmentation/train\.txt: split list is empty"):
        prepare(cfg, progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "prepared").rglob("*") if p.is_file()} == before
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"dataset": "voc", "root": "root", "prepared_dir": "prepared"}}))
    monkeypatch.chdir(tmp_path)
    assert main(["--no-progress"]) == 1
    assert "train.txt: split list is empty" in capsys.readouterr().err


def test_cli_from_a_subfolder_uses_the_project_root(tmp_path, monkeypatch, capsys):
    """`python -m sslib.stages.prepare` from notebooks/ reads and writes the project's paths
    (params.yaml's paths are relative to its folder), not paths under notebooks/."""
    make_voc(tmp_path / "root", VOC_MASKS, VOC_LISTS)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"data": {"dataset": "voc", "root": "root", "prepared_dir": "artifacts/prepared"}}))
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert main(["--no-progress"]) == 0, capsys.readouterr().err
    assert (tmp_path / "artifacts" / "prepared" / "labels.json").is_file()
    assert not (tmp_path / "notebooks" / "artifacts").exists()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert main(["--params", "params.yaml", "--no-progress"]) == 0  # the project's file, found upwards
