"""What the Evaluate view computes, without any widget: jobs, their cache, the work in the worker, the board.

An :class:`EvaluationJob` asks, for the methods shown on one page under one
setting, for:

- each method's deletion and insertion curves
  (:func:`salwidget.deletion_insertion` of the panel's own map) and those of a
  seeded random pixel order, the chance level;
- optionally, each method's cascading model-randomisation sanity check
  (:func:`salwidget.sanity_check`) at a few evenly spaced depths.

Every piece of work (a :class:`Unit`) is cached under the key of what it
depends on: the page (its explorer), the method's result key (options,
target, CAM layer, model weights, as the explorer keys maps) and the curve
steps or depths. :func:`run_evaluation` does a job's units in the panel's
worker thread, publishing previews and results to a sink through a
:class:`Ticket`, which drops everything once the job is stale. The
:class:`Board` holds what the view shows.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np

from ..backends import get_backend
from ..caches import BoundedCache
from ..errors import AttributionCancelled, SaliencyError
from ..methods import get_method
from .map_cache import Settings

logger = logging.getLogger("salwidget")

CURVES, SANITY = "curves", "sanity"
RANDOM = "random"  # the chance level: a random pixel order, seeded
PENDING, COMPUTING, DONE, STOPPED, FAILED = "pending", "computing", "done", "stopped", "failed"
STEP_CHOICES = (8, 16, 32, 64)
DEPTH_CHOICES = (3, 4, 5, 6, 8)
# Methods left out of the sanity check, and why (shown in the view).
SANITY_SKIPPED = {
    "xrai": "XRAI is left out of the sanity check: every one of its maps also segments the image on the host "
            "(over a second per image), once per depth.",
}
PREVIEW_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Unit:
    """One piece of work: a method's (or the random order's) curves, or a method's sanity check."""

    kind: str
    method: str


@dataclass
class EvaluationJob:
    """What to evaluate: the page (explorer), the settings of its maps, curve steps, depths, sanity methods."""

    explorer: Any
    settings: Settings
    steps: int
    depths: int
    sanity: tuple[str, ...] = ()
    first: int = 0  # the index of the page's first image among the panel's
    weights: Any = None  # the weights version the job's keys use (Explorer.read_weights); None: read when needed

    def version(self) -> Any:
        """The weights version of the job's keys (read from the model the first time, if none was given)."""
        if self.weights is None:
            self.weights = self.explorer.read_weights()
        return self.weights

    def read_weights(self) -> None:
        """Key the job by the weights as they are now (the worker does, before it computes)."""
        self.weights = self.explorer.read_weights()
        self.__dict__.pop("basis", None)

    @cached_property
    def basis(self) -> tuple:
        """What the shown results depend on (two jobs with one basis share every result): the page, each
        method's map key (options, target, layer, weights), the steps and depths."""
        maps = tuple((m, self.explorer.map_key(m, self.settings, self.version())) for m in self.settings.methods)
        return (id(self.explorer), maps, self.steps, self.depths)

    def curve_units(self) -> list[Unit]:
        return [Unit(CURVES, m) for m in self.settings.methods] + ([Unit(CURVES, RANDOM)] if self.settings.methods
                                                                    else [])

    def sanity_units(self) -> list[Unit]:
        return [Unit(SANITY, m) for m in self.sanity if m in self.settings.methods and m not in SANITY_SKIPPED]

    def units(self) -> list[Unit]:
        return self.curve_units() + self.sanity_units()


def target_argument(settings: Settings) -> Any:
    """The settings' target as the core functions take it (None: each image's prediction)."""
    target = settings.target
    if isinstance(target, str):
        return None
    return list(target) if isinstance(target, (tuple, list)) else target


def unit_key(job: EvaluationJob, unit: Unit) -> tuple:
    """The cache key of ``unit``: the page, what its map depends on, and the steps or depths."""
    explorer = job.explorer
    if unit.method == RANDOM:
        target = tuple(job.settings.target) if isinstance(job.settings.target, tuple) else job.settings.target
        return (explorer, CURVES, RANDOM, target, job.version(), explorer.seed, job.steps)
    key = explorer.map_key(unit.method, job.settings, job.version())  # the key the explorer caches the map under
    return (explorer, unit.kind, key, job.steps if unit.kind == CURVES else job.depths)


