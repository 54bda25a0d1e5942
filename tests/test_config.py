"""params.yaml loading: defaults, deep merge, and errors that name the key."""
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
    # every section and key the code knows is spelled out in params.yaml (one source of truth)
    assert config.deep_merge(config.to_dict(params), raw) == config.to_dict(params)
    assert set(raw) == set(config.to_dict(params))


def test_partial_file_is_merged_over_defaults(tmp_path):
    p = write(tmp_path, {"superpixels": {"slic": {"n_segments": 42}}})
    params = config.load(p)
    assert params.superpixels.slic.n_segments == 42
    assert params.superpixels.slic.compactness == config.SlicConfig().compactness
    assert params.superpixels.method == "slic"


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
                         "train": {"variants": ["mine", "ssc"]}})
    params = config.load(p)
    v = config.variant_config(params, "mine")
    assert (v.alignment, v.align_erosion, v.reconstruction) == (False, 4, True)
    assert config.variant_config(params, "cam").drs_delta == 0.0  # the defaults stay defined
    with pytest.raises(ConfigError, match=r"variants\.nope: no such variant"):
        config.variant_config(params, "nope")


@pytest.mark.parametrize("data, key", [
    ({"variants": {"ssc": {"beta_recc": 1.0}}}, r"variants\.ssc\.beta_recc: unknown key"),
    ({"variants": {"+asm": {"alignment": "yes"}}}, r"variants\.\+asm\.alignment: expected true or false"),
    ({"train": {"variants": ["ssc", "typo"]}}, r"train\.variants: 'typo' is not defined"),
    ({"train": {"seeds": [0, 0]}}, r"train\.seeds"),
    ({"model": {"frozen_stages": 3}}, r"model\.frozen_stages"),
    ({"model": {"bn_eval": "sometimes"}}, r"model\.bn_eval"),
    ({"ssc": {"rec_loss": "l3"}}, r"ssc\.rec_loss: 'l3' is not one of"),
])
def test_training_sections_name_the_bad_key(tmp_path, data, key):
    with pytest.raises(ConfigError, match=key):
        config.load(write(tmp_path, data))
