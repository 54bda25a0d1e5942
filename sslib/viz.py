"""The notebooks' drawing: numpy helpers (numpy in, RGB uint8 out) and the figures.

Helpers: :func:`heat_overlay`, :func:`label_image`, :func:`superpixel_overlay`,
:func:`denormalize`. Figures (each returns a matplotlib ``Figure``, made with pyplot so
a notebook shows it; :func:`save_figure` writes one atomically):

* :func:`cam_grid`: a row per image (image, ground truth, then heat-map overlays), from
  :class:`CamRow` rows; :func:`class_cam_rows` (one overlay per present class of one
  run) and :func:`variant_cam_rows` (one per run: the largest of the present classes'
  CAMs) read them from stored CAM folders;
* :func:`ir_label_grid`: a row per image (image, ground truth, the largest of its CAMs,
  its IR label), from :class:`CamRow` rows and the labels;
* :func:`sample_grid`: data samples with their masks and superpixels;
* :func:`sweep_figure` / :func:`per_class_figure`: the ablation's mIoU-threshold curves
  and per-class IoU bars;
* :func:`inspect_figure`: one image across variants (stored CAMs, reconstruction,
  alignment target), from a record of :func:`sslib.stages.inspect_cams.run`.

Nothing here knows params.yaml or where files live: callers pass folders and frames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

__all__ = ["heat_overlay", "label_image", "superpixel_overlay", "denormalize", "CamRow", "cam_grid",
           "class_cam_rows", "variant_cam_rows", "ir_label_grid", "panel_grid", "confidence_overlay", "sample_grid", "sweep_figure", "per_class_figure",
           "inspect_figure", "save_figure"]

#: superpixel boundaries are painted in this colour
BOUNDARY_RGB = (255, 255, 0)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """(H, W, 3) uint8 image blended with a (H, W) heat map in [0, 1] drawn with ``cmap``."""
    import matplotlib

    rgb = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3] * 255
    return (image.astype(np.float32) * (1 - alpha) + rgb * alpha).round().clip(0, 255).astype(np.uint8)


def label_image(labels: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """(H, W) class ids (0 = background, 255 = ignore) -> (H, W, 3) uint8 in the VOC palette."""
    if palette is None:
        from .formats import voc_palette

        palette = voc_palette()
    return palette[np.asarray(labels).astype(np.uint8)]


def superpixel_overlay(image: np.ndarray, ids: np.ndarray, colour=BOUNDARY_RGB) -> np.ndarray:
    """A copy of the (H, W, 3) ``image`` with the boundaries of the (H, W) superpixel ``ids``
    (or an (H, W) bool boundary mask) painted in ``colour``."""
    from .superpixels import boundaries

    ids = np.asarray(ids)
    edge = ids if ids.dtype == bool else boundaries(ids)
    out = np.array(image, copy=True)
    out[edge] = colour
    return out


def denormalize(image, tanh: bool = False) -> np.ndarray:
    """(3, H, W) ImageNet-normalised tensor/array (with ``tanh``: a decoder output in
    [-1, 1]) -> (H, W, 3) uint8."""
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD

    x = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, np.float32)
    x = x.transpose(1, 2, 0)
    x = (x + 1) / 2 if tanh else x * IMAGENET_STD + IMAGENET_MEAN
    return (x * 255).round().clip(0, 255).astype(np.uint8)


def _np(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _subplots(rows: int, cols: int, w: float, h: float):
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)


# --------------------------------------------------------------------------- CAM grids
class CamRow(NamedTuple):
    """One row of :func:`cam_grid`."""

    #: (H, W, 3) uint8
    image: np.ndarray
    #: (H, W) ground-truth class ids (0 background, 255 ignore)
    mask: np.ndarray
    #: the image's title
    title: str
    #: (title, (H, W) heat map in [0, 1]) pairs, drawn over the image left to right
    overlays: Sequence[tuple[str, np.ndarray]]


def cam_grid(rows: Sequence[CamRow], size: float = 2.2, fontsize: int = 8, gt_title: str = "ground truth"):
    """A row per :class:`CamRow`: the image (its title), the ground truth (``gt_title``),
    then each overlay (:func:`heat_overlay`, its title). Rows with fewer overlays leave
    their last cells empty; every axis is hidden."""
    cols = 2 + max((len(r.overlays) for r in rows), default=0)
    fig, axes = _subplots(max(len(rows), 1), cols, size, size)
    for ax, r in zip(axes, rows):
        ax[0].imshow(r.image)
        ax[0].set_title(r.title, fontsize=fontsize)
        ax[1].imshow(label_image(r.mask))
        ax[1].set_title(gt_title, fontsize=fontsize)
        for a, (title, heat) in zip(ax[2:], r.overlays):
            a.imshow(heat_overlay(r.image, heat))
            a.set_title(title, fontsize=fontsize)
    for a in axes.flat:
        a.axis("off")
    fig.tight_layout()
    return fig


def class_cam_rows(dataset, cam_dir: str | Path, split: str, indices: Sequence[int]) -> list[CamRow]:
    """:class:`CamRow` s of images ``indices`` of ``dataset`` (split ``split``; samples with
    ``name``, ``image``, ``mask``): one overlay per class of the stored CAM file
    (``<cam_dir>/<split>/<name>.npz``), titled with the class; the row's title is the name."""
    from .cam import cam_path, load_cam

    rows = []
    for i in indices:
        s = dataset[int(i)]
        c = load_cam(cam_path(cam_dir, split, s["name"]))
        rows.append(CamRow(s["image"], _np(s["mask"]), s["name"],
                           [(dataset.classes[k], m) for k, m in zip(c["keys"], c["high_res"])]))
    return rows


