"""params.yaml loading: values stored once (params.yaml), partial files completed from it, deep
merge, and errors that name the key."""
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from sslib import config
from sslib.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, data) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_repo_params_yaml_is_valid_and_complete():
    params = config.load(ROOT / "params.yaml")
    raw = config.read_yaml((ROOT / "params.yaml").read_text())
    # every section and key the code knows is spelled out in params.yaml
    assert config.deep_merge(config.to_dict(params), raw) == config.to_dict(params)
    assert set(raw) == set(config.to_dict(params))


def _schema_keys(cls: type, prefix: str = "") -> set[str]:
    """Every dotted key the schema declares (a section's fields, not the section itself)."""
    out = set()
    for name, tp in typing.get_type_hints(cls).items():
        key = f"{prefix}.{name}" if prefix else name
        out |= _schema_keys(tp, key) if dataclasses.is_dataclass(tp) else {key}
    return out


def _yaml_keys(raw: dict, cls: type, prefix: str = "") -> set[str]:
    """Every dotted key params.yaml gives a value, walked as deep as the schema's sections go."""
    hints = typing.get_type_hints(cls)
    out = set()
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints.get(name)
        out |= _yaml_keys(value, tp, key) if dataclasses.is_dataclass(tp) and isinstance(value, dict) else {key}
    return out


def test_defaults_are_written_once_in_params_yaml():
    """Defaults are stored once: the schema (sslib/config.py) declares types, ranges and rules
    but no value, and params.yaml gives every key the schema declares a value, and no other key."""
    for cls in config._section_keys():
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
                f"{cls.__name__}.{f.name}: a default in the schema; its value belongs in params.yaml"
    raw = config.read_yaml((ROOT / "params.yaml").read_text())
    schema, values = _schema_keys(config.Params), _yaml_keys(raw, config.Params)
    assert schema - values == set(), "keys of the schema with no value in params.yaml"
    assert values - schema == set(), "keys of params.yaml the schema does not declare"
    # params.yaml validates as it is (nothing completed from anywhere), and reads back unchanged
    assert config.to_dict(config.from_dict(config.Params, raw)) == raw
    assert config.defaults_path() == ROOT / "params.yaml"
    assert config.defaults() == config.load(ROOT / "params.yaml")


def test_a_key_missing_from_the_projects_params_yaml_is_named(tmp_path, monkeypatch):
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text().replace("  classifier_lr_mult: 10.0\n", ""))
    monkeypatch.setattr(config, "defaults_path", lambda: p)  # p is now the project's params.yaml
    with pytest.raises(ConfigError, match=r"params\.yaml: train_cam\.classifier_lr_mult: missing key;"):
        config.load(p)
    sub = tmp_path / "sub"
    sub.mkdir()
    with pytest.raises(ConfigError, match=r"train_cam\.classifier_lr_mult: missing key;"):
        config.load(write(sub, {"train_cam": {"lr": 0.1}}))  # a partial file lacks what the project lacks
    with pytest.raises(ConfigError, match=r"^make_ir_labels\.crf\.iterations: missing key "
                                          r"\(and make_ir_labels\.crf\.gt_prob, make_ir_labels\.crf\.bilateral_compat\);"):
        config.from_dict(config.CRFConfig, {"gauss_sxy": 3.0, "gauss_compat": 3.0, "bilateral_sxy": 50.0,
                                            "bilateral_srgb": 5.0}, "make_ir_labels.crf")


def test_defaults_gives_the_projects_params_or_one_section_with_overrides():
    params = config.defaults()
    assert config.defaults(train_cam={"epochs": 1}) == dataclasses.replace(
        params, train_cam=dataclasses.replace(params.train_cam, epochs=1))
    sp = config.defaults(config.SuperpixelConfig, method="felzenszwalb", slic={"n_segments": 12})
    assert (sp.method, sp.slic.n_segments, sp.slic.compactness) == ("felzenszwalb", 12, params.superpixels.slic.compactness)
    slic = config.SlicConfig(n_segments=4, compactness=1.0, sigma=0.0)
    assert config.defaults(config.SuperpixelConfig, slic=slic).slic == slic  # a section object: taken whole
    assert config.defaults(config.SlicConfig) == params.superpixels.slic  # nested sections too
    with pytest.raises(ConfigError, match=r"superpixels\.slic\.n_segment: unknown key"):
        config.defaults(config.SuperpixelConfig, slic={"n_segment": 3})
    with pytest.raises(ConfigError, match=r"synthetic\.min_objects"):
        config.defaults(config.SyntheticConfig, min_objects=5)
    with pytest.raises(TypeError, match="not a section"):
        config.defaults(config.Range)


