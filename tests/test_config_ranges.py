"""params.yaml ranges and YAML 1.2 floats: every numeric key declares its range, and a
value outside it (or a YAML float PyYAML would read as a string) is handled on load."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml

from sslib import config, notebook
from sslib.config import ConfigError, Params, VariantConfig


def write_text(tmp_path: Path, text: str) -> Path:
    """A params file written as text, as a user or DVC writes it (not through safe_dump)."""
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def load_with(tmp_path: Path, overrides: dict) -> Params:
    return config.load(write_text(tmp_path, "{}\n"), overrides=overrides)


def nested(dotted: str, value: Any) -> dict:
    """``"a.b.c", v`` -> ``{"a": {"b": {"c": v}}}``."""
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


# --------------------------------------------------------------------------- YAML 1.2 floats
def test_read_yaml_reads_exponent_floats_without_touching_safe_load():
    got = config.read_yaml("a: 1e-3\nb: 1e-05\nc: 1e6\nd: 2e-4\ne: 1\nf: 1.5\ng: .inf\nh: 1e\n")
    assert got == {"a": 1e-3, "b": 1e-05, "c": 1e6, "d": 2e-4, "e": 1, "f": 1.5, "g": math.inf, "h": "1e"}
    assert [type(got[k]) for k in "abcdefgh"] == [float, float, float, float, int, float, float, str]
    assert config.read_yaml("x: e5\ny: .nan\nz: 1.0\n")["x"] == "e5"
    assert math.isnan(config.read_yaml("y: .nan")["y"])
    assert type(config.read_yaml("z: 1.0")["z"]) is float
    # no global mutation: PyYAML's own SafeLoader still follows YAML 1.1
    assert yaml.safe_load("a: 1e-3\n") == {"a": "1e-3"}


def test_load_reads_floats_as_dvc_writes_them(tmp_path):
    p = write_text(tmp_path, "train_cam:\n  weight_decay: 1e-05\n  lr: 2e-4\n"
                             "superpixels:\n  slic:\n    compactness: 1e6\n")
    params = config.load(p)
    assert (params.train_cam.weight_decay, params.train_cam.lr, params.superpixels.slic.compactness) == (1e-05, 2e-4, 1e6)
    assert all(isinstance(x, float) for x in (params.train_cam.weight_decay, params.train_cam.lr))


def test_notebook_run_parameters_read_exponent_floats(monkeypatch):
    seen = {}

    def fake_run(source, output, parameters):
        seen.update(parameters)
        return Path("out.ipynb")

    monkeypatch.setattr(notebook, "run", fake_run)
    assert notebook.main(["run", "x.py", "-y", "train_cam: {lr: 1e-3}"]) == 0
    assert seen == {"train_cam": {"lr": 1e-3}} and isinstance(seen["train_cam"]["lr"], float)


# --------------------------------------------------------------------------- range probes
@pytest.mark.parametrize("text, key", [
    ("ssc: {align_threshold: 1.5}", "ssc.align_threshold"),
    ("ssc: {align_threshold: -0.5}", "ssc.align_threshold"),
    ("train_cam: {classifier_lr_mult: -1.0}", "train_cam.classifier_lr_mult"),
    ("train_cam: {momentum: -1}", "train_cam.momentum"),
    ("train_cam: {decoder_betas: [1.5, 0.999]}", "train_cam.decoder_betas"),
    ("augment: {crop_size: 100}", "augment.crop_size"),
    ("train_cam: {lr: .nan}", "train_cam.lr"),
    ("train_cam: {lr: .inf}", "train_cam.lr"),
    ("variants: {ssc: {align_threshold: 2}}", "variants.ssc.align_threshold"),
    ("variants: {+asm: {beta_align: -1e-3}}", "variants.+asm.beta_align"),
    ("eval_cam: {thresholds: [0.5, 0.2, 0.05]}", "eval_cam.thresholds"),
    ("eval_cam: {thresholds: [0.05, 0.95, 0.0]}", "eval_cam.thresholds"),
])
def test_out_of_range_value_names_the_key(tmp_path, text, key):
    p = write_text(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: {key}")


def test_range_message_form(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_with(tmp_path, {"train_cam": {"momentum": -1}})
    assert str(e.value).endswith("train_cam.momentum: must lie in [0, 1), got -1.0")
    with pytest.raises(ConfigError) as e:
        load_with(tmp_path, {"augment": {"crop_size": 100}})
    assert str(e.value).endswith("augment.crop_size: must be >= 16 and a multiple of 16, got 100")
    with pytest.raises(ConfigError) as e:
        load_with(tmp_path, {"train_cam": {"decoder_betas": [1.5, 0.999]}})
    assert str(e.value).endswith("train_cam.decoder_betas[0]: must lie in [0, 1), got 1.5")


# --------------------------------------------------------------------------- every numeric key has a range
def _numeric(tp: Any) -> tuple[type, bool] | None:
    """``(int or float, is_list)`` for a numeric annotation (also a union arm), else None."""
    if tp in (int, float):
        return tp, False
    if get_origin(tp) is list and get_args(tp)[0] in (int, float):
        return get_args(tp)[0], True
    if get_origin(tp) in (typing.Union, types.UnionType):
        arms = [a for a in get_args(tp) if a in (int, float)]
        return (arms[0], False) if arms else None
    return None


def _numeric_fields(cls: type, prefix: str) -> list[tuple[str, dataclasses.Field, type, bool]]:
    """Every numeric field of dataclass ``cls`` and its nested sections: (dotted key, field, kind, is_list)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _numeric_fields(tp, key)
        elif (kind := _numeric(tp)) is not None:
            out.append((key, f, *kind))
    return out


