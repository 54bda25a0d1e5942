"""Image-level labels, split lists and (VOC + SBD) train_aug masks (the library behind the
``prepare`` stage, :mod:`sslib.stages.prepare`).

:func:`prepare` reads a ``data`` section and writes into ``data.prepared_dir``::

    labels.json                 {"classes": [C names], "labels": {name: [0-based class
                                indices present in its mask]}} for every image of every list
    lists/<split>.txt           the split lists (train, val, trainval if present, train_aug)
    SegmentationClassAug/*.png  VOC + SBD only: 8-bit palette masks of every train_aug image
    summary.json                images per split and images per class (also returned)

Labels are the classes present in each image's mask (values 1..C; 0 background and
255 ignore are not classes). Every image is checked on the way: a list entry without
an image or mask file, an unreadable image or mask, a mask whose size differs from its
image, or a mask value outside 0..C and 255 stops the stage with a
:class:`~sslib.io.DataError` naming the file.

**train_aug** (VOC with ``data.sbd_root``, SBD's ``dataset`` folder holding
``cls/<name>.mat`` and ``train.txt`` / ``val.txt``)::

    train_aug = sorted((SBD train | SBD val | VOC train) - VOC val)     # 10,582 images

Its masks are VOC's own ``SegmentationClass/<name>.png`` where one exists (it has the
255 boundary band) and SBD's ``GTcls.Segmentation`` otherwise. Without ``sbd_root``, a
``train_aug.txt`` inside ``<root>/ImageSets/Segmentation/`` (with masks in
``<root>/SegmentationClassAug/``) is used as it is.

**COCO as downloaded** (the image folders and ``annotations/instances_<subset>.json``,
no ``ImageSets`` or ``SegmentationClass``): the lists ``train`` / ``val`` are every image of
the instances file, and the class masks the data lacks are made from the annotations under
``<prepared_dir>/SegmentationClass/<subset>/`` (:mod:`sslib.data.coco_masks`; needs the
``coco`` extra, pycocotools), resumably, before the usual checks.

Every file is written atomically, and nothing from an earlier run is removed until the
new outputs are complete (``labels.json`` is written after the masks and lists; stale
lists and masks are removed last).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
from PIL import Image

from ..config import ConfigError, DataConfig
from ..io import DataError, remove_stale_temps, write_json, write_text
from ..formats import IGNORE_INDEX, read_lines, read_png_labels, save_png
from ..pool import PARALLEL_MIN_IMAGES, auto_workers, map_tasks  # PARALLEL_MIN_IMAGES: still named here
from . import coco, voc
from .base import LABELS_NAME, check_images_exist, list_stems

__all__ = ["prepare", "read_sbd_mat", "PARALLEL_MIN_IMAGES"]

AUG_DIR = "SegmentationClassAug"


class _Task(NamedTuple):
    """One image: where its image and mask are, and where to write a train_aug PNG (or None)."""

    name: str
    image: Path
    mask: Path
    kind: str  # "png" or "mat"
    out: Path | None
    num_classes: int


class _Plan(NamedTuple):
    classes: tuple[str, ...]
    lists: dict[str, list[str]]  # split -> names, in list order
    tasks: dict[str, _Task]  # name -> task
    aug_names: list[str] | None  # train_aug built here (VOC + SBD) or None


# --------------------------------------------------------------------------- reading
def read_sbd_mat(path: str | Path) -> np.ndarray:
    """SBD ``cls/<name>.mat``: the class map ``GTcls.Segmentation`` as an (H, W) int64 array."""
    import scipy.io  # lazy: only VOC + SBD needs it

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: SBD class mask not found")
    try:
        seg = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)["GTcls"].Segmentation
        seg = np.asarray(seg)
    except Exception as e:
        raise DataError(f"{path}: cannot read SBD class mask GTcls.Segmentation "
                        f"({type(e).__name__}: {e})") from None
    if seg.ndim != 2 or seg.dtype.kind not in "uif" or (seg.dtype.kind == "f" and not np.all(seg == np.round(seg))):
        raise DataError(f"{path}: GTcls.Segmentation is not a 2-D integer class map ({seg.dtype} {seg.shape})")
    return seg.astype(np.int64)


def _image_hw(path: Path) -> tuple[int, int]:
    """(H, W) of an image, decoding it (JPEG at 1/8 scale: fast) to catch corrupt files."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
            im.load()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except Exception as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    return h, w


