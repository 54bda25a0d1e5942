"""params.yaml: the one source of configuration, typed and validated on load.

Every section is a dataclass. :func:`load` reads ``params.yaml``, deep-merges it
over the defaults below (so a partial file, or papermill's ``-p section {...}``
which replaces a nested section whole, still yields a complete config), and
checks every key and type. A wrong type or an unknown key raises
:class:`ConfigError` naming the dotted key, e.g. ``superpixels.slic.n_segment``.

Notebooks receive their sections through :func:`load` as well, so running a
notebook by hand and running it from ``dvc repro`` see the same values.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

__all__ = [
    "ConfigError", "Params", "DataConfig", "SyntheticConfig", "SuperpixelConfig",
    "AugmentConfig", "ModelConfig", "CamConfig", "EvaluateConfig", "VariantConfig", "TrainConfig", "variant_config", "thresholds_from", "load", "from_dict", "to_dict", "project_root", "deep_merge",
]


class ConfigError(ValueError):
    """A parameter has the wrong type, an unknown key, or a bad value."""


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

    seed: int = 0
    out_dir: str = "artifacts/synthetic"
    n_train: int = 240
    n_val: int = 80
    #: side of the square images in pixels
    image_size: int = 128
    #: probability that an object is shown in its class's preferred context
    context_prob: float = 0.85
    min_objects: int = 1
    max_objects: int = 3
    #: object size as a fraction of the image side (min, max)
    scale_range: list[float] = field(default_factory=lambda: [0.22, 0.42])
    #: JPEG quality of the written images
    jpeg_quality: int = 95


@dataclass
class SlicConfig:
    n_segments: int = 100
    compactness: float = 10.0
    sigma: float = 1.0


@dataclass
class FelzenszwalbConfig:
    scale: float = 100.0
    sigma: float = 0.8
    min_size: int = 30


@dataclass
class SuperpixelConfig:
    """Superpixel precomputation (scikit-image)."""

    method: Literal["slic", "felzenszwalb"] = "slic"
    out_dir: str = "artifacts/superpixels"
    #: split names whose images get superpixels
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    #: worker processes; 0 = one per core
    workers: int = 0
    slic: SlicConfig = field(default_factory=SlicConfig)
    felzenszwalb: FelzenszwalbConfig = field(default_factory=FelzenszwalbConfig)


@dataclass
class AugmentConfig:
    """Training augmentation (IRN/SSC): random long-side resize, flip, crop."""

    resize_long: list[int] = field(default_factory=lambda: [96, 192])
    hflip: bool = True
    crop_size: int = 128


@dataclass
class ModelConfig:
    """The CAM network (ResNet-50, output stride 16) and the VGG-19 of the perceptual loss.

    Weights are torchvision's ImageNet state-dict files on local disk (nothing is
    downloaded). ``"none"`` is an explicit choice of random initialisation; a path
    that does not exist stops the run with a message saying where to put the file.
    """

    #: torchvision ResNet-50 state dict (e.g. data/weights/resnet50-0676ba61.pth) or "none"
    backbone_weights: str = "none"
    #: torchvision VGG-19 state dict (e.g. data/weights/vgg19-dcbb9e9d.pth) or "none"
    vgg_weights: str = "none"
    #: ResNet stages (0..2) that get no gradient (IRN/SSC: 2, the stem and layer1..2 are
    #: fixed). "auto": 2 with ImageNet weights, 0 without (fixed random features learn nothing)
    frozen_stages: int | Literal["auto"] = "auto"
    #: BatchNorm always uses its stored statistics, never batch statistics (IRN/SSC: true;
    #: as there, BN affine weights of the trained stages still learn). "auto": true with
    #: ImageNet weights, false without (random-init statistics are meaningless)
    bn_eval: bool | Literal["auto"] = "auto"


@dataclass
class VariantConfig:
    """What one ablation variant switches on; ``variants.<name>`` overrides ``ssc``."""

    #: DRS suppression min(x, delta * max_hw(x)); 0 = off (plain CAM)
    drs_delta: float = 0.55
    #: CAM-driven reconstruction: decoder from the CAM logits + reconstruction loss
    reconstruction: bool = True
    rec_loss: Literal["perceptual", "l1", "l2"] = "perceptual"
    beta_rec: float = 1.0
    #: activation self-modulation: superpixel alignment loss
    alignment: bool = True
    beta_align: float = 1.0
    align_threshold: float = 0.3
    align_erosion: int = 8
    #: epochs at the start without the alignment loss
    warmup_epochs: int = 2


@dataclass
class TrainConfig:
    """CAM-network training (``train_cam`` stage), shared by every variant and seed."""

    out_dir: str = "artifacts/train_cam"
    #: the variants (keys of ``variants``) and seeds the pipeline trains
    variants: list[str] = field(default_factory=lambda: ["cam", "baseline", "+crm", "+asm", "ssc"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 10
    batch_size: int = 6
    #: SGD, poly schedule: backbone lr; the classifier gets lr * classifier_lr_mult
    lr: float = 0.1
    classifier_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    #: the official code passes the weight decay where SGD's momentum goes (so 1e-4);
    #: 0.0 is that behaviour to within 1e-4, 0.9 what IRN's optimizer meant
    momentum: float = 0.0
    poly_power: float = 0.9
    #: decoder: Adam with the same poly schedule
    decoder_lr: float = 5e-4
    decoder_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    #: DataLoader worker processes
    num_workers: int = 0
    #: devices to train on: 1 = this process; > 1 = DDP via torchrun (one process each)
    devices: int = 1
    #: mixed precision on CUDA (ignored on the CPU)
    amp: bool = True
    #: stop when a loss turns NaN or infinite (the last good checkpoint is kept)
    stop_on_nonfinite: bool = True


@dataclass
class CamConfig:
    """CAM inference (``eval_cam`` stage): IRN's multi-scale, flipped CAMs (:mod:`sslib.cam`)."""

    #: CAM files go to <out_dir>/<variant>/seed<seed>/<split>/<name>.npz
    out_dir: str = "artifacts/cams"
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    flip: bool = True
    #: images per forward (only images of equal size are batched)
    batch_size: int = 8
    #: splits whose CAMs are made and evaluated (train = pseudo-label quality)
    splits: list[str] = field(default_factory=lambda: ["train", "val"])


