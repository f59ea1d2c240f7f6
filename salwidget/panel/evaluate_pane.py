"""The Evaluate view of the panel: its controls, picture and AUC table, its requests, and the sink of its jobs.

It shares the panel's worker, status line, progress bar, Stop and Compute
buttons and error line. An evaluation runs in the worker after the grid's
work of the same request (:meth:`Worker.submit` with ``follow=True``), so
asking for one never cancels the grid; any new request of the grid (another
setting, page or the Stop button) makes it stale, and so does an evaluation
of other curve steps or depths (a serial number of its own, see
:class:`~salwidget.panel.evaluate.Ticket`). Showing the view asks for the
curves; the sanity check runs only on its button (or
``w.evaluate(sanity_check=True)``). The computing is in
:mod:`salwidget.panel.evaluate`, the drawing in
:mod:`salwidget.panel.evaluation_plot`.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from ..methods import get_method
from . import controls
from .evaluate import (COMPUTING, CURVES, DEPTH_CHOICES, DONE, FAILED, RANDOM, SANITY, SANITY_SKIPPED,
                       STEP_CHOICES, STOPPED, Board, Entry, EvaluationCache, EvaluationJob, Ticket, Unit,
                       depth_layers, estimate, run_evaluation, unit_key)
from .evaluation_plot import RANDOM_LABEL, Shown, draw, mean_auc, plots_figure
from .files import evaluation_link
from .status import evaluation_done_status, evaluation_estimate_status, evaluation_progress_status


if TYPE_CHECKING:
    from .host import PanelHost


class EvaluatePane:
    """The Evaluate view of one :class:`~salwidget.SaliencyWidget` (see the module docstring)."""

    def __init__(self, host: "PanelHost"):
        self.host = host
        self.panel = host.panel  # the traits it reads and sets
        self.cache = EvaluationCache()
        self.board = Board()
        self.serial = 0  # bumped when the shown basis changes: evaluations of the old one go stale
        self.held: EvaluationJob | None = None
        self.inflight: tuple | None = None  # (serial, worker generation, sanity methods, job) last submitted
        self.asked: set[str] = set()  # methods whose sanity check was asked for under the shown basis
        self.png = b""
        self.dirty = True
        self.outdated = True  # settings changed while hidden: the board is restaged when shown or read
        self.evaluation_draw_seconds = 0.0
        self._started = 0.0
        self._running: EvaluationJob | None = None  # the job whose results the worker is publishing
        self._build()

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        tip = ("Points per curve: each map's curves cost 2 x steps forward passes per image (the random order "
               "too). More steps, finer curves.")
        self.steps = controls.named(widgets.Dropdown(options=list(STEP_CHOICES), layout=widgets.Layout(width="90px")),
                                    "curve-steps", tip)
        self.steps_view = controls.labelled(self.steps, "curve steps", tip)
        tip = ("How many depths the sanity check randomises down to: evenly spaced layers with weights, from the "
               "output layer to the first. Each depth costs one more map per method.")
        self.depths = controls.named(widgets.Dropdown(options=list(DEPTH_CHOICES), layout=widgets.Layout(width="80px")),
                                     "sanity-depths", tip)
        self.depths_view = controls.labelled(self.depths, "depths", tip)
        self.sanity_button = controls.named(
            widgets.Button(description="Sanity check", icon="random", layout=widgets.Layout(width="140px")),
            "sanity-check", "Re-draw the model's weights from the output layer down (cascading) and compare each "
                            "shown method's map with the trained model's (Adebayo et al. 2018). A map that barely "
                            "changes does not explain the model.")
        self.sanity_button.on_click(lambda button: self.panel.evaluate(sanity_check=True))
        if self.host.forward_only:  # no weights to re-draw: a numpy callable or an ONNX session is opaque
            self.sanity_button.disabled = True
            self.sanity_button.tooltip = ("The sanity check re-draws the model's weights; a numpy callable or an "
                                          "ONNX Runtime session has none salwidget can reach.")
        self.download = controls.named(widgets.HTML(), "evaluation-download", None)
        self.cost = controls.named(widgets.HTML(), "evaluate-cost", None)
        self.image = controls.named(
            # Its natural width (the figure's 860 px), shrunk to the panel's: no margin, which would stick out.
            widgets.Image(format="png", layout=widgets.Layout(width="auto", max_width="100%", margin="0",
                                                             height="auto", align_self="flex-start")),
            "evaluation", None)
        self.table = controls.named(widgets.HTML(), "auc-table", None)
        self.box = widgets.VBox([controls.wrap_row([self.steps_view, self.depths_view, self.sanity_button,
                                                    self.download]),
                                 self.cost, self.image, self.table],
                                layout=widgets.Layout(display="none", width="100%"))
        self.box.add_class("salwidget-evaluate-pane")

    @property
    def visible(self) -> bool:
        return self.panel.pane == "evaluate"

    def on_settings_change(self, change) -> None:
        """Curve steps or sanity depths changed: evaluate again when shown (restaged when shown otherwise)."""
        self.panel.error = ""
        self.host.show_controls()
        if self.visible:
            self.request(auto=True)
        else:
            self.defer()

    # ------------------------------------------------------------------ requests (main thread)
    def job(self, sanity: tuple[str, ...] = ()) -> EvaluationJob:
        """A job of the shown basis, keyed by the weights version last read (the worker reads it anew)."""
        p = self.panel
        explorer = self.host.explorer()
        job = EvaluationJob(explorer, self.host.settings(), p.curve_steps, p.sanity_depths, tuple(sanity),
                            self.host.page_slice().start, explorer.known_weights)
        if self._reuses(job):  # results keyed by the version last read may predate a training step: read it now
            job.read_weights()
        return job

    def _reuses(self, job: EvaluationJob) -> bool:
        """Whether the cache holds a curve or sanity check of ``job``'s basis."""
        units = job.curve_units() + [Unit(SANITY, m) for m in job.settings.methods if m not in SANITY_SKIPPED]
        return any(self.cache.get(unit_key(job, unit)) is not None for unit in units)

    def defer(self) -> None:
        """A setting changed while the view is hidden: nothing is looked up now (cache lookups and cost
        lines read the model on the kernel's thread); showing the view, or reading its results, restages
        it. Evaluations of the old settings stop and held ones are forgotten, as a new basis does."""
        with self.host.worker.lock:
            self.serial += 1
            self.held = None
            self.outdated = True

    def restage(self, sanity: bool = False) -> EvaluationJob:
        """Show the current basis (page, settings, steps, depths): cached results at once, the rest pending.

        Evaluations of another basis go stale; held ones are forgotten. With
        ``sanity``, the shown methods' sanity checks are asked for. Returns
        the job that would compute what the board shows.
        """
        p = self.panel
        job = self.job()
        with self.host.worker.lock:
            if job.basis != self.board.basis:
                self.serial += 1
                self.asked = set()
                self.held = None
            if sanity:
                self.asked |= {m for m in p.methods if m not in SANITY_SKIPPED}
            job.sanity = tuple(m for m in job.settings.methods if m in self.asked)
            self.board.stage(job, self.cache, job.sanity)
            self.outdated = False
            self.changed(draw=False)  # drawn by the job that computes it (matplotlib stays off the kernel's thread)
        self.show_cost()
        return job

    def request(self, sanity: bool = False, auto: bool = False) -> None:
        """Evaluate the shown maps in the worker: their curves, and with ``sanity`` their sanity checks.

        An ``auto`` request (showing the view, a setting changed while it is
        shown) waits for the Compute button when the grid does, or when it
        would take longer than ``confirm_seconds``.
        """
        p = self.panel
        if self.host.closed:
            return
        job = self.restage(sanity)
        if self._in_flight(set(job.sanity)):  # the same evaluation is queued or running (showing the view asked for it)
            return
        cost = estimate(job, self.cache)
        seconds = cost.seconds(self.host.rate(job.explorer), self.cache.rates)
        if auto and (self.host.held is not None or not cost.empty and (seconds or 0.0) > p.confirm_seconds):
            self.held = job
            self.show()  # the pending board, while it waits
            self.host.compute_button.layout.display = ""
            self.host.progress.value = 0  # nothing runs: a full bar would say it is done
            if self.host.held is None:  # the grid's work runs first and reports when done: the estimate comes after it
                text = evaluation_estimate_status(cost.forward, cost.gradient, seconds)
                serial = self.serial
                self.host.worker.submit(lambda generation: Ticket(self.host.worker, generation, self, serial).publish(
                    lambda: setattr(p, "status", text)), follow=True)
            return
        self.held = None
        self.submit(job)

    def submit(self, job: EvaluationJob) -> None:
        p = self.panel
        if self.host.held is not None:  # the maps first: asking for their evaluation says you want them
            self.host.start_held()
        if self.held is None and self.host.held is None:
            self.host.compute_button.layout.display = "none"
        self.host.stop_button.disabled = False
        serial = self.serial
        with self.host.worker.lock:  # the job cannot finish (under this lock) before it is known to be in flight
            generation = self.host.worker.submit(lambda generation: run_evaluation(
                Ticket(self.host.worker, generation, self, serial), job, self, self.cache), follow=True)
            self.inflight = (serial, generation, set(job.sanity), job)

    def _in_flight(self, sanity: set = frozenset()) -> bool:
        """Whether a submitted job of the shown basis is still current (and checks at least ``sanity``)."""
        if self.inflight is None:
            return False
        serial, generation, asked, _ = self.inflight
        worker = self.host.worker
        return serial == self.serial and not worker.is_stale(generation) and worker.busy and sanity <= asked

    def start_held(self) -> None:
        job, self.held = self.held, None
        if job is not None:
            self.submit(job)

    def stopped(self) -> None:
        """The Stop button (under the worker's lock): the board says what was left undone."""
        self.held = None
        self.asked = {m for m, e in self.board.sanity.items() if e.state == DONE}  # not asked again by itself
        if self.board.state == COMPUTING or any(e.state != DONE for e in self.board.curves.values()):
            self.board.mark(STOPPED)
            self.changed()

    # ------------------------------------------------------------------ the sink (worker thread, under the lock)
    def evaluation_begin(self, job: EvaluationJob) -> None:
        p = self.panel
        self._running = job
        self._started = time.perf_counter()
        self.host.stop_button.disabled = False
        self.host.progress.value = 0
        self.board.stage(job, self.cache, job.sanity)
        self.board.state = COMPUTING
        self.host.say("evaluate", "Evaluating...")
        self.changed()

    def evaluation_map(self, method: str) -> None:
        self.host.say("evaluate", f"Evaluating: computing the map of {get_method(method).label} first...")

    def evaluation_progress(self, unit: Unit, partial: Any, done: int, total: int, draw: bool, index: int,
                            count: int) -> None:
        p = self.panel
        self.host.progress.value = int(100 * (index + done / total) / count)
        self.host.say("evaluate", evaluation_progress_status(unit, done, total, time.perf_counter() - self._started))
        if draw:
            entry = self.board.entry(unit)
            entry.result, entry.state, entry.note = partial, COMPUTING, f"{done}/{total}"
            self.changed()

    def evaluation_done(self, outcome) -> None:
        table = self.board.curves if outcome.unit.kind == CURVES else self.board.sanity
        table[outcome.unit.method] = Entry(outcome.result, DONE)
        if outcome.how != "cached":
            self.changed()

    def evaluation_finish(self, outcomes: list, seconds: float) -> None:
        p = self.panel
        self._job_ended()
        self.board.state = DONE
        if self.dirty or not self.png:  # the last unit's result is usually drawn already
            self.changed()
        self.host.progress.value = 100
        self.host.stop_button.disabled = True
        self.host.say("evaluate", evaluation_done_status(outcomes, seconds, self.board.basis[2]))
        self.show_cost()

    def evaluation_fail(self, exc: Exception, details: str) -> None:
        p = self.panel
        self._job_ended()
        self.board.mark(FAILED)
        self.host.show_error(exc, details)
        self.host.say("evaluate", "Evaluation failed: see the message below.")
        self.host.stop_button.disabled = True
        self.changed()

    def _job_ended(self) -> None:
        """The running job ended: no longer in flight, unless a later job is (it keeps its own record)."""
        if self.inflight is not None and self.inflight[3] is self._running:
            self.inflight = None

    # ------------------------------------------------------------------ drawing
    def changed(self, draw: bool = True) -> None:
        """The board changed (under the lock): redraw if the view is shown (and ``draw``), else when it is shown."""
        self.dirty = True
        self.table.value = auc_table(self.board)
        if self.visible and draw:
            self.render()

    def _shown(self) -> tuple[dict, dict]:
        labels = {RANDOM: RANDOM_LABEL}
        curves = {m: Shown(labels.get(m) or get_method(m).label, e.result, e.state, e.note)
                  for m, e in self.board.curves.items()}
        sanity = {m: Shown(get_method(m).label, e.result, e.state, e.note, get_method(m).fails_sanity_check)
                  for m, e in self.board.sanity.items()}
        return curves, sanity

    def figure(self):
        """The view's plots as a matplotlib Figure (curves, and the sanity check's similarity once run)."""
        with self.host.worker.lock:
            curves, sanity = self._shown()
            return plots_figure(curves, sanity, images=self.board.images)

    def render(self) -> bytes:
        """Draw the board (under the worker's lock) and put it on screen."""
        started = time.perf_counter()
        p = self.panel
        curves, sanity = self._shown()
        png = draw(curves, sanity, cmap=p.cmap, image_label=f"image {self.board.first + 1}",
                   images=self.board.images)
        self.png, self.dirty = png, False
        self.image.value = png
        self.download.value = evaluation_link(png)
        self.evaluation_draw_seconds = time.perf_counter() - started
        return png

    def show(self) -> None:
        """The view became visible (main thread): draw what changed while it was hidden, unless a running
        evaluation is about to (its next step draws)."""
        with self.host.worker.lock:
            if (self.dirty or not self.png) and not self._in_flight():
                self.render()

    def show_cost(self) -> None:
        """What the evaluation of the shown basis still costs, as the grid's estimate does."""
        p = self.panel
        if not p.methods:
            self.cost.value = "Pick a method to evaluate."
            return
        try:
            job = self.job(tuple(m for m in p.methods if m not in SANITY_SKIPPED))
            curves = estimate(job, self.cache, job.curve_units())
            sanity = estimate(job, self.cache, job.sanity_units())
            rate = self.host.rate(job.explorer)
            layers = len(depth_layers(job.explorer.model, job.depths, job.version()))
        except Exception as exc:  # an estimate never breaks the panel; computing will say what is wrong
            self.cost.value = html.escape(f"(no estimate: {exc})")
            return
        batch = len(job.explorer.images)
        parts = []
        if curves.empty:
            parts.append(f"Curves ({job.steps} steps): done.")
        else:
            parts.append(f"Curves ({job.steps} steps): {len(curves.curves)} x 2 x {job.steps} steps x {batch} "
                         f"image{'s' if batch > 1 else ''} = {curves.forward:,} forward passes"
                         + (f" (and {curves.gradient:,} passes for maps first)" if curves.gradient else "")
                         + _about(curves.seconds(rate, self.cache.rates)) + ".")
        if sanity.empty:
            parts.append(f"Sanity check ({layers} depths): done." if job.sanity_units() else "")
        else:
            parts.append(f"Sanity check ({layers} depths): {len(sanity.sanity)} method"
                         f"{'s' if len(sanity.sanity) > 1 else ''} x {sanity.maps} maps = {sanity.gradient:,} "
                         f"passes{_about(sanity.seconds(rate, self.cache.rates))}; press Sanity check.")
        skipped = [SANITY_SKIPPED[m] for m in p.methods if m in SANITY_SKIPPED]
        text = " ".join(html.escape(x) for x in parts + skipped if x)
        self.cost.value = f"<span style='color:#444'>{text}</span>"

    # ------------------------------------------------------------------ results
    def _current(self) -> None:
        """Restage first if settings changed while the view was hidden (the board shows the current basis)."""
        if self.outdated:
            self.restage()

    def curves(self) -> dict:
        self._current()
        with self.host.worker.lock:
            return self.board.done_curves()

    def sanity(self) -> dict:
        self._current()
        with self.host.worker.lock:
            return self.board.done_sanity()

    def to_png(self) -> bytes:
        self._current()
        with self.host.worker.lock:
            return self.render() if self.dirty or not self.png else bytes(self.png)