def _process(task: _Task) -> list[int]:
    """Check one image + mask, write its train_aug PNG if asked; return its 0-based classes."""
    hw = _image_hw(task.image)
    mask = read_sbd_mat(task.mask) if task.kind == "mat" else read_png_labels(task.mask)
    if mask.shape != hw:
        raise DataError(f"{task.mask}: mask has shape {mask.shape}, its image {task.image} {hw}")
    values = np.flatnonzero(np.bincount(mask.ravel())) if mask.min(initial=0) >= 0 else np.unique(mask)
    bad = values[(values < 0) | ((values > task.num_classes) & (values != IGNORE_INDEX))]
    if bad.size:
        raise DataError(f"{task.mask}: mask values {bad[:5].tolist()} are neither classes "
                        f"0..{task.num_classes} nor {IGNORE_INDEX} (ignore)")
    if task.out is not None:
        save_png(task.out, mask.astype(np.uint8), palette=voc.voc_palette())
    return [int(v) - 1 for v in values if 1 <= v <= task.num_classes]


# --------------------------------------------------------------------------- planning
def _read_list(path: Path, required: bool, hint: str) -> list[str] | None:
    """The names in split list ``path``; None if it is absent and not required.

    An empty list is an error, not an empty split: a split without images would only
    fail later, far from its cause (a batch size "larger than the split", an all-NaN sweep).
    """
    if path.is_file():
        names = read_lines(path)
        if not names:
            raise DataError(f"{path}: split list is empty; list one image name per line (no extension)")
        return names
    if required:
        raise DataError(f"{path}: split list not found; {hint}")
    return None


def _splits(data_cfg: DataConfig, extra: Iterable[str] = ()) -> list[str]:
    """train, val, the configured splits, then ``extra`` (in that order, no repeats)."""
    return list(dict.fromkeys(["train", "val", data_cfg.train_split, data_cfg.val_split, *extra]))


