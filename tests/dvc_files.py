"""The pipeline's DVC files as the tests read them: dvc.yaml and, for each per-run stage,
pipeline/<stage>/dvc.yaml (see dvc.yaml's header for why they are apart)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
POINTER = re.compile(r"^  # (\w+) \(per run\): pipeline/(\w+)/dvc\.yaml$", re.M)


def per_run_file(stage: str, root: Path = ROOT) -> Path:
    """``pipeline/<stage>/dvc.yaml``: where a per-run stage is defined."""
    return root / "pipeline" / stage / "dvc.yaml"


def lock_files(root: Path = ROOT) -> list[Path]:
    """Every dvc.lock of the pipeline: the root's and one per per-run stage file."""
    return [root / "dvc.lock", *sorted((root / "pipeline").glob("*/dvc.lock"))]


def load_stages(root: Path = ROOT) -> dict[str, dict]:
    """Stage name -> definition, in the order the pipeline reads: dvc.yaml's stages with each
    per-run stage at its pointer comment in dvc.yaml."""
    text = (root / "dvc.yaml").read_text()
    own = yaml.safe_load(text)["stages"]
    where = {m.start(): ("file", m.group(1), m.group(2)) for m in POINTER.finditer(text)}
    for name in own:
        m = re.search(rf"^  {re.escape(name)}:\s*$", text, re.M)
        where[m.start()] = ("own", name, None)
    out: dict[str, dict] = {}
    for _, (kind, name, folder) in sorted(where.items()):
        if kind == "own":
            out[name] = own[name]
            continue
        assert folder == name, f"dvc.yaml points {name} at pipeline/{folder}/dvc.yaml"
        stages = yaml.safe_load(per_run_file(name, root).read_text())["stages"]
        assert list(stages) == [name], f"{per_run_file(name, root)} defines {list(stages)}, not [{name!r}]"
        out[name] = stages[name]
    return out


def target(name: str) -> str:
    """The DVC address of a stage or run: ``train_cam@ssc-0`` ->
    ``pipeline/train_cam/dvc.yaml:train_cam@ssc-0``; a dvc.yaml stage as it is."""
    stage = name.split("@")[0]
    return f"pipeline/{stage}/dvc.yaml:{name}" if per_run_file(stage).is_file() else name


def short(address: str) -> str:
    """The inverse of :func:`target`: the stage or run name DVC prints without its file."""
    return re.sub(r"^pipeline/\w+/dvc\.yaml:", "", address)


# --------------------------------------------------------------------------- a copy of the repository
def repo_files() -> list[str]:
    """The repository's files as a clone would have them (tracked + untracked, not ignored)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def copy_repo(dst: Path) -> Path:
    """The repository's files copied into ``dst`` (a git repository of its own), without the
    lock files (so every stage runs)."""
    for f in repo_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    for lock in lock_files(dst):
        lock.unlink(missing_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``dvc <args>`` in ``repo`` with this interpreter's environment; AssertionError with the
    output when it fails (unless ``check`` is False)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def ran(result: subprocess.CompletedProcess) -> set[str]:
    """The stages (runs) a ``dvc repro`` ran, by name (:func:`short`)."""
    return {short(s) for s in re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr)}


def set_params(repo: Path, update: dict) -> None:
    """Deep-merge ``update`` into ``repo``'s params.yaml."""
    from sslib.config import deep_merge, read_yaml

    p = repo / "params.yaml"
    p.write_text(yaml.safe_dump(deep_merge(read_yaml(p.read_text()), update), sort_keys=False))
