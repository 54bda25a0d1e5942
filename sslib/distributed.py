"""Multi-process (DDP) launching and set-up.

A notebook kernel is one process, so multi-GPU work cannot run inside it: a
per-run stage asked for more than one device (``runs.devices``) goes through
:func:`run_here_or_torchrun`, which runs ``torchrun`` as a subprocess and waits for it,
handing the children the caller's params. On several machines, run the
command :func:`torchrun_command` builds (printed by :func:`launch`) on each
machine with its own ``node_rank``.

Inside the launched processes, :func:`init` reads torchrun's environment and
returns this process's rank, the world size and its device.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

__all__ = ["torchrun_command", "launch", "launch_with_params", "init", "DistInfo", "pick_device", "is_rank0", "barrier",
           "run_here_or_torchrun"]


def pick_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def torchrun_command(target: str, args: Sequence[str] = (), nproc_per_node: int = 1, nnodes: int = 1,
                     node_rank: int = 0, rdzv_endpoint: str | None = None) -> list[str]:
    """The ``torchrun`` command line (as an argv list) for ``target``.

    ``target`` is a module name (``sslib.stages.train_cam``) or a path to a ``.py`` script.
    With ``nnodes == 1`` a free local port is used (``--standalone``).
    """
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"nproc_per_node and nnodes must be >= 1, got {nproc_per_node}, {nnodes}")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1:
        cmd.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise ValueError("several nodes need rdzv_endpoint='host:port' of node 0")
        cmd += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={rdzv_endpoint}"]
    cmd += [target] if target.endswith(".py") else ["-m", target]
    return cmd + [str(a) for a in args]


def launch(target: str, args: Sequence[str] = (), nproc_per_node: int = 1, **kw) -> None:
    """Run ``target`` under torchrun and wait; raises CalledProcessError if any rank fails."""
    cmd = torchrun_command(target, args, nproc_per_node, **kw)
    print("launching:", shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})


def launch_with_params(target: str, params, args: Sequence[str] = (), nproc_per_node: int = 1, **kw) -> None:
    """:func:`launch` with ``--params FILE``: the children read ``params`` (a
    :class:`~sslib.config.Params`) exactly as the caller holds them, notebook overrides
    included, from a temporary YAML file that is removed afterwards."""
    import tempfile

    import yaml

    from .config import to_dict

    fd, path = tempfile.mkstemp(prefix="ssc-params-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(to_dict(params), f, sort_keys=False)
        launch(target, [*args, "--params", path], nproc_per_node, **kw)
    finally:
        os.unlink(path)


def barrier() -> None:
    """Wait for every process of the group (nothing to do in a single process)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def is_rank0() -> bool:
    """True in a single process and in torchrun's rank 0 (read from the environment)."""
    return os.environ.get("RANK", "0") == "0"


def run_here_or_torchrun(stage: str, params, variant: str, seed: int, here: Callable[[], dict],
                         result: str | Path) -> dict:
    """One run of a per-run stage: ``here()`` in this process, or, when ``params.runs.devices > 1``,
    ``torchrun -m sslib.stages.<stage> --variant V --seed S`` with the caller's params exactly
    (notebook overrides included, :func:`launch_with_params`); then the ``result`` JSON file
    that rank 0 wrote is read back and returned."""
    if params.runs.devices > 1:
        launch_with_params(f"sslib.stages.{stage}", params, ["--variant", variant, "--seed", seed],
                           nproc_per_node=params.runs.devices)
        return json.loads(Path(result).read_text())
    return here()


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); single process if none."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank, world, local_rank, device)