def _missing(names: Sequence[str], where: str, expected: Callable[[str], str]) -> DataError:
    """DataError: the first few ``names`` of list ``where`` lack a mask (``expected(name)``)."""
    shown = ", ".join(f"{n!r} (expected {expected(n)})" for n in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return DataError(f"{where}: {len(names)} listed image(s) have no mask: {shown}{more}")


def plan_voc(data_cfg: DataConfig, classes: tuple[str, ...]) -> _Plan:
    root, prepared = Path(data_cfg.root), Path(data_cfg.prepared_dir)
    sets = root / "ImageSets" / "Segmentation"
    image_dir = root / voc.IMAGE_DIR
    images = list_stems(image_dir, voc.IMAGE_SUFFIX)
    if not images:
        raise DataError(f"{image_dir}: no {voc.IMAGE_SUFFIX} images found (is data.root the VOC2012 folder?)")
    build_aug = bool(data_cfg.sbd_root)
    required = {data_cfg.train_split, data_cfg.val_split} | ({"train", "val"} if build_aug else set())

    lists: dict[str, list[str]] = {}
    for split in _splits(data_cfg, ["trainval", "train_aug"]):
        if split == "train_aug" and build_aug:
            continue
        hint = ("set data.sbd_root to SBD's `dataset` folder to build it" if split == "train_aug"
                else "create it with one image name per line (no extension)")
        names = _read_list(sets / f"{split}.txt", split in required, hint)
        if names is not None:
            check_images_exist(names, image_dir, voc.IMAGE_SUFFIX, sets / f"{split}.txt", images)
            lists[split] = names

    tasks: dict[str, _Task] = {}
    C = len(classes)
    aug_names = None
    if build_aug:
        sbd = Path(data_cfg.sbd_root)
        sbd_names = set()
        for s in ("train", "val"):
            sbd_names |= set(_read_list(sbd / f"{s}.txt", True, "data.sbd_root must be SBD's `dataset` folder"))
        aug_names = sorted((sbd_names | set(lists["train"])) - set(lists["val"]))
        where = f"train_aug (SBD {sbd / 'train.txt'} + {sbd / 'val.txt'} + VOC train - VOC val)"
        if not aug_names:
            raise DataError(f"{where}: no images left (every one is in VOC val)")
        check_images_exist(aug_names, image_dir, voc.IMAGE_SUFFIX, where, images)
        voc_pngs = list_stems(root / "SegmentationClass", voc.MASK_SUFFIX)
        mats = list_stems(sbd / "cls", ".mat")
        lacking = [n for n in aug_names if n not in voc_pngs and n not in mats]
        if lacking:
            raise _missing(lacking, where, lambda n: f"{root / 'SegmentationClass' / n}.png "
                                                     f"or {sbd / 'cls' / n}.mat")
        for n in aug_names:
            src, kind = ((root / "SegmentationClass" / f"{n}.png", "png") if n in voc_pngs
                         else (sbd / "cls" / f"{n}.mat", "mat"))
            tasks[n] = _Task(n, image_dir / f"{n}{voc.IMAGE_SUFFIX}", src, kind,
                             prepared / AUG_DIR / f"{n}.png", C)
        lists["train_aug"] = aug_names

    # every other image: its mask in the order the data set looks it up (minus the built folder)
    mask_dirs = [d for d in voc.mask_dirs(root, prepared) if d != prepared / AUG_DIR]
    stems = [(d, list_stems(d, voc.MASK_SUFFIX)) for d in mask_dirs]
    for split, names in lists.items():
        lacking = []
        for n in names:
            if n in tasks:
                continue
            d = next((d for d, s in stems if n in s), None)
            if d is None:
                lacking.append(n)
            else:
                tasks[n] = _Task(n, image_dir / f"{n}{voc.IMAGE_SUFFIX}", d / f"{n}.png", "png", None, C)
        if lacking:
            raise _missing(lacking, str(sets / f"{split}.txt"),
                           lambda n: " or ".join(f"{d / n}.png" for d in mask_dirs))
    return _Plan(classes, lists, tasks, aug_names)


def plan_coco(data_cfg: DataConfig, progress: bool = True, workers: int | None = None) -> _Plan:
    """COCO's lists and masks; from ``annotations/instances_<subset>.json`` where the data has
    none (lists ``train`` / ``val`` of every image in the file, masks made under
    ``<prepared_dir>/SegmentationClass/<subset>`` by :mod:`sslib.data.coco_masks`)."""
    from . import coco_masks

    root, prepared = Path(data_cfg.root), Path(data_cfg.prepared_dir)
    lists: dict[str, list[str]] = {}
    tasks: dict[str, _Task] = {}
    required = {data_cfg.train_split, data_cfg.val_split}
    C = len(coco.COCO_CLASSES)
    listings: dict[Path, set[str]] = {}
    entries: dict[Path, list] = {}  # instances file -> its images (parsed once)

    def images_of(ann: Path) -> list:
        if ann not in entries:
            entries[ann] = coco_masks.image_entries(coco_masks.load_instances(ann), ann)
        return entries[ann]

    for split in _splits(data_cfg):
        path = root / "ImageSets" / f"{split}.txt"
        sub = coco.subset_of(split)
        ann = coco_masks.instances_file(root, sub)
        names = _read_list(path, False, "")
        if names is None and split in ("train", "val") and ann.is_file():
            names, path = [e.name for e in images_of(ann)], ann
            if not names:
                raise DataError(f"{ann}: lists no images")
        if names is None:
            if split in required:
                raise DataError(f"{path}: split list not found; create it with one image name per line "
                                f"(no extension), or put COCO's {ann.name} at {ann} (splits train and val)")
            continue
        img_dir = coco.image_dir(root, split)
        if img_dir not in listings:
            listings[img_dir] = list_stems(img_dir, coco.IMAGE_SUFFIX)
        check_images_exist(names, img_dir, coco.IMAGE_SUFFIX, path, listings[img_dir])
        dirs = coco.mask_dirs(root, prepared, split)
        if dirs[0] not in listings:
            listings[dirs[0]] = list_stems(dirs[0], coco.MASK_SUFFIX)
        own = listings[dirs[0]]
        lacking = [n for n in names if n not in own]
        if lacking and ann.is_file():
            coco_masks.write_class_masks(ann, img_dir, dirs[1], names=lacking, workers=workers, progress=progress,
                                         entries=images_of(ann))
        made = list_stems(dirs[1], coco.MASK_SUFFIX) if lacking else set()
        still = [n for n in lacking if n not in made]
        if still:
            raise _missing(still, str(path), lambda n: " or ".join(f"{d / n}{coco.MASK_SUFFIX}" for d in dirs)
                           + ("" if ann.is_file() else f" (or put COCO's {ann.name} at {ann})"))
        for n in names:
            mask = (dirs[0] if n in own else dirs[1]) / f"{n}{coco.MASK_SUFFIX}"
            t = _Task(n, img_dir / f"{n}{coco.IMAGE_SUFFIX}", mask, "png", None, C)
            if tasks.setdefault(n, t) != t:
                raise DataError(f"{path}: image name {n!r} occurs in two folders ({tasks[n].image} and "
                                f"{t.image}); names must be unique across splits")
        lists[split] = names
    return _Plan(coco.COCO_CLASSES, lists, tasks, None)


# --------------------------------------------------------------------------- running
def _run(tasks: list[_Task], progress: bool, workers: int | None) -> dict[str, list[int]]:
    """Each task's labels by image name (over :func:`sslib.pool.auto_workers` processes by default)."""
    if workers is None:
        workers = auto_workers(len(tasks))
    labels = map_tasks(_process, tasks, workers, chunksize=max(1, min(64, len(tasks) // (max(workers, 1) * 8))),
                       use_executor=True, cancel_futures=True, desc="prepare", progress=progress)
    return {t.name: lab for t, lab in zip(tasks, labels)}


def _remove_stale(prepared: Path, splits: Iterable[str], aug_names: list[str] | None) -> None:
    """After a complete run: drop lists and train_aug masks the new outputs do not name."""
    keep = {f"{s}.txt" for s in splits}
    for f in (prepared / "lists").glob("*.txt"):
        if f.name not in keep:
            f.unlink()
    aug = prepared / AUG_DIR
    if aug.is_dir():
        keep = {f"{n}.png" for n in aug_names or ()}
        for f in aug.glob("*.png"):
            if f.name not in keep:
                f.unlink()
        if aug_names is None and not any(aug.iterdir()):
            aug.rmdir()


def prepare(data_cfg: DataConfig, progress: bool = True, *, workers: int | None = None) -> dict:
    """Build the label cache, split lists (and VOC + SBD train_aug masks) in ``prepared_dir``.

    Args:
        data_cfg: the ``data`` section of params.yaml.
        progress: show a progress bar over the images.
        workers: processes; None = one per core (at most 8) from
            :data:`sslib.pool.PARALLEL_MIN_IMAGES` images on, else this process only
            (:func:`sslib.pool.auto_workers`).

    Returns:
        ``{"dataset", "classes", "images": {split: n}, "class_counts": {split: {class: n}}}``
        (+ ``"train_aug_sources": {"voc_png": n, "sbd_mat": n}`` when train_aug was built);
        also written to ``<prepared_dir>/summary.json``.
    """
    from . import DATASETS, dataset_entry

    entry = dataset_entry(data_cfg)
    if data_cfg.sbd_root and not entry.get("uses_sbd", False):
        users = [n for n in DATASETS.names() if DATASETS.get(n).get("uses_sbd", False)]
        raise ConfigError(f"data.sbd_root is only used with data.dataset = {' | '.join(users)}")
    plan = entry.get("prepare")(data_cfg, progress, workers)

    prepared = Path(data_cfg.prepared_dir)
    remove_stale_temps(prepared, recursive=True)  # what a killed run left
    labels = _run(list(plan.tasks.values()), progress, workers)

    for split, names in plan.lists.items():
        write_text(prepared / "lists" / f"{split}.txt", "".join(f"{n}\n" for n in names))
    write_json(prepared / LABELS_NAME, {"classes": list(plan.classes), "labels": labels})

    summary: dict = {"dataset": data_cfg.dataset, "classes": list(plan.classes),
                     "images": {s: len(n) for s, n in plan.lists.items()}, "class_counts": {}}
    for split, names in plan.lists.items():
        counts = np.bincount([k for n in names for k in labels[n]], minlength=len(plan.classes))
        summary["class_counts"][split] = dict(zip(plan.classes, counts.tolist()))
    if plan.aug_names is not None:
        kinds = [plan.tasks[n].kind for n in plan.aug_names]
        summary["train_aug_sources"] = {"voc_png": kinds.count("png"), "sbd_mat": kinds.count("mat")}
    write_json(prepared / "summary.json", summary)
    _remove_stale(prepared, plan.lists, plan.aug_names)
    return summary
