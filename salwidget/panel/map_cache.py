"""What the panel computes, without any widget: settings in, cached attributions out.

The cache is keyed by what changes a raw map, as each method declares it
(:meth:`~salwidget.methods.Method.key`), plus the target, the CAM layer and
the model's weights version: a look-only change (colour map, percentile,
overlay) needs no model call, going back to an earlier setting is a lookup,
raising the number of noise samples resumes from the largest cached run with
fewer, and maps computed before the weights changed are not served after.

Reading the weights' version costs a walk over the model's modules (torch) or
a fingerprint of every weight (TensorFlow: milliseconds for a large model).
:meth:`Explorer.compute` reads it once per computation; every lookup takes a
``weights=`` version, so the panel's kernel thread can pass the last one read
(:attr:`Explorer.known_weights`) and leave reading to its worker, which reads
before it serves or computes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..attribution import Attribution
from ..backends import get_backend
from ..caches import BoundedCache
from ..engine import attribute, predict
from ..inputs import prepare_inputs
from ..methods import get_method
from ..outputs import is_multilabel, output_selector, probabilities
from ..targets import Target


@dataclass(frozen=True)
class Settings:
    """What the panel asks for: methods, each method's options, the target and the CAM layer."""

    methods: tuple[str, ...]
    options: dict = field(default_factory=dict)  # {method: {option: value}}; missing options take defaults
    target: Any = "predicted"  # "predicted", an int, or a tuple of ints (one per image)
    layer: Any = None

    def options_for(self, method: str) -> dict:
        return dict(self.options.get(method, {}))


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
    model, images, channels_last, output_index, output, multilabel, rng, batch_size, framework
        As for :func:`salwidget.attribute`.
    seed : int
        Fixed for every computation, so a setting always gives the same map.
    cache_size : int
        How many attributions to keep (least recently used go first).
    """

    def __init__(self, model: Any, images: Any, *, channels_last: bool | None = None, seed: int = 0,
                 batch_size: int | str = "auto", cache_size: int = 48, output_index: int | None = None,
                 rng: str = "device", output: int | str | None = None, multilabel: bool | None = None,
                 image_ids: Any = None, stored: Callable | None = None, framework: str | None = None):
        self._backend = get_backend(model, framework)
        self.framework = framework  # as given: a numpy callable is not detected, so every call names it
        inputs, self.channels_last, _ = prepare_inputs(images, channels_last, self._backend.default_channels_last)
        self.model = model
        self.images = inputs[0]
        self.device = self._backend.device
        self.seed = seed
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.output_index = output_selector(output, output_index)  # a position or a name
        self.multilabel = multilabel
        self.rng = rng
        self.seconds_per_pass: float | None = None  # measured by the last computation; None before any
        # Dataset rows: their ids key the random draws (a row's map is the same in any selection) and a
        # dataset job's stored maps of the same settings are shown without computing (stored(...) finds them).
        self.image_ids = None if image_ids is None else [int(i) for i in image_ids]
        self.stored = stored
        # read by the panel while the worker fills it (BoundedCache locks each call)
        self._cache = BoundedCache(cache_size)
        self._layers: list[tuple[str, tuple]] | None = None
        self._shapes: list[tuple[str, tuple]] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Forget cached maps and re-read the model's predictions (after its weights changed)."""
        self._cache.clear()
        self.scores = predict(self.model, self.images, channels_last=self.channels_last,
                              output=self.output_index, batch_size=self.batch_size, framework=self.framework)
        self.probabilities = probabilities(self.scores, self.multilabel) if self.scores.ndim == 2 else None
        self.predicted = self.scores.argmax(axis=1)
        self.weights = self.known_weights = self._backend.identity()

    def read_weights(self) -> Any:
        """The model's weights version, read now (and kept as :attr:`known_weights`)."""
        self.known_weights = self._backend.identity()
        return self.known_weights

    @property
    def num_classes(self) -> int:
        return self.scores.shape[1]

    @property
    def multilabel_head(self) -> bool:
        """Whether the explained (B, K) head's labels are independent sigmoids (given, or detected)."""
        if self.scores.ndim != 2:
            return False
        return is_multilabel(self.scores) if self.multilabel is None else bool(self.multilabel)

    def weights_changed(self, read: bool = True) -> bool:
        """Whether the model's weights changed since the predictions were read (``read=False``: as
        far as the last version read knows)."""
        return (self.read_weights() if read else self.known_weights) != self.weights

    def map_key(self, method: str, settings: Settings, weights: Any = None) -> tuple[tuple, int | None]:
        """(key without the resumable count, that count) for ``method`` under ``settings``: what its map
        depends on (options, target, layer, weights); the panel keys evaluations by it too.
        ``weights``: a version from :meth:`read_weights` (None: read now)."""
        weights = self.read_weights() if weights is None else weights
        chosen = get_method(method)
        options = chosen.resolve(settings.options_for(method))
        target = tuple(settings.target) if isinstance(settings.target, (list, tuple, np.ndarray)) else settings.target
        count = options.get(chosen.resumable) if chosen.resumable else None
        layer = settings.layer if chosen.reads == "layer" else None
        return (chosen.key(options), target, layer, weights), count

    def cached(self, method: str, settings: Settings, weights: Any = None) -> Attribution | None:
        """The cached attribution for ``method`` under ``settings``, if any (``weights`` as for map_key)."""
        return self._cache.get(self.map_key(method, settings, weights))

    def _resumable(self, method: str, settings: Settings, weights: Any = None) -> Attribution | None:
        """The cached run with the most samples below the asked count (same everything else)."""
        base, count = self.map_key(method, settings, weights)
        if count is None:
            return None
        smaller = [(c, a) for (b, c), a in self._cache.items() if b == base and c is not None and c < count]
        return max(smaller, key=lambda item: item[0])[1] if smaller else None

    def resume_point(self, method: str, settings: Settings, weights: Any = None) -> int | None:
        """The sample count a computation of ``method`` would resume from, or None."""
        previous = self._resumable(method, settings, weights)
        return None if previous is None else self._key_count(previous)

    @staticmethod
    def _key_count(result: Attribution) -> int:
        chosen = get_method(result.method)
        return int(result.options.get(chosen.resumable, result.nsamples))

    def passes_needed(self, method: str, settings: Settings, weights: Any = None) -> int:
        """Passes through the model that computing ``method`` now would take (0 when cached)."""
        weights = self.read_weights() if weights is None else weights
        if self.cached(method, settings, weights) is not None:
            return 0
        chosen = get_method(method)
        options = chosen.resolve(settings.options_for(method))
        total = chosen.passes(options, len(self.images))
        start = self.resume_point(method, settings, weights)
        if start is not None:
            total -= chosen.passes({**options, chosen.resumable: start}, len(self.images))
        return max(int(total), 0)

    def compute(self, method: str, settings: Settings, progress: Callable | None = None,
                cancel: Callable[[], bool] | None = None) -> Attribution:
        """The attribution for ``method`` under ``settings``: cached, resumed or computed."""
        weights = self.read_weights()
        hit = self.cached(method, settings, weights)
        if hit is not None:
            return hit
        target = None if settings.target == "predicted" else settings.target
        extra = {"layer": settings.layer} if get_method(method).reads == "layer" else {}
        if self.stored is not None and self.image_ids is not None and target is None:
            found = self.stored(method, get_method(method).resolve(settings.options_for(method)),
                                extra.get("layer"), self.seed, self.image_ids, self)
            if found is not None:
                self._cache.put(self.map_key(method, settings), found)
                return found
        result = attribute(
            self.model, self.images, method,
            target=list(target) if isinstance(target, (tuple, list)) else target,
            batch_size=self.batch_size, seed=self.seed, channels_last=self.channels_last,
            output=self.output_index, multilabel=self.multilabel, progress=progress, cancel=cancel, rng=self.rng,
            resume_from=self._resumable(method, settings, weights), image_ids=self.image_ids,
            framework=self.framework, **extra,
            **settings.options_for(method),
        )
        if result.passes_done:
            self.seconds_per_pass = result.seconds / result.passes_done
        if isinstance(target, Target) and not target.cacheable:  # a function's maps are never served again
            return result
        self._cache.size = self.cache_size  # a size set on the explorer after it was made
        self._cache.put(self.map_key(method, settings, weights), result)
        return result

    def spatial_layers(self) -> list[tuple[str, tuple]]:
        """(name, output shape) of the layers whose output is a feature map with more than one position.

        The candidates for a CAM's layer, in call order (one forward pass of one image).
        """
        if self._layers is None:
            spatial = (lambda s: s[1:3]) if self._backend.default_channels_last else (lambda s: s[2:4])
            self._layers = [(name, shape) for name, shape in self.layer_shapes()
                            if len(shape) == 4 and np.prod(spatial(shape)) > 1]
        return list(self._layers)

    def layer_shapes(self) -> list[tuple[str, tuple]]:
        """(name, output shape) of every layer, in call order (one forward pass of one image, made once)."""
        if self._shapes is None:
            backend = self._backend
            with backend.session():
                self._shapes = backend.layer_shapes([backend.ops.asarray(self.images[:1])])
        return list(self._shapes)

    def grid_layers(self) -> list[str]:
        """The layers a CAM can read without ``reshape=``: outputs that are a grid of image positions
        (feature maps, transformer tokens), in call order."""
        from ..methods.layer_grids import grid_layers

        size = self.images.shape[1:3] if self.channels_last else self.images.shape[2:4]
        tensorflow = self._backend.framework == "tensorflow"  # Keras' feature maps are (B, h, w, C)
        return [name for name, _ in grid_layers(self.layer_shapes(), tuple(size), tensorflow, batch=1)]
