"""Session settings. pyproject.toml runs the suite on pytest-xdist workers (one per core,
each test file on one worker); each worker, and the stages its tests launch, then get
their share of the cores instead of all of them."""
import os
from pathlib import Path

import pytest

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))


@pytest.fixture(scope="session")
def preset_weights(tmp_path_factory) -> Path:
    """The ImageNet weights files the paper presets name, with random values (tests/rehearsal.py)."""
    from rehearsal import write_weights

    return write_weights(tmp_path_factory.mktemp("weights"))