def _about(seconds: float | None) -> str:
    return "" if seconds is None else f", about {seconds:.0f} s"


def auc_table(board: Board) -> str:
    """The areas under the curves as an HTML table: the mean over the page's images, each image's in a tooltip."""
    rows = []
    done = {m: e.result for m, e in board.curves.items() if e.state == DONE and e.result is not None}
    if not done:
        return ""
    methods = [m for m in done if m != RANDOM]
    best_deletion = min(methods, key=lambda m: mean_auc(done[m].auc_deletion), default=None)
    best_insertion = max(methods, key=lambda m: mean_auc(done[m].auc_insertion), default=None)
    for method, curves in done.items():
        label = RANDOM_LABEL if method == RANDOM else get_method(method).label
        cells = []
        for kind, best in (("deletion", best_deletion), ("insertion", best_insertion)):
            values = np.asarray(getattr(curves, f"auc_{kind}"), np.float64)
            each = ", ".join(f"image {i + 1}: {v:.3f}" for i, v in enumerate(values))
            text = f"{mean_auc(values):.3f}"
            if method == best and len(methods) > 1:
                text = f"<b>{text}</b>"
            cells.append(f"<td style='text-align:right;padding:0 10px' title='{html.escape(each)}'>{text}</td>")
        name = f"<i>{html.escape(label)}</i>" if method == RANDOM else html.escape(label)
        rows.append(f"<tr class='salwidget-auc-{method}'><td style='padding:0 10px 0 0'>{name}</td>{''.join(cells)}</tr>")
    mean = f"mean over the page's {board.images} images" if board.images > 1 else "one image"
    head = ("<tr><th style='text-align:left'>method</th>"
            "<th style='padding:0 10px' title='Area under the deletion curve: lower is better'>deletion AUC &#8595;</th>"
            "<th style='padding:0 10px' title='Area under the insertion curve: higher is better'>insertion AUC &#8593;</th>"
            "</tr>")
    return (f"<table style='border-collapse:collapse;font-size:12px'>{head}{''.join(rows)}</table>"
            f"<div style='color:#555;font-size:11px'>Areas under the curves, {mean} (hover a number for each "
            "image's); bold: the best method. A map is worth reading where it beats the random order.</div>")
