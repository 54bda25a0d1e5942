"""params.yaml: the one source of configuration, typed and validated on load.

Every section is a dataclass: the **schema**. It declares each key's type, its range
(:func:`num`) or choices (``Literal``), and the rules between keys (``check()``), but no
value. **Every value is written once, in params.yaml**, with the comment that documents it
(the user-facing doc of each key). tests/test_config.py keeps the two key sets equal and
the schema free of defaults. Adding a key: one field here, one line in params.yaml.

:func:`load` reads a params file and checks every key, type and range. A wrong type, an
unknown key, a missing key or a value out of range raises :class:`ConfigError` naming the
dotted key, e.g. ``superpixels.slic.n_segment: unknown key``,
``train_cam.momentum: must lie in [0, 1), got -1.0`` or ``train_cam.lr: missing key; ...``.

How a partial file is completed: the project's own params.yaml (:func:`defaults_path`, the
one of the project sslib lives in) is loaded as it is and must give every key a value. Any
other params file (a test's, a copy's) is deep-merged over it first, so a partial file, or a
test's ``{}``, means "the project's params.yaml, but ...". Since presets rewrite
params.yaml, that is the current preset's values. ``overrides`` (a nested mapping) are
deep-merged last. Notebooks receive their sections through :func:`load` as well
(:func:`sslib.notebook.setup`): papermill's ``-p section {...}`` replaces the notebook's
override dict for that section whole, and that dict is deep-merged over the file, so only
the keys it names change; running a notebook by hand and running it from ``dvc repro`` see
the same values. :func:`defaults` gives the project's params, or one section of it, with
overrides (for tests, benchmarks and scripts).

The generic loader (:func:`from_dict`) checks each field, then calls the section's
``check()`` for rules that tie several of its fields together, so each section validates
itself; ``Params.check`` holds the few rules between sections. YAML is read by
:func:`read_yaml` (YAML 1.2 floats, so ``1e-05`` as DVC writes it is a number, not a string).

The sections: ``data``, ``synthetic``, ``superpixels``, ``augment``, ``model`` (shared),
``runs`` (the variant x seed matrix), ``ssc`` and ``variants`` (the method and its
ablation), then one section per stage that has settings of its own (``train_cam``,
``eval_cam``, ``make_ir_labels``, ``train_irn``, ``make_pseudo_labels``, ``train_seg``,
``eval_seg``). The VOC and COCO settings are presets (``presets/*.yaml``) that
:func:`apply_preset` writes into params.yaml.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

__all__ = [
    "ConfigError", "Params", "DataConfig", "SyntheticConfig", "SuperpixelConfig",
    "AugmentConfig", "ModelConfig", "RunsConfig", "DownstreamConfig", "VariantConfig", "TrainCamConfig",
    "EvalCamConfig", "CRFConfig", "MakeIrLabelsConfig", "TrainIrnConfig", "MakePseudoLabelsConfig", "TrainSegConfig", "SegCRFConfig", "EvalSegConfig", "need", "variant_config", "thresholds_from", "load", "defaults", "defaults_path", "from_dict", "to_dict", "project_root", "deep_merge",
    "Range", "num", "read_yaml", "one_of", "settings_of_each", "chosen", "choices",
]


class ConfigError(ValueError):
    """A parameter has the wrong type, an unknown key, or a bad value."""


# --------------------------------------------------------------------------- YAML
class _Yaml12FloatLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 exponent floats (``1e-3``, ``1e6``, ``2.5e3``).

    YAML 1.1 (PyYAML) needs a dot and a signed exponent, so it reads ``1e-05`` as a
    string. The resolver is added to this subclass only; ``yaml.SafeLoader`` is untouched.
    """


# every number with an exponent; the YAML 1.1 resolvers (ints, "1.5", ".inf", ".nan")
# come first and keep their meaning, and "1e" or "e5" stay strings
_Yaml12FloatLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse YAML ``text`` like ``yaml.safe_load``, but with YAML 1.2 floats (``1e-05`` is 1e-05)."""
    return yaml.load(text, Loader=_Yaml12FloatLoader)


# --------------------------------------------------------------------------- ranges
@dataclass(frozen=True)
class Range:
    """Allowed values of a number: bounds (``None`` = no bound) and an optional step."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    multiple_of: int | None = None

    def describe(self) -> str:
        """The rule in words, e.g. ``lie in [0, 1)``, ``be > 0``, ``be a multiple of 16``."""
        low = f"[{self.ge}" if self.ge is not None else f"({self.gt}" if self.gt is not None else None
        high = f"{self.le}]" if self.le is not None else f"{self.lt})" if self.lt is not None else None
        if low and high:
            rule = f"lie in {low}, {high}"
        elif low:
            rule = f"be >= {self.ge}" if self.ge is not None else f"be > {self.gt}"
        elif high:
            rule = f"be <= {self.le}" if self.le is not None else f"be < {self.lt}"
        else:
            rule = ""
        if self.multiple_of is not None:
            rule += (" and " if rule else "be ") + f"a multiple of {self.multiple_of}"
        return rule

    def contains(self, x: float) -> bool:
        """Whether the number ``x`` satisfies every bound and the step."""
        return ((self.ge is None or x >= self.ge) and (self.gt is None or x > self.gt)
                and (self.le is None or x <= self.le) and (self.lt is None or x < self.lt)
                and (self.multiple_of is None or x % self.multiple_of == 0))

    def check(self, value: Any, key: str) -> None:
        """Raise :class:`ConfigError` if ``value`` is a number outside the range.

        Other values (e.g. ``"auto"`` of an ``int | Literal["auto"]`` field) were already
        checked by their type and pass.
        """
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not self.contains(value):
            raise ConfigError(f"{key}: must {self.describe()}, got {value!r}")


