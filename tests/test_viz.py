"""The notebooks' figures (sslib.viz): what they draw, checked on the returned figures."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sslib import viz  # noqa: E402
from sslib.cam import cam_path, save_cam, strided_size  # noqa: E402

H, W = 8, 12


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _titles(fig) -> list[str]:
    return [a.get_title() for a in fig.axes]


def _image(value: int = 100) -> np.ndarray:
    return np.full((H, W, 3), value, np.uint8)


def test_heat_overlay_blends_the_colormap_by_alpha():
    img = np.array([[[100, 100, 100], [0, 0, 0]]], np.uint8)
    out = viz.heat_overlay(img, np.array([[1.0, 0.0]]), alpha=0.5)
    # jet(1) = (0.5, 0, 0) -> (127.5, 0, 0); jet(0) = (0, 0, 0.5) -> (0, 0, 127.5)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3)
    assert out[0, 0].tolist() == [114, 50, 50]  # 100 / 2 + 127.5 / 2 = 113.75
    assert out[0, 1].tolist() == [0, 0, 64]  # 127.5 / 2 = 63.75
    # values outside [0, 1] are clipped; alpha 0 is the image itself
    assert viz.heat_overlay(img, np.array([[7.0, -3.0]])).tolist() == out.tolist()
    assert viz.heat_overlay(img, np.array([[1.0, 0.0]]), alpha=0.0).tolist() == img.tolist()


def test_label_image_and_superpixel_overlay():
    lab = viz.label_image(np.array([[0, 1], [255, 2]]))
    assert lab.shape == (2, 2, 3) and lab[0, 0].tolist() == [0, 0, 0] and lab[0, 1].tolist() == [128, 0, 0]
    ids = np.zeros((H, W), np.int64)
    ids[:, W // 2:] = 1
    img = _image(0)
    over = viz.superpixel_overlay(img, ids)
    painted = (over == viz.BOUNDARY_RGB).all(-1)
    assert painted.any() and not painted.all() and (img == 0).all()  # a copy
    assert (viz.superpixel_overlay(img, painted) == over).all()  # a boundary mask is used as is


def test_cam_grid_one_row_per_image_and_a_cell_per_overlay():
    heat = np.linspace(0, 1, H * W).reshape(H, W)
    rows = [viz.CamRow(_image(), np.zeros((H, W), int), "im0", [("a", heat), ("b", heat), ("c", heat)]),
            viz.CamRow(_image(), np.ones((H, W), int), "im1", [("a", heat)])]
    fig = viz.cam_grid(rows)
    assert len(fig.axes) == 2 * 5
    assert _titles(fig) == ["im0", "ground truth", "a", "b", "c", "im1", "ground truth", "a", "", ""]
    assert [len(a.images) for a in fig.axes] == [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    assert not any(a.axison for a in fig.axes)
    shown = fig.axes[2].images[0].get_array()
    assert np.array_equal(shown, viz.heat_overlay(_image(), heat))
    assert len(viz.cam_grid([viz.CamRow(_image(), np.zeros((H, W), int), "x", [])]).axes) == 2


def test_ir_label_grid_shows_image_mask_largest_cam_and_label():
    a = np.linspace(0, 1, H * W).reshape(H, W)
    b = a[::-1, ::-1].copy()
    label = np.full((H, W), 255, np.uint8)
    label[:2] = 1
    rows = [viz.CamRow(_image(), np.zeros((H, W), int), "im0", [("a", a), ("b", b)]),
            viz.CamRow(_image(), np.ones((H, W), int), "im1", [])]
    fig = viz.ir_label_grid(rows, [label, np.zeros((H, W), np.uint8)])
    assert len(fig.axes) == 2 * 4 and not any(ax.axison for ax in fig.axes)
    assert _titles(fig)[:4] == ["im0", "ground truth", "CAM (max over classes)", "IR label (cream: ignored)"]
    assert np.array_equal(fig.axes[2].images[0].get_array(), viz.heat_overlay(_image(), np.maximum(a, b)))
    assert np.array_equal(fig.axes[3].images[0].get_array(), viz.label_image(label))
    assert np.array_equal(fig.axes[6].images[0].get_array(), _image())  # no classes: the image alone
    plt.close("all")


class _Data:
    """Samples as a SegDataset returns them (no transform): two images of two classes."""

    classes = ("cat", "dog")
    names = ["im0", "im1"]

    def __len__(self):
        return 2

    def __getitem__(self, i):
        mask = np.zeros((H, W), np.int64)
        mask[2:5, 2:5] = 1 if i == 0 else 2
        label = torch.tensor([1.0, 0.0] if i == 0 else [0.0, 1.0])
        return {"name": self.names[i], "image": _image(40 * i), "mask": torch.from_numpy(mask), "label": label,
                "superpixels": torch.from_numpy(np.arange(H * W).reshape(H, W) // 17)}


def _save(folder, name: str, keys: list[int], value: float) -> None:
    k = len(keys)
    save_cam(cam_path(folder, "val", name), np.array(keys), np.zeros((k, *strided_size((H, W), 4))),
             np.full((k, H, W), value))


def test_cam_rows_read_stored_cams(tmp_path):
    _save(tmp_path / "a", "im0", [0], 0.25)
    _save(tmp_path / "a", "im1", [0, 1], 0.5)
    _save(tmp_path / "b", "im0", [], 0.0)
    _save(tmp_path / "b", "im1", [1], 1.0)
    rows = viz.class_cam_rows(_Data(), tmp_path / "a", "val", [1, 0])
    assert [r.title for r in rows] == ["im1", "im0"]
    assert [[t for t, _ in r.overlays] for r in rows] == [["cat", "dog"], ["cat"]]
    assert rows[1].overlays[0][1] == pytest.approx(np.full((H, W), 0.25))
    assert isinstance(rows[0].mask, np.ndarray) and rows[0].mask.max() == 2
    rows = viz.variant_cam_rows(_Data(), {"A": tmp_path / "a", "B": tmp_path / "b"}, "val", np.array([0, 1]))
    assert [r.title for r in rows] == ["cat", "dog"]
    assert [t for t, _ in rows[0].overlays] == ["A", "B"]
    assert rows[0].overlays[1][1].shape == (H, W) and not rows[0].overlays[1][1].any()  # no CAM: zeros
    assert rows[1].overlays[0][1] == pytest.approx(np.full((H, W), 0.5))  # max over the classes
    assert _titles(viz.cam_grid(rows))[:4] == ["cat", "ground truth", "A", "B"]


def test_sample_grid_shows_image_mask_and_superpixels():
    d = _Data()
    item = d[0]
    bare = {k: v for k, v in d[1].items() if k != "superpixels"}
    fig = viz.sample_grid([("train/im0", item), ("val/im1", bare)], d.classes)
    assert len(fig.axes) == 6
    assert _titles(fig) == ["train/im0", "cat", "superpixels", "val/im1", "dog", "superpixels"]
    assert (fig.axes[2].images[0].get_array() == viz.superpixel_overlay(item["image"], item["superpixels"].numpy())).all()
    assert (fig.axes[5].images[0].get_array() == bare["image"]).all()  # no superpixels: the image


def test_ablation_figures():
    sweeps = pd.DataFrame([{"variant": v, "seed": s, "split": sp, "threshold": t, "miou": 0.1 * t + s / 100}
                           for v in ("b", "a") for s in (0, 1) for sp in ("train", "val") for t in (0.1, 0.2, 0.3)])
    fig = viz.sweep_figure(sweeps, ["a", "b"])
    assert len(fig.axes) == 2 and {a.get_title() for a in fig.axes} == {"split = train", "split = val"}
    assert fig.axes[0].get_xlabel() == "background threshold" and fig.axes[0].get_ylabel() == "mIoU (%)"
    pc = pd.DataFrame([{"variant": v, "seed": s, "class": c, "iou": 10.0 * s}
                       for v in ("a", "b") for s in (0, 1) for c in ("x", "y", "z")])
    fig = viz.per_class_figure(pc, ["b", "a"])
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_ylabel() == "IoU (%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["b", "a"]


def test_inspect_figure_layout():
    small = np.zeros((H // 2, W // 2))
    reliable = np.zeros((H // 2, W // 2), bool)
    reliable[1:3, 1:3] = True
    with_decoder = SimpleNamespace(variant="ssc", reconstruction=_image(200), cams=[("cat", np.ones((H, W)))],
                                   aligned=[("cat", small, small + 0.5, reliable)])
    without = SimpleNamespace(variant="cam", reconstruction=None, cams=[("cat", np.ones((H, W)))],
                              aligned=[("cat", small, small, np.zeros_like(reliable))])
    record = SimpleNamespace(name="im0", image=_image(), mask=np.zeros((H, W), int),
                             boundaries=np.eye(H, W, dtype=bool), classes=["cat"], variants=[with_decoder, without])
    fig = viz.inspect_figure(record)
    assert len(fig.axes) == 3 * 4  # 1 + 1 CAM + 2 alignment maps per present class
    t = _titles(fig)
    assert t[:4] == ["im0", "ground truth: cat", "superpixels", ""]
    assert t[4:8] == ["ssc: reconstruction", "CAM cat", "sp-averaged cat", "target (white: reliable)"]
    assert t[8] == "cam: no decoder"
    assert fig.axes[4].get_ylabel() == "ssc" and not fig.axes[3].axison  # empty cells hidden
    assert len(fig.axes[7].collections) > 0 and len(fig.axes[11].collections) == 0  # the reliable outline
    assert fig.axes[6].images[0].get_array().shape == (H // 2, W // 2, 3)


def test_save_figure_writes_a_png(tmp_path):
    fig = viz.cam_grid([viz.CamRow(_image(), np.zeros((H, W), int), "x", [("a", np.zeros((H, W)))])])
    path = viz.save_figure(fig, tmp_path / "figures" / "f.png", dpi=40)
    assert path == tmp_path / "figures" / "f.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]  # no temporary file left
