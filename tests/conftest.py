"""Shared test set-up: one torch thread per process, offline hub; Ray keeps its token auth on."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Skip GPU-marked tests when no CUDA device exists (they are also deselected by default)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (4 logical CPUs on this 2-core machine)."""
    import ray

    from actors.plan import loopback_only

    if not ray.is_initialized():
        with loopback_only():
            # "local": a Ray of its own even when `ray start` (a user, another test) left one running
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