def variant_cam_rows(dataset, cam_dirs: Mapping[str, str | Path], split: str,
                     indices: Sequence[int]) -> list[CamRow]:
    """:class:`CamRow` s of images ``indices`` of ``dataset`` across runs: one overlay per
    ``cam_dirs`` entry (title: its key), each pixel the largest of the present classes'
    CAMs (zero without any); the row's title is the image's classes."""
    from .cam import cam_path, load_cam

    rows = []
    for i in indices:
        s = dataset[int(i)]
        overlays = []
        for title, folder in cam_dirs.items():
            c = load_cam(cam_path(folder, split, s["name"]))
            heat = c["high_res"].max(0) if len(c["keys"]) else np.zeros(s["image"].shape[:2], np.float32)
            overlays.append((title, heat))
        present = ", ".join(dataset.classes[k] for k in np.flatnonzero(_np(s["label"])))
        rows.append(CamRow(s["image"], _np(s["mask"]), present, overlays))
    return rows


def ir_label_grid(rows: Sequence[CamRow], labels: Sequence[np.ndarray], size: float = 2.2, fontsize: int = 8):
    """A row per :class:`CamRow` and its (H, W) IR label (class ids, 0 background, 255
    ignored, drawn in the VOC palette: ignored is pale cream): the image (the row's title), the
    ground truth, the largest of the row's overlays (the image alone without any), the label."""
    panels = []
    for r, lab in zip(rows, labels):
        heat = np.max([h for _, h in r.overlays], axis=0) if len(r.overlays) else None
        panels.append([(r.title, r.image), ("ground truth", label_image(r.mask)),
                       ("CAM (max over classes)", r.image if heat is None else heat_overlay(r.image, heat)),
                       ("IR label (cream: ignored)", label_image(lab))])
    return panel_grid(panels, size=size, fontsize=fontsize)


def panel_grid(rows: Sequence[Sequence[tuple[str, np.ndarray]]], size: float = 2.0, fontsize: int = 7):
    """A row per entry of ``rows``, each a sequence of ``(title, image)`` panels drawn left to
    right (RGB (H, W, 3) uint8, or (H, W) float in [0, 1] drawn in grey); short rows leave
    their last cells empty; every axis is hidden."""
    cols = max((len(r) for r in rows), default=1)
    fig, axes = _subplots(max(len(rows), 1), cols, size, size)
    for ax, row in zip(axes, rows):
        for a, (title, img) in zip(ax, row):
            if np.ndim(img) == 2:
                a.imshow(img, cmap="gray", vmin=0, vmax=1)
            else:
                a.imshow(img)
            a.set_title(title, fontsize=fontsize)
    for a in axes.flat:
        a.axis("off")
    fig.tight_layout()
    return fig


