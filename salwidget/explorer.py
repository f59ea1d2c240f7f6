"""What the panel computes, without any widget: settings in, cached attributions out.

The cache is keyed by what changes a raw map, as each method declares it
(:meth:`~salwidget.methods.Method.key`), plus the target and the model's
weights version: a look-only change (colour map, percentile, overlay) needs
no model call, going back to an earlier setting is a lookup, raising the
number of noise samples resumes from the largest cached run with fewer, and
maps computed before the weights changed are not served after.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .attribution import Attribution
from .backends import get_backend
from .engine import attribute, predict
from .inputs import prepare_inputs
from .methods import get_method


@dataclass(frozen=True)
class Settings:
    """What the panel asks for: methods, their options (shared by name), the target."""

    methods: tuple[str, ...]
    options: tuple = ()  # (name, value) pairs; each method takes the ones it declares
    target: Any = "predicted"  # "predicted", an int, or a tuple of ints (one per image)
    layer: Any = None

    @property
    def option_dict(self) -> dict:
        return dict(self.options)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from scores; scores that already are probabilities pass through.

    A single-score output (a binary classifier's logit) gets its sigmoid, shown
    as the probability of class 0.
    """
    scores = np.asarray(scores, np.float64)
    if scores.shape[1] == 1:
        if scores.min() >= 0 and scores.max() <= 1:
            return scores
        return 1 / (1 + np.exp(-scores))
    if scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Explorer:
    """Computes and caches attributions of one model on one batch of images.

    Parameters
    ----------
    model, images, channels_last, output_index, rng
        As for :func:`salwidget.attribute`.
    seed : int
        Fixed for every computation, so a setting always gives the same map.
    cache_size : int
        How many attributions to keep (least recently used go first).
    """

    def __init__(self, model: Any, images: Any, *, channels_last: bool | None = None, seed: int = 0,
                 batch_size: int | str = "auto", cache_size: int = 48, output_index: int | None = None,
                 rng: str = "device"):
        self._backend = get_backend(model)
        inputs, self.channels_last, _ = prepare_inputs(images, channels_last, self._backend.default_channels_last)
        self.model = model
        self.images = inputs[0]
        self.device = self._backend.device
        self.seed = seed
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.output_index = output_index
        self.rng = rng
        self._cache: OrderedDict[tuple, Attribution] = OrderedDict()
        self.refresh()

    def refresh(self) -> None:
        """Forget cached maps and re-read the model's predictions (after its weights changed)."""
        self._cache.clear()
        self.scores = predict(self.model, self.images, channels_last=self.channels_last,
                              output_index=self.output_index, batch_size=self.batch_size)
        self.probabilities = softmax(self.scores)
        self.predicted = self.scores.argmax(axis=1)

    @property
    def num_classes(self) -> int:
        return self.scores.shape[1]

    def _key(self, method: str, settings: Settings) -> tuple[tuple, int | None]:
        """(key without the resumable count, that count) for ``method`` under ``settings``."""
        chosen = get_method(method)
        options = chosen.resolve(settings.option_dict)
        target = tuple(settings.target) if isinstance(settings.target, (list, tuple, np.ndarray)) else settings.target
        count = options.get(chosen.resumable) if chosen.resumable else None
        layer = settings.layer if chosen.reads == "layer" else None
        return (chosen.key(options), target, layer, self._backend.identity()), count

    def cached(self, method: str, settings: Settings) -> Attribution | None:
        """The cached attribution for ``method`` under ``settings``, if any."""
        key = self._key(method, settings)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
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
        hit = self.cached(method, settings)
        if hit is not None:
            return hit
        target = None if settings.target == "predicted" else settings.target
        extra = {"layer": settings.layer} if get_method(method).reads == "layer" else {}
        result = attribute(
            self.model, self.images, method,
            target=list(target) if isinstance(target, (tuple, list)) else target,
            batch_size=self.batch_size, seed=self.seed, channels_last=self.channels_last,
            output_index=self.output_index, progress=progress, cancel=cancel, rng=self.rng,
            resume_from=self._resumable(method, settings), **extra, **settings.option_dict,
        )
        self._cache[self._key(method, settings)] = result
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result
