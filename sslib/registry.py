"""Named tables of interchangeable parts, in the style of timm's ``register_model`` / ``create_model``.

Each table maps a name, as params.yaml writes it, to an :class:`Entry`: a factory, the
dataclass of the entry's own settings (or None) and what the entry declares about itself
(``info``, e.g. ``needs_boundary_net=True``). The tables:

==================  ============================  ======================================
table               chosen by                     built-in entries live in
==================  ============================  ======================================
``BACKBONES``       ``model.backbone``            :mod:`sslib.models.backbones`
``SEG_BACKBONES``   ``train_seg.backbone``        :mod:`sslib.models.deeplab`
``EXPANSIONS``      ``ssc.expansion``             :mod:`sslib.models.expansions`
``LOSS_NETWORKS``   ``model.loss_network``        :mod:`sslib.models.perceptual`
``REFINERS``        ``make_pseudo_labels.refiner`` :mod:`sslib.refiners`
``SEG_METHODS``     ``train_seg.method``          :mod:`sslib.seg_methods`
``SEG_CROPS``       ``train_seg.crop``            :mod:`sslib.data.crops`
``DATASETS``        ``data.dataset``              :mod:`sslib.data`
==================  ============================  ======================================

A table imports the module of its built-in entries on first lookup (so checking params
needs no model code up front). An unknown name is refused with the key that chose it and
the known names. Entries from outside sslib come from the files params.yaml lists under
``plugins`` (:func:`load_plugins`, called when params are loaded); ``docs/extending.md``
walks through one of each kind.

Registering (the entry's module)::

    @dataclass
    class DRSSettings:
        delta: float = num(gt=0, le=1)

    @register_expansion("drs", settings=DRSSettings)
    def drs(settings: DRSSettings) -> nn.Module: ...

Using (a stage or the library)::

    entry = EXPANSIONS.get(name)       # Entry; entry.info, entry.settings
    module = EXPANSIONS.create(name, settings)
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["Entry", "Registry", "UnknownEntry", "BACKBONES", "SEG_BACKBONES", "EXPANSIONS", "LOSS_NETWORKS",
           "REFINERS", "SEG_METHODS", "SEG_CROPS", "DATASETS", "TABLES", "table", "load_plugins", "plugin_module_name",
           "registered_by", "is_plugin", "plugin_code", "register_backbone", "register_seg_backbone", "register_expansion",
           "register_loss_network", "register_refiner", "register_seg_method", "register_seg_crop",
           "register_dataset"]


class UnknownEntry(ValueError):
    """A name that no entry of a table has (the message names the key and the known names)."""


@dataclass(frozen=True)
class Entry:
    """One named part: ``factory`` builds it; ``settings`` is the dataclass of its own settings
    (params.yaml's ``<section>.<table>.<name>``), or None when it has none; ``info`` is what the
    entry declares (read with :meth:`get`); ``module`` the module that registered it."""

    name: str
    factory: Callable[..., Any]
    settings: type | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    module: str = ""
    #: the module of the table's built-in entries (its code is what calls ``factory``)
    home: str = ""

    def get(self, key: str, default: Any = None) -> Any:
        """What the entry declares under ``key`` (``default`` if it declares nothing)."""
        return self.info.get(key, default)


class Registry:
    """A table of named entries. ``kind``: what an entry is, for messages; ``key``: the params
    key that chooses one; ``home``: the module holding the built-in entries (imported on first
    lookup)."""

    def __init__(self, kind: str, key: str, home: str) -> None:
        self.kind, self.key, self.home = kind, key, home
        self._entries: dict[str, Entry] = {}
        self._home_loaded = False

    def register(self, name: str, *, settings: type | None = None, **info: Any) -> Callable:
        """Decorator: register the decorated factory as ``name``. A name is registered once;
        a second registration from another module is refused (naming both)."""
        self._load_home()  # the built-in entries first (a no-op while the home itself registers)

        def deco(factory: Callable) -> Callable:
            module = getattr(factory, "__module__", "") or ""
            old = self._entries.get(name)
            if old is not None and old.module != module:
                raise ValueError(f"{self.kind} {name!r} is registered twice: by {old.module} and by {module}")
            self._entries[name] = Entry(name, factory, settings, dict(info), module, self.home)
            return factory
        return deco

    def _load_home(self) -> None:
        if not self._home_loaded:
            self._home_loaded = True
            importlib.import_module(self.home)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        self._load_home()
        return list(self._entries)

    def get(self, name: str, key: str | None = None) -> Entry:
        """The entry ``name``; :class:`UnknownEntry` naming ``key`` (default: the table's key) and
        the known names if there is none."""
        self._load_home()
        if name not in self._entries:
            raise UnknownEntry(f"{key or self.key}: unknown {self.kind} {name!r} (known: {', '.join(self._entries)})")
        return self._entries[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``get(name).factory(*args, **kwargs)``."""
        return self.get(name).factory(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        self._load_home()
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, key={self.key!r}, names={list(self._entries)})"


BACKBONES = Registry("backbone", "model.backbone", "sslib.models.backbones")
SEG_BACKBONES = Registry("segmentation backbone", "train_seg.backbone", "sslib.models.deeplab")
EXPANSIONS = Registry("CAM expansion", "ssc.expansion", "sslib.models.expansions")
LOSS_NETWORKS = Registry("reconstruction loss network", "model.loss_network", "sslib.models.perceptual")
REFINERS = Registry("pseudo-label refiner", "make_pseudo_labels.refiner", "sslib.refiners")
SEG_METHODS = Registry("segmentation method", "train_seg.method", "sslib.seg_methods")
SEG_CROPS = Registry("segmentation training crop", "train_seg.crop", "sslib.data.crops")
DATASETS = Registry("data set", "data.dataset", "sslib.data")

#: every table by its short name (the name :func:`sslib.config.one_of` takes)
TABLES: dict[str, Registry] = {
    "backbones": BACKBONES, "seg_backbones": SEG_BACKBONES, "expansions": EXPANSIONS,
    "loss_networks": LOSS_NETWORKS, "refiners": REFINERS, "seg_methods": SEG_METHODS, "seg_crops": SEG_CROPS,
    "datasets": DATASETS,
}

register_backbone = BACKBONES.register
register_seg_backbone = SEG_BACKBONES.register
register_expansion = EXPANSIONS.register
register_loss_network = LOSS_NETWORKS.register
register_refiner = REFINERS.register
register_seg_method = SEG_METHODS.register
register_seg_crop = SEG_CROPS.register
register_dataset = DATASETS.register


def table(name: str) -> Registry:
    """The table called ``name`` in :data:`TABLES`."""
    return TABLES[name]


# --------------------------------------------------------------------------- plugins
PLUGIN_PACKAGE = "ssc_plugin"


def plugin_module_name(path: Path) -> str:
    """The module name a plugin file is imported under: ``ssc_plugin.<stem>_<digest of its resolved path>``
    (one module per file, however its path is spelt)."""
    path = Path(path).resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in path.stem)
    return f"{PLUGIN_PACKAGE}.{stem}_{digest}"


def load_plugins(files: list[str], root: Path, key: str = "plugins") -> list[str]:
    """Import each plugin file (relative paths from ``root``, the params file's folder) once;
    return their module names. A missing file raises FileNotFoundError naming ``key`` and the path."""
    names = []
    for i, f in enumerate(files):
        path = (Path(root) / f).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{key}[{i}]: {f!r}: no such file (from {root})")
        name = plugin_module_name(path)
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        names.append(name)
    return names


def is_plugin(entry: Entry) -> bool:
    """Whether ``entry`` was registered by a plugin file (not by sslib)."""
    return entry.module.startswith(PLUGIN_PACKAGE + ".")


def plugin_code(entry: Entry, root: Path | None = None) -> dict[str, str]:
    """``{plugin file: hash of its code}`` for an entry a plugin registered (``{}`` for sslib's own):
    what a run that uses the entry depends on (the path relative to ``root`` where it lies inside)."""
    if not is_plugin(entry):
        return {}
    from .fingerprint import file_hash

    path = Path(sys.modules[entry.module].__file__).resolve()
    root = Path(root or Path.cwd()).resolve()
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    return {rel: file_hash(path)}


def registered_by(module: str) -> dict[str, list[str]]:
    """``{table name: [entry names]}`` that ``module`` registered (plugins' reach, for the DVC files)."""
    out: dict[str, list[str]] = {}
    for tname, reg in TABLES.items():
        hits = [e.name for e in reg._entries.values() if e.module == module]
        if hits:
            out[tname] = hits
    return out