def num(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None, multiple_of: int | None = None) -> Any:
    """A dataclass field for a number (or a list of numbers) with its allowed range; no default.

    For a list the range applies to each element. :func:`from_dict` checks it and names
    the key, e.g. ``train_cam.decoder_betas[0]: must lie in [0, 1), got 1.5``.
    """
    return field(metadata={"range": Range(ge=ge, gt=gt, le=le, lt=lt, multiple_of=multiple_of)})


def one_of(table: str, settings: str | None = None) -> Any:
    """A dataclass field (a string) that names an entry of the registry table ``table``
    (:data:`sslib.registry.TABLES`); no default. ``settings``: the sibling field
    (a :func:`settings_of_each`) that must hold the chosen entry's settings when it has any.

    :func:`from_dict` refuses an unknown name with the key and the known names, e.g.
    ``ssc.expansion: unknown CAM expansion 'drz' (known: drs, none)``.
    """
    return field(metadata={"table": table, "settings_field": settings})


def settings_of_each(table: str) -> Any:
    """A dataclass field ``dict[str, Any]``: entry name -> that entry's own settings (each
    checked as its entry's settings dataclass, which :func:`from_dict` builds); no default."""
    return field(metadata={"entry_settings": table})


def _registry(table: str):
    from .registry import table as get_table  # lazily: the tables import their entries' modules

    return get_table(table)


def _entry(table: str, name: str, key: str):
    from .registry import UnknownEntry

    try:
        return _registry(table).get(name, key)
    except UnknownEntry as e:
        raise ConfigError(str(e)) from None


def _entry_settings(table: str, value: dict, key: str) -> dict:
    """``{name: settings dataclass}`` of a :func:`settings_of_each` field's mapping."""
    out = {}
    for name, sub in value.items():
        entry = _entry(table, name, f"{key}.{name}")
        if entry.settings is None:
            if sub not in (None, {}):
                raise ConfigError(f"{key}.{name}: the {_registry(table).kind} {name!r} takes no settings")
            continue
        out[name] = from_dict(entry.settings, sub, f"{key}.{name}")
    return out


def _check_choices(obj: Any, prefix: str) -> None:
    """Each :func:`one_of` field of ``obj`` names a known entry, whose settings are present."""
    for f in dataclasses.fields(obj):
        if "table" not in f.metadata:
            continue
        full = f"{prefix}.{f.name}" if prefix else f.name
        entry = _entry(f.metadata["table"], getattr(obj, f.name), full)
        where = f.metadata["settings_field"]
        if where and entry.settings is not None and entry.name not in getattr(obj, where):
            names = [g.name for g in dataclasses.fields(entry.settings)]
            raise ConfigError(f"{prefix}.{where}.{entry.name}: missing; the {_registry(f.metadata['table']).kind} "
                              f"{entry.name!r} needs its settings {names}")


def _packaged(table: str) -> str:
    """The entries of ``table`` that declare ``packaged_weights`` (for messages)."""
    reg = _registry(table)
    return ", ".join(n for n in reg.names() if reg.get(n).get("packaged_weights", False)) or "no entry"


def chosen(section: Any, field_name: str) -> tuple[Any, Any]:
    """``(entry, its settings or None)`` that ``section.<field_name>`` (a :func:`one_of`) chooses."""
    f = {g.name: g for g in dataclasses.fields(section)}[field_name]
    entry = _registry(f.metadata["table"]).get(getattr(section, field_name))
    where = f.metadata["settings_field"]
    return entry, (getattr(section, where).get(entry.name) if where else None)


