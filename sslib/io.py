"""Safe file I/O: atomic writes, the clean-up of their leftovers, text and JSON writers.

The data's file formats (images, label PNGs, CAM archives, split lists) are in
:mod:`sslib.formats`; what is here cannot change a stage's result (:mod:`sslib.fingerprint`).

Every file the project writes goes through a temporary file in the same folder
followed by ``os.replace``, so an interrupted stage never leaves a half-written
file under its final name, and a file written earlier is never truncated.

Temporary files are named ``.<name>.tmp-<random><suffix>`` (:data:`TEMP_GLOB`). A
SIGKILL can leave one behind; ``.dvcignore`` hides that pattern from DVC (so it is
never hashed or cached as part of an output folder) and every stage removes its
folders' leftovers when it starts (:func:`remove_stale_temps`).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


__all__ = ["DataError", "atomic_path", "remove_stale_temps", "TEMP_GLOB", "write_bytes", "write_text", "write_json"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


#: the names of atomic_path's temporary files (also in .dvcignore)
TEMP_GLOB = ".*.tmp-*"


class DataError(RuntimeError):
    """A data file is missing, unreadable, or inconsistent; the message names it."""


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is untouched. A kill
    (SIGKILL, power loss) can leave the temporary file: see :func:`remove_stale_temps`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-", suffix=suffix or path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove the temporary files an interrupted :func:`atomic_path` left in ``folder``.

    Call it when a stage starts, before anything writes into ``folder`` (with several
    processes: on one of them, before the others start writing). Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(TEMP_GLOB) if recursive else folder.glob(TEMP_GLOB)
    removed = [p for p in found if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


