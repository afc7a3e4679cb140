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
