"""Which params keys a stage reads, from its source (the ``ast``), for tests/test_layout.py.

A read is an attribute chain on a name bound to the params or to a part of them:
``params.<section>.<field>``, ``p.<field>`` after ``p = params.<section>``, ``v.<field>``
after ``v = variant_config(...)`` (any call whose return annotation is a config
dataclass), and the parameters of the sslib functions the code calls, bound to what it
passes them (or, where nothing is passed, to their config-dataclass annotation). The
types come from the dataclasses of :mod:`sslib.config` (no key is listed here). A part
handed whole to something that is not analysed (``to_dict(params.ssc)``, a method) is a
read of all of it. A read of a :class:`sslib.config.VariantConfig` field is the key
``variant.<field>``.
"""
from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from sslib import config

ROOT = Path(__file__).resolve().parents[1]
#: config dataclass name -> class
CLASSES = {c.__name__: c for c in vars(config).values() if dataclasses.is_dataclass(c) and isinstance(c, type)}
VARIANT = ("variant",)


def _fields(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _root_of(cls: type) -> tuple[str, ...] | None:
    """The one params path of a config dataclass (None: none or several)."""
    if cls is config.Params:
        return ()
    if cls is config.VariantConfig:
        return VARIANT
    found = []

    def walk(c, path):
        for k, tp in _fields(c).items():
            if tp is cls:
                found.append((*path, k))
            elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
                walk(tp, (*path, k))
    walk(config.Params, ())
    return found[0] if len(found) == 1 else None


def _annotated(node: ast.AST | None) -> type | None:
    """The config dataclass an annotation names (``Params``, ``"Params"``, ``config.DataConfig | None``)."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return None
    for n in ast.walk(node):
        name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else None
        if name in CLASSES:
            return CLASSES[name]
    return None


class _Module:
    def __init__(self, name: str, source: str, package: str):
        self.name, self.tree, self.package = name, ast.parse(source), package
        self.defs = {n.name: n for n in self.tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self.imports: dict[str, tuple[str, str | None]] = {}  # local name -> (module, attribute or None)
        for n in ast.walk(self.tree):
            if isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    parts = package.split(".")[: len(package.split(".")) - n.level + 1]
                    base = ".".join([*parts, *([base] if base else [])])
                for a in n.names:
                    self.imports[a.asname or a.name] = (base, a.name)
            elif isinstance(n, ast.Import):
                for a in n.names:
                    self.imports[a.asname or a.name.split(".")[0]] = (a.name if a.asname else a.name.split(".")[0], None)


class Reads:
    """The params paths read from some entry sources and the sslib functions they call."""

    def __init__(self, extra: dict[str, str] | None = None):
        self.extra = extra or {}  # module name -> source (a made-up module, for the tests)
        self.modules: dict[str, _Module | None] = {}
        self.paths: set[tuple[str, ...]] = set()
        self._done: set = set()
        self._mod: _Module | None = None

    def module(self, name: str) -> _Module | None:
        if name not in self.modules:
            if name in self.extra:
                self.modules[name] = _Module(name, self.extra[name], name.rpartition(".")[0])
            else:
                f = ROOT / Path(*name.split("."))
                pkg = (f / "__init__.py").is_file()
                f = f / "__init__.py" if pkg else f.with_suffix(".py")
                ok = name.split(".")[0] == "sslib" and f.is_file()
                self.modules[name] = _Module(name, f.read_text(), name if pkg else name.rpartition(".")[0]) if ok else None
        return self.modules[name]

    def resolve(self, mod: _Module, func: ast.expr, depth: int = 0):
        """(module, FunctionDef) of a called name or ``module.name``, or None."""
        if depth > 5:
            return None
        if isinstance(func, ast.Name):
            if func.id in mod.defs:
                return mod, mod.defs[func.id]
            if func.id in mod.imports:
                base, attr = mod.imports[func.id]
                target = self.module(base)
                if attr is not None and target is not None:
                    return self.resolve(target, ast.Name(attr), depth + 1)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in mod.imports:
            base, attr = mod.imports[func.value.id]
            target = self.module(f"{base}.{attr}" if attr else base)
            if target is not None:
                return self.resolve(target, ast.Name(func.attr), depth + 1)
        return None

    # ------------------------------------------------------------------ the walk
    def entry(self, name: str) -> None:
        """Every function of module ``name``, and its top-level code."""
        mod = self.module(name)
        self._body(mod, mod.tree.body, {})
        for fn in mod.defs.values():
            self.function(mod, fn, {})

    def function(self, mod: _Module, fn, bound: dict[str, tuple[tuple[str, ...], type]]) -> None:
        args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        env = {}
        for a in args:
            if a.arg in bound:
                env[a.arg] = bound[a.arg]
            elif (cls := _annotated(a.annotation)) is not None and (path := _root_of(cls)) is not None:
                env[a.arg] = (path, cls)
        key = (mod.name, fn.name, fn.lineno, tuple(sorted((k, v[0]) for k, v in env.items())))
        if key in self._done:
            return
        self._done.add(key)
        self._body(mod, fn.body, env)

    def _chain(self, node: ast.expr, env) -> tuple[tuple[str, ...], type | None] | None:
        """(params path, its dataclass or None for a value) of ``name.a.b``; None if unbound."""
        attrs = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if isinstance(node, ast.Call) and attrs and self._mod is not None:
            got = self._value(self._mod, node, env)  # variant_config(params, v).drs_delta
            if got is None:
                return None
            path, cls = got
        elif not isinstance(node, ast.Name) or node.id not in env:
            return None
        else:
            path, cls = env[node.id]
        for a in reversed(attrs):
            if cls is None or a not in _fields(cls):
                break  # a value's attribute, or a method
            tp = _fields(cls)[a]
            path, cls = (*path, a), tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None
        return path, cls

    def _body(self, mod: _Module, body: list[ast.stmt], env: dict) -> None:
        self._mod, env = mod, dict(env)
        nodes = [n for stmt in body for n in ast.walk(stmt)]
        aliases: set[int] = set()
        for n in nodes:  # bindings first (source order; good enough for these modules)
            if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None:
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        got = self._value(mod, n.value, env)
                        if got is not None:
                            env[t.id] = got
                            aliases.add(id(n.value))  # an alias, not a read
        skip = set(aliases)
        for n in nodes:
            if isinstance(n, ast.Call):
                skip |= self._call(mod, n, env)
        for n in nodes:
            if isinstance(n, (ast.Attribute, ast.Name)) and isinstance(n.ctx, ast.Load) and id(n) not in skip \
                    and not self._inner(n, nodes):
                got = self._chain(n, env)
                if got is not None and (isinstance(n, ast.Attribute) or got[1] is not None):
                    self.paths.add(got[0])

    @staticmethod
    def _inner(n: ast.AST, nodes) -> bool:
        """Whether ``n`` is the ``value`` of an attribute (part of a longer chain)."""
        return any(isinstance(m, ast.Attribute) and m.value is n for m in nodes)

    def _value(self, mod, value: ast.expr, env):
        got = self._chain(value, env)
        if got is not None and got[1] is not None:
            return got
        if isinstance(value, ast.Call):
            target = self.resolve(mod, value.func)
            if target is not None and (cls := _annotated(target[1].returns)) is not None \
                    and (path := _root_of(cls)) is not None:
                return path, cls
        return None

    def _call(self, mod, call: ast.Call, env) -> set[int]:
        """Analyse the callee with what the call binds; the ids of the chains handed to it."""
        passed = [(i, a) for i, a in enumerate(call.args)] + [(k.arg, k.value) for k in call.keywords]
        bound = {key: (a, got) for key, a in passed
                 if (got := self._chain(a, env)) is not None and got[1] is not None}
        target = self.resolve(mod, call.func)
        if target is None or not bound:
            return set()
        tmod, fn = target
        names = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
        allowed = names + [a.arg for a in fn.args.kwonlyargs]
        binding, handed = {}, set()
        for key, (a, got) in bound.items():
            name = names[key] if isinstance(key, int) and key < len(names) else key
            if isinstance(name, str) and name in allowed:
                binding[name] = got
                handed.add(id(a))
        self.function(tmod, fn, binding)
        self._mod = mod
        return handed


def stage_reads(stage: str, notebook: str | None = None, extra: dict[str, str] | None = None) -> set[str]:
    """The dotted params paths that stage module ``sslib.stages.<stage>`` (or a module of
    ``extra``) and its notebook read, and the sslib functions they hand params to."""
    r = Reads(extra)
    r.entry(stage if extra and stage in extra else f"sslib.stages.{stage}")
    if notebook:
        r.extra[f"notebooks.{notebook}"] = (ROOT / "notebooks" / f"{notebook}.py").read_text()
        r.entry(f"notebooks.{notebook}")
    return {".".join(p) for p in r.paths}


def covers(reads: set[str], key: str) -> bool:
    """Whether ``key`` (``section``, ``section.field``, ``variant.field``) is read: itself,
    a part of it, or the whole it belongs to."""
    return any(r == key or r.startswith(key + ".") or key.startswith(r + ".") for r in reads)