def test_sections_are_named_after_their_stage_or_shared():
    from sslib.stages import STAGES

    shared = {"plugins", "data", "synthetic", "superpixels", "augment", "model", "runs", "ssc", "variants"}
    sections = set(config.to_dict(config.defaults()))
    assert sections - shared <= set(STAGES), sections - shared - set(STAGES)


@pytest.mark.parametrize("preset", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_are_valid_overlays(tmp_path, preset):
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text())
    params = config.apply_preset(preset, p)
    over = config.read_preset(preset)
    assert params.data.dataset == over["data"]["dataset"] == preset.stem
    assert config.load(p) == params  # what was written is what was validated
    text = p.read_text()
    assert "# The one source of configuration." in text  # comments kept
    assert "  dataset: " + preset.stem in text
    # the same keys as `dvc exp run -S` arguments, each a single shell word
    args = config.set_args(preset)
    assert args[0] == "-S" and f"data.dataset={preset.stem}" in args
    assert all(" " not in a for a in args)


def test_preset_with_an_unknown_key_changes_nothing(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text())
    before = p.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_cam:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train_cam\.epoch: unknown key"):
        config.apply_preset(bad, p)
    assert p.read_text() == before
    assert config.main(["preset", str(bad), "--params", str(p)]) == 1


def test_preset_cli_writes_params_and_prints_set_args(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text())
    voc = ROOT / "presets" / "voc.yaml"
    assert config.main(["preset", str(voc), "--as-set-args"]) == 0
    assert "-S eval_cam.scales=[1.0,0.5,1.5,2.0]" in capsys.readouterr().out
    assert config.main(["preset", str(voc), "--params", str(p)]) == 0
    assert config.load(p).train_cam.lr == 0.1 and config.load(p).augment.crop_size == 512


def test_partial_file_is_merged_over_the_projects_params_yaml(tmp_path):
    p = write(tmp_path, {"superpixels": {"slic": {"n_segments": 42}}})
    params = config.load(p)
    assert params.superpixels.slic.n_segments == 42
    project = config.load(ROOT / "params.yaml")
    assert params.superpixels.slic.compactness == project.superpixels.slic.compactness
    assert params.superpixels.method == project.superpixels.method
    assert params == config.defaults(superpixels={"slic": {"n_segments": 42}})


def test_overrides_replace_only_the_keys_given(tmp_path):
    p = write(tmp_path, {"synthetic": {"n_train": 10, "seed": 3}})
    params = config.load(p, overrides={"synthetic": {"n_train": 5}})
    assert (params.synthetic.n_train, params.synthetic.seed) == (5, 3)


def test_int_is_accepted_where_float_is_expected(tmp_path):
    params = config.load(write(tmp_path, {"superpixels": {"slic": {"compactness": 20}}}))
    assert params.superpixels.slic.compactness == 20.0
    assert isinstance(params.superpixels.slic.compactness, float)


@pytest.mark.parametrize("data, key", [
    ({"superpixels": {"slic": {"n_segment": 5}}}, "superpixels.slic.n_segment"),
    ({"sythetic": {}}, "sythetic"),
    ({"synthetic": {"n_train": "many"}}, "synthetic.n_train"),
    ({"synthetic": {"n_train": 2.5}}, "synthetic.n_train"),
    ({"augment": {"hflip": "yes"}}, "augment.hflip"),
    ({"superpixels": {"method": "quickshift"}}, "superpixels.method"),
    ({"superpixels": {"splits": "train"}}, "superpixels.splits"),
    ({"augment": {"resize_long": [1, "x"]}}, "augment.resize_long[1]"),
    ({"synthetic": {"context_prob": 1.5}}, "synthetic.context_prob"),
    ({"synthetic": {"min_objects": 4, "max_objects": 3}}, "synthetic.min_objects"),
    ({"data": {"root": "elsewhere"}}, "data.root"),
    ({"data": {"sbd_root": "sbd"}}, "data.sbd_root"),
    ({"superpixels": {"slic": 3}}, "superpixels.slic"),
])
def test_bad_parameter_names_the_key(tmp_path, data, key):
    p = write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    assert key in msg and str(p) in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load(bad)


