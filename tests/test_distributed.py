"""torchrun launching from Python (what a notebook does for multi-device work)."""
import json
import sys

import pytest

from sslib import distributed

WORKER = """
import json, sys
import torch, torch.distributed as dist
from sslib import distributed
info = distributed.init()
t = torch.tensor([float(info.rank + 1)])
dist.all_reduce(t)
if info.is_main:
    json.dump({"world": info.world_size, "sum": t.item(), "device": str(info.device)}, open(sys.argv[1], "w"))
dist.destroy_process_group()
"""


def test_command_single_and_multi_node():
    cmd = distributed.torchrun_command("sslib.stages.train_cam", ["--x", 1], nproc_per_node=4)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in cmd and "--standalone" in cmd
    assert cmd[-4:] == ["-m", "sslib.stages.train_cam", "--x", "1"]
    multi = distributed.torchrun_command("train.py", nproc_per_node=8, nnodes=2, node_rank=1,
                                         rdzv_endpoint="node0:29500")
    assert "--standalone" not in multi and "--node-rank=1" in multi and "--rdzv-endpoint=node0:29500" in multi
    assert multi[-1] == "train.py"
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        distributed.torchrun_command("m", nnodes=2)


def test_launch_two_gloo_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "out.json"
    distributed.launch(str(script), [str(out)], nproc_per_node=2)
    got = json.loads(out.read_text())
    assert got["world"] == 2 and got["sum"] == 3.0  # ranks 0 and 1 contribute 1 + 2


def test_init_without_torchrun_is_single_process(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = distributed.init()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)


def test_launch_with_params_hands_the_merged_params_to_the_children(monkeypatch):
    """Notebook overrides (and scratch/ redirects) reach the torchrun children: they read the
    params as the caller holds them, from a temporary file removed afterwards."""
    from pathlib import Path

    from sslib import config

    params = config.load(overrides={"train_cam": {"out_dir": "scratch/artifacts/train_cam", "lr": 1e-05},
                                    "runs": {"devices": 2}})
    seen = {}

    def fake_launch(target, args, nproc_per_node=1, **kw):
        path = args[args.index("--params") + 1]
        seen.update(target=target, args=list(args), nproc=nproc_per_node, path=path,
                    params=config.load(path))

    monkeypatch.setattr(distributed, "launch", fake_launch)
    distributed.launch_with_params("sslib.stages.train_cam", params, ["--variant", "ssc"], nproc_per_node=2)
    assert seen["target"] == "sslib.stages.train_cam" and seen["args"][:2] == ["--variant", "ssc"] and seen["nproc"] == 2
    assert seen["params"] == params and not Path(seen["path"]).exists()


def test_run_here_or_torchrun(monkeypatch, tmp_path):
    """A per-run stage runs in this process with runs.devices == 1; with more, it launches
    ``torchrun -m sslib.stages.<stage>`` for that variant and seed and reads the result file."""
    from sslib import config

    calls = []
    result = tmp_path / "metrics.json"

    def fake_launch(target, params, args, nproc_per_node=1, **kw):
        calls.append((target, list(args), nproc_per_node))
        result.write_text(json.dumps({"from": "torchrun"}))

    monkeypatch.setattr(distributed, "launch_with_params", fake_launch)
    one = config.load(overrides={"runs": {"devices": 1}})
    assert distributed.run_here_or_torchrun("train_cam", one, "ssc", 0, lambda: {"from": "here"}, result) \
        == {"from": "here"} and not calls
    two = config.load(overrides={"runs": {"devices": 2}})
    assert distributed.run_here_or_torchrun("train_cam", two, "ssc", 1, lambda: {"from": "here"}, result) \
        == {"from": "torchrun"}
    assert calls == [("sslib.stages.train_cam", ["--variant", "ssc", "--seed", 1], 2)]
