"""Shared fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import make_torch_cnn


@pytest.fixture
def torch_cnn():
    return make_torch_cnn()


@pytest.fixture
def images():
    """Four 16x16 RGB images in [0, 1], channels first, each with its own range."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(4, 3, 16, 16)).astype(np.float32)
    x[1] *= 0.2
    return x


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local Ray cluster for the whole test run: 2 CPUs, its own temp folder, a small object store,
    no token authentication (a test cluster), shut down at the end."""
    import logging
    import os

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import ray

    ray.init(num_cpus=2, _temp_dir=str(tmp_path_factory.mktemp("ray")), object_store_memory=256 * 1024**2,
             include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()
