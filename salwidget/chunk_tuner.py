"""Chunks that tune themselves: ``batch_size='auto'`` times the first chunks of real runs.

Which chunk size is fastest depends on the machine, its load and the model: on
a 2-core CPU, EfficientNet-Lite0's best flipped between 8 and 16 passes per
chunk from one minute to the next. So ``'auto'`` does not settle on one guess.
The first chunks of a run (there is no separate warm-up) try the engine's
size, twice and half of it (never above the memory cap on a GPU), each
:data:`SAMPLES` times, in turn; the size with the fewest seconds per pass (the
least of its samples: a first chunk of a new size pays one-time costs) is
kept. It is remembered per (model, per-image input shape, device and dtype,
kind of work: ``'input_gradients'``, ``'layer'`` or ``'forward'``) for the life
of the process, so tuning that a short run leaves unfinished goes on in the
next. Results never depend on it: every method gives the same maps for any chunk.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field

SAMPLES = 2  # timed chunks per candidate size
FACTORS = (1.0, 2.0, 0.5)  # candidate sizes, as multiples of the engine's size (tried in this order)
FULL = 0.75  # a chunk counts as a sample of its size when it ran at least this share of it

clock = time.perf_counter  # module-level, so tests can drive the tuner with a fake clock


@dataclass
class Tuning:
    """The trials of one key: candidate sizes, their seconds per pass, the size chosen once all are timed."""

    candidates: tuple[int, ...]
    samples: dict[int, list[float]] = field(default_factory=dict)
    chosen: int | None = None

    def propose(self, remaining: int) -> tuple[int, bool]:
        """(passes per chunk, whether to time the chunk) with room for ``remaining`` passes."""
        if self.chosen is not None:
            return self.chosen, False
        # The candidate with the fewest samples (ties: in FACTORS' order) that fits in what is left.
        for size in sorted(self.candidates, key=lambda c: len(self.samples.get(c, ()))):
            if size * FULL <= remaining:
                return size, True
        return self.best(), False

    def record(self, size: int, passes: int, seconds: float) -> None:
        """One timed chunk of ``passes`` passes asked as ``size`` per chunk."""
        if self.chosen is not None or size not in self.candidates or passes < size * FULL or passes <= 0:
            return
        self.samples.setdefault(size, []).append(seconds / passes)
        if all(len(self.samples.get(c, ())) >= SAMPLES for c in self.candidates):
            self.chosen = self.best()

    def best(self) -> int:
        """The fastest size measured so far (the first candidate before any measurement)."""
        timed = {c: min(s) for c, s in self.samples.items() if s}
        return min(timed, key=timed.get) if timed else self.candidates[0]


def candidates(base: int, cap: int | None) -> tuple[int, ...]:
    """The sizes to try around the engine's ``base`` size, none above ``cap``; one when base is 1 and capped."""
    sizes = []
    for factor in FACTORS:
        size = max(1, int(round(base * factor)))
        if (cap is None or size <= cap) and size not in sizes:
            sizes.append(size)
    return tuple(sizes) or (max(1, min(base, cap or base)),)


class ChunkTuner:
    """The process's memory of tuned chunk sizes, per owner (a backend: one per model) and key."""

    def __init__(self):
        self._lock = threading.Lock()
        self._memory: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def tuning(self, owner, key: tuple, base: int, cap: int | None) -> "Plan":
        """The plan of one stage: sizes for its chunks under ``key`` (made from ``base`` and ``cap`` the
        first time the key is seen; a later ``cap`` still bounds every size)."""
        with self._lock:
            table = self._memory.get(owner)
            if table is None:
                table = self._memory[owner] = {}
            trials = table.get(key)
            if trials is None:
                trials = table[key] = Tuning(candidates(base, cap))
        return Plan(self, trials, cap)

    def chosen(self, owner, key: tuple) -> int | None:
        """The size kept for ``key``, or None while it is still being tuned (or never was)."""
        with self._lock:
            trials = self._memory.get(owner, {}).get(key)
            return None if trials is None else trials.chosen

    def forget(self) -> None:
        """Forget every tuned size (the next runs tune again)."""
        with self._lock:
            self._memory.clear()


class Plan:
    """Chunk sizes for one stage of a run (see :meth:`ChunkTuner.tuning`)."""

    def __init__(self, tuner: ChunkTuner, trials: Tuning, cap: int | None):
        self._tuner, self._trials, self._cap = tuner, trials, cap

    def propose(self, remaining: int) -> tuple[int, bool]:
        """(passes per chunk, whether to time the chunk): sizes above this run's cap wait for a run with room."""
        room = remaining if self._cap is None else min(remaining, self._cap)
        with self._tuner._lock:
            size, timed = self._trials.propose(room)
        return (size if self._cap is None else max(1, min(size, self._cap))), timed

    def record(self, size: int, passes: int, seconds: float) -> None:
        with self._tuner._lock:
            self._trials.record(size, passes, seconds)


TUNER = ChunkTuner()

__all__ = ["ChunkTuner", "FACTORS", "Plan", "SAMPLES", "TUNER", "Tuning", "candidates"]
