"""params.yaml: the one source of configuration, typed and validated on load.

Every section is a dataclass. :func:`load` reads ``params.yaml``, deep-merges it
over the defaults below (so a partial file, or papermill's ``-p section {...}``
which replaces a nested section whole, still yields a complete config), and
checks every key, type and range. A wrong type, an unknown key or a value out of
range raises :class:`ConfigError` naming the dotted key, e.g.
``superpixels.slic.n_segment: unknown key`` or ``train.momentum: must lie in [0, 1), got -1.0``.

Every numeric field declares its range with :func:`num`; the generic loader
(:func:`from_dict`) checks it, so each section validates itself. Rules that tie
several fields together live in ``_check_values``. YAML is read by :func:`read_yaml`
(YAML 1.2 floats, so ``1e-05`` as DVC writes it is a number, not a string).

Notebooks receive their sections through :func:`load` as well, so running a
notebook by hand and running it from ``dvc repro`` see the same values.
"""
from __future__ import annotations

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
    "AugmentConfig", "ModelConfig", "CamConfig", "EvaluateConfig", "VariantConfig", "TrainConfig", "variant_config", "thresholds_from", "load", "from_dict", "to_dict", "project_root", "deep_merge",
    "Range", "num", "read_yaml",
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


def num(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None, multiple_of: int | None = None) -> Any:
    """A dataclass field for a number (or a list of numbers) with its allowed range.

    For a list default the range applies to each element. :func:`from_dict` checks it
    and names the key, e.g. ``train.decoder_betas[0]: must lie in [0, 1), got 1.5``.
    """
    meta = {"range": Range(ge=ge, gt=gt, le=le, lt=lt, multiple_of=multiple_of)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    """Which data set the pipeline reads, and where it lives."""

    dataset: Literal["synthetic", "voc", "coco"] = "synthetic"
    #: data-set root in its own layout (VOC2012 folder, COCO folder, or the synthetic output)
    root: str = "artifacts/synthetic"
    #: SBD's ``dataset`` folder (cls/, inst/, train.txt, val.txt); VOC only, "" = not used
    sbd_root: str = ""
    #: output of the ``prepare`` stage: label cache, split lists, SegmentationClassAug
    prepared_dir: str = "artifacts/prepared"
    train_split: str = "train"
    val_split: str = "val"


@dataclass
class SyntheticConfig:
    """The procedurally generated "context" data set (VOC layout)."""

    seed: int = num(0, ge=0)
    out_dir: str = "artifacts/synthetic"
    n_train: int = num(240, ge=1)
    n_val: int = num(80, ge=1)
    #: side of the square images in pixels
    image_size: int = num(128, ge=32)
    #: probability that an object is shown in its class's preferred context
    context_prob: float = num(0.85, ge=0, le=1)
    min_objects: int = num(1, ge=1)
    max_objects: int = num(3, ge=1)
    #: object size as a fraction of the image side (min, max)
    scale_range: list[float] = num([0.22, 0.42], gt=0, le=1)
    #: JPEG quality of the written images
    jpeg_quality: int = num(95, ge=1, le=100)


@dataclass
class SlicConfig:
    n_segments: int = num(100, ge=1)
    compactness: float = num(10.0, gt=0)
    sigma: float = num(1.0, ge=0)


@dataclass
class FelzenszwalbConfig:
    scale: float = num(100.0, gt=0)
    sigma: float = num(0.8, ge=0)
    min_size: int = num(30, ge=1)


@dataclass
class SuperpixelConfig:
    """Superpixel precomputation (scikit-image)."""

    method: Literal["slic", "felzenszwalb"] = "slic"
    out_dir: str = "artifacts/superpixels"
    #: split names whose images get superpixels
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    #: worker processes; 0 = one per core
    workers: int = num(0, ge=0)
    slic: SlicConfig = field(default_factory=SlicConfig)
    felzenszwalb: FelzenszwalbConfig = field(default_factory=FelzenszwalbConfig)


@dataclass
class AugmentConfig:
    """Training augmentation (IRN/SSC): random long-side resize, flip, crop."""

    resize_long: list[int] = num([96, 192], gt=0)
    hflip: bool = True
    #: a multiple of 16: the CAM network has output stride 16 and the decoder upsamples 16x
    crop_size: int = num(128, ge=16, multiple_of=16)


@dataclass
class ModelConfig:
    """The CAM network (ResNet-50, output stride 16) and the VGG-19 of the perceptual loss.

    Weights are torchvision's ImageNet state-dict files on local disk (nothing is
    downloaded), kept under ``weights/`` at the project root (gitignored). Not under
    ``data/``: DVC tracks that folder as a whole (data.dvc), so a file there would be
    swallowed into it; such a path is rejected on load. ``"none"`` is an explicit choice
    of random initialisation; a path that does not exist stops the run with a message
    saying where to put the file.
    """

    #: torchvision ResNet-50 state dict (e.g. weights/resnet50-0676ba61.pth) or "none"
    backbone_weights: str = "none"
    #: torchvision VGG-19 state dict (e.g. weights/vgg19-dcbb9e9d.pth) or "none"
    vgg_weights: str = "none"
    #: ResNet stages (0..2) that get no gradient (IRN/SSC: 2, the stem and layer1..2 are
    #: fixed). "auto": 2 with ImageNet weights, 0 without (fixed random features learn nothing)
    frozen_stages: int | Literal["auto"] = num("auto", ge=0, le=2)
    #: BatchNorm always uses its stored statistics, never batch statistics (IRN/SSC: true;
    #: as there, BN affine weights of the trained stages still learn). "auto": true with
    #: ImageNet weights, false without (random-init statistics are meaningless)
    bn_eval: bool | Literal["auto"] = "auto"


@dataclass
class VariantConfig:
    """What one ablation variant switches on; ``variants.<name>`` overrides ``ssc``."""

    #: DRS suppression min(x, delta * max_hw(x)); 0 = off (plain CAM)
    drs_delta: float = num(0.55, ge=0, le=1)
    #: CAM-driven reconstruction: decoder from the CAM logits + reconstruction loss
    reconstruction: bool = True
    rec_loss: Literal["perceptual", "l1", "l2"] = "perceptual"
    beta_rec: float = num(1.0, ge=0)
    #: activation self-modulation: superpixel alignment loss
    alignment: bool = True
    beta_align: float = num(1.0, ge=0)
    align_threshold: float = num(0.3, ge=0, le=1)
    align_erosion: int = num(8, ge=1)
    #: epochs at the start without the alignment loss
    warmup_epochs: int = num(2, ge=0)


@dataclass
class TrainConfig:
    """CAM-network training (``train_cam`` stage), shared by every variant and seed."""

    out_dir: str = "artifacts/train_cam"
    #: the variants (keys of ``variants``) and seeds the pipeline trains
    variants: list[str] = field(default_factory=lambda: ["cam", "baseline", "+crm", "+asm", "ssc"])
    seeds: list[int] = num([0, 1, 2], ge=0)
    epochs: int = num(10, ge=1)
    batch_size: int = num(6, ge=1)
    #: SGD, poly schedule: backbone lr; the classifier gets lr * classifier_lr_mult
    lr: float = num(0.1, gt=0)
    classifier_lr_mult: float = num(10.0, gt=0)
    weight_decay: float = num(1e-4, ge=0)
    #: the official code passes the weight decay where SGD's momentum goes (so 1e-4);
    #: 0.0 is that behaviour to within 1e-4, 0.9 what IRN's optimizer meant
    momentum: float = num(0.0, ge=0, lt=1)
    poly_power: float = num(0.9, ge=0)
    #: decoder: Adam with the same poly schedule
    decoder_lr: float = num(5e-4, gt=0)
    decoder_betas: list[float] = num([0.5, 0.999], ge=0, lt=1)
    #: DataLoader worker processes
    num_workers: int = num(0, ge=0)
    #: devices to train on: 1 = this process; > 1 = DDP via torchrun (one process each)
    devices: int = num(1, ge=1)
    #: mixed precision on CUDA (ignored on the CPU)
    amp: bool = True
    #: stop when a loss turns NaN or infinite (the last good checkpoint is kept)
    stop_on_nonfinite: bool = True


@dataclass
class CamConfig:
    """CAM inference (``eval_cam`` stage): IRN's multi-scale, flipped CAMs (:mod:`sslib.cam`)."""

    #: CAM files go to <out_dir>/<variant>/seed<seed>/<split>/<name>.npz
    out_dir: str = "artifacts/cams"
    scales: list[float] = num([1.0, 0.5, 1.5, 2.0], gt=0)
    flip: bool = True
    #: images per forward (only images of equal size are batched)
    batch_size: int = num(8, ge=1)
    #: splits whose CAMs are made and evaluated (train = pseudo-label quality)
    splits: list[str] = field(default_factory=lambda: ["train", "val"])


@dataclass
class EvaluateConfig:
    """Background-threshold sweep of the CAMs (:mod:`sslib.evaluate`)."""

    #: [start, stop, step] of the swept background thresholds
    thresholds: list[float] = num([0.05, 0.95, 0.05], ge=0, le=1)
    #: the one threshold used for every variant in the ablation table (SSC's cam_eval_thres: 0.2)
    fixed_threshold: float = num(0.2, ge=0, le=1)


@dataclass
class Params:
    """The whole of params.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    superpixels: SuperpixelConfig = field(default_factory=SuperpixelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    #: defaults of every variant (the full SSC method)
    ssc: VariantConfig = field(default_factory=VariantConfig)
    #: ablation variants: name -> overrides of ``ssc`` (checked as VariantConfig)
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "cam": {"drs_delta": 0.0, "reconstruction": False, "alignment": False},
        "baseline": {"reconstruction": False, "alignment": False},
        "+crm": {"alignment": False},
        "+asm": {"reconstruction": False},
        "ssc": {},
    })


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


def _check_values(p: Params) -> None:
    """Rules that tie several fields together (single-field ranges are declared with :func:`num`)."""
    s = p.synthetic

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    need(s.min_objects <= s.max_objects, "synthetic.min_objects", "need 1 <= min_objects <= max_objects")
    need(len(s.scale_range) == 2 and s.scale_range[0] <= s.scale_range[1],
         "synthetic.scale_range", "need [min, max] with 0 < min <= max <= 1")
    sp = p.superpixels
    need(len(sp.splits) >= 1, "superpixels.splits", "name at least one split")
    d = p.data
    if d.dataset == "synthetic":
        need(Path(d.root) == Path(s.out_dir), "data.root",
             f"with data.dataset = synthetic it must equal synthetic.out_dir ({s.out_dir!r}), got {d.root!r}")
    need(d.sbd_root == "" or d.dataset == "voc", "data.sbd_root", "is only used with data.dataset = voc")
    a = p.augment
    need(len(a.resize_long) == 2 and a.resize_long[0] <= a.resize_long[1],
         "augment.resize_long", "need [min, max] with 0 < min <= max")
    m = p.model
    for key, value in (("model.backbone_weights", m.backbone_weights), ("model.vgg_weights", m.vgg_weights)):
        parts = Path(value).parts
        need(Path(value).is_absolute() or not parts or parts[0] != "data", key,
             f"{value!r} lies inside data/, which DVC tracks as a whole (data.dvc) and would swallow "
             f"the file; put it under weights/ instead (e.g. weights/{Path(value).name})")
    t = p.train
    need(len(t.variants) >= 1, "train.variants", "name at least one variant")
    for name in t.variants:
        need(name in p.variants, "train.variants", f"{name!r} is not defined under variants")
    need(len(set(t.variants)) == len(t.variants), "train.variants", "lists a variant twice")
    need(len(t.seeds) >= 1 and len(set(t.seeds)) == len(t.seeds), "train.seeds",
         "name at least one seed, each once")
    need(len(t.decoder_betas) == 2, "train.decoder_betas", "need [beta1, beta2]")
    c = p.cam
    need(len(c.scales) >= 1, "cam.scales", "name at least one scale")
    need(len(c.splits) >= 1, "cam.splits", "name at least one split")
    e = p.evaluate
    need(len(e.thresholds) == 3 and e.thresholds[0] <= e.thresholds[1] and e.thresholds[2] > 0,
         "evaluate.thresholds", "need [start, stop, step] with 0 <= start <= stop <= 1 and step > 0")
    need(any(abs(t - e.fixed_threshold) < 1e-6 for t in thresholds_from(*e.thresholds)),
         "evaluate.fixed_threshold", f"must be one of the swept thresholds {thresholds_from(*e.thresholds)}")
    for name in p.variants:
        variant_config(p, name)  # types and ranges of variants.<name>.<key>


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
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys, wrong types and values out of range."""
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
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            full = f"{prefix}.{f.name}" if prefix else f.name
            kwargs[f.name] = _convert(data[f.name], hints[f.name], full)
            _check_range(f, kwargs[f.name], full)
    return cls(**kwargs)


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


def load(path: str | Path | None = None, overrides: dict | None = None) -> Params:
    """Load and validate params.yaml, deep-merged over the defaults and then ``overrides``.

    ``path`` defaults to ``<project_root()>/params.yaml``. ``overrides`` is a nested
    mapping such as ``{"superpixels": {"slic": {"n_segments": 50}}}``.
    """
    path = Path(path) if path is not None else project_root() / "params.yaml"
    try:
        raw = read_yaml(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    merged = deep_merge(to_dict(Params()), raw)
    merged = deep_merge(merged, overrides or {})
    try:
        params = from_dict(Params, merged)
        _check_values(params)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return params