def choices(section: Any, skip: tuple[type, ...] = ()) -> list[tuple[Any, str]]:
    """``[(entry, dotted key), ...]`` that the :func:`one_of` fields of ``section`` and of the
    sections under it choose (sections of a type in ``skip`` left out)."""
    out, prefix = [], _section_keys().get(type(section), "")
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if "table" in f.metadata:
            out.append((_registry(f.metadata["table"]).get(value), f"{prefix}.{f.name}" if prefix else f.name))
        elif dataclasses.is_dataclass(value) and not isinstance(value, skip):
            out += choices(value, skip)
    return out


# --------------------------------------------------------------------------- sections
# The schema: each field's type, range (num) or choices (Literal), and the rules between
# fields (check). No field has a default: every value, and the comment that documents it,
# lives in params.yaml.
@dataclass
class DataConfig:
    """Which data set the pipeline reads, and where it lives (read by every stage)."""

    dataset: str = one_of("datasets")
    root: str
    sbd_root: str
    prepared_dir: str
    train_split: str
    val_split: str

    def check(self) -> None:
        if self.sbd_root and not _registry("datasets").get(self.dataset).get("uses_sbd", False):
            table = _registry("datasets")
            users = [n for n in table.names() if table.get(n).get("uses_sbd", False)]
            raise ConfigError(f"data.sbd_root: is only used with data.dataset = {' | '.join(users)}")


@dataclass
class SyntheticConfig:
    """The procedurally generated "context" data set (VOC layout; ``synthesize`` stage)."""

    seed: int = num(ge=0)
    out_dir: str
    n_train: int = num(ge=1)
    n_val: int = num(ge=1)
    image_size: int = num(ge=32)
    context_prob: float = num(ge=0, le=1)
    min_objects: int = num(ge=1)
    max_objects: int = num(ge=1)
    scale_range: list[float] = num(gt=0, le=1)
    jpeg_quality: int = num(ge=1, le=100)

    def check(self) -> None:
        need(self.min_objects <= self.max_objects, "synthetic.min_objects",
             "need 1 <= min_objects <= max_objects")
        need(len(self.scale_range) == 2 and self.scale_range[0] <= self.scale_range[1],
             "synthetic.scale_range", "need [min, max] with 0 < min <= max <= 1")


@dataclass
class SlicConfig:
    n_segments: int = num(ge=1)
    compactness: float = num(gt=0)
    sigma: float = num(ge=0)


@dataclass
class FelzenszwalbConfig:
    scale: float = num(gt=0)
    sigma: float = num(ge=0)
    min_size: int = num(ge=1)
    max_regions: int = num(ge=0)


@dataclass
class SuperpixelConfig:
    """Superpixel precomputation (scikit-image; ``superpixels`` stage)."""

    method: Literal["slic", "felzenszwalb"]
    out_dir: str
    splits: list[str]
    workers: int = num(ge=0)
    slic: SlicConfig
    felzenszwalb: FelzenszwalbConfig

    def check(self) -> None:
        need(len(self.splits) >= 1, "superpixels.splits", "name at least one split")


@dataclass
class AugmentConfig:
    """Training augmentation (IRN/SSC): random long-side resize, flip, crop."""

    resize_long: list[int] = num(gt=0)
    hflip: bool
    crop_size: int = num(ge=16, multiple_of=16)  # the CAM network's output stride

    def check(self) -> None:
        need(len(self.resize_long) == 2 and self.resize_long[0] <= self.resize_long[1],
             "augment.resize_long", "need [min, max] with 0 < min <= max")


@dataclass
class ModelConfig:
    """The CAM network (a backbone at output stride 16), its decoder and the perceptual loss's network.

    Local weights files live under ``weights/`` at the project root (gitignored); nothing is
    downloaded. Not under ``data/``: DVC tracks that folder as a whole (data.dvc), so a
    file there would be swallowed into it; such a path is rejected on load. ``"none"`` is
    an explicit choice of random initialisation; a path that does not exist stops the run
    with a message saying where to put the file.
    """

    backbone: str = one_of("backbones")
    backbone_weights: str
    loss_network: str = one_of("loss_networks")
    vgg_weights: str
    #: at most the backbone's ``groups`` (its entry's info)
    frozen_stages: int | Literal["auto"] = num(ge=0)
    bn_eval: bool | Literal["auto"]
    decoder_width: int = num(ge=8, multiple_of=8)

    def check(self) -> None:
        for key, value in (("model.backbone_weights", self.backbone_weights),
                           ("model.vgg_weights", self.vgg_weights)):
            parts = Path(value).parts
            need(Path(value).is_absolute() or not parts or parts[0] != "data", key,
                 f"{value!r} lies inside data/, which DVC tracks as a whole (data.dvc) and would swallow "
                 f"the file; put it under weights/ instead (e.g. weights/{Path(value).name})")
        backbone, _ = chosen(self, "backbone")
        need(self.backbone_weights != "packaged" or backbone.get("packaged_weights", False), "model.backbone_weights",
             f"packaged weights exist for {_packaged('backbones')} only; model.backbone {self.backbone} needs "
             "a torchvision file under weights/ (or none)")
        need(self.vgg_weights != "packaged", "model.vgg_weights",
             "no VGG-19 weights are packaged: give torchvision's file under weights/, or none, or a "
             "model.loss_network that does not read it (e.g. efficientnet_lite0)")
        most = backbone.get("groups")
        need(self.frozen_stages == "auto" or most is None or self.frozen_stages <= most, "model.frozen_stages",
             f"{self.backbone} has {most} groups, got {self.frozen_stages}")


