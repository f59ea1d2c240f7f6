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
