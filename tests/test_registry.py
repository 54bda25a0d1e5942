"""sslib.registry: named tables, their checks at params load, and plugin files."""
from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from typing import Any

import pytest

from sslib import config, fingerprint, registry
from sslib.config import ConfigError, num, one_of, settings_of_each
from sslib.registry import Registry, UnknownEntry


@dataclass
class _Knobs:
    size: int = num(ge=1)


@pytest.fixture
def toys(monkeypatch):
    """A table ``toys`` (home: this module, already imported) with ``plain`` and ``sized``."""
    reg = Registry("toy", "section.toy", __name__)
    reg.register("plain")(lambda: "plain")
    reg.register("sized", settings=_Knobs, colour="red")(lambda knobs: knobs.size)
    monkeypatch.setitem(registry.TABLES, "toys", reg)
    return reg


@dataclass
class _Section:
    toy: str = one_of("toys", settings="toys")
    toys: dict[str, Any] = settings_of_each("toys")


def test_get_create_names_and_info(toys):
    assert toys.names() == ["plain", "sized"]
    assert toys.create("plain") == "plain"
    entry = toys.get("sized")
    assert entry.settings is _Knobs and entry.get("colour") == "red" and entry.get("shape", 0) == 0
    assert entry.home == __name__ and entry.module == __name__
    assert "sized" in toys and "big" not in toys


def test_unknown_name_names_the_key_and_the_known_names(toys):
    with pytest.raises(UnknownEntry, match=r"section\.toy: unknown toy 'big' \(known: plain, sized\)"):
        toys.get("big")
    with pytest.raises(ConfigError, match=r"^s\.toy: unknown toy 'big' \(known: plain, sized\)"):
        config.from_dict(_Section, {"toy": "big", "toys": {}}, "s")


def test_a_name_registered_from_two_modules_is_refused(toys):
    def other():
        pass
    other.__module__ = "elsewhere"
    with pytest.raises(ValueError, match="registered twice: by tests.test_registry|registered twice: by test_registry"):
        toys.register("plain")(other)


def test_settings_are_built_and_checked_per_entry(toys):
    s = config.from_dict(_Section, {"toy": "sized", "toys": {"sized": {"size": 3}}}, "s")
    assert s.toys == {"sized": _Knobs(3)}
    assert config.chosen(s, "toy") == (toys.get("sized"), _Knobs(3))
    assert config.to_dict(s) == {"toy": "sized", "toys": {"sized": {"size": 3}}}
    with pytest.raises(ConfigError, match=r"s\.toys\.sized\.size: must be >= 1, got 0"):
        config.from_dict(_Section, {"toy": "sized", "toys": {"sized": {"size": 0}}}, "s")
    with pytest.raises(ConfigError, match=r"s\.toys\.sized: missing; the toy 'sized' needs its settings \['size'\]"):
        config.from_dict(_Section, {"toy": "sized", "toys": {}}, "s")
    with pytest.raises(ConfigError, match=r"s\.toys\.plain: the toy 'plain' takes no settings"):
        config.from_dict(_Section, {"toy": "plain", "toys": {"plain": {"size": 1}}}, "s")
    with pytest.raises(ConfigError, match=r"s\.toys\.huge: unknown toy 'huge'"):
        config.from_dict(_Section, {"toy": "plain", "toys": {"huge": {}}}, "s")
    # an entry without settings needs no key; a chosen entry's settings need not be the only ones
    assert config.from_dict(_Section, {"toy": "plain", "toys": {"sized": {"size": 2}}}, "s").toy == "plain"


def _plugin(folder, name="my_plugin.py", body="") -> str:
    (folder / name).write_text(textwrap.dedent(f"""\
        from tests.test_registry import _Knobs
        from sslib import registry

        @registry.TABLES["toys"].register("plugged", settings=_Knobs)
        def plugged(knobs):
            return knobs.size * 2
        {body}
        """))
    return name


