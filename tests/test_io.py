"""Atomic writes: what a killed writer leaves, how it is cleaned, and byte-stable npz files."""
from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sslib import formats, io

ROOT = Path(__file__).resolve().parents[1]


def test_sigkill_during_a_write_leaves_only_a_temp_file_that_the_next_run_removes(tmp_path):
    """The user's probe: SIGKILL while a checkpoint is being written. The final name is never
    half-written; the temporary file left behind matches TEMP_GLOB (hidden from DVC by
    .dvcignore) and remove_stale_temps, which every stage calls first, removes it."""
    target = tmp_path / "run" / "checkpoint.pt"
    io.write_bytes(target, b"good checkpoint")
    code = ("import sys, time; from sslib import io\n"
            "with io.atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half'); print('writing', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    left = [p for p in target.parent.iterdir() if p != target]
    assert len(left) == 1 and left[0].name.startswith(".checkpoint.pt.tmp-")
    assert fnmatch.fnmatch(left[0].name, io.TEMP_GLOB)
    assert target.read_bytes() == b"good checkpoint"
    (tmp_path / "run" / "sub").mkdir()
    nested = tmp_path / "run" / "sub" / ".x.npz.tmp-abc.npz"
    nested.write_bytes(b"")
    assert io.remove_stale_temps(target.parent) == left  # this folder only
    assert nested.exists() and io.remove_stale_temps(target.parent, recursive=True) == [nested]
    assert sorted(p.name for p in target.parent.rglob("*")) == ["checkpoint.pt", "sub"]
    assert io.remove_stale_temps(tmp_path / "missing") == []


def test_dvcignore_hides_the_temp_files():
    patterns = [line.strip() for line in (ROOT / ".dvcignore").read_text().splitlines()]
    assert io.TEMP_GLOB in patterns


def test_save_npz_is_byte_stable_and_loads_without_pickle(tmp_path):
    arrays = {"keys": np.array([3, 7], np.int16), "cam": np.random.default_rng(0).random((2, 5, 6), np.float32)}
    formats.save_npz(tmp_path / "a.npz", **arrays)
    time.sleep(2.1)  # zip timestamps have a 2-second resolution: np.savez_compressed would differ now
    formats.save_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["cam", "keys"]
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and np.array_equal(z[k], v)
    assert not list(tmp_path.glob(io.TEMP_GLOB))