NUMERIC = _numeric_fields(Params, "")


def _just_outside(rng: config.Range, kind: type, default: Any) -> list[Any]:
    """Values just outside each bound of ``rng`` (and off its step), for a field of ``kind``."""
    down = (lambda x: x - 1) if kind is int else (lambda x: math.nextafter(x, -math.inf))
    up = (lambda x: x + 1) if kind is int else (lambda x: math.nextafter(x, math.inf))
    bad = []
    if rng.ge is not None:
        bad.append(down(rng.ge))
    if rng.gt is not None:
        bad.append(rng.gt)
    if rng.le is not None:
        bad.append(up(rng.le))
    if rng.lt is not None:
        bad.append(rng.lt)
    if rng.multiple_of is not None and rng.multiple_of > 1:
        bad.append(default + 1)
    return [kind(x) for x in bad]


def test_the_walk_finds_the_numeric_keys():
    keys = {k for k, *_ in NUMERIC}
    assert {"train_cam.momentum", "train_cam.decoder_betas", "augment.crop_size", "ssc.align_threshold",
            "superpixels.slic.compactness", "model.frozen_stages", "synthetic.scale_range"} <= keys
    assert len(keys) >= 40


@pytest.mark.parametrize("key, f, kind, is_list", NUMERIC, ids=[k for k, *_ in NUMERIC])
def test_every_numeric_key_has_a_range_that_is_enforced(tmp_path, key, f, kind, is_list):
    rng = f.metadata.get("range")
    assert isinstance(rng, config.Range), f"{key}: declare its range with config.num(...)"
    default = getattr(config.defaults(), key.split(".")[0])
    for part in key.split(".")[1:]:
        default = getattr(default, part)
    sample = default[0] if is_list else default
    if not isinstance(sample, (int, float)):  # e.g. model.frozen_stages: "auto"
        sample = next(x for x in range(-1000, 1000) if rng.contains(x))
    bad_values = _just_outside(rng, kind, sample)
    if kind is float:
        bad_values += [math.nan, math.inf]
    assert bad_values, f"{key}: a range with no bound"
    for bad in bad_values:
        value = [bad, *default[1:]] if is_list else bad
        with pytest.raises(ConfigError) as e:
            load_with(tmp_path, nested(key, value))
        assert f"{key}[0]: must" in str(e.value) if is_list else f"{key}: must" in str(e.value)


VARIANT_NUMERIC = _numeric_fields(VariantConfig, "")


@pytest.mark.parametrize("name, f, kind, is_list", VARIANT_NUMERIC, ids=[k for k, *_ in VARIANT_NUMERIC])
def test_variant_overrides_are_range_checked(tmp_path, name, f, kind, is_list):
    rng = f.metadata["range"]
    for bad in _just_outside(rng, kind, getattr(config.defaults().ssc, name)):
        with pytest.raises(ConfigError, match=rf"variants\.cam\.{name}: must"):
            load_with(tmp_path, {"variants": {"cam": {name: bad}}})


# --------------------------------------------------------------------------- weights outside data/
@pytest.mark.parametrize("key, path", [
    ("model.backbone_weights", "data/weights/resnet50-0676ba61.pth"),
    ("model.backbone_weights", "./data/resnet50-0676ba61.pth"),
    ("model.vgg_weights", "data/weights/vgg19-dcbb9e9d.pth"),
])
def test_weights_inside_data_are_rejected(tmp_path, key, path):
    with pytest.raises(ConfigError) as e:
        load_with(tmp_path, nested(key, path))
    msg = str(e.value)
    assert f"{key}: " in msg and "weights/" in msg and "data/" in msg


def test_weights_outside_data_pass_the_config_check(tmp_path):
    # the file need not exist at config load; it is only read when the network is built
    params = load_with(tmp_path, {"model": {"backbone_weights": "weights/x.pth",
                                            "vgg_weights": "weights/vgg19-dcbb9e9d.pth"}})
    assert params.model.backbone_weights == "weights/x.pth"
    assert load_with(tmp_path, {"model": {"backbone_weights": "none"}}).model.backbone_weights == "none"
