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
    "AugmentConfig", "load", "from_dict", "to_dict", "project_root", "deep_merge",
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
class Params:
    """The whole of params.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    superpixels: SuperpixelConfig = field(default_factory=SuperpixelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


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
