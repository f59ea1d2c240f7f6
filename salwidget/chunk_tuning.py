"""Chunks that tune themselves: the first chunks of a real run try a few sizes and keep the fastest.

On a CPU the best number of passes per chunk depends on the model, the input
size and the load of the machine (on this project's 2-core machine it flips
between 8 and 16 for EfficientNet-Lite0 from one minute to the next), so a
fixed ``batch_size='auto'`` cannot win every run. A :class:`Tuner` runs the
first chunks of a run at half, the starting and twice the size, smallest first,
each :data:`SAMPLES` + 1 times in a row; a size's first chunk is not counted (it
pays one-time costs: memory mapped in, kernels chosen, a trace), and each size's
fastest counted chunk per pass decides (a loaded moment slows one sample, rarely
both; sizes within :data:`TIE` of the fastest count as fast, and the largest
wins). Noise blocks drawn in a chunk, which serve later chunks too, are left out
of its time. The fastest size is remembered for the life of the process, per
(model, input shape, device, kind of work). There is no separate
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
TIE = 0.05  # sizes this close per pass (relatively) count as equally fast
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
    """Tries ``start // 2``, ``start`` and ``2 start`` passes per chunk (in that order, each ``1 + SAMPLES``
    chunks in a row, the first not counted) on the first chunks.

    :meth:`size` says how many passes the next chunk takes; :meth:`done` takes how long a chunk of that size
    took. Once every size has its samples, :attr:`best` is the fastest per pass (each size's fastest sample),
    remembered for ``model`` and ``key``.
    """

    def __init__(self, model: Any, key: tuple, start: int):
        self.key = key
        self._model = _weak(model)
        # Smallest first: a size measured after a larger one reuses the memory that one freed and skips the
        # page faults it meets in a run of its own (4 passes a chunk measured 1.3 ms a pass after 16, 1.85 in
        # a run at 4), so small sizes won where larger ones were faster
        self.sizes = sorted({s for s in (start // 2, start, 2 * start) if s >= 1})
        self.seconds_per_pass: dict[int, list[float]] = {}
        self.best: int | None = None

    @property
    def tuning(self) -> bool:
        return self.best is None

    def size(self) -> int:
        """The next size to try: each in turn, in a run of ``1 + SAMPLES`` chunks."""
        return next(s for s in self.sizes if len(self.seconds_per_pass.get(s, ())) < 1 + SAMPLES)

    def done(self, size: int, passes: int, seconds: float) -> None:
        """A chunk of ``size`` passes per chunk ran ``passes`` passes in ``seconds``."""
        if self.best is not None or passes < size:  # a short last chunk says little about its size
            return
        self.seconds_per_pass.setdefault(size, []).append(seconds / passes)
        if all(len(self.seconds_per_pass.get(s, ())) > SAMPLES for s in self.sizes):
            # A size's first chunk is not counted: it pays for the new size (memory the allocator maps in,
            # kernels chosen, a trace), which a size tried after a larger one skipped (so small sizes won).
            fastest = {s: min(times[1:]) for s, times in self.seconds_per_pass.items()}
            # Within TIE of the fastest, the largest: fewer chunks, and a 2-core machine's samples cannot tell
            # a few per cent apart (EfficientNet-Lite0: 16 passes a chunk 3% faster per pass than 8, 7% a run)
            quickest = min(fastest.values())
            self.best = max(s for s, t in fastest.items() if t <= quickest * (1 + TIE))
            model = self._model()
            if model is not None:
                remember(model, self.key, self.best)


def _weak(model: Any):
    try:
        return weakref.ref(model)
    except TypeError:  # no weak reference: held (such a model is not remembered either)
        return lambda: model
