"""Process pools for per-image work: how many workers, and the loop that maps a function over tasks.

Two worker-count rules, one per kind of caller:

* :func:`cpu_workers`: a setting where 0 means one process per core (``os.cpu_count()``),
  any other value itself (the superpixels, ``eval_seg`` and ``make_ir_labels`` ``workers``);
* :func:`auto_workers`: no setting (None): one process per core, at most
  :data:`MAX_AUTO_WORKERS`, from :data:`PARALLEL_MIN_IMAGES` tasks on; else this process
  (data preparation and the COCO class masks).

:func:`map_tasks` runs ``fn`` over the tasks with a progress bar: in this process with
one worker or fewer, else in a pool of processes, either :class:`multiprocessing.Pool`
(``ordered`` or not; the workers are terminated when the loop ends or fails) or, with
``executor``, a :class:`~concurrent.futures.ProcessPoolExecutor` (always in task order; it
waits for the running tasks when the loop ends or fails). ``spawn`` starts the workers
with the ``spawn`` method (safe when torch or threads live in the parent; a calling
*script* then needs the usual ``if __name__ == "__main__":`` guard), else the platform's
default. ``fn`` and the tasks must pickle for a pool.

This module imports nothing from :mod:`sslib`.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

__all__ = ["PARALLEL_MIN_IMAGES", "MAX_AUTO_WORKERS", "cpu_workers", "auto_workers", "executor", "map_tasks"]

#: below this many tasks :func:`auto_workers` works in this process (pool start-up is not worth it)
PARALLEL_MIN_IMAGES = 2000
#: the most processes :func:`auto_workers` starts
MAX_AUTO_WORKERS = 8


def cpu_workers(workers: int) -> int:
    """``workers`` processes, 0 meaning one per core (``os.cpu_count()``, 1 if unknown)."""
    return (os.cpu_count() or 1) if workers == 0 else int(workers)


def auto_workers(n_tasks: int) -> int:
    """One process per core, at most :data:`MAX_AUTO_WORKERS`, for :data:`PARALLEL_MIN_IMAGES`
    tasks or more; else 1 (this process)."""
    return min(os.cpu_count() or 1, MAX_AUTO_WORKERS) if n_tasks >= PARALLEL_MIN_IMAGES else 1


def executor(workers: int, spawn: bool = False) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of ``workers`` processes (started with ``spawn`` if asked, else the default)."""
    if spawn:
        return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    return ProcessPoolExecutor(workers)


def map_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int, *, chunksize: int = 1,
              ordered: bool = True, spawn: bool = False, use_executor: bool = False,
              cancel_futures: bool = False, desc: str = "", progress: bool = True) -> list[Any]:
    """``[fn(t) for t in tasks]``, over ``workers`` processes, with a tqdm bar (unit ``img``).

    Args:
        workers: processes; 1 or fewer: in this process, in task order, no pool.
        chunksize: tasks a worker takes at a time.
        ordered: results in task order; else in the order they finish (a
            :class:`multiprocessing.Pool` only: an executor's are always in task order).
        spawn: start the workers with the ``spawn`` method (else the platform's default).
        use_executor: a :class:`~concurrent.futures.ProcessPoolExecutor` instead of a
            :class:`multiprocessing.Pool`.
        cancel_futures: (executor) on leaving, cancel the tasks not started yet.
        desc, progress: the bar's label; whether it is shown.
    """
    from tqdm.auto import tqdm

    results: list[Any] = []
    with tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress) as bar:
        if workers <= 1:
            for t in tasks:
                results.append(fn(t))
                bar.update()
        elif use_executor:
            pool = executor(workers, spawn)
            try:
                for r in pool.map(fn, tasks, chunksize=chunksize):
                    results.append(r)
                    bar.update()
            finally:
                pool.shutdown(wait=True, cancel_futures=cancel_futures)
        else:
            ctx = mp.get_context("spawn") if spawn else mp.get_context()
            with ctx.Pool(workers) as pool:
                for r in (pool.imap if ordered else pool.imap_unordered)(fn, tasks, chunksize=chunksize):
                    results.append(r)
                    bar.update()
    return results
