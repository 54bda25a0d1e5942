"""Fingerprints of the code a stage runs: its import closure, each file as its syntax tree.

A stage's result can only change when the code it executes changes. :func:`closure` finds
the sslib files that running a stage's entry points imports (at any depth in a file, so
lazy imports inside functions count), and :func:`file_hash` hashes each file's syntax tree
with docstrings dropped: a comment, a docstring, blank lines or a line break moved change
no hash, any change to what the code does changes it.

A package ``__init__`` that only re-exports (imports, ``__all__``, a docstring) is followed
name by name: ``from sslib.models import load_trained`` reaches the module that defines
``load_trained``, not every network the package lists.

:data:`EXCLUDED` names the modules that cannot change a result, each with its reason; they
are walked (their imports count) but not hashed.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path
from typing import Iterable

__all__ = ["EXCLUDED", "closure", "file_hash", "fingerprint", "module_file"]

#: files (relative to the project root) whose edits cannot change a stage's result
EXCLUDED: dict[str, str] = {
    "sslib/paths.py": "builds output paths; DVC tracks the paths themselves as outs",
    "sslib/io.py": "atomic writes, temporary-file clean-up and text/JSON writers (no data codec)",
    "sslib/notebook.py": "runs a notebook with papermill; the notebook itself is a dependency",
    "sslib/config.py": "types, ranges and messages; the values a run uses are in its settings file",
    "sslib/stages/common.py": "the shell interface and the resume check of output folders",
    "sslib/registry.py": "maps names to factories; the name a run uses is in its settings, the entry's module is hashed",
    "sslib/fingerprint.py": "this module: it decides what reruns, not what a run computes",
}


def module_file(name: str, root: Path) -> Path | None:
    """The file of sslib module ``name`` (``sslib.models.irn``) under ``root``, or None."""
    parts = name.split(".")
    if parts[0] != "sslib":
        return None
    base = root.joinpath(*parts)
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _parse(path: Path) -> ast.Module:
    st = path.stat()
    return _parse_cached(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=None)
def _parse_cached(path: Path, mtime_ns: int, size: int) -> ast.Module:
    """One parse per file version (the key changes when the file does)."""
    return ast.parse(path.read_text())


def _imports(path: Path, root: Path) -> list[tuple[str, tuple[str, ...] | None]]:
    """``(module, names)`` for every import in ``path``: names None for ``import m`` (all of it)."""
    package = list(path.relative_to(root).parent.parts)  # what a relative import starts from
    out: list[tuple[str, tuple[str, ...] | None]] = []
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = tuple(a.name for a in node.names)
            out.append((mod, None if "*" in names else names))
    return [(m, n) for m, n in out if m.split(".")[0] == "sslib"]


def _reexports_only(path: Path) -> bool:
    """Whether a package ``__init__`` holds nothing but imports, ``__all__``, constants and a docstring."""
    if path.name != "__init__.py":
        return False
    for node in _parse(path).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, (ast.Constant, ast.List, ast.Tuple)):
            continue
        return False
    return True


def closure(entries: Iterable[Path], root: Path) -> list[Path]:
    """Every sslib file that running ``entries`` (module or notebook files) imports, sorted.

    Importing ``a.b.c`` runs ``a`` and ``a.b`` too, so their ``__init__`` files are in; a
    re-exporting ``__init__`` is followed only for the names taken from it.
    """
    done: dict[Path, set[str] | None] = {}  # file -> names followed so far (None: all of it)
    todo: list[tuple[Path, frozenset[str] | None]] = [(Path(e), None) for e in entries]
    while todo:
        f, names = todo.pop()
        partial = names is not None and _reexports_only(f)
        if f in done and (done[f] is None or (partial and names <= done[f])):
            continue
        if partial:
            done[f] = (done.get(f) or set()) | set(names)
            imports = [(m, b) for m, b in _imports(f, root) if b is None or set(b) & set(names)]
        else:
            done[f] = None
            imports = _imports(f, root)
        for mod, bound in imports:
            todo += _requests(mod, bound, root)
    return sorted(p for p in done if p.is_relative_to(root / "sslib"))


def _requests(mod: str, bound: tuple[str, ...] | None, root: Path) -> list[tuple[Path, frozenset[str] | None]]:
    """What ``from mod import bound`` (``import mod`` when bound is None) makes Python run."""
    out: list[tuple[Path, frozenset[str] | None]] = []
    parts = mod.split(".")
    for i in range(1, len(parts)):  # the packages around it run first
        f = module_file(".".join(parts[:i]), root)
        if f is not None:
            out.append((f, frozenset()))
    f = module_file(mod, root)
    if f is not None:
        out.append((f, None if bound is None or f.name != "__init__.py" else frozenset(bound)))
    for n in bound or ():  # `from pkg import module`
        sub = module_file(f"{mod}.{n}", root)
        if sub is not None:
            out.append((sub, None))
    return out


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def file_hash(path: Path) -> str:
    """sha256 (16 hex digits) of ``path``'s syntax tree without docstrings, comments or layout."""
    st = Path(path).stat()
    return _hash_cached(Path(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=None)
def _hash_cached(path: Path, mtime_ns: int, size: int) -> str:
    tree = _strip_docstrings(ast.parse(path.read_text()))  # a fresh tree: this one is edited
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()[:16]


def fingerprint(entries: Iterable[Path], root: Path) -> dict[str, str]:
    """``{file: hash}`` of the closure of ``entries`` without :data:`EXCLUDED` (paths relative to ``root``)."""
    out = {}
    for f in closure(entries, root):
        rel = f.relative_to(root).as_posix()
        if rel not in EXCLUDED:
            out[rel] = file_hash(f)
    return out