_DEPTHS = BoundedCache(16)  # (count, weights version) -> depth_layers' answer


def depth_layers(model: Any, count: int, version: Any = None) -> list[str]:
    """``count`` evenly spaced layers with weights, output end first (the first and last included).

    Layers whose weights are kernels (convolutions, dense layers) are
    preferred over normalisation layers when there are enough of them. With
    ``version`` (the model's weights version, which changes with its
    structure) the answer is remembered: a cost line walks the model once.
    """
    if version is None:
        return _depth_layers(model, count)
    return list(_DEPTHS.get_or_make((count, version), lambda: _depth_layers(model, count)))


def _depth_layers(model: Any, count: int) -> list[str]:
    weighted = list(get_backend(model).weighted_layers())
    kernels = _kernel_layers(model, weighted)
    pool = kernels if len(kernels) >= min(count, len(weighted)) and len(kernels) >= 2 else weighted
    if len(pool) <= count:
        return pool
    picks = np.unique(np.round(np.linspace(0, len(pool) - 1, count)).astype(int))
    return [pool[i] for i in picks]


def _kernel_layers(model: Any, names: list[str]) -> list[str]:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        modules = dict(model.named_modules())
        return [n for n in names if getattr(getattr(modules.get(n), "weight", None), "ndim", 0) >= 2]
    layers = {getattr(layer, "name", None): layer for layer in getattr(model, "layers", ())}
    return [n for n in names if any(len(getattr(w, "shape", ())) >= 2 for w in getattr(layers.get(n), "weights", ()))]


# ------------------------------------------------------------------ costs
@dataclass
class Cost:
    """Passes a job still needs: forward-only (curves) and forward+backward (maps, sanity checks)."""

    forward: int = 0
    gradient: int = 0
    curves: list = field(default_factory=list)  # methods (and 'random') whose curves are to compute
    sanity: list = field(default_factory=list)  # (method, maps) whose sanity check is to compute
    maps: int = 0  # the sanity check's maps per method (the trained model's and one per depth)
    sanity_gradient: int = 0  # of ``gradient``: the sanity check's passes

    def seconds(self, rate: float | None, measured: "PassRates | None" = None) -> float | None:
        """Seconds it would take: each kind of pass at the rate measured for that work (``measured``: the
        curves' forward passes, the sanity check's passes), else the maps' ``rate`` (a forward pass a third)."""
        from ..evaluation.perturbation import FORWARD_COST

        forward = measured.forward if measured is not None and measured.forward else (rate or 0.0) * FORWARD_COST
        sanity = measured.sanity if measured is not None and measured.sanity else rate or 0.0
        maps = self.gradient - self.sanity_gradient
        if (self.forward and not forward) or (maps and not rate) or (self.sanity_gradient and not sanity):
            return None  # nothing measured yet
        return self.forward * forward + maps * (rate or 0.0) + self.sanity_gradient * sanity

    @property
    def empty(self) -> bool:
        return not self.forward and not self.gradient


@dataclass
class PassRates:
    """Seconds per pass measured by the evaluations that ran: a curve's forward pass, a sanity check's pass
    (a map of a randomised copy, the copy's making included). 0.0 until measured."""

    forward: float = 0.0
    sanity: float = 0.0

    def record(self, cost: Cost, seconds: float, maps_rate: float) -> None:
        """One unit of ``cost`` took ``seconds`` (its maps, computed first, at ``maps_rate``)."""
        if cost.sanity_gradient:
            self.sanity = seconds / cost.sanity_gradient
        elif cost.forward:
            maps = (cost.gradient - cost.sanity_gradient) * maps_rate
            self.forward = max(seconds - maps, 0.0) / cost.forward or self.forward


def estimate(job: EvaluationJob, cache: "EvaluationCache", units: list[Unit] | None = None) -> Cost:
    """What computing ``units`` (default: the job's) would cost, cached ones free."""
    explorer, settings = job.explorer, job.settings
    batch = len(explorer.images)
    cost = Cost()
    for unit in job.units() if units is None else units:
        if cache.get(unit_key(job, unit)) is not None:
            continue
        if unit.kind == CURVES:
            cost.forward += 2 * job.steps * batch
            cost.curves.append(unit.method)
            if unit.method != RANDOM:
                cost.gradient += explorer.passes_needed(unit.method, settings, job.version())
        else:
            method = get_method(unit.method)
            if not cost.maps:  # the trained model's map and one per depth, the same for every method
                cost.maps = 1 + len(depth_layers(explorer.model, job.depths, job.version()))
            maps = cost.maps
            passes = method.passes(method.resolve(settings.options_for(unit.method)), batch) * maps
            cost.gradient += passes
            cost.sanity_gradient += passes
            cost.sanity.append(unit.method)
    return cost