@dataclass
class DownstreamConfig:
    """The runs whose CAMs feed the pseudo-label and segmentation stages (a subset of ``runs``)."""

    variants: list[str]
    seeds: list[int] = num(ge=0)

    def check(self) -> None:
        need(len(self.variants) >= 1 and len(set(self.variants)) == len(self.variants), "runs.downstream.variants",
             "name at least one variant, each once")
        need(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "runs.downstream.seeds",
             "name at least one seed, each once")


@dataclass
class RunsConfig:
    """The run matrix every per-run stage uses: each variant trained with each seed."""

    variants: list[str]
    seeds: list[int] = num(ge=0)
    downstream: DownstreamConfig
    devices: int = num(ge=1)

    def check(self) -> None:
        need(len(self.variants) >= 1, "runs.variants", "name at least one variant")
        need(len(set(self.variants)) == len(self.variants), "runs.variants", "lists a variant twice")
        need(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "runs.seeds",
             "name at least one seed, each once")
        for v in self.downstream.variants:
            need(v in self.variants, "runs.downstream.variants", f"{v!r} is not in runs.variants")
        for s in self.downstream.seeds:
            need(s in self.seeds, "runs.downstream.seeds", f"{s} is not in runs.seeds")


@dataclass
class VariantConfig:
    """What one ablation variant switches on; ``variants.<name>`` overrides ``ssc``."""

    expansion: str = one_of("expansions", settings="expansions")
    #: expansion name -> its settings (each checked as that entry's settings dataclass)
    expansions: dict[str, Any] = settings_of_each("expansions")
    reconstruction: bool
    rec_loss: Literal["perceptual", "l1", "l2"]
    beta_rec: float = num(ge=0)
    alignment: bool
    beta_align: float = num(ge=0)
    align_threshold: float = num(ge=0, le=1)
    align_erosion: int = num(ge=1)
    warmup_epochs: int = num(ge=0)


@dataclass
class TrainCamConfig:
    """CAM-network training (``train_cam`` stage), shared by every variant and seed."""

    out_dir: str
    epochs: int = num(ge=1)
    batch_size: int = num(ge=1)
    lr: float = num(gt=0)
    classifier_lr_mult: float = num(gt=0)
    weight_decay: float = num(ge=0)
    momentum: float = num(ge=0, lt=1)
    poly_power: float = num(ge=0)
    decoder_lr: float = num(gt=0)
    decoder_betas: list[float] = num(ge=0, lt=1)
    num_workers: int = num(ge=0)
    amp: bool
    stop_on_nonfinite: bool

    def check(self) -> None:
        need(len(self.decoder_betas) == 2, "train_cam.decoder_betas", "need [beta1, beta2]")


@dataclass
class EvalCamConfig:
    """CAM inference and evaluation (``eval_cam`` stage): IRN's multi-scale, flipped CAMs
    (:mod:`sslib.cam`) and a background-threshold sweep (:mod:`sslib.evaluate`)."""

    out_dir: str
    scales: list[float] = num(gt=0)
    flip: bool
    batch_size: int = num(ge=1)
    splits: list[Literal["train", "val"]]
    thresholds: list[float] = num(ge=0, le=1)
    fixed_threshold: float = num(ge=0, le=1)

    def check(self) -> None:
        need(len(self.scales) >= 1, "eval_cam.scales", "name at least one scale")
        need(len(self.splits) >= 1 and len(set(self.splits)) == len(self.splits), "eval_cam.splits",
             "name at least one split, each once")
        t = self.thresholds
        need(len(t) == 3 and t[0] <= t[1] and t[2] > 0, "eval_cam.thresholds",
             "need [start, stop, step] with 0 <= start <= stop <= 1 and step > 0")
        ths = thresholds_from(*t)
        need(any(abs(x - self.fixed_threshold) < 1e-6 for x in ths), "eval_cam.fixed_threshold",
             f"must be one of the swept thresholds {ths}")