def test_project_root_walks_up(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    sub = tmp_path / "notebooks" / "deep"
    sub.mkdir(parents=True)
    assert config.project_root(sub) == tmp_path.resolve()


def test_variants_merge_over_ssc_and_are_checked(tmp_path):
    p = write(tmp_path, {"ssc": {"align_erosion": 4}, "variants": {"mine": {"alignment": False}},
                         "runs": {"variants": ["mine", "ssc"], "downstream": {"variants": ["ssc"]}}})
    params = config.load(p)
    v = config.variant_config(params, "mine")
    assert (v.alignment, v.align_erosion, v.reconstruction) == (False, 4, True)
    assert config.variant_config(params, "cam").expansion == "none"  # the defaults stay defined
    with pytest.raises(ConfigError, match=r"variants\.nope: no such variant"):
        config.variant_config(params, "nope")


@pytest.mark.parametrize("data, key", [
    ({"variants": {"ssc": {"beta_recc": 1.0}}}, r"variants\.ssc\.beta_recc: unknown key"),
    ({"variants": {"+asm": {"alignment": "yes"}}}, r"variants\.\+asm\.alignment: expected true or false"),
    ({"runs": {"variants": ["ssc", "typo"], "downstream": {"variants": ["ssc"]}}}, r"runs\.variants: 'typo' is not defined"),
    ({"runs": {"seeds": [0, 0]}}, r"runs\.seeds"),
    ({"model": {"frozen_stages": 10}}, r"model\.frozen_stages"),
    ({"model": {"bn_eval": "sometimes"}}, r"model\.bn_eval"),
    ({"ssc": {"rec_loss": "l3"}}, r"ssc\.rec_loss: 'l3' is not one of"),
])
def test_training_sections_name_the_bad_key(tmp_path, data, key):
    with pytest.raises(ConfigError, match=key):
        config.load(write(tmp_path, data))


@pytest.mark.parametrize("data, key", [
    ({"make_ir_labels": {"bg_threshold": 0.9}}, r"make_ir_labels\.bg_threshold: must be below make_ir_labels\.fg_threshold"),
    ({"make_ir_labels": {"fg_threshold": 0.3}}, r"make_ir_labels\.bg_threshold: must be below"),
    ({"make_ir_labels": {"fg_threshold": 1.0}}, r"make_ir_labels\.fg_threshold: must lie in \(0, 1\)"),
    ({"make_ir_labels": {"bg_threshold": 0}}, r"make_ir_labels\.bg_threshold: must lie in \(0, 1\)"),
    ({"make_ir_labels": {"crf": {"gt_prob": 1.0}}}, r"make_ir_labels\.crf\.gt_prob: must lie in \(0, 1\)"),
    ({"make_ir_labels": {"crf": {"iterations": 0}}}, r"make_ir_labels\.crf\.iterations: must be >= 1"),
    ({"make_ir_labels": {"crf": {"iterations": 2.5}}}, r"make_ir_labels\.crf\.iterations: expected an integer"),
    ({"make_ir_labels": {"crf": {"bilateral_srgb": 0}}}, r"make_ir_labels\.crf\.bilateral_srgb: must be > 0"),
    ({"make_ir_labels": {"crf": {"t": 5}}}, r"make_ir_labels\.crf\.t: unknown key"),
    ({"make_ir_labels": {"threads": 2}}, r"make_ir_labels\.threads: unknown key"),
    ({"train_irn": {"crop_size": 64, "radius": 10}}, r"train_irn\.crop_size: the x0\.25 label of a 64 crop is too small"),
    ({"runs": {"downstream": {"variants": ["cam", "nope"]}}}, r"runs\.downstream\.variants: 'nope' is not in runs\.variants"),
    ({"runs": {"downstream": {"seeds": [0, 0]}}}, r"runs\.downstream\.seeds: name at least one seed, each once"),
    ({"runs": {"downstream": {"variants": []}}}, r"runs\.downstream\.variants: name at least one variant"),
    ({"runs": {"variants": ["cam", "ssc"]}}, r"runs\.downstream\.variants: 'baseline' is not in runs\.variants"),
])
def test_make_ir_labels_and_downstream_name_the_bad_key(tmp_path, data, key):
    p = write(tmp_path, data)
    with pytest.raises(ConfigError, match=key) as e:
        config.load(p)
    assert str(p) in str(e.value)


def test_make_ir_labels_defaults_are_ssc_and_irn():
    from sslib.crf import CRFParams
    from sslib.stages.make_ir_labels import crf_params

    params = config.load(ROOT / "params.yaml")
    c = params.make_ir_labels
    assert (c.fg_threshold, c.bg_threshold) == (0.80, 0.50)  # the synthetic default's broad CAMs (docs/method.md)
    assert crf_params(params) == CRFParams()  # IRN's dense CRF
    for preset in ("voc", "coco"):  # the paper's: IRN's foreground plane, SSC's background plane (IRN: 0.05)
        raw = config.read_yaml((ROOT / "presets" / f"{preset}.yaml").read_text())
        assert raw["make_ir_labels"] == {"fg_threshold": 0.30, "bg_threshold": 0.10}
        assert raw["train_irn"]["epochs"] == 3 and raw["train_irn"]["crop_size"] == 512
        walk = raw["make_pseudo_labels"]["refiners"]["random_walk"]  # IRN's random walk and background score
        assert (walk["exp_times"], walk["bg_threshold"], walk["pad_to"]) == (8, 0.25, 512)
    assert (params.runs.downstream.variants, params.runs.downstream.seeds) == (["baseline", "ssc"], [0, 1, 2])
