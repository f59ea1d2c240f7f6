"""The Dataset view of the panel: which images to explain among thousands.

It scans the panel's data (:func:`salwidget.dataset.open_scan`, completed in
the panel's worker with progress and Stop; the view fills in as blocks land
and is usable before the scan ends) and shows the accuracy, a confusion
matrix whose cells filter to (true label, prediction), filters (true class,
predicted class, correct / wrong / all, a probability range, a pandas query),
a sort, and a page of thumbnails with their label, prediction and
probability, wrong ones framed red. Clicking thumbnails picks them
(``ipyevents`` reports clicks in the picture's own pixels however the
browser scales it); *Explain selected* sets the panel's ``selection`` and
shows the Maps view, computed exactly as for any images. Filters and sorting
run on the main thread over the table (pandas): no model call, no worker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from ..errors import AttributionCancelled, SaliencyError
from . import controls
from .dataset_plot import NO_MATCH, confused_classes, confusion_picture, thumbnail_page

SORT_COLUMNS = ("loss", "probability", "margin", "entropy", "index")
SORT_LABELS = {"loss": "loss", "probability": "probability", "margin": "margin", "entropy": "entropy",
               "index": "dataset order"}
NO_LABELS = "No labels: 'correct' and 'wrong' need each image's true class."
PAGE_ROWS, PAGE_COLUMNS = 4, 6
REDRAW_S = 0.5  # at most this often while a scan lands block by block

if TYPE_CHECKING:
    from .host import PanelHost


def sort_label(column: str) -> str:
    """A sort choice as a person reads it: 'integrated_vs_vanilla_spearman' (a dataset job's agreement of
    two methods' maps) is 'Integrated Gradients vs Gradient agreement'; other columns lose their underscores."""
    if column in SORT_LABELS:
        return SORT_LABELS[column]
    if "_vs_" in column:
        from ..methods import all_methods, get_method

        first, _, rest = column.partition("_vs_")
        second = rest[: -len("_spearman")] if rest.endswith("_spearman") else rest
        names = {m.name for m in all_methods()}
        if first in names and second in names:
            return f"{get_method(first).label} vs {get_method(second).label} agreement"
    return column.replace("_", " ")


class DatasetPane:
    """The Dataset view of one :class:`~salwidget.SaliencyWidget` (see the module docstring)."""

    def __init__(self, host: "PanelHost", source: Any, scan: Any = None, store: Any = None):
        self.host = host
        self.panel = host.panel  # the traits it reads and sets
        self.source = source
        self.opened = scan  # the Scan, once opened
        self.store = store
        self.picked: set[int] = set()
        self.page = 0
        self.rows = np.zeros(0, np.int64)  # dataset indices that pass the filters, in the sorted order
        self.thumbs = None
        self.matrix = None
        self.scanning = False
        self.draw_seconds = 0.0
        self._drawn_at = 0.0
        self._build()

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        from ipyevents import Event

        tip = "Only images whose true class is this one (a click on a row of the confusion matrix sets it too)."
        self.label_filter = controls.named(widgets.Dropdown(options=[("all", -1)], layout=widgets.Layout(width="200px")),
                                           "filter-label", tip)
        tip = "Only images predicted as this class (a click on a column of the confusion matrix sets it too)."
        self.predicted_filter = controls.named(widgets.Dropdown(options=[("all", -1)], layout=widgets.Layout(width="200px")),
                                               "filter-predicted", tip)
        self.correct_filter = controls.named(widgets.ToggleButtons(
            options=[("all", "all"), ("correct", "correct"), ("wrong", "wrong"), ("NaN", "non-finite")],
            style={"button_width": "70px"},
            tooltips=["every image", "predicted as labelled", "predicted otherwise (labelled images only)",
                      "the model's scores hold NaN or infinity (never counted correct)"]),
            "filter-correct", "Correct, wrong or all predictions.")
        self.probability_filter = controls.named(widgets.FloatRangeSlider(
            value=(0.0, 1.0), min=0.0, max=1.0, step=0.01, continuous_update=False, readout_format=".2f",
            layout=widgets.Layout(width="300px", min_width="220px")),
            "filter-probability", "Only images whose predicted class has a probability in this range.")
        self.query = controls.named(widgets.Text(placeholder="pandas query, e.g. not correct and probability > 0.9",
                                                 continuous_update=False, layout=widgets.Layout(width="380px")),
                                    "query", "A pandas query over the table's columns (press Enter): label, "
                                             "predicted, probability, correct, loss, margin, entropy, ...")
        self.sort = controls.named(widgets.Dropdown(options=list(SORT_COLUMNS), layout=widgets.Layout(width="150px")),
                                   "sort-by", "Order of the thumbnails.")
        self.descending = controls.named(widgets.Checkbox(description="descending", indent=False,
                                                          layout=widgets.Layout(width="110px")),
                                         "sort-descending", "Largest first (the highest loss first).")
        self.summary = controls.named(widgets.HTML(), "dataset-summary", None)
        self.confusion = controls.named(widgets.Image(format="png", layout=widgets.Layout(
            width="auto", max_width="100%", margin="0", height="auto", align_self="flex-start")),
            "confusion", None)
        self.thumbnails = controls.named(widgets.Image(format="png", layout=widgets.Layout(
            width="auto", max_width="100%", margin="0", height="auto", align_self="flex-start")),
            "thumbnails", None)
        self.previous, self.next = controls.pager_buttons(("dataset-previous", "The previous page of thumbnails."),
                                                          ("dataset-next", "The next page of thumbnails."))
        self.page_label = controls.named(widgets.HTML(), "dataset-page", None)
        self.explain = controls.named(widgets.Button(description="Explain selected", icon="search",
                                                     button_style="primary", layout=widgets.Layout(width="190px")),
                                      "explain-selected", "Show the picked images in the Maps view (click thumbnails "
                                                          "to pick them).")
        self.clear = controls.named(widgets.Button(description="Clear", layout=widgets.Layout(width="80px")),
                                    "clear-selection", "Unpick every image.")
        self.previous.on_click(lambda _: self.turn(-1))
        self.next.on_click(lambda _: self.turn(1))
        self.explain.on_click(lambda _: self.explain_picked())
        self.clear.on_click(lambda _: self.set_picked(set()))
        self._thumb_events = Event(source=self.thumbnails, watched_events=["click"])
        self._thumb_events.on_dom_event(self.on_thumbnail_event)
        self._confusion_events = Event(source=self.confusion, watched_events=["click"])
        self._confusion_events.on_dom_event(self.on_confusion_event)
        self.box = widgets.VBox([
            self.summary,
            widgets.Box([self.confusion], layout=widgets.Layout(overflow="auto", width="100%")),
            controls.wrap_row([controls.labelled(self.label_filter, "true class", self.label_filter.tooltip),
                               controls.labelled(self.predicted_filter, "predicted", self.predicted_filter.tooltip),
                               self.correct_filter]),
            controls.wrap_row([controls.labelled(self.probability_filter, "probability",
                                                 self.probability_filter.tooltip),
                               controls.labelled(self.sort, "sort by", self.sort.tooltip), self.descending]),
            controls.wrap_row([self.query]),
            controls.wrap_row([self.explain, self.clear, self.previous, self.next, self.page_label]),
            widgets.Box([self.thumbnails], layout=widgets.Layout(overflow="auto", width="100%")),
        ], layout=widgets.Layout(display="none", width="100%"))
        self.box.add_class("salwidget-dataset-pane")

    def pairs(self) -> list[tuple[str, Any]]:
        """(trait, control) pairs the panel mirrors both ways."""
        return [("filter_label", self.label_filter), ("filter_predicted", self.predicted_filter),
                ("filter_correct", self.correct_filter), ("filter_probability", self.probability_filter),
                ("query", self.query), ("sort_by", self.sort), ("sort_descending", self.descending)]

    def on_filters_change(self, change) -> None:
        """A filter, the query or the sort changed: redraw the view (main thread, no model call)."""
        self.host.show_controls()
        if change["name"] != "sort_descending" or change["new"] != change["old"]:
            self.page = 0
        if self.opened is not None:
            with self.host.worker.lock:
                self.show()

    @property
    def visible(self) -> bool:
        return self.panel.pane == "dataset"

    # ------------------------------------------------------------------ the scan
    def scan(self):
        """The panel's :class:`~salwidget.dataset.Scan`, opened (not completed) on first use."""
        if self.opened is None:
            from ..dataset import open_scan

            p = self.panel
            self.opened = open_scan(self.host.model, self.source, class_names=self.host.classes.names, store=self.store,
                                    channels_last=self.host.channels_last, output_index=self.host.explorer_options["output_index"],
                                    framework=self.host.explorer_options.get("framework"))
        return self.opened

    def request(self) -> None:
        """Show the view: what the store holds at once, and the rest of the scan computed in the worker."""
        try:
            scan = self.scan()
        except Exception as exc:  # a bad source or store: said in the panel, the panel goes on
            self.host.show_error(exc)
            return
        self.options()
        self.show()
        if scan.missing and not self.scanning:
            self.scanning = True
            self.host.stop_button.disabled = False
            self.host.worker.submit(lambda generation: self._run(generation, scan))
        elif not scan.missing:
            self.host.say("dataset", self._done_status(scan))

    def _run(self, generation: int, scan) -> None:
        """The worker's task: complete the scan, publishing each committed block."""
        worker, started = self.host.worker, time.perf_counter()
        batch_size = self.host.explorer_options["batch_size"]
        try:
            scan.complete(batch_size=batch_size, cancel=lambda: worker.is_stale(generation),
                          progress=lambda done, total: worker.publish(
                              generation, lambda: self._progress(done, total, started)))
        except AttributionCancelled:
            self.scanning = False
            with worker.lock:
                scan.refresh()
                if self.visible:
                    self.show()
            return
        except Exception as exc:  # shown in the panel; the panel goes on
            import traceback

            self.scanning = False
            error, details = exc, traceback.format_exc()
            worker.publish(generation, lambda: self._failed(error, details))
            return
        self.scanning = False
        worker.publish(generation, lambda: self._finished(scan))

    def _progress(self, done: int, total: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.host.progress.value = int(100 * done / max(total, 1))
        self.host.say("dataset", f"Scanning the dataset: {done:,}/{total:,} images ({elapsed:.1f} s)")
        if self.visible and time.perf_counter() - self._drawn_at > max(REDRAW_S, 3 * self.draw_seconds):
            self.opened.refresh()
            self.options()
            self.show()

    def _finished(self, scan) -> None:
        scan.refresh()
        self.host.progress.value = 100
        self.host.stop_button.disabled = True
        self.host.say("dataset", self._done_status(scan))
        self.options()
        if self.visible:
            self.show()

    def _failed(self, exc: Exception, details: str) -> None:
        self.host.show_error(exc, details)
        self.host.say("dataset", "Scan failed: see the message below.")
        self.host.stop_button.disabled = True

    @staticmethod
    def _done_status(scan) -> str:
        table = scan.table
        # The accuracy is the view's summary line: said once, there.
        unlabelled = "; no labels" if len(table) and not (table["label"] >= 0).any() else ""
        errors = f"; {len(scan.errors)} could not be read" if scan.errors else ""
        return f"Scanned {len(table):,} images{unlabelled}{errors}."

    # ------------------------------------------------------------------ filters and drawing (main thread)
    def options(self) -> None:
        """The class choices of the filters (and the sort choices: stored columns too)."""
        scan = self.opened
        if scan is None:
            return
        count = max(scan.num_classes, 2) if scan.num_classes else 0
        names = [scan.class_names[c] if scan.class_names and c < len(scan.class_names) else f"class {c}"
                 for c in range(count)]
        choices = [("all", -1)] + [(f"{n} (#{c})", c) for c, n in enumerate(names)]
        p = self.panel
        settings = self.host.settings_view
        settings.syncing = True  # the controls follow the scan: their changes are no user's
        try:
            for control, trait in ((self.label_filter, "filter_label"), (self.predicted_filter, "filter_predicted")):
                if [v for _, v in control.options] != [v for _, v in choices]:
                    control.options = choices
                controls.show_value(control, getattr(p, trait) if getattr(p, trait) < count else -1)
            numeric = [c for c in scan.table.columns if c not in ("label", "predicted", "correct")
                       and scan.table[c].dtype.kind in "fi" and c not in SORT_COLUMNS]
            sorts = [(sort_label(c), c) for c in list(SORT_COLUMNS) + numeric]
            if [tuple(o) for o in self.sort.options] != sorts:
                self.sort.options = sorts
            sorts = [c for _, c in sorts]
            controls.show_value(self.sort, p.sort_by if p.sort_by in sorts else "index")
        finally:
            settings.syncing = False

    def filtered(self) -> np.ndarray:
        """Dataset indices that pass the filters and the query, in the chosen order."""
        p, scan = self.panel, self.opened
        table = scan.table
        keep = np.ones(len(table), bool)
        if p.filter_label >= 0:
            keep &= table["label"].to_numpy() == p.filter_label
        if p.filter_predicted >= 0:
            keep &= table["predicted"].to_numpy() == p.filter_predicted
        finite = table["finite"].to_numpy(bool)
        if p.filter_correct == "non-finite":
            keep &= ~finite
        elif p.filter_correct != "all":
            known = table["label"].to_numpy() >= 0
            correct = table["correct"].to_numpy()
            keep &= known & (correct if p.filter_correct == "correct" else ~correct)
        low, high = p.filter_probability
        probability = table["probability"].to_numpy()
        # NaN probabilities (non-finite scores) pass only an open range: they are never hidden by default
        keep &= ((probability >= low - 1e-9) & (probability <= high + 1e-9)) | (~finite & (low <= 0) & (high >= 1))
        frame = table[keep]
        if p.query.strip():
            frame = self._query(frame, p.query)
        if p.sort_by == "index":
            order = frame.index.to_numpy()
            return order[::-1] if p.sort_descending else order
        if p.sort_by not in frame.columns:
            raise SaliencyError(f"sort_by {p.sort_by!r} is not a column; choose one of "
                                f"{', '.join(('index',) + tuple(c for c in frame.columns if c != 'label_name'))}.")
        frame = frame.sort_values(p.sort_by, ascending=not p.sort_descending, kind="stable", na_position="last")
        return frame.index.to_numpy()

    @staticmethod
    def _query(frame, query: str):
        try:
            return frame.query(query)
        except Exception as exc:  # pandas' own words, and the columns there are
            columns = ", ".join(["index"] + [c for c in frame.columns])
            raise SaliencyError(f"The query {query!r} does not work on the table: {type(exc).__name__}: {exc}. "
                                f"Its columns: {columns}.") from exc

    def show(self) -> None:
        """Filter, sort and draw the page (main thread, or the worker under its lock)."""
        if self.opened is None:
            return
        started = time.perf_counter()
        try:
            self.rows = self.filtered()
        except SaliencyError as exc:
            self.panel.error = str(exc)  # the view keeps showing the last rows
        else:
            if self.panel.error.startswith(("The query", "sort_by")):
                self.panel.error = ""
        pages = max(1, -(-len(self.rows) // (PAGE_ROWS * PAGE_COLUMNS)))
        self.page = min(self.page, pages - 1)
        self.draw()
        self.draw_seconds = time.perf_counter() - started
        self._drawn_at = time.perf_counter()

    def draw(self) -> None:
        scan = self.opened
        table = scan.table
        size = PAGE_ROWS * PAGE_COLUMNS
        shown = self.rows[self.page * size : (self.page + 1) * size]
        names = lambda c: (scan.class_names[c] if scan.class_names and 0 <= c < len(scan.class_names)
                           else f"class {c}")
        captions, wrong = [], []
        for row in shown:
            record = table.loc[row]
            label = int(record["label"])
            first = f"#{row}" + (f": {names(label)}" if label >= 0 else "")
            said = names(int(record["predicted"])) if record["finite"] else "non-finite output"
            captions.append((first, f"\u2192 {said} {float(record['probability']):.2f}"))
            wrong.append(label >= 0 and not bool(record["correct"]))
        labelled = bool((table["label"] >= 0).any())
        empty = (NO_LABELS if not labelled and self.panel.filter_correct in ("correct", "wrong") else NO_MATCH)
        self.thumbs = thumbnail_page(scan.thumbnails(shown), [int(r) for r in shown], captions, wrong, self.picked,
                                     PAGE_COLUMNS, empty)
        self.thumbnails.value = self.thumbs.png
        pages = max(1, -(-len(self.rows) // size))
        self.page_label.value = (f"{len(self.rows):,} of {len(table):,} images shown; page {self.page + 1} of "
                                 f"{pages}; {len(self.picked)} picked")
        self.previous.disabled = self.page == 0
        self.next.disabled = self.page >= pages - 1
        self.explain.description = f"Explain selected ({len(self.picked)})"
        self.explain.disabled = not self.picked
        self._draw_summary(scan, table)

    def _draw_summary(self, scan, table) -> None:
        known = table["label"] >= 0
        parts = [f"<b>{len(table):,}</b> of {len(scan):,} images scanned"]
        if known.any():  # said here only: the status line does not repeat it
            parts.append(f"accuracy <b>{scan.accuracy:.1%}</b> on {int(known.sum()):,} labelled")
        elif len(table):
            parts.append("no labels: no accuracy, and no correct or wrong")
        if scan.errors:
            parts.append(f"{len(scan.errors)} could not be read (w.scan.errors)")
        self.summary.value = " &middot; ".join(parts)
        if known.any() and scan.num_classes:
            counts = scan.confusion()
            classes = confused_classes(counts)
            names = [scan.class_names[c] if scan.class_names and c < len(scan.class_names) else f"class {c}"
                     for c in classes]
            p = self.panel
            self.matrix = confusion_picture(counts, classes, names, selected=(p.filter_label, p.filter_predicted))
            self.confusion.value = self.matrix.png
            self.confusion.layout.display = ""
        else:
            self.confusion.layout.display = "none"

    # ------------------------------------------------------------------ stored maps
    def stored_maps(self, method: str, options: dict, layer, seed: int, rows: list[int], explorer):
        """A dataset job's stored maps of ``rows`` under these settings, or None (see
        :func:`salwidget.dataset.stored.stored_attribution`)."""
        if self.opened is None:
            return None
        from ..dataset.stored import stored_attribution

        return stored_attribution(self.opened, self.host.model, method, options, layer, seed, rows, explorer)

    # ------------------------------------------------------------------ clicks
    def on_thumbnail_event(self, event: dict) -> None:
        """A click on the thumbnails (ipyevents: dataX, dataY in the picture's pixels) picks or unpicks one."""
        if self.thumbs is None:
            return
        row = self.thumbs.at(event.get("dataX", -1), event.get("dataY", -1))
        if row is not None:
            self.set_picked(self.picked ^ {row})

    def on_confusion_event(self, event: dict) -> None:
        """A click on a cell of the confusion matrix filters to (true label, prediction)."""
        if self.matrix is None:
            return
        cell = self.matrix.at(event.get("dataX", -1), event.get("dataY", -1))
        if cell is not None:
            p = self.panel
            with p.hold_trait_notifications():
                p.filter_correct = "all"
                p.filter_label, p.filter_predicted = cell

    def set_picked(self, picked: set) -> None:
        self.picked = {int(r) for r in picked}
        if self.opened is not None:
            self.draw()

    def turn(self, step: int) -> None:
        self.page = max(0, self.page + step)
        self.draw()

    def explain_picked(self) -> None:
        if not self.picked:
            return
        p = self.panel
        p.selection = sorted(self.picked)
        p.pane = "maps"

