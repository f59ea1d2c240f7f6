"""The panel's computing: one worker thread, generations, cancel, atomic publishing.

Every request gets a generation number; a newer request makes older ones
stale. Stale work stops at the engine's next chunk (its ``cancel`` hook asks
:meth:`Worker.is_stale`), and nothing it produces reaches the screen:
:meth:`Worker.publish` checks the generation and draws under one lock, so no
stale preview can land between a check and a draw, and look-only redraws
(taken under the same lock) are never overwritten by older pictures.

:func:`run_job` is the work of one request, written against a small
interface (``explorer.cached/compute/resume_point`` and a sink with
``begin/progress/column_done/finish/fail``) so tests can drive it with fakes.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import AttributionCancelled, SaliencyError

logger = logging.getLogger("salwidget")
PREVIEW_INTERVAL_S = 0.25  # at least this long between previews (and three times a draw's duration)


@dataclass
class MapsJob:
    """One request: the page's explorer and the settings to compute."""

    explorer: Any
    settings: Any


@dataclass
class MapOutcome:
    """What happened to one method's map: 'cached', 'computed' or 'resumed' (from ``resumed_from`` samples)."""

    method: str
    how: str
    result: Any
    resumed_from: int | None = None


class Worker:
    """Runs requests one at a time in a worker thread (see the module docstring)."""

    def __init__(self):
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self.generation = 0
        self._open = 0  # tasks of the current generation not finished yet
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salwidget")

    def submit(self, task: Callable[[int], None], follow: bool = False) -> int:
        """Run ``task(generation)`` after the work already queued; older generations become stale.

        ``follow=True`` adds the task to the current request instead (the
        evaluation after the grid's maps): nothing goes stale, and the task
        goes stale with the request.
        """
        with self.lock:
            if not follow:
                self.generation += 1
                self._open = 0
            self._open += 1
            generation = self.generation
        self._executor.submit(self._run, generation, task)
        return generation

    def _run(self, generation: int, task: Callable[[int], None]) -> None:
        try:
            if not self.is_stale(generation):
                task(generation)
        except Exception:  # a task shows its own errors; this is a last resort, never silent
            logger.exception("salwidget: unexpected error in the panel's worker")
        finally:
            self.settle(generation)

    def is_stale(self, generation: int) -> bool:
        return generation != self.generation

    def publish(self, generation: int, draw: Callable[[], None]) -> bool:
        """Run ``draw`` under the lock if ``generation`` is still current; whether it ran."""
        with self.lock:
            if generation != self.generation:
                return False
            draw()
            return True

    def settle(self, generation: int) -> None:
        with self.lock:
            if generation == self.generation:
                self._open = max(0, self._open - 1)
                if not self._open:
                    self._changed.notify_all()

    def cancel(self) -> int:
        """Make every request stale and settle at once (the Stop button); the new generation."""
        with self.lock:
            self.generation += 1
            self._open = 0
            self._changed.notify_all()
            return self.generation

    @property
    def busy(self) -> bool:
        return self._open > 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latest request (and the work following it) has settled; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while self._open:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def shutdown(self) -> None:
        self.cancel()
        self._executor.shutdown(wait=False)


def run_job(worker: Worker, generation: int, job: MapsJob, sink: Any, preview_interval: float | None = None) -> None:
    """Compute every method of ``job`` in order, publishing previews, columns and the end to ``sink``."""
    interval = PREVIEW_INTERVAL_S if preview_interval is None else preview_interval
    started = time.perf_counter()
    settings, explorer = job.settings, job.explorer
    outcomes: list[MapOutcome] = []
    try:
        if not settings.methods:
            raise SaliencyError("No method selected: pick at least one.")
        worker.publish(generation, lambda: sink.begin(job))
        for method in settings.methods:
            if worker.is_stale(generation):
                return
            outcome = _one_method(worker, generation, explorer, settings, method, sink, interval)
            outcomes.append(outcome)
            worker.publish(generation, lambda: sink.column_done(outcome))
        worker.publish(generation, lambda: sink.finish(outcomes, time.perf_counter() - started))
    except AttributionCancelled:
        return
    except Exception as exc:  # shown in the panel; the panel keeps working
        if worker.is_stale(generation):
            return
        error, details = exc, traceback.format_exc()
        logger.error("salwidget: computing %s failed\n%s", ", ".join(settings.methods), details)
        worker.publish(generation, lambda: sink.fail(error, details))


def _one_method(worker, generation, explorer, settings, method, sink, interval) -> MapOutcome:
    hit = explorer.cached(method, settings)
    if hit is not None:
        return MapOutcome(method, "cached", hit)
    resumed = explorer.resume_point(method, settings)
    last = [time.perf_counter()]

    def progress(done: int, total: int, partial) -> None:
        now = time.perf_counter()
        # Previews are drawn by this thread, between chunks: keep them to a third of its time at most.
        draw = done < total and now - last[0] >= max(interval, 3 * getattr(sink, "draw_seconds", 0.0))
        if draw:
            last[0] = now
        worker.publish(generation, lambda: sink.progress(method, partial, done, total, draw))

    result = explorer.compute(method, settings, progress, lambda: worker.is_stale(generation))
    if "stored" in getattr(result, "extras", {}):  # a dataset job's maps, read back
        return MapOutcome(method, "stored", result)
    return MapOutcome(method, "computed" if resumed is None else "resumed", result, resumed)
