import pytest
import torch

from sae.data.street import street_scene


@pytest.fixture(scope="session")
def small_scene():
    """A procedural street at 311×94 (float64), shared read-only by tests."""
    return street_scene(seed=1, height=94, width=311, dtype=torch.float64)


@pytest.fixture(scope="session")
def half_scene():
    """A procedural street at 621×188 (float64)."""
    return street_scene(seed=2, height=188, width=621, dtype=torch.float64)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    """The smoke-scale data set (seed 3), generated once per session and shared read-only."""
    from sae.data.generate import generate

    out = tmp_path_factory.mktemp("smoke_data")
    generate(out, "smoke", seed=3, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def smoke_reference(tmp_path_factory):
    """One uninterrupted smoke run of the workflow (``config/smoke.yaml``), shared read-only by
    the tests that compare against it: returns the workflow copy it ran in; its outputs are in
    ``WORK/out``. Tests must not write into it (copy it first)."""
    from workflow_util import copy_workflow, snakemake

    work = copy_workflow(tmp_path_factory.mktemp("smoke_reference"))
    proc = snakemake("--cores", "2", "--configfile", "config/smoke.yaml", "--config", "results=out", cwd=work)
    assert proc.returncode == 0, proc.output[-3000:]
    return work


def pytest_configure(config):
    # as the sae command line does: the renderer's full-frame temporaries reuse freed memory, and
    # subnormal floats are flushed to zero
    from sae.cpu import flush_denormals
    from sae.memory import retain_freed_memory

    retain_freed_memory()
    flush_denormals()