# ------------------------------------------------------------------ the cache
class EvaluationCache(BoundedCache):
    """Curves and sanity checks by :func:`unit_key` (least recently used go first), and the seconds per pass
    their computing measured (``rates``, kept when the cache is cleared: the model is the same)."""

    def __init__(self, size: int = 96):
        super().__init__(size)
        self.rates = PassRates()


# ------------------------------------------------------------------ computing
def compute_unit(job: EvaluationJob, unit: Unit, progress: Callable | None, cancel: Callable[[], bool],
                 on_map: Callable[[str], None] | None = None) -> Any:
    """The result of one unit (in the worker thread): a Curves or a SanityCheck."""
    from ..evaluation import deletion_insertion, sanity_check

    explorer, settings = job.explorer, job.settings
    common = dict(channels_last=explorer.channels_last, output=explorer.output_index,
                  batch_size=explorer.batch_size, progress=progress, cancel=cancel, framework=explorer.framework)
    if unit.kind == CURVES:
        if unit.method == RANDOM:
            return deletion_insertion(explorer.model, explorer.images, "random", target=target_argument(settings),
                                      steps=job.steps, seed=explorer.seed, multilabel=explorer.multilabel, **common)
        if explorer.cached(unit.method, settings) is None and on_map is not None:
            on_map(unit.method)
        attribution = explorer.compute(unit.method, settings, None, cancel)  # the map the grid shows
        return deletion_insertion(explorer.model, explorer.images, attribution, steps=job.steps, **common)
    method = get_method(unit.method)
    extra = {"layer": settings.layer} if method.reads == "layer" else {}
    return sanity_check(explorer.model, explorer.images, unit.method, target=target_argument(settings),
                        order="cascading", layers=depth_layers(explorer.model, job.depths), seed=explorer.seed,
                        rng=explorer.rng, **common, **extra, **settings.options_for(unit.method))


@dataclass
class UnitOutcome:
    """What happened to one unit: 'cached' or 'computed'."""

    unit: Unit
    how: str
    result: Any


class Ticket:
    """A job's right to publish: its worker generation and its evaluation serial must both still be current.

    A new request of the grid (another setting, the Stop button) makes the
    generation stale; a new evaluation of another setting, steps or depths
    bumps the serial. ``publish`` checks and draws under the worker's lock,
    so nothing stale lands between a check and a draw.
    """

    def __init__(self, worker: Any, generation: int, owner: Any, serial: int):
        self.worker, self.generation, self.owner, self.serial = worker, generation, owner, serial

    def stale(self) -> bool:
        return self.worker.is_stale(self.generation) or self.owner.serial != self.serial

    def publish(self, draw: Callable[[], None]) -> bool:
        with self.worker.lock:
            if self.stale():
                return False
            draw()
            return True


