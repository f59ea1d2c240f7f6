"""Chunks that tune themselves: the first chunks of a real run try a few sizes and keep the fastest.

On a CPU the best number of passes per chunk depends on the model, the input
size and the load of the machine (on this project's 2-core machine it flips
between 8 and 16 for EfficientNet-Lite0 from one minute to the next), so a
fixed ``batch_size='auto'`` cannot win every run. A :class:`Tuner` runs the
first chunks of a run at the starting size and at twice and half of it, each
:data:`SAMPLES` times in turn, keeps each size's fastest chunk per pass (a
first chunk of a new size pays one-time costs; a loaded moment slows one
sample, rarely both), and remembers the fastest size for the life of the
process, per (model, input shape, device, kind of work). There is no separate
warm-up: the tried chunks are real work, and a run too short to finish the
trials leaves them to the next run with the same key. Results never depend on it (a method's result
does not depend on its chunks). A ``batch_size`` the user gives is not tuned;
CUDA devices size chunks by free memory instead (the backends' ``fit_chunk``).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

_REMEMBERED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_TUNING: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()  # trials under way
_LOCK = threading.Lock()
SAMPLES = 2  # timed chunks per candidate size
clock = time.perf_counter  # a test may replace it


def remembered(model: Any, key: tuple) -> int | None:
    """The passes per chunk found best for ``model`` and ``key`` (input shape, device, kind), if any."""
    with _LOCK:
        try:
            return _REMEMBERED.get(model, {}).get(key)
        except TypeError:  # a model that cannot be weakly referenced is not remembered
            return None


def remember(model: Any, key: tuple, chunk: int) -> None:
    with _LOCK:
        try:
            _REMEMBERED.setdefault(model, {})[key] = int(chunk)
            _TUNING.get(model, {}).pop(key, None)
        except TypeError:
            pass


def tuner_for(model: Any, key: tuple, start: int) -> "Tuner":
    """The trials under way for ``model`` and ``key`` (an earlier, shorter run's), or new ones from ``start``."""
    with _LOCK:
        try:
            return _TUNING.setdefault(model, {}).setdefault(key, Tuner(model, key, start))
        except TypeError:
            return Tuner(model, key, start)


class Tuner:
    """Tries ``start``, ``2 start`` and ``start // 2`` passes per chunk (in that order, :data:`SAMPLES` rounds)
    on the first chunks.

    :meth:`size` says how many passes the next chunk takes; :meth:`done` takes how long a chunk of that size
    took. Once every size has its samples, :attr:`best` is the fastest per pass (each size's fastest sample),
    remembered for ``model`` and ``key``.
    """

    def __init__(self, model: Any, key: tuple, start: int):
        self.key = key
        self._model = _weak(model)
        self.sizes = [start] + [s for s in (2 * start, start // 2) if s >= 1 and s != start]
        self.seconds_per_pass: dict[int, list[float]] = {}
        self.best: int | None = None

    @property
    def tuning(self) -> bool:
        return self.best is None

    def size(self) -> int:
        """The next size to try: the first with the fewest samples."""
        return min(self.sizes, key=lambda s: len(self.seconds_per_pass.get(s, ())))

    def done(self, size: int, passes: int, seconds: float) -> None:
        """A chunk of ``size`` passes per chunk ran ``passes`` passes in ``seconds``."""
        if self.best is not None or passes < size:  # a short last chunk says little about its size
            return
        self.seconds_per_pass.setdefault(size, []).append(seconds / passes)
        if all(len(self.seconds_per_pass.get(s, ())) >= SAMPLES for s in self.sizes):
            fastest = {s: min(times) for s, times in self.seconds_per_pass.items()}
            self.best = min(fastest, key=fastest.get)
            model = self._model()
            if model is not None:
                remember(model, self.key, self.best)


def _weak(model: Any):
    try:
        return weakref.ref(model)
    except TypeError:  # no weak reference: held (such a model is not remembered either)
        return lambda: model
