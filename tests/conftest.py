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


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """A factory of tiny synthetic projects: ``tiny_project(base, name, superpixels=False,
    then=None)`` makes a folder, writes ``base`` as its params.yaml and, inside it, generates
    the synthetic set, prepares it (labels and lists), optionally precomputes the
    superpixels of train and val, and calls ``then(params)`` for what the test adds (CAM
    files, labels, networks). Returns a :class:`data_fixtures.TinyProject`."""
    from data_fixtures import TinyProject

    def make(base: dict, name: str = "project", *, superpixels: bool = False, then=None) -> TinyProject:
        from sslib import superpixels as sp
        from sslib.data import build_dataset, synthetic
        from sslib.data.prepare import prepare

        project = TinyProject(tmp_path_factory.mktemp(name), base)
        with project.entered():
            params = project.params()
            synthetic.generate(params.synthetic, progress=False)
            prepare(params.data, progress=False)
            if superpixels:
                items = []
                for split in ("train", "val"):
                    ds = build_dataset(params.data, split, with_mask=False)
                    items += [(n, ds.image_path(n)) for n in ds.names]
                sp.precompute(items, params.superpixels.out_dir, params.superpixels, workers=1, progress=False)
            if then is not None:
                then(params)
        return project

    return make


@pytest.fixture
def in_project(project, monkeypatch):
    """The test module's ``project`` (a TinyProject) as the working directory, with the
    project's own paths; its params.yaml is back to the base settings after the test."""
    from sslib import paths

    monkeypatch.chdir(project.root)
    monkeypatch.delenv(paths.SCRATCH_ENV, raising=False)
    yield project
    project.write_params()
