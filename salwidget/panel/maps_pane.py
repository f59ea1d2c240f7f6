"""The Maps view of the panel: the grid of maps, its pages, the enlarged cell, downloads, uploads, regions.

It shares the panel's worker, status line, progress bar, Stop button and
error line, and is the sink of the grid's jobs (:func:`~salwidget.panel.worker.run_job`
calls :meth:`begin`, :meth:`progress`, :meth:`column_done`, :meth:`finish`
and :meth:`fail` in the worker thread, under its lock, while the job is
current). What each column shows is :mod:`salwidget.drawing.grid`; dense outputs'
regions are :mod:`salwidget.panel.regions`.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from ..errors import SaliencyError
from ..methods import get_method
from . import controls
from .classes import row_titles
from .files import decode_picture, maps_npz, npz_link, png_link
from .notes import notes_html
from .regions import pixel_under, region_from_gesture, regions_for, shaded
from .snapshot import Snapshot
from .status import done_status, progress_status
from ..drawing.grid import COMPUTING, DONE, FAILED, GridView, Picture
from .worker import MapsJob

if TYPE_CHECKING:
    from .host import PanelHost


CELL_PX = 480  # the enlarged cell's largest width on screen
MIN_CELL_PX = 160  # the grid shrinks to the panel's width down to this per cell, then scrolls: titles stay legible


class MapsPane:
    """The Maps view of one :class:`~salwidget.SaliencyWidget` (see the module docstring)."""

    def __init__(self, host: "PanelHost"):
        self.host = host
        self.panel = host.panel  # the traits it reads and sets
        self.view = GridView()
        self.snapshot = Snapshot()
        self.picture = Picture(b"")
        self.png, self.results, self.masks = b"", {}, {}
        self.npz_for: tuple = ()  # the results the .npz link holds
        self.job_started = 0.0
        self.draw_seconds = 0.0  # how long the last grid took to draw (previews are spaced by it)
        self.press = None  # where a press on the grid began (a click or a dragged box)
        self._build()

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        from ipyevents import Event

        p = self.panel
        # No margin: the widgets' default 2 px would push a full-width picture past the panel's edge.
        self.image = controls.named(widgets.Image(format="png", layout=widgets.Layout(
            width="100%", height="auto", margin="0px")), "grid", None)
        # Dense outputs: a click or a dragged box on the image column picks the region to explain.
        self.grid_events = Event(source=self.image, watched_events=["mousedown", "mouseup"],
                                 prevent_default_actions=True)
        self.grid_events.on_dom_event(self.on_grid_event)
        self.grid_box = widgets.Box([self.image], layout=widgets.Layout(overflow="auto", width="100%"))
        self.previous, self.next = controls.pager_buttons(
            ("previous-page", "Show the previous page of images."),
            ("next-page", "Show the next page of images (computed when shown)."))
        self.previous.on_click(lambda _: p.page > 0 and setattr(p, "page", p.page - 1))
        self.next.on_click(lambda _: p.page < p.num_pages - 1 and setattr(p, "page", p.page + 1))
        self.page_label = controls.named(widgets.Label(), "page", None)
        self.pager = controls.wrap_row([self.previous, self.page_label, self.next])
        tip = "Show one cell of the grid at full resolution, every pixel of the map."
        self.enlarge = controls.named(widgets.Dropdown(layout=widgets.Layout(width="280px")), "enlarge", tip)
        self.enlarge_view = controls.labelled(self.enlarge, "enlarge", tip)
        # At its natural size, at most CELL_PX wide, never stretched to the panel's width: right under the
        # enlarge choice, in view, not a 960 px picture below the fold.
        self.cell = controls.named(widgets.Image(format="png", layout=widgets.Layout(
            width="auto", height="auto", max_width=f"min(100%, {CELL_PX}px)", align_self="flex-start")), "cell", None)
        self.cell_caption = controls.named(widgets.HTML(), "cell-caption", None)
        self.cell_box = widgets.VBox([self.cell_caption, self.cell], layout=widgets.Layout(display="none"))
        self.upload = controls.named(widgets.FileUpload(accept="image/*", multiple=True, description="Add images",
                                                        layout=widgets.Layout(width="150px")),
                                     "upload", "Add your own pictures: they go through the preprocess function "
                                               "and appear on the last page.")
        self.upload.layout.display = "" if self.host.preprocess is not None else "none"
        self.upload.observe(self.on_upload_change, names="value")
        self.downloads = controls.named(widgets.HTML(), "downloads", None)
        self.npz_button = controls.named(widgets.Button(description="Maps (.npz)", icon="download",
                                                        layout=widgets.Layout(width="130px", display="none")),
                                         "prepare-npz", "Prepare a NumPy archive of the raw maps, the masks shown "
                                                        "and the targets (megabytes for big images), then save it.")
        self.npz_button.on_click(self.on_npz_click)
        self.npz_link = controls.named(widgets.HTML(), "npz", None)
        self.box = widgets.VBox([self.grid_box], layout=widgets.Layout(width="100%"))
        self.extras = widgets.VBox([
            controls.wrap_row([self.enlarge_view, self.upload, self.downloads, self.npz_button, self.npz_link]),
            self.cell_box,
        ], layout=widgets.Layout(width="100%"))

    # ------------------------------------------------------------------ controls (main thread)
    def show_pages(self) -> None:
        p = self.panel
        part = self.host.page_slice()
        self.page_label.value = f"images {part.start + 1}-{part.stop} of {len(self.host.images)}"
        self.previous.disabled = p.page == 0
        self.next.disabled = p.page >= p.num_pages - 1
        self.pager.layout.display = "" if p.num_pages > 1 and p.pane == "maps" else "none"

    def show_enlarge_choices(self) -> None:
        p = self.panel
        part = self.host.page_slice()
        columns = [("image", "image")] + [(get_method(m).label, m) for m in p.methods]
        if p.overlay_method is not None:
            columns.append(("overlay", "overlay"))
        choices = [("none", controls.NONE)] + [(f"image {part.start + r + 1}: {label}", (r, key))
                                              for r in range(part.stop - part.start) for label, key in columns]
        value = p.enlarged if p.enlarged in [v for _, v in choices] else None
        controls.set_choices(self.enlarge, choices)
        controls.show_value(self.enlarge, value)

    def on_upload_change(self, change) -> None:
        """Pictures uploaded: added through ``preprocess`` (a bad file or preprocess is said in the panel)."""
        files = change["new"]
        if not files:
            return
        settings = self.host.settings_view
        try:
            self.panel.add_pictures([decode_picture(f["content"]) for f in files])
        except Exception as exc:  # the panel goes on
            self.host.show_error(exc)
            # The button shows how many pictures its last upload added ("Add images (1)"): none, here.
            settings.syncing = True
            try:
                self.upload.value = ()
            finally:
                settings.syncing = False

    # ------------------------------------------------------------------ traits (main thread)
    def on_look_change(self, change) -> None:
        """A look trait changed: redraw from the maps at hand (no model call), or show the enlarged cell."""
        self.host.show_controls()
        with self.host.worker.lock:
            if change["name"] == "enlarged":
                self.show_cell()
                return
            if self.view.results:
                self.render()
            evaluate = self.host.evaluate_view
            if change["name"] == "cmap" and evaluate.board.sanity:  # the randomised maps' colours
                evaluate.changed()

    def on_regions_change(self, change) -> None:
        """Another region to explain (dense outputs): the grid's maps go, and are computed anew."""
        with self.host.worker.lock:
            self.view.clear()
        self.host.request()

    # ---- the sink of run_job: called in the worker thread, under the worker's lock, only while current
    def stage(self, job: MapsJob) -> None:
        """Columns for the job's methods: cached maps done at once (never flashed as pending), the rest pending."""
        self.select(job, job.explorer.known_weights)
        if not self.view.complete:
            self.render()

    def select(self, job: MapsJob, weights: Any) -> None:
        """Columns for the job's methods, with the maps cached under ``weights`` (a weights version) done."""
        self.view.select(job.settings.methods)
        for method in job.settings.methods:
            hit = job.explorer.cached(method, job.settings, weights)
            if hit is not None:
                self.view.set(method, hit, DONE)

    def begin(self, job: MapsJob) -> None:
        p = self.panel
        self.job_started = time.perf_counter()
        self.host.progress.value = 0
        self.select(job, job.explorer.read_weights())  # in the worker: the weights as they are now
        if not self.view.complete:
            # Before the grid of pending columns: a "Done" must never describe that grid.
            self.host.say("maps", "Computing...")
            self.render()

    def progress(self, method: str, partial, done: int, total: int, draw: bool) -> None:
        p = self.panel
        index = list(self.view.columns).index(method)
        self.host.progress.value = int(100 * (index + done / total) / len(self.view.columns))
        elapsed = time.perf_counter() - self.job_started
        self.host.say("maps", progress_status(method, partial, done, total, elapsed))
        if draw:
            self.view.set(method, partial, COMPUTING, f"{done}/{total}")
            self.render()

    def column_done(self, outcome) -> None:
        self.view.set(outcome.method, outcome.result, DONE)
        if outcome.how != "cached" and not self.view.complete:
            self.render()

    def finish(self, outcomes, seconds: float) -> None:
        p = self.panel
        self.render()
        self.host.progress.value = 100
        p.error = ""
        self.host.stop_button.disabled = True
        done = done_status(outcomes, seconds, self.host.explorer().device) + self.host.page_note()
        self.host.say("maps", done)  # after the grid

    def fail(self, exc: Exception, details: str) -> None:
        p = self.panel
        self.view.mark(FAILED)
        self.host.show_error(exc, details)
        self.host.say("maps", "Failed: see the message below.")
        self.host.stop_button.disabled = True
        if self.view.results:
            self.render()

    # ------------------------------------------------------------------ drawing
    def render(self) -> None:
        """Draw the grid as it stands (call under the worker's lock)."""
        p = self.panel
        started = time.perf_counter()
        part = self.host.page_slice()
        picture = self.view.draw(self.host.look(), self.shown_images(part), self.row_titles(part))
        self.picture = picture
        columns = 1 + len(self.view.columns) + (p.overlay_method is not None)
        natural = columns * (p.cell_size + 8) + 8
        smallest = columns * (min(p.cell_size, MIN_CELL_PX) + 8) + 8
        # At most its natural size; narrower panels (a notebook beside JupyterLab's sidebar) scale it down
        # to their width, but not below MIN_CELL_PX per cell (at 90 px titles and colour-bar labels could not
        # be read): narrower still, the grid's box scrolls sideways.
        self.image.layout.max_width = f"{natural}px"
        self.image.layout.min_width = f"{smallest}px"
        self.image.value = picture.png
        if picture.complete:
            self.snapshot.set(picture.png)  # first: whoever sees the new to_png() finds it in the snapshot too
            self.png, self.results, self.masks = picture.png, self.view.results, picture.masks
            self.show_downloads()
            self.host.notes.value = notes_html(p.methods, self.results, part.start, self.host.explorer().weights_changed(read=False))
        self.show_cell()
        self.draw_seconds = time.perf_counter() - started

    def figure(self, dpi: float = 100):
        """The grid of the visible page as a matplotlib Figure (the same layout as the picture)."""
        p = self.panel
        part = self.host.page_slice()
        return self.view.figure(self.host.look(), self.shown_images(part), self.row_titles(part), dpi)

    def row_titles(self, part: slice) -> list[str]:
        """Each shown image's title: its label, the prediction and the explained class (or region)."""
        p = self.panel
        results = self.view.results
        target = next(iter(results.values())).target if results else None
        explorer = self.host.explorer()
        indices = self.host.indices[part] if self.host.from_dataset or len(self.host.indices) != len(self.host.source) else None
        if self.host.dense:
            return self.region_titles(part, indices)
        return row_titles(self.host.classes, explorer.probabilities, explorer.predicted, target,
                          None if self.host.labels is None else self.host.labels[part], part.start, indices)

    def _chosen(self, part: slice) -> dict:
        """The regions picked on this page, by row of the page."""
        regions = self.panel.regions
        return {i - part.start: regions[i] for i in range(part.start, part.stop) if i in regions}

    def region_titles(self, part: slice, indices) -> list[str]:
        """Per image: its number, the class and size of the region its maps explain."""
        p = self.panel
        chosen = self._chosen(part)
        titles = []
        for i, (k, mask) in enumerate(regions_for(self.host.explorer().scores, self.host.channels_last, chosen)):
            number = f"image {part.start + i + 1}" + (f" (#{int(indices[i])})" if indices is not None else "")
            how = "clicked" if i in chosen else "largest"
            titles.append(f"{number}\nexplains: {self.host.classes.name(k)}\n{how} region, {int(mask.sum())} px")
        return titles

    def shown_images(self, part: slice) -> np.ndarray:
        """The image column: the pictures, and for a dense output the predicted classes over them."""
        p = self.panel
        if not self.host.dense:
            return self.host.display[part]
        scores = self.host.explorer().scores
        return shaded(self.host.display[part], scores, self.host.channels_last, regions_for(scores, self.host.channels_last,
                                                                              self._chosen(part)))

    def on_grid_event(self, event: dict) -> None:
        """Dense outputs: a click on a picture explains the predicted region under it, a dragged box the part
        of that region inside the box (ipyevents reports both ends in the grid picture's pixels)."""
        p = self.panel
        if not self.host.dense or self.view.layout is None:
            return
        scores = self.host.explorer().scores
        size = scores.shape[1:3] if self.host.channels_last else scores.shape[2:4]
        where = pixel_under(self.view.layout, event.get("dataX", -1), event.get("dataY", -1), size)
        if event.get("type") == "mousedown":
            self.press = where
            return
        start, self.press = self.press, None
        if where is None or start is None or start[0] != where[0]:
            return
        row = where[0]
        try:
            k, mask = region_from_gesture(scores, self.host.channels_last, row, start[1:], where[1:])
        except SaliencyError as exc:
            p.error = str(exc)
            return
        p.set_region(self.host.page_slice().start + row, k, mask)

    def show_downloads(self) -> None:
        self.downloads.value = png_link(self.png)
        if self.npz_for != tuple(id(r) for r in self.results.values()):  # other maps: the old archive goes
            self.npz_link.value = ""
            self.npz_button.layout.display = ""

    def npz(self) -> tuple[bytes, bool]:
        p = self.panel
        return maps_npz(self.results, self.masks, self.host.display[self.host.page_slice()])

    def on_npz_click(self, button) -> None:
        with self.host.worker.lock:
            npz, with_raw = self.npz()
            self.npz_for = tuple(id(r) for r in self.results.values())
            self.npz_link.value = npz_link(npz, with_raw)
            self.npz_button.layout.display = "none"

    def show_cell(self) -> None:
        p = self.panel
        if p.enlarged is None or not self.picture.png:
            self.cell_box.layout.display = "none"
            return
        row, column = p.enlarged
        try:
            png, caption = self.view.cell(self.picture, self.host.look(), self.host.display[self.host.page_slice()], row, column)
        except KeyError:
            png, caption = b"", "not computed yet"
        self.cell.value = png
        self.cell_caption.value = html.escape(caption)
        self.cell_box.layout.display = ""
