"""Wall time and peak memory of a command and all the processes it starts.

``/usr/bin/time -v`` reports the largest single process only; a DVC stage runs
papermill, a Jupyter kernel and worker pools side by side, so this script samples
the summed resident memory of the whole process tree (every 0.1 s, with psutil).

    python benchmarks/measure_command.py -- dvc repro -f          # every stage, from scratch
    python benchmarks/measure_command.py --json out.json -- dvc repro superpixels -f

Prints wall seconds, peak summed RSS of the tree, and peak RSS of any one process.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def _tree_rss(root: psutil.Process) -> tuple[int, int]:
    """(summed RSS, largest single RSS) in bytes over ``root`` and its descendants."""
    total = largest = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for p in procs:
        try:
            rss = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


def measure(cmd: list[str], interval: float = 0.1) -> dict:
    """Run ``cmd`` to completion; return its exit code, wall time and peak memory."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    root = psutil.Process(proc.pid)
    peak_total = peak_one = 0
    while proc.poll() is None:
        total, one = _tree_rss(root)
        peak_total, peak_one = max(peak_total, total), max(peak_one, one)
        time.sleep(interval)
    wall = time.perf_counter() - t0
    mib = 1024 ** 2
    return {"command": " ".join(cmd), "returncode": proc.returncode, "wall_s": round(wall, 2),
            "peak_tree_rss_mib": round(peak_total / mib, 1), "peak_process_rss_mib": round(peak_one / mib, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the result to this file")
    ap.add_argument("--interval", type=float, default=0.1, help="sampling period in seconds")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("give a command after --")
    result = measure(cmd, args.interval)
    print(json.dumps(result, indent=1), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
