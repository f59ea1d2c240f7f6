"""Gaussian blur taps and border indices shared by the backends' device blurs.

The blur matches ``scipy.ndimage.gaussian_filter`` on the spatial axes (what
PAIR saliency's Blur IG uses): taps out to ``int(4 sigma + 0.5)`` and
half-sample symmetric borders (scipy's ``'reflect'``: ``d c b a | a b c d``).
"""

from __future__ import annotations

import numpy as np

TRUNCATE = 4.0


def gaussian_taps(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """Normalised 1-D Gaussian taps, length ``2 * int(truncate * sigma + 0.5) + 1``."""
    radius = int(truncate * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / float(sigma)) ** 2)
    return taps / taps.sum()


def symmetric_indices(length: int, radius: int) -> np.ndarray:
    """Indices of ``range(-radius, length + radius)`` folded back into ``[0, length)``
    by half-sample symmetric reflection, for any radius (also wider than ``length``)."""
    positions = np.arange(-radius, length + radius) % (2 * length)
    return np.where(positions < length, positions, 2 * length - 1 - positions)