@dataclass
class CRFConfig:
    """The dense CRF that refines the IR labels' two maps (IRN's settings; :mod:`sslib.crf`)."""

    iterations: int = num(ge=1)
    gt_prob: float = num(gt=0, lt=1)
    gauss_sxy: float = num(gt=0)
    gauss_compat: float = num(ge=0)
    bilateral_sxy: float = num(gt=0)
    bilateral_srgb: float = num(gt=0)
    bilateral_compat: float = num(ge=0)


@dataclass
class MakeIrLabelsConfig:
    """IRN's inter-pixel-relation labels from each downstream run's train CAMs
    (``make_ir_labels`` stage; :func:`sslib.pseudo_labels.ir_label`)."""

    out_dir: str
    fg_threshold: float = num(gt=0, lt=1)
    bg_threshold: float = num(gt=0, lt=1)
    crf: CRFConfig
    workers: int = num(ge=0)

    def check(self) -> None:
        need(self.bg_threshold < self.fg_threshold, "make_ir_labels.bg_threshold",
             f"must be below make_ir_labels.fg_threshold ({self.fg_threshold}), got {self.bg_threshold}")


@dataclass
class TrainIrnConfig:
    """IRN's class-boundary branch (``train_irn`` stage; :class:`sslib.models.BoundaryNet`),
    trained on each downstream run's IR labels with the affinity loss
    (:func:`sslib.affinity.affinity_loss`)."""

    out_dir: str
    epochs: int = num(ge=1)
    batch_size: int = num(ge=1)
    lr: float = num(gt=0)
    weight_decay: float = num(ge=0)
    momentum: float = num(ge=0, lt=1)
    poly_power: float = num(ge=0)
    scale_range: list[float] = num(gt=0)
    hflip: bool
    crop_size: int = num(ge=16, multiple_of=4)  # the label is downscaled x0.25
    radius: int = num(ge=2)
    num_workers: int = num(ge=0)
    amp: bool
    stop_on_nonfinite: bool

    def check(self) -> None:
        need(len(self.scale_range) == 2 and self.scale_range[0] <= self.scale_range[1],
             "train_irn.scale_range", "need [lo, hi] with 0 < lo <= hi")
        need(self.crop_size // 4 >= 2 * self.radius - 1, "train_irn.crop_size",
             f"the x0.25 label of a {self.crop_size} crop is too small for pairs of radius {self.radius} "
             f"(need crop_size >= {4 * (2 * self.radius - 1)})")


@dataclass
class MakePseudoLabelsConfig:
    """Each downstream run's stride-4 train CAMs made into pseudo labels by the chosen refiner
    (IRN's random walk on the boundary map by default; :mod:`sslib.refiners`), then BECO's
    confidence masks (``make_pseudo_labels`` stage; :func:`sslib.pseudo_labels.confidence_mask`)."""

    out_dir: str
    refiner: str = one_of("refiners", settings="refiners")
    #: refiner name -> its settings (:data:`sslib.registry.REFINERS`)
    refiners: dict[str, Any] = settings_of_each("refiners")
    mask_ratio: float = num(ge=0, le=1)


@dataclass
class TrainSegConfig:
    """The segmentation network on each downstream run's pseudo labels (``train_seg`` stage;
    :class:`sslib.models.DeepLabV2`)."""

    out_dir: str
    method: str = one_of("seg_methods", settings="methods")
    #: method name -> its settings (:data:`sslib.registry.SEG_METHODS`)
    methods: dict[str, Any] = settings_of_each("seg_methods")
    backbone: str = one_of("seg_backbones")
    backbone_weights: str
    output_stride: int = num(ge=8, le=16, multiple_of=8)
    epochs: int = num(ge=1)
    batch_size: int = num(ge=1)
    #: ``batch_size`` is each process's (SSC's ``-dist``: 16 per GPU), not the whole step's
    batch_per_device: bool
    #: SyncBatchNorm under DDP on CUDA (false: each GPU's own statistics, SSC's)
    sync_bn: bool
    lr: float = num(gt=0)
    head_lr_mult: float = num(gt=0)
    momentum: float = num(ge=0, lt=1)
    weight_decay: float = num(ge=0)
    poly_power: float = num(ge=0)
    min_lr: float = num(ge=0)
    #: the training crop (:data:`sslib.registry.SEG_CROPS`) and each crop's settings
    crop: str = one_of("seg_crops", settings="crops")
    crops: dict[str, Any] = settings_of_each("seg_crops")
    hflip: bool
    crop_size: int = num(ge=16, multiple_of=8)
    num_workers: int = num(ge=0)
    amp: bool
    stop_on_nonfinite: bool

    def check(self) -> None:
        need(self.min_lr < self.lr, "train_seg.min_lr", f"must be below train_seg.lr ({self.lr})")
        multiple = chosen(self, "method")[0].get("batch_multiple", 1)
        need(self.batch_size % multiple == 0, "train_seg.batch_size",
             f"the segmentation method {self.method!r} needs a batch that is a multiple of {multiple}, "
             f"got {self.batch_size}")
        backbone, _ = chosen(self, "backbone")
        files = backbone.get("weight_files") or ()
        need(self.backbone_weights != "packaged" or backbone.get("packaged_weights", False),
             "train_seg.backbone_weights",
             f"packaged weights exist for {_packaged('seg_backbones')} only; {self.backbone} needs a torchvision "
             "file under weights/" + (f" (e.g. weights/{files[0]})" if files else ""))
        need("coco" not in Path(self.backbone_weights).name.lower(), "train_seg.backbone_weights",
             f"{self.backbone_weights!r} looks like a COCO-pretrained DeepLab: that puts pixel supervision "
             "into a weakly supervised pipeline; use ImageNet weights")


