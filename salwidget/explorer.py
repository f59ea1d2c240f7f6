"""What the panel computes, without any widget: settings in, cached attributions out.

The cache is keyed by everything that changes the raw attribution, so a
look-only change (colour map, percentile, overlay) needs no model call, going
back to an earlier setting is a lookup, and raising the number of SmoothGrad
samples resumes from the largest cached run with fewer samples.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .attribution import Attribution
from .engine import attribute, predict
from .inputs import prepare_inputs
from .backends import get_backend
from .methods import check_method

NOISY = ("smoothgrad", "smooth_integrated")


@dataclass(frozen=True)
class Settings:
    """Everything that changes a raw attribution, as the panel holds it."""

    methods: tuple[str, ...]
    nsamples: int
    nintegration: int
    stdev_spread: float
    magnitude: bool
    baseline: Any
    target: Any  # "predicted", an int, or a tuple of ints (one per image)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from scores; scores that already are probabilities pass through."""
    scores = np.asarray(scores, np.float64)
    if scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Explorer:
    """Computes and caches attributions of one model on one batch of images.

    Parameters
    ----------
    model, images, channels_last
        As for :func:`salwidget.attribute`.
    seed : int
        Fixed for every computation, so a setting always gives the same map.
    cache_size : int
        How many attributions to keep (least recently used go first).
    """

    def __init__(self, model: Any, images: Any, *, channels_last: bool | None = None, seed: int = 0,
                 batch_size: int | str = "auto", cache_size: int = 48):
        backend = get_backend(model)
        inputs, self.channels_last, _ = prepare_inputs(images, channels_last, backend.default_channels_last)
        self.model = model
        self.images = inputs[0]
        self.device = backend.device
        self.seed = seed
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.scores = predict(model, self.images, channels_last=self.channels_last)
        self.probabilities = softmax(self.scores)
        self.predicted = self.scores.argmax(axis=1)
        self._cache: OrderedDict[tuple, Attribution] = OrderedDict()

    @property
    def num_classes(self) -> int:
        return self.scores.shape[1]

    def _key(self, method: str, s: Settings) -> tuple:
        """(key without the sample count, sample count) for ``method`` under ``s``."""
        target = s.target if not isinstance(s.target, list) else tuple(s.target)
        parts: list = [method, target]
        count = None
        if method in NOISY:
            parts += [round(s.stdev_spread, 6), s.magnitude]
            count = s.nsamples
        if method in ("integrated", "smooth_integrated"):
            parts += [s.baseline, s.nintegration]
        return tuple(parts), count

    def cached(self, method: str, settings: Settings) -> Attribution | None:
        """The cached attribution for ``method`` under ``settings``, if any."""
        hit = self._cache.get(self._key(method, settings))
        if hit is not None:
            self._cache.move_to_end(self._key(method, settings))
        return hit

    def _resumable(self, method: str, settings: Settings) -> Attribution | None:
        base, count = self._key(method, settings)
        if count is None:
            return None
        smaller = [(c, a) for (b, c), a in self._cache.items() if b == base and c is not None and c < count]
        return max(smaller, key=lambda item: item[0])[1] if smaller else None

    def compute(self, method: str, settings: Settings, progress: Callable | None = None,
                cancel: Callable[[], bool] | None = None) -> Attribution:
        """The attribution for ``method`` under ``settings``: cached, resumed or computed."""
        check_method(method)
        hit = self.cached(method, settings)
        if hit is not None:
            return hit
        target = None if settings.target == "predicted" else settings.target
        steps = settings.nintegration
        result = attribute(
            self.model, self.images, method,
            target=list(target) if isinstance(target, (tuple, list)) else target,
            nsamples=steps if method == "integrated" else settings.nsamples,
            nintegration=steps,
            stdev_spread=settings.stdev_spread, magnitude=settings.magnitude, baseline=settings.baseline,
            batch_size=self.batch_size, seed=self.seed, channels_last=self.channels_last,
            progress=progress, cancel=cancel, resume_from=self._resumable(method, settings),
        )
        self._cache[self._key(method, settings)] = result
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result