@dataclass
class EvaluateConfig:
    """Background-threshold sweep of the CAMs (:mod:`sslib.evaluate`)."""

    #: [start, stop, step] of the swept background thresholds
    thresholds: list[float] = field(default_factory=lambda: [0.05, 0.95, 0.05])
    #: the one threshold used for every variant in the ablation table (SSC's cam_eval_thres: 0.2)
    fixed_threshold: float = 0.2


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
    """Range checks that a type alone cannot express."""
    s = p.synthetic

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    need(s.seed >= 0, "synthetic.seed", "must be >= 0")
    need(s.n_train > 0, "synthetic.n_train", "must be > 0")
    need(s.n_val > 0, "synthetic.n_val", "must be > 0")
    need(s.image_size >= 32, "synthetic.image_size", "must be >= 32")
    need(0.0 <= s.context_prob <= 1.0, "synthetic.context_prob", "must lie in [0, 1]")
    need(1 <= s.min_objects <= s.max_objects, "synthetic.min_objects",
         "need 1 <= min_objects <= max_objects")
    need(len(s.scale_range) == 2 and 0 < s.scale_range[0] <= s.scale_range[1] <= 1,
         "synthetic.scale_range", "need [min, max] with 0 < min <= max <= 1")
    need(1 <= s.jpeg_quality <= 100, "synthetic.jpeg_quality", "must lie in [1, 100]")
    sp = p.superpixels
    need(sp.workers >= 0, "superpixels.workers", "must be >= 0")
    need(sp.slic.n_segments >= 1, "superpixels.slic.n_segments", "must be >= 1")
    need(sp.felzenszwalb.scale > 0, "superpixels.felzenszwalb.scale", "must be > 0")
    need(len(sp.splits) >= 1, "superpixels.splits", "name at least one split")
    d = p.data
    if d.dataset == "synthetic":
        need(Path(d.root) == Path(s.out_dir), "data.root",
             f"with data.dataset = synthetic it must equal synthetic.out_dir ({s.out_dir!r}), got {d.root!r}")
    need(d.sbd_root == "" or d.dataset == "voc", "data.sbd_root", "is only used with data.dataset = voc")
    a = p.augment
    need(len(a.resize_long) == 2 and 0 < a.resize_long[0] <= a.resize_long[1],
         "augment.resize_long", "need [min, max] with 0 < min <= max")
    need(a.crop_size > 0, "augment.crop_size", "must be > 0")
    m = p.model
    need(m.frozen_stages == "auto" or 0 <= m.frozen_stages <= 2, "model.frozen_stages",
         "must be 0, 1, 2 or auto")
    t = p.train
    need(len(t.variants) >= 1, "train.variants", "name at least one variant")
    for name in t.variants:
        need(name in p.variants, "train.variants", f"{name!r} is not defined under variants")
    need(len(set(t.variants)) == len(t.variants), "train.variants", "lists a variant twice")
    need(len(t.seeds) >= 1 and len(set(t.seeds)) == len(t.seeds), "train.seeds",
         "name at least one seed, each once")
    need(t.epochs >= 1, "train.epochs", "must be >= 1")
    need(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(t.lr > 0 and t.decoder_lr > 0, "train.lr", "learning rates must be > 0")
    need(len(t.decoder_betas) == 2, "train.decoder_betas", "need [beta1, beta2]")
    need(t.devices >= 1, "train.devices", "must be >= 1")
    need(t.num_workers >= 0, "train.num_workers", "must be >= 0")
    c = p.cam
    need(len(c.scales) >= 1 and all(x > 0 for x in c.scales), "cam.scales", "name at least one scale, each > 0")
    need(len(c.splits) >= 1, "cam.splits", "name at least one split")
    need(c.batch_size >= 1, "cam.batch_size", "must be >= 1")
    e = p.evaluate
    need(len(e.thresholds) == 3 and 0 <= e.thresholds[0] <= e.thresholds[1] <= 1 and e.thresholds[2] > 0,
         "evaluate.thresholds", "need [start, stop, step] with 0 <= start <= stop <= 1 and step > 0")
    need(any(abs(t - e.fixed_threshold) < 1e-6 for t in thresholds_from(*e.thresholds)),
         "evaluate.fixed_threshold", f"must be one of the swept thresholds {thresholds_from(*e.thresholds)}")
    for name in p.variants:
        v = variant_config(p, name)
        need(0 <= v.drs_delta <= 1, f"variants.{name}.drs_delta", "must lie in [0, 1]")
        need(v.align_erosion >= 1, f"variants.{name}.align_erosion", "must be >= 1")
        need(v.warmup_epochs >= 0, f"variants.{name}.warmup_epochs", "must be >= 0")


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


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
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
        raw = yaml.safe_load(path.read_text()) or {}
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