@dataclass
class SegCRFConfig:
    """The dense CRF after segmentation (BECO's test.py settings; :func:`sslib.crf.crf_prob`)."""

    iterations: int = num(ge=1)
    gauss_sxy: float = num(gt=0)
    gauss_compat: float = num(ge=0)
    bilateral_sxy: float = num(gt=0)
    bilateral_srgb: float = num(gt=0)
    bilateral_compat: float = num(ge=0)


@dataclass
class EvalSegConfig:
    """Segmentation inference on the val split (``eval_seg`` stage; :mod:`sslib.inference`)."""

    out_dir: str
    scales: list[float] = num(gt=0)
    fusion: Literal["max", "mean"]
    flip: bool
    crf: bool
    crf_image: Literal["real", "beco"]
    crf_settings: SegCRFConfig
    workers: int = num(ge=0)
    #: each val image resized to resize x resize before the network (SSC: 512); 0 = its own size
    resize: int = num(ge=0)
    #: which model is scored: the last epoch's, or the epoch best on val (SSC's; train_seg
    #: then scores val after every epoch, and the metrics say the model was selected on val)
    selection: Literal["last", "best_on_val"]

    def check(self) -> None:
        need(len(self.scales) >= 1, "eval_seg.scales", "name at least one scale")


@dataclass
class Params:
    """The whole of params.yaml: shared sections, the run matrix, then one section per stage."""

    #: Python files that register extra table entries (:func:`sslib.registry.load_plugins`)
    plugins: list[str]
    data: DataConfig
    synthetic: SyntheticConfig
    superpixels: SuperpixelConfig
    augment: AugmentConfig
    model: ModelConfig
    runs: RunsConfig
    ssc: VariantConfig
    #: variant name -> overrides of ``ssc``, each checked as a VariantConfig
    variants: dict[str, dict[str, Any]]
    train_cam: TrainCamConfig
    eval_cam: EvalCamConfig
    make_ir_labels: MakeIrLabelsConfig
    train_irn: TrainIrnConfig
    make_pseudo_labels: MakePseudoLabelsConfig
    train_seg: TrainSegConfig
    eval_seg: EvalSegConfig

    def check(self) -> None:
        """Rules between sections (each section checked itself already)."""
        d, s = self.data, self.synthetic
        if _registry("datasets").get(d.dataset).get("generated", False):
            need(Path(d.root) == Path(s.out_dir), "data.root",
                 f"with data.dataset = {d.dataset} it must equal synthetic.out_dir ({s.out_dir!r}), got {d.root!r}")
        for name in self.runs.variants:
            need(name in self.variants, "runs.variants", f"{name!r} is not defined under variants")
        for name in self.variants:
            variant_config(self, name)  # types and ranges of variants.<name>.<key>


def need(ok: bool, key: str, msg: str) -> None:
    """Raise :class:`ConfigError` ``"<key>: <msg>"`` unless ``ok`` (for the sections' ``check``)."""
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def thresholds_from(start: float, stop: float, step: float) -> list[float]:
    """``start, start + step, ..., <= stop`` rounded to 1e-6 (no float drift in names)."""
    n = int((stop - start) / step + 1e-9) + 1
    return [round(start + i * step, 6) for i in range(n)]


def variant_config(params: "Params", name: str) -> VariantConfig:
    """The settings of variant ``name``: ``params.variants[name]`` merged over ``params.ssc``."""
    if name not in params.variants:
        raise ConfigError(f"variants.{name}: no such variant (known: {sorted(params.variants)})")
    merged = deep_merge(to_dict(params.ssc), params.variants[name] or {})
    return from_dict(VariantConfig, merged, f"variants.{name}")


