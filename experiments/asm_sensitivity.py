"""How alignment (ASM) depends on the superpixels: a sensitivity table made with ``dvc exp run -S``.

Run it in a project whose default ``dvc repro`` has finished (its ``baseline`` and ``+asm``
runs are the first setting, the committed superpixels)::

    python experiments/asm_sensitivity.py                      # every setting below
    python experiments/asm_sensitivity.py --only slic-300      # one of them

For each other superpixel setting it runs, in a temporary copy (``--temp``, the workspace
and its committed results untouched)::

    dvc exp run --temp -n asm-<setting> -S <key>=<value> ... data_report pipeline/eval_cam/dvc.yaml:eval_cam@+asm-<seed> ...

which recomputes the superpixels, retrains ``+asm`` for every seed of ``runs.seeds`` and
evaluates it (``baseline`` reads no superpixels, so its runs are the same in every
setting and are not repeated). It then reads every experiment's metrics back with
``dvc exp show --json`` and writes ``reports/asm_sensitivity.md`` and ``.csv``: per
setting, the mean superpixel count and, for ``baseline`` and ``+asm``, the train-split
CAM mIoU, background false-positive rate and recall at the best threshold (mean ± std
over the seeds). The experiments stay in DVC (``dvc exp show``, ``dvc exp apply``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sslib import config  # noqa: E402
from sslib.ablation import to_markdown  # noqa: E402
from sslib.io import write_text

#: setting -> the ``-S`` overrides of the superpixels (the default setting has none)
SETTINGS: dict[str, dict[str, Any]] = {
    "slic-100 (default)": {},
    "slic-30": {"superpixels.slic.n_segments": 30},
    "slic-300": {"superpixels.slic.n_segments": 300},
    "felzenszwalb-100": {"superpixels.method": "felzenszwalb"},
}
VARIANTS = ("baseline", "+asm")


def _exp_name(setting: str) -> str:
    return "asm-" + setting.split(" ")[0].replace(".", "-")


def run_setting(setting: str, seeds: list[int]) -> None:
    """``dvc exp run --temp`` of ``+asm`` (every seed) and the data report with ``setting``."""
    sets = [a for k, v in SETTINGS[setting].items() for a in ("-S", f"{k}={v}")]
    targets = ["data_report", *(f"pipeline/eval_cam/dvc.yaml:eval_cam@+asm-{s}" for s in seeds)]
    cmd = ["dvc", "exp", "run", "--temp", "-n", _exp_name(setting), *sets, *targets]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def _walk(node: Any) -> Iterator[dict]:
    """Every dict in ``dvc exp show --json``'s tree that names an experiment and holds data."""
    if isinstance(node, dict):
        if "name" in node and isinstance(node.get("data"), dict):
            yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _metrics(entry: dict) -> dict[str, dict]:
    """metrics file -> its contents, of one ``dvc exp show --json`` entry."""
    out = {}
    for path, m in (entry["data"].get("metrics") or {}).items():
        out[path] = m.get("data", m) if isinstance(m, dict) else {}
    return out


def experiments() -> dict[str, dict[str, dict]]:
    """exp name (and ``workspace``) -> its metrics files."""
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout)
    found = {}
    for e in _walk(shown):
        name = "workspace" if e.get("rev") == "workspace" else e["name"]
        found.setdefault(name, _metrics(e))
    return found


def table(found: dict[str, dict[str, dict]], seeds: list[int]) -> pd.DataFrame:
    """One row per (setting, variant) present in ``found``."""
    base = found.get("workspace", {})
    rows = []
    for setting in SETTINGS:
        mine = found.get(_exp_name(setting)) if SETTINGS[setting] else base
        if mine is None:
            continue
        sp = mine.get("reports/data_stats.json", {}).get("superpixels", {})
        for v in VARIANTS:
            src = base if v == "baseline" else mine  # baseline reads no superpixels
            runs = [src.get(f"reports/eval_cam/{v}/seed{s}/metrics.json", {}).get("train", {}).get("best")
                    for s in seeds]
            runs = [r for r in runs if r]
            if not runs:
                continue
            df = pd.DataFrame([{"miou": r["miou"], "bg_fp": r.get("background_fp_rate"),
                                "recall": r.get("mean_recall")} for r in runs]).astype(float) * 100
            rows.append({"setting": setting, "superpixels": sp.get("n_superpixels_mean"), "variant": v,
                         "miou_mean": df["miou"].mean(), "miou_std": df["miou"].std(ddof=1),
                         "bg_fp_mean": df["bg_fp"].mean(), "bg_fp_std": df["bg_fp"].std(ddof=1),
                         "recall": df["recall"].mean(), "seeds": len(runs)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="run just this setting (repeatable)")
    ap.add_argument("--report-only", action="store_true", help="run nothing; rebuild the table from dvc exp show")
    args = ap.parse_args(argv)
    seeds = config.load(ROOT / "params.yaml").runs.seeds
    if not args.report_only:
        for setting in SETTINGS:
            if SETTINGS[setting] and (not args.only or setting.split(" ")[0] in args.only):
                run_setting(setting, seeds)
    df = table(experiments(), seeds)
    write_text(ROOT / "reports/asm_sensitivity.csv", df.to_csv(index=False, float_format="%.4f"))
    md = ("# ASM sensitivity to the superpixels (generated by `python experiments/asm_sensitivity.py`)\n\n"
          f"Train-split CAM mIoU, background false-positive rate and recall (percent) at each run's best "
          f"threshold; mean ± std over seeds {seeds}. `superpixels`: mean count per image. `baseline` reads no "
          "superpixels, so its row is the same run in every setting.\n\n" + to_markdown(df) + "\n")
    write_text(ROOT / "reports/asm_sensitivity.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