def confidence_overlay(image: np.ndarray, labels: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """(H, W, 3) uint8: the labels in the VOC palette blended over the image where ``mask``
    is True, and the image darkened to a third where it is not (ignored by the loss)."""
    img = np.asarray(image, np.float32)
    lab = label_image(labels).astype(np.float32)
    out = np.where(np.asarray(mask)[..., None], (1 - alpha) * img + alpha * lab, img / 3)
    return np.clip(out, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- data
def sample_grid(rows: Sequence[tuple[str, dict]], classes: Sequence[str], fontsize: int = 8):
    """A row per ``(title, sample)`` (a data set's sample dict: ``image``, ``mask``,
    ``label``, optionally ``superpixels``): the image (``title``), its ground truth (titled
    with the present classes), and its superpixel boundaries (the bare image without
    superpixels)."""
    fig, axes = _subplots(max(len(rows), 1), 3, 2.5, 2.5)
    for (title, item), ax in zip(rows, axes):
        img = item["image"]
        present = [classes[k] for k in np.flatnonzero(_np(item["label"]))]
        over = superpixel_overlay(img, _np(item["superpixels"])) if "superpixels" in item else img
        ax[0].imshow(img)
        ax[0].set_title(title, fontsize=fontsize)
        ax[1].imshow(label_image(_np(item["mask"])))
        ax[1].set_title(", ".join(present), fontsize=fontsize)
        ax[2].imshow(over)
        ax[2].set_title("superpixels", fontsize=fontsize)
    for a in axes.flat:
        a.axis("off")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- ablation
def sweep_figure(sweeps, order: Sequence[str] | None = None):
    """mIoU (percent) against the background threshold, a panel per split, a line per
    variant (mean over seeds, band: ± 1 std). ``sweeps``: ``variant, seed, split,
    threshold, miou`` (fractions), as :func:`sslib.ablation.sweep_frame` returns it."""
    import seaborn as sns

    g = sns.relplot(data=sweeps.assign(miou=sweeps["miou"] * 100), x="threshold", y="miou", hue="variant",
                    hue_order=list(order) if order is not None else None, col="split", kind="line",
                    errorbar="sd", height=3.2, aspect=1.2)
    g.set_axis_labels("background threshold", "mIoU (%)")
    return g.figure


def per_class_figure(per_class, order: Sequence[str] | None = None):
    """Per-class IoU bars (mean over seeds, ticks: ± 1 std), a colour per variant.
    ``per_class``: ``variant, seed, class, iou`` (percent), as
    :func:`sslib.ablation.per_class_frame` returns it."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(max(7, 0.9 * per_class["class"].nunique()), 3.4))
    sns.barplot(data=per_class, x="class", y="iou", hue="variant",
                hue_order=list(order) if order is not None else None, errorbar="sd", ax=ax)
    ax.set(ylabel="IoU (%)", xlabel="")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- inspection
def inspect_figure(record, size: float = 1.9, fontsize: int = 7):
    """One image across variants, from a record of :func:`sslib.stages.inspect_cams.run`.

    First row: the image, its ground truth (titled with its classes), its superpixel
    boundaries. Then a row per variant: the decoder's reconstruction (blank without a
    decoder), the stored CAM of each class, and for each present class the
    superpixel-averaged CAM and the alignment target, with the reliable region outlined
    in white (both at the alignment's resolution: every second pixel of the image).

    ``record`` has ``name``, ``image`` (H, W, 3), ``mask``, ``boundaries`` (H, W bool),
    ``classes`` and ``variants``, each with ``variant``, ``reconstruction`` ((H, W, 3)
    uint8 or None), ``cams`` ((class, (H, W) map) pairs) and ``aligned`` ((class,
    averaged, target, reliable) tuples).
    """
    img = record.image
    views = list(record.variants)
    cols = max([3] + [1 + len(v.cams) + 2 * len(v.aligned) for v in views])
    fig, axes = _subplots(1 + len(views), cols, size, size)
    firsts = [img, label_image(record.mask), superpixel_overlay(img, record.boundaries)]
    titles = [record.name, "ground truth: " + ", ".join(record.classes), "superpixels"]
    for a, pic, title in zip(axes[0], firsts, titles):
        a.imshow(pic)
        a.set_title(title, fontsize=fontsize)
    for row, v in zip(axes[1:], views):
        row[0].set_ylabel(v.variant, fontsize=fontsize + 1)
        rec = v.reconstruction
        row[0].imshow(rec if rec is not None else np.full_like(img, 255))
        row[0].set_title(f"{v.variant}: reconstruction" if rec is not None else f"{v.variant}: no decoder",
                         fontsize=fontsize)
        for a, (cls, heat) in zip(row[1:], v.cams):
            a.imshow(heat_overlay(img, heat))
            a.set_title(f"CAM {cls}", fontsize=fontsize)
        start = 1 + len(v.cams)
        for j, (cls, averaged, target, reliable) in enumerate(v.aligned):
            h2, w2 = np.shape(target)[-2:]
            small = img[::2, ::2][:h2, :w2]
            a, b = row[start + 2 * j], row[start + 2 * j + 1]
            a.imshow(heat_overlay(small, averaged))
            a.set_title(f"sp-averaged {cls}", fontsize=fontsize)
            b.imshow(heat_overlay(small, target))
            r = np.asarray(reliable, np.float32)
            if r.min() != r.max():  # a contour needs both sides
                b.contour(r, levels=[0.5], colors="white", linewidths=0.8)
            b.set_title("target (white: reliable)", fontsize=fontsize)
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
        if not a.images:
            a.axis("off")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- output
def save_figure(fig, path: str | Path, dpi: int = 90) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (folders created); returns ``path``."""
    from .io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)
