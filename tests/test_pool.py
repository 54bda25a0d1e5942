"""The process-pool helpers (sslib.pool): the worker-count rules and the task loop."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from sslib import pool


def _square(x: int) -> int:
    return x * x


def _pid(_: int) -> int:
    return os.getpid()


def test_cpu_workers_reads_zero_as_one_per_core(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert pool.cpu_workers(0) == 6
    assert [pool.cpu_workers(w) for w in (1, 3, 12)] == [1, 3, 12]
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one
    assert pool.cpu_workers(0) == 1


def test_auto_workers_uses_up_to_eight_cores_from_the_threshold_on(monkeypatch):
    n = pool.PARALLEL_MIN_IMAGES
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert (pool.auto_workers(0), pool.auto_workers(n - 1), pool.auto_workers(n)) == (1, 1, 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert pool.auto_workers(n) == 3 and pool.auto_workers(10 * n) == 3


def test_one_worker_runs_in_this_process_in_order():
    assert pool.map_tasks(_square, [3, 1, 2], 1, progress=False) == [9, 1, 4]
    assert pool.map_tasks(_pid, [0, 1], 0, progress=False) == [os.getpid()] * 2
    assert pool.map_tasks(lambda x: -x, [1, 2], 1, progress=False) == [-1, -2]  # no pickling here
    assert pool.map_tasks(_square, [], 4, progress=False) == []


@pytest.mark.parametrize("kw", [{}, {"spawn": True}, {"use_executor": True},
                                {"use_executor": True, "cancel_futures": True}], ids=str)
def test_a_pool_keeps_the_task_order(kw):
    tasks = list(range(20))
    assert pool.map_tasks(_square, tasks, 2, chunksize=3, progress=False, **kw) == [t * t for t in tasks]
    assert os.getpid() not in pool.map_tasks(_pid, [0, 1, 2], 2, progress=False, **kw)


def test_an_unordered_pool_returns_every_result_once():
    tasks = list(range(20))
    out = pool.map_tasks(_square, tasks, 2, chunksize=1, ordered=False, progress=False)
    assert sorted(out) == [t * t for t in tasks]


def test_the_module_imports_nothing_from_sslib():
    tree = ast.parse(Path(pool.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("sslib")], imported
    assert all(n.level == 0 for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
