"""The result of one attribution: raw maps plus everything needed to trust them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .visualize import to_diverging, to_grayscale


@dataclass
class Attribution:
    """Raw saliency for a batch, as returned by :func:`salwidget.attribute`.

    Attributes
    ----------
    raw : numpy.ndarray or tuple of numpy.ndarray
        float32, same shape and layout as the input (a tuple for several inputs):
        the attribution before any visualisation.
    target : numpy.ndarray of shape (B,)
        The class explained for each image.
    scores : numpy.ndarray of shape (B, num_classes)
        The model's outputs on the clean input.
    delta : numpy.ndarray of shape (B,) or None
        Integrated Gradients completeness gap ``sum(raw) - (f(x) - f(baseline))``
        (averaged over noise samples for SmoothGrad+IG without magnitude);
        None for the other methods.
    method : str
    nsamples : int
        Noise samples (SmoothGrad, SmoothGrad+IG) or path steps (Integrated
        Gradients) actually included; fewer than asked while a progress
        preview is shown.
    nintegration : int or None
        Path steps per sample for SmoothGrad+IG.
    seconds : float
        Wall time of the computation.
    """

    raw: Any
    target: np.ndarray
    scores: np.ndarray
    delta: np.ndarray | None
    method: str
    nsamples: int
    nintegration: int | None = None
    seconds: float = 0.0
    seed: int | None = None
    stdev_spread: float | None = None
    magnitude: bool | None = None
    baseline: str | None = None
    channels_last: bool = False
    framework: str = ""
    device: str = ""
    batch_size: int = 0
    passes_done: int = 0
    passes_total: int = 0
    complete: bool = True
    targets: tuple = ()
    _state: Any = field(default=None, repr=False, compare=False)

    def grayscale(self, percentile: float = 99, input_index: int = 0) -> np.ndarray:
        """The seed's greyscale masks (B, H, W) in [0, 1]; see :func:`salwidget.to_grayscale`."""
        return to_grayscale(self._raw_of(input_index), percentile, self.channels_last)

    def diverging(self, percentile: float = 99, input_index: int = 0) -> np.ndarray:
        """Signed masks (B, H, W) in [-1, 1]; see :func:`salwidget.to_diverging`."""
        return to_diverging(self._raw_of(input_index), percentile, self.channels_last)

    def _raw_of(self, input_index: int) -> np.ndarray:
        return self.raw[input_index] if isinstance(self.raw, tuple) else self.raw