def run_evaluation(ticket: Ticket, job: EvaluationJob, sink: Any, cache: EvaluationCache,
                   preview_interval: float | None = None) -> None:
    """Do every unit of ``job`` in order (cached ones at once), publishing to ``sink``.

    ``sink`` has ``evaluation_begin(job)``, ``evaluation_progress(unit, partial, done, total, draw, index,
    count)``, ``evaluation_map(method)``, ``evaluation_done(outcome)``, ``evaluation_finish(outcomes, seconds)``,
    ``evaluation_fail(exc, details)`` and ``evaluation_draw_seconds``.
    """
    interval = PREVIEW_INTERVAL_S if preview_interval is None else preview_interval
    started = time.perf_counter()
    units = job.units()
    outcomes: list[UnitOutcome] = []
    try:
        if not job.settings.methods:
            raise SaliencyError("No method selected: pick at least one to evaluate.")
        job.read_weights()  # keys by the weights as they are now (the kernel's thread used the last ones read)
        ticket.publish(lambda: sink.evaluation_begin(job))
        for index, unit in enumerate(units):
            if ticket.stale():
                return
            key = unit_key(job, unit)
            hit = cache.get(key)
            if hit is not None:
                outcome = UnitOutcome(unit, "cached", hit)
            else:
                cost, began = estimate(job, cache, [unit]), time.perf_counter()
                result = compute_unit(job, unit, _progress(ticket, sink, unit, index, len(units), interval),
                                      ticket.stale, lambda m: ticket.publish(lambda: sink.evaluation_map(m)))
                cache.rates.record(cost, time.perf_counter() - began, job.explorer.seconds_per_pass or 0.0)
                cache.put(key, result)
                outcome = UnitOutcome(unit, "computed", result)
            outcomes.append(outcome)
            ticket.publish(lambda: sink.evaluation_done(outcome))
        ticket.publish(lambda: sink.evaluation_finish(outcomes, time.perf_counter() - started))
    except AttributionCancelled:
        return
    except Exception as exc:  # shown in the panel; the panel keeps working
        if ticket.stale():
            return
        error, details = exc, traceback.format_exc()
        logger.error("salwidget: evaluating %s failed\n%s", ", ".join(job.settings.methods), details)
        ticket.publish(lambda: sink.evaluation_fail(error, details))


def _progress(ticket: Ticket, sink: Any, unit: Unit, index: int, count: int, interval: float) -> Callable:
    last = [time.perf_counter()]

    def progress(done: int, total: int, partial: Any) -> None:
        now = time.perf_counter()
        # Previews are drawn by the worker between chunks: at most a third of its time.
        draw = done < total and now - last[0] >= max(interval, 3 * getattr(sink, "evaluation_draw_seconds", 0.0))
        if draw:
            last[0] = now
        ticket.publish(lambda: sink.evaluation_progress(unit, partial, done, total, draw, index, count))

    return progress


# ------------------------------------------------------------------ what the view shows
@dataclass
class Entry:
    """One unit on the board: its result (a preview while computing), state and note."""

    result: Any = None
    state: str = PENDING
    note: str = ""


class Board:
    """The Evaluate view's results for one basis (page, settings, steps, depths).

    Curves of every shown method and of the random order are always on the
    board (pending until computed); a sanity check only once it was asked for
    or is in the cache.
    """

    def __init__(self):
        self.basis: tuple | None = None
        self.curves: dict[str, Entry] = {}
        self.sanity: dict[str, Entry] = {}
        self.state = ""  # '', computing, done, stopped, failed
        self.images = 0  # images on the page
        self.first = 0  # the page's first image

    def stage(self, job: EvaluationJob, cache: EvaluationCache, asked: tuple[str, ...] = ()) -> None:
        """Show ``job``'s basis: cached results at once, the rest pending (sanity checks only if asked)."""
        if self.basis != job.basis:
            self.sanity = {}
            self.state = ""
        self.basis = job.basis
        self.images, self.first = len(job.explorer.images), job.first
        curves = {}
        for unit in job.curve_units():
            hit = cache.get(unit_key(job, unit))
            old = self.curves.get(unit.method)
            keep = old if old is not None and old.state == DONE and hit is old.result else None
            curves[unit.method] = keep or (Entry(hit, DONE) if hit is not None else Entry())
        self.curves = curves
        sanity = {}
        for method in job.settings.methods:
            if method in SANITY_SKIPPED:
                continue
            hit = cache.get(unit_key(job, Unit(SANITY, method)))
            if hit is not None:
                sanity[method] = Entry(hit, DONE)
            elif method in asked or method in self.sanity:
                sanity[method] = self.sanity.get(method) or Entry()
        self.sanity = sanity

    def entry(self, unit: Unit) -> Entry:
        table = self.curves if unit.kind == CURVES else self.sanity
        return table.setdefault(unit.method, Entry())

    def mark(self, state: str) -> None:
        """Every entry not done gets ``state`` (stopped, failed)."""
        for entry in [*self.curves.values(), *self.sanity.values()]:
            if entry.state != DONE:
                entry.state = state
        self.state = state

    def done_curves(self) -> dict[str, Any]:
        return {m: e.result for m, e in self.curves.items() if e.state == DONE}

    def done_sanity(self) -> dict[str, Any]:
        return {m: e.result for m, e in self.sanity.items() if e.state == DONE}