# --------------------------------------------------------------------------- generic typed loading
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to floats)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(value, arm, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} does not fit {_type_name(tp)}")
    if origin is list:
        (item,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        ktp, vtp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {_convert(k, ktp, key): _convert(v, vtp, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"{key}: unsupported annotation {tp!r}")  # programming error, not user error


def _check_range(f: dataclasses.Field, value: Any, key: str) -> None:
    """Check ``value`` (each element of a list) against the range :func:`num` put on ``f``."""
    rng = f.metadata.get("range")
    if rng is None:
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            rng.check(v, f"{key}[{i}]")
    else:
        rng.check(value, key)


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a complete mapping, rejecting unknown and missing keys, wrong
    types and values out of range."""
    where = prefix or "params"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            full = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"{full}: unknown key (known keys of {where}: {sorted(names)})")
    missing = [f"{prefix}.{f.name}" if prefix else f.name for f in dataclasses.fields(cls) if f.name not in data]
    if missing:
        also = f" (and {', '.join(missing[1:])})" if missing[1:] else ""
        raise ConfigError(f"{missing[0]}: missing key{also}; params.yaml gives every key a value")
    kwargs = {}
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        kwargs[f.name] = _convert(data[f.name], hints[f.name], full)
        _check_range(f, kwargs[f.name], full)
        if "entry_settings" in f.metadata:
            kwargs[f.name] = _entry_settings(f.metadata["entry_settings"], kwargs[f.name], full)
    obj = cls(**kwargs)
    _check_choices(obj, prefix)
    if hasattr(obj, "check"):  # the section's own rules between its fields
        obj.check()
    return obj


def to_dict(obj: Any) -> dict:
    """Plain nested dict of a config dataclass (for papermill, JSON, logging)."""
    return dataclasses.asdict(obj)


def deep_merge(base: dict, over: dict) -> dict:
    """Return ``base`` updated recursively by ``over`` (neither is modified)."""
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) that holds params.yaml."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").is_file():
            return d
    raise FileNotFoundError(f"no params.yaml found in {here} or any parent folder")


def defaults_path() -> Path | None:
    """The project's params.yaml, which completes every other params file (None if there is none).

    That is the params.yaml of the project this package lives in (:func:`project_root` from
    the folder of ``sslib/``), or, for a copy of sslib installed outside any project, the
    one at or above the working directory.
    """
    for start in (Path(__file__).resolve().parent, None):
        try:
            return project_root(start) / "params.yaml"
        except FileNotFoundError:
            pass
    return None


def _read_params(path: Path) -> dict:
    """The mapping in the params file ``path`` (``{}`` if empty); ConfigError naming the file if not."""
    try:
        raw = read_yaml(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


_DEFAULTS_CACHE: dict[tuple, dict] = {}


def _defaults_raw() -> tuple[Path | None, dict]:
    """``(path, mapping)`` of :func:`defaults_path` (read once per version of the file; a copy)."""
    path = defaults_path()
    if path is None:
        return None, {}
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _DEFAULTS_CACHE:
        _DEFAULTS_CACHE.clear()
        _DEFAULTS_CACHE[key] = _read_params(path)
    return path, copy.deepcopy(_DEFAULTS_CACHE[key])


def _complete(path: Path, raw: dict) -> dict:
    """``raw``, read from ``path``, deep-merged over the project's params.yaml, unless it is that file."""
    base_path, base = _defaults_raw()
    if base_path is None or path.resolve() == base_path.resolve():
        return raw
    return deep_merge(base, raw)


def _section_keys(cls: type = None, prefix: str = "") -> dict[type, str]:
    """``{section class: its dotted key}`` of every section under ``Params`` (``Params``: "")."""
    cls = cls or Params
    out = {cls: prefix}
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            for sub, key in _section_keys(tp, f"{prefix}.{name}" if prefix else name).items():
                if sub in out:
                    raise TypeError(f"{sub.__name__} is the type of both {out[sub]} and {key}")
                out[sub] = key
    return out


def defaults(cls: type | None = None, /, **overrides: Any) -> Any:
    """The project's params.yaml as a :class:`Params`, or one section of it, with ``overrides``.

    ``defaults()`` is the project's params (:func:`defaults_path`);
    ``defaults(train_cam={"epochs": 1})`` the same with one key changed;
    ``defaults(SuperpixelConfig, method="felzenszwalb", slic={"n_segments": 12})`` the section
    ``superpixels`` (found by its class) with two keys changed. A mapping is deep-merged (only
    the keys it names change); a section object replaces its section whole. Validated as by
    :func:`load`. For tests, benchmarks and scripts: "the project's values, but ...".
    """
    cls = cls or Params
    keys = _section_keys()
    if cls not in keys:
        raise TypeError(f"{cls!r} is not a section of Params")
    path, raw = _defaults_raw()
    if path is None:
        raise ConfigError(f"no params.yaml in {Path.cwd()} or any parent folder: nothing to take values from")
    for part in keys[cls].split(".") if keys[cls] else ():
        raw = raw.get(part) if isinstance(raw, dict) else None
    over = {k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in overrides.items()}
    try:
        _load_plugins(_defaults_raw()[1] if cls is not Params else deep_merge(raw, over), path.parent)
        return from_dict(cls, deep_merge(raw if isinstance(raw, dict) else {}, over), keys[cls])
    except ConfigError as e:
        raise ConfigError(f"{path}{' with overrides' if overrides else ''}: {e}") from None


def _load_plugins(raw: dict, root: Path) -> None:
    """Import the files that ``raw``'s ``plugins`` lists (relative to ``root``), so that their
    table entries are known before the params are checked."""
    from .registry import load_plugins

    files = raw.get("plugins") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"plugins: expected a list of Python files, got {files!r}")
    try:
        load_plugins(files, root)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None


def load(path: str | Path | None = None, overrides: dict | None = None) -> Params:
    """Load and validate a params file, completed from the project's params.yaml, then ``overrides``.

    ``path`` defaults to ``<project_root()>/params.yaml``. The project's own params.yaml
    (:func:`defaults_path`) is loaded as it is: a key it lacks is a ConfigError naming the
    key. Any other file may be partial: it is deep-merged over the project's params.yaml.
    ``overrides`` is a nested mapping such as ``{"superpixels": {"slic": {"n_segments": 50}}}``,
    deep-merged last.
    """
    path = Path(path) if path is not None else project_root() / "params.yaml"
    merged = deep_merge(_complete(path, _read_params(path)), overrides or {})
    try:
        _load_plugins(merged, path.parent)
        params = from_dict(Params, merged)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return params


# --------------------------------------------------------------------------- presets
def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """``[(dotted key, value), ...]`` of every non-mapping value in ``tree``."""
    out = []
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out += _leaves(v, key) if isinstance(v, dict) and v else [(key, v)]
    return out


def read_preset(preset: str | Path) -> dict:
    """The overlay mapping of a preset file (``presets/voc.yaml``), ConfigError if unreadable."""
    path = Path(preset)
    try:
        raw = read_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: preset file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def apply_preset(preset: str | Path, params: str | Path = "params.yaml") -> Params:
    """Write the keys of ``preset`` into the params file ``params`` (comments and order kept).

    The merged result is validated first (unknown keys and bad values name the preset
    file and the key); only then is ``params`` replaced, atomically. Returns the new params.
    """
    import io as _io

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    from .io import write_text

    over, path = read_preset(preset), Path(params)
    try:
        merged = deep_merge(_complete(path, _read_params(path)), over)
        result = from_dict(Params, merged)
    except ConfigError as e:
        raise ConfigError(f"{preset}: {e}") from None
    rt = YAML()  # round trip: comments, order and flow style survive
    rt.width = 4096
    doc = rt.load(path.read_text())
    for key, value in _leaves(over):
        *parents, last = key.split(".")
        node = doc
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = CommentedMap()
            node = node[p]
        old = node.get(last)
        if isinstance(value, list):
            seq = CommentedSeq(value)
            if not isinstance(old, CommentedSeq) or old.fa.flow_style():
                seq.fa.set_flow_style()
            value = seq
        node[last] = value
    buf = _io.StringIO()
    rt.dump(doc, buf)
    write_text(path, buf.getvalue())
    return result


def set_args(preset: str | Path) -> list[str]:
    """``["-S", "data.dataset=voc", ...]``: the preset as ``dvc exp run`` arguments."""
    def text(v: Any) -> str:  # YAML flow without spaces, so `$(...)` in a shell keeps each word whole
        if isinstance(v, list):
            return "[" + ",".join(text(x) for x in v) + "]"
        return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()

    out = []
    for key, value in _leaves(read_preset(preset)):
        out += ["-S", f"{key}={text(value)}"]
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m sslib.config check`` / ``preset FILE [--as-set-args]``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m sslib.config", description="Check params.yaml or apply a preset.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate params.yaml")
    c.add_argument("--params", default="params.yaml")
    p = sub.add_parser("preset", help="write a preset's keys into params.yaml (comments kept)")
    p.add_argument("preset")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--as-set-args", action="store_true",
                   help="print the preset as `dvc exp run -S key=value` arguments instead")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "check":
            load(args.params)
            print(f"{args.params}: ok")
        elif args.as_set_args:
            print(" ".join(set_args(args.preset)))  # words without spaces: fit for `$(...)`
        else:
            apply_preset(args.preset, args.params)
            print(f"{args.params}: applied {args.preset} (`git diff {args.params}` shows what changed)",
                  file=sys.stderr)
    except ConfigError as e:
        print(f"config: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