def test_a_plugin_file_registers_once_however_its_path_is_spelt(toys, tmp_path, monkeypatch):
    name = _plugin(tmp_path)
    (tmp_path / "sub").mkdir()
    mods = registry.load_plugins([name, f"sub/../{name}", str(tmp_path / name)], tmp_path)
    assert len(set(mods)) == 1 and mods[0].startswith("ssc_plugin.my_plugin_")
    assert toys.create("plugged", _Knobs(4)) == 8
    entry = toys.get("plugged")
    assert registry.is_plugin(entry) and not registry.is_plugin(toys.get("plain"))
    code = registry.plugin_code(entry, tmp_path)
    assert list(code) == [name] and code[name] == fingerprint.file_hash(tmp_path / name)
    assert registry.registered_by(mods[0]) == {"toys": ["plugged"]}
    assert registry.plugin_code(toys.get("plain"), tmp_path) == {}
    monkeypatch.delitem(sys.modules, mods[0])


def test_plugins_listed_in_params_are_loaded_before_the_check(toys, tmp_path, monkeypatch):
    name = _plugin(tmp_path, "p2.py")
    (tmp_path / "params.yaml").write_text(f"plugins: [{name}]\n")
    params = config.load(tmp_path / "params.yaml")
    assert params.plugins == [name] and "plugged" in toys
    monkeypatch.delitem(sys.modules, registry.plugin_module_name(tmp_path / name))
    (tmp_path / "params.yaml").write_text("plugins: [nowhere.py]\n")
    with pytest.raises(ConfigError, match=r"plugins\[0\]: 'nowhere.py': no such file"):
        config.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("plugins: nowhere.py\n")
    with pytest.raises(ConfigError, match="plugins: expected a list of Python files"):
        config.load(tmp_path / "params.yaml")


def test_a_plugin_that_fails_to_import_is_not_half_registered(toys, tmp_path):
    name = _plugin(tmp_path, "broken.py", body="raise RuntimeError('boom')")
    with pytest.raises(RuntimeError, match="boom"):
        registry.load_plugins([name], tmp_path)
    assert registry.plugin_module_name(tmp_path / name) not in sys.modules


def test_the_watched_files_include_the_plugins(tmp_path):
    from sslib.dvcgen import watched_files

    root = config.project_root()
    params = config.defaults()
    base = watched_files(root, params)
    params.plugins = ["tests/toys/anything.py"]
    assert watched_files(root, params) == sorted([*base, "tests/toys/anything.py"])


def test_a_plugin_entry_is_code_of_the_runs_that_choose_it():
    """The toys of docs/extending.md: a variant's expansion goes into that variant's settings, a
    refiner into the code of the stages that call the refiner table, an unchosen entry nowhere."""
    from sslib.stages.registry import BY_NAME, variant_settings
    from sslib.stages.resolve import stage_code

    root = config.project_root()
    toys = ["tests/toys/toy_expansion.py", "tests/toys/toy_refiner.py", "tests/toys/toy_seg_method.py"]
    params = config.defaults(plugins=toys, ssc={"expansions": {"toy_cap": {"ratio": 2.0}}},
                             variants={"+cap": {"expansion": "toy_cap"}},
                             make_pseudo_labels={"refiner": "max_pool", "refiners": {"max_pool": {"bg_threshold": 0.3}}})
    hashes = {t: fingerprint.file_hash(root / t) for t in toys}
    assert variant_settings(params, "+cap")["plugins"] == {toys[0]: hashes[toys[0]]}
    assert "plugins" not in variant_settings(params, "ssc")
    code = stage_code(params, BY_NAME["make_pseudo_labels"], root)
    assert code[toys[1]] == hashes[toys[1]] and toys[0] not in code and toys[2] not in code  # smooth_ce unchosen
    assert toys[1] not in stage_code(params, BY_NAME["train_cam"], root)  # train_cam never calls a refiner
