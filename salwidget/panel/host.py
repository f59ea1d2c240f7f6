"""``PanelHost``: what the panel's views share, behind one typed, public interface.

The Dataset, Maps and Evaluate views (:mod:`~salwidget.panel.dataset_pane`,
:mod:`~salwidget.panel.maps_pane`, :mod:`~salwidget.panel.evaluate_pane`) and
the settings controls (:mod:`~salwidget.panel.settings_view`) each take the
host. It holds

- the images explained and how they look (``images``, ``display``,
  ``labels``, ``indices``, ``source``, ``classes``, ``dense``, ...);
- the services: the worker thread (``worker``), the status line's widgets
  (``progress``, ``stop_button``, ``compute_button``, ``notes``), errors
  (:meth:`show_error`), the page (:meth:`page_slice`, :meth:`page_note`),
  the map cache per page (:meth:`explorer`), the look (:meth:`look`);
- the grid's requests: :meth:`settings`, :meth:`request_maps` (computed, or
  held for the Compute button), :meth:`start_held`, :meth:`rate`.

The panel's traits (``page``, ``methods``, ``status``, ...) stay on the
:class:`~salwidget.SaliencyWidget` (``host.panel``); a view reads and sets
them there, and reaches nothing private of another module.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Callable

import ipywidgets as widgets
import numpy as np

from ..backends import get_backend
from ..errors import SaliencyError
from ..arrays import to_display_image
from . import controls
from .classes import ClassNames, check_labels
from .map_cache import Explorer, Settings
from .regions import regions_for
from .status import estimate_status
from ..drawing.grid import Look
from .worker import MapsJob, Worker, run_job

if TYPE_CHECKING:  # the views take the host; the host calls back into the views it was given
    from .dataset_pane import DatasetPane
    from .evaluate_pane import EvaluatePane
    from .maps_pane import MapsPane
    from .settings_view import SettingsView
    from .widget import SaliencyWidget


def reuses(explorer: Explorer, method: str, settings: Settings, weights: Any) -> bool:
    """Whether computing ``method`` would start from a map cached under ``weights`` (served, or resumed)."""
    try:
        return (explorer.cached(method, settings, weights) is not None
                or explorer.resume_point(method, settings, weights) is not None)
    except SaliencyError:  # settings the method refuses: computing will say so
        return False


class PanelHost:
    """The shared state and services of one panel's views (see the module docstring).

    Parameters
    ----------
    panel : SaliencyWidget
        The panel whose traits the views read and set.
    model : torch.nn.Module or Keras model
    channels_last : bool or None
        Layout of the images (None: the framework's default).
    explorer_options : dict
        What every page's :class:`~salwidget.panel.map_cache.Explorer` is made with (seed, batch size, output,
        framework...).
    preprocess : callable or None
        Turns an uploaded picture into a model-ready image (see ``SaliencyWidget``).

    The images come with :meth:`load`.
    """

    def __init__(self, panel: "SaliencyWidget", model: Any, *, channels_last: bool | None, explorer_options: dict,
                 preprocess: Callable | None):
        self.panel = panel
        self.model = model
        backend = get_backend(model, explorer_options.get("framework"))
        self.default_channels_last = backend.default_channels_last
        self.given_channels_last = channels_last  # as the user gave it (None: the model's default)
        # A forward-only model (a numpy callable, an ONNX Runtime session) is offered the methods it can run.
        self.forward_only = not getattr(backend, "differentiable", True)
        self.channels_last = self.default_channels_last if channels_last is None else bool(channels_last)
        self.explorer_options = explorer_options
        self.preprocess = preprocess
        self.from_dataset = False  # whether the images are rows picked from a dataset (the Dataset view's)
        self.images = np.zeros(0)  # the model-ready images explained, (N, ...) in ``channels_last`` layout
        self.display = np.zeros((0, 1, 1, 3))  # how they look, (N, H, W, 3) in [0, 1]
        self.indices: np.ndarray | None = None  # dataset index of each explained image (-1: added), once known
        self.labels: np.ndarray | None = None
        self.source: Any = None  # the Dataset view's source (the images themselves when not from a dataset)
        self.all_display: np.ndarray | None = None  # every row's picture when the images are the dataset
        self.classes: ClassNames | None = None
        self.dense = False  # a segmentation output: regions are explained
        self.explorers: dict[int, Explorer] = {}
        self.worker = Worker()
        self.closed = False
        self.maps_view: MapsPane | None = None
        self.evaluate_view: EvaluatePane | None = None
        self.dataset_view: DatasetPane | None = None
        self._held: MapsJob | None = None
        self.resumable = False  # stopped: Compute goes on with the current settings (finished maps reused)
        self.maps_pending = False  # settings changed while the Dataset view was shown: computed when left
        self.settings_view: SettingsView | None = None
        self.show_controls: Callable[[], None] = lambda: None  # puts every trait on its control (the panel's)
        self.compute_button = controls.named(
            widgets.Button(description="Compute", icon="play", button_style="primary",
                           layout=widgets.Layout(width="110px", display="none")),
            "compute", "Start the long computation described in the status line.")
        self.stop_button = controls.named(widgets.Button(description="Stop", icon="stop", disabled=True,
                                                         layout=widgets.Layout(width="90px")),
                                          "stop", "Stop the computation after its current chunk; maps done so far stay.")
        self.progress = controls.named(widgets.IntProgress(min=0, max=100, layout=widgets.Layout(width="160px")),
                                       "progress", "Progress of the current computation.")
        # One line of fixed height (see controls.one_line); min_width 0 lets it shrink in its row.
        self.status_line = controls.named(widgets.HTML(layout=widgets.Layout(
            flex="1 1 320px", min_width="0", height="28px", overflow="hidden")), "status", None)
        self.notes = controls.named(widgets.HTML(), "notes", None)
        self.statuses: dict[str, str] = {}  # each view's last status (see say)
        self.error_line = controls.named(widgets.HTML(layout=widgets.Layout(display="none")), "error", None)

    # ------------------------------------------------------------------ the pictures
    @property
    def display(self) -> np.ndarray:
        """The pictures the image column shows, (N, H, W, 3) in [0, 1] (read-only)."""
        return self._display

    @display.setter
    def display(self, pictures: np.ndarray) -> None:
        pictures.flags.writeable = False  # never written: the grid's renderer keeps their resampled cells
        self._display = pictures

    def runnable(self, methods: tuple, defaults: tuple) -> tuple:
        """``methods``, or for a forward-only model given the ``defaults``, occlusion and RISE; a gradient
        method asked of a forward-only model is refused naming those it can use."""
        if not self.forward_only:
            return methods
        if methods == defaults:
            return ("occlusion", "rise")
        from ..backends.numpy_backend import forward_only_refusal
        from ..methods import get_method

        for name in methods:
            if get_method(name).reads != "outputs":
                raise forward_only_refusal(name)
        return methods

    def check_sanity_check(self) -> None:
        """Refuse the sanity check for a forward-only model: it re-draws weights salwidget cannot reach."""
        if self.forward_only:
            raise SaliencyError("The sanity check re-draws the model's weights, and a numpy callable or an ONNX "
                                "Runtime session has none salwidget can reach: use evaluate() for the deletion and "
                                "insertion curves, or pass the torch or Keras model itself.")

    def load(self, images: Any, *, labels: Any, class_names: Any, display_images: Any, scan: Any) -> None:
        """The images explained, as ``SaliencyWidget`` takes them: a batch, a dataset (its first page is
        explained; the Dataset view picks others) or a :class:`~salwidget.dataset.Scan`."""
        from ..dataset.sources import ArraySource, as_source, is_dataset
        from ..inputs import prepare_inputs

        self.from_dataset = scan is not None or is_dataset(images)
        layout = self.channels_last
        if self.from_dataset:  # the Maps view starts with the first images; the Dataset view picks others
            self.source = scan.source if scan is not None else as_source(
                images, labels, preprocess=self.preprocess, channels_last=layout, class_names=class_names)
            if class_names is None:
                class_names = scan.class_names if scan is not None else self.source.class_names
            batch = self.read_rows(np.arange(min(self.panel.page_size, len(self.source))))
            images, display_images, labels = batch.inputs, self.pictures(batch), batch.labels
        # The layout as the user gave it, so a batch in the other layout gets sw.attribute's one-line hint.
        inputs, layout, _ = prepare_inputs(images, layout if self.from_dataset else self.given_channels_last,
                                           self.default_channels_last)
        self.images, self.channels_last = inputs[0], layout
        shown = display_images if display_images is not None else self.images
        self.display = to_display_image(shown, channels_last=True if display_images is not None else layout)
        try:
            explorer = self.explorer(0)  # the first model call: a wrong layout or size shows here
        except SaliencyError as exc:  # its message says what to do; the chain of framework frames says nothing more
            raise SaliencyError(str(exc)) from None
        self.dense = explorer.scores.ndim == 4  # a segmentation output: regions are explained
        self.classes = ClassNames(class_names, explorer.num_classes if not self.dense else
                                  explorer.scores.shape[-1 if layout else 1])
        self.labels = check_labels(labels, len(self.images), explorer.num_classes)
        if not self.from_dataset:  # the images are the dataset
            self.source = ArraySource(self.images, self.labels)
            self.all_display = self.display
        self.indices = np.arange(len(self.images))

    def attach(self, settings: "SettingsView", maps: "MapsPane", evaluate: "EvaluatePane", dataset: "DatasetPane",
               show_controls: Callable[[], None]) -> None:
        """The views the host serves: the Maps view is the sink of the grid's jobs, the Evaluate view follows
        the grid's requests, the Dataset view holds the stored maps; ``show_controls`` puts every trait on its
        control."""
        self.settings_view, self.maps_view, self.evaluate_view, self.dataset_view = settings, maps, evaluate, dataset
        self.show_controls = show_controls

    # ------------------------------------------------------------------ the status and error lines
    def say(self, view: str, text: str) -> None:
        """Set the ``status`` trait to ``text``, remembered as the last status of ``view`` ('maps', 'evaluate'
        or 'dataset'): the views share one status line, and each shows its own again when shown."""
        self.statuses[view] = text
        self.panel.status = text

    def show_status_of(self, view: str) -> None:
        """Show ``view``'s last status (nothing changes if it has none yet)."""
        if view in self.statuses:
            self.panel.status = self.statuses[view]

    def on_status_change(self, change) -> None:
        """The ``status`` trait changed: show it."""
        self.status_line.value = controls.one_line(change["new"])

    def on_error_change(self, change) -> None:
        """The ``error`` trait changed: show it (hidden when empty)."""
        message = change["new"]
        self.error_line.value = f"<span style='color:#b00020'><b>Error:</b> {html.escape(message)}</span>"
        self.error_line.layout.display = "" if message else "none"

    # ------------------------------------------------------------------ pages and their caches
    def page_slice(self, page: int | None = None) -> slice:
        """The rows of ``images`` on ``page`` (the shown page by default)."""
        page = self.panel.page if page is None else page
        size = self.panel.page_size
        return slice(page * size, min((page + 1) * size, len(self.images)))

    def page_note(self) -> str:
        """' (page 1 of 2: images 1-6 of 12)' when the images fill several pages, else ''."""
        pages = self.panel.num_pages
        if pages == 1:
            return ""
        part = self.page_slice()
        return f" (page {self.panel.page + 1} of {pages}: images {part.start + 1}-{part.stop} of {len(self.images)})"

    def explorer(self, page: int | None = None) -> Explorer:
        """The page's map cache (an :class:`~salwidget.panel.map_cache.Explorer`), made on first visit."""
        page = self.panel.page if page is None else page
        if page not in self.explorers:
            part = self.page_slice(page)
            ids = self.indices[part] if self.from_dataset and self.indices is not None else None
            dataset_rows = ids is not None and bool((ids >= 0).all())
            stored = self.dataset_view.stored_maps if dataset_rows and self.dataset_view is not None else None
            self.explorers[page] = Explorer(self.model, self.images[part], channels_last=self.channels_last,
                                            image_ids=ids if dataset_rows else None, stored=stored,
                                            **self.explorer_options)
        return self.explorers[page]

    def look(self) -> Look:
        """How the maps are drawn now (colour map, clip, scaling, view, overlay, cell size)."""
        p = self.panel
        return Look(p.cmap, p.percentile, p.scaling, p.view, p.overlay_method, p.overlay_alpha, p.cell_size)

    def show_error(self, exc: Exception, details: str | None = None) -> None:
        """Show ``exc`` on the error line (its traceback in ``last_traceback``); the panel goes on."""
        import traceback

        self.panel.last_traceback = details or "".join(traceback.format_exception(exc))
        self.panel.error = str(exc) if isinstance(exc, SaliencyError) else f"{type(exc).__name__}: {exc}"

    def read_rows(self, rows: np.ndarray):
        """The dataset's ``rows`` as a batch; an error naming the first row that cannot be read."""
        batch = self.source.read(rows)
        if batch.failed:
            row, message = next(iter(batch.failed.items()))
            raise SaliencyError(f"Image {row} of the dataset cannot be read: {message}. Pick others.")
        return batch

    def pictures(self, batch) -> np.ndarray:
        """How the rows of ``batch`` look: the files' pictures when they share a size, else the inputs."""
        if batch.pictures is not None and len({p.shape for p in batch.pictures}) == 1:
            return np.stack(batch.pictures)
        return to_display_image(batch.inputs, channels_last=self.channels_last)

    def select_rows(self, rows: np.ndarray) -> None:
        """Explain the dataset's ``rows`` instead (read back here; every page's maps are forgotten)."""
        from ..inputs import prepare_inputs

        batch = self.read_rows(rows)
        inputs, _, _ = prepare_inputs(batch.inputs, self.channels_last, self.channels_last)
        self.images = inputs[0]
        self.display = (self.all_display[rows] if not self.from_dataset else
                        to_display_image(self.pictures(batch), channels_last=True))
        self.labels = batch.labels if self.labels is not None or (batch.labels >= 0).any() else None
        self.indices = rows
        self.forget_pages()

    def preprocessed(self, pictures) -> tuple[np.ndarray, np.ndarray]:
        """Pictures (RGB uint8 (H, W, 3)) through ``preprocess``: (model-ready images, how they look)."""
        if self.preprocess is None:
            raise SaliencyError("Pass preprocess= to SaliencyWidget to add pictures: it turns a picture into a "
                                "model-ready image.")
        inputs, shown = [], []
        for picture in pictures:
            made = self.preprocess(picture)
            x, display = made if isinstance(made, tuple) else (made, None)
            x = np.asarray(x, dtype=self.images.dtype)
            if x.shape != self.images.shape[1:]:
                raise SaliencyError(f"preprocess returned shape {x.shape}; the panel's images are "
                                    f"{self.images.shape[1:]}. Return one image without the batch axis.")
            inputs.append(x)
            shown.append(to_display_image((display if display is not None else x)[None],
                                          channels_last=True if display is not None else self.channels_last)[0])
        return np.stack(inputs), np.stack(shown)

    def append(self, images: np.ndarray, shown: np.ndarray) -> int:
        """Append model-ready ``images`` and how they look (N, H, W, 3); returns the page of the first."""
        first = len(self.images)
        self.images = np.concatenate([self.images, images])
        self.display = np.concatenate([self.display, shown])
        if self.labels is not None:
            self.labels = np.concatenate([self.labels, np.full(len(images), -1)])
        self.indices = np.concatenate([self.indices, np.full(len(images), -1)])
        page = first // self.panel.page_size
        self.explorers = {p: e for p, e in self.explorers.items() if p < page}
        return page

    def forget_pages(self) -> None:
        """Other rows are shown: every page's cached maps and evaluations go, and the grid is cleared."""
        self.explorers.clear()
        self.evaluate_view.cache.clear()  # keyed by the pages' explorers, gone now
        with self.worker.lock:
            self.maps_view.view.clear()

    # ------------------------------------------------------------------ the grid's requests
    def settings(self) -> Settings:
        """What the shown page's maps are computed with (methods, options, target, layer)."""
        p = self.panel
        part = self.page_slice()
        target = p.target[part] if isinstance(p.target, tuple) else p.target
        if self.dense:  # the page's regions, one per image
            from ..targets import Region

            chosen = {i - part.start: p.regions[i] for i in range(part.start, part.stop) if i in p.regions}
            regions = regions_for(self.explorer().scores, self.channels_last, chosen)
            target = Region([k for k, _ in regions], np.stack([m for _, m in regions]))
        return Settings(tuple(p.methods), {m: dict(p.options[m]) for m in p.methods}, target, p.layer)

    def request(self) -> None:
        """Compute the current settings (and their evaluation, when shown), or hold a long run for Compute."""
        if self.closed:
            return
        self.resumable = False
        self.settings_view.search_hint.value = ""  # another request: a search's note is answered or outdated
        if self.panel.pane == "dataset":  # the maps are computed when shown: a scan under way goes on
            self.maps_pending = True
            self.evaluate_view.defer()  # and the Evaluate view restaged when shown or read
            return
        self.maps_pending = False
        self.request_maps()
        if self.panel.pane == "evaluate":
            self.evaluate_view.request(auto=True)
        else:
            self.evaluate_view.defer()  # restaged when shown: no cache lookups or cost lines for a hidden view

    @property
    def held(self) -> MapsJob | None:
        """The grid's job waiting for the Compute button, if any."""
        return self._held

    def request_maps(self) -> None:
        """Compute the shown page's maps, or hold the job for Compute when it would take ``confirm_seconds``."""
        job = MapsJob(self.explorer(), self.settings())
        costs, seconds = self.estimate(job)
        if seconds > self.panel.confirm_seconds:
            self.worker.cancel()
            with self.worker.lock:
                self._held = job
                self.maps_view.stage(job)
                self.compute_button.layout.display = ""
                self.stop_button.disabled = True
                self.progress.value = 0  # nothing runs: a full bar would say it is done
                self.say("maps", estimate_status(costs, seconds))  # after the grid: the status tells it is drawn
            return
        self._held = None
        self.compute_button.layout.display = "none"
        self.submit(job)

    def offer_resume(self) -> None:
        """After Stop: the Compute button goes on with the current settings (what is finished is reused)."""
        self.resumable = True
        self.compute_button.layout.display = ""
        self.progress.value = 0

    def on_compute_click(self) -> None:
        """Compute: start what waits for it, or go on after Stop."""
        if self._held is not None or self.evaluate_view.held is not None or not self.resumable:
            self.start_held()
            return
        self.resumable = False
        self.compute_button.layout.display = "none"
        self.submit(MapsJob(self.explorer(), self.settings()))
        if self.panel.pane == "evaluate":
            self.evaluate_view.request()

    def drop_held(self) -> None:
        """Forget the grid's held job (Stop)."""
        self._held = None
        self.compute_button.layout.display = "none"

    def estimate(self, job: MapsJob) -> tuple[list, float]:
        """(method, passes) and seconds of ``job``, on the kernel's thread.

        Looked up under the weights version last read (the worker reads it anew before it computes), so a
        settings change reads nothing of the model; when that finds maps to reuse, the version is read now,
        as those maps may predate a training step: cached maps are never counted free or shown done by mistake.
        """
        explorer, settings = job.explorer, job.settings
        weights = explorer.known_weights
        if any(reuses(explorer, method, settings, weights) for method in settings.methods):
            weights = explorer.read_weights()
        costs = []
        for method in settings.methods:
            try:
                costs.append((method, explorer.passes_needed(method, settings, weights)))
            except SaliencyError:
                costs.append((method, 0))
        return costs, sum(p for _, p in costs) * self.rate(explorer)

    def rate(self, explorer: Explorer) -> float:
        """Seconds per pass as measured by the page's last computation (another page's before it has one);
        0.0 before any measurement (then nothing is held)."""
        rates = [explorer.seconds_per_pass] + [e.seconds_per_pass for e in self.explorers.values()]
        return next((r for r in rates if r), 0.0)

    def submit(self, job: MapsJob) -> None:
        """Run the grid's ``job`` in the worker (the Maps view draws what comes back)."""
        self.stop_button.disabled = False
        maps = self.maps_view
        self.worker.submit(lambda generation: run_job(self.worker, generation, job, maps))

    def start_held(self) -> None:
        """Start what waits for the Compute button: the grid's job, then its evaluation."""
        job, self._held = self._held, None
        if job is not None:
            self.compute_button.layout.display = "none"
            self.submit(job)
        self.evaluate_view.start_held()  # after the maps it evaluates


class PageMaps(dict):
    """A dict of one page's maps (or results) that says which page it holds.

    ``rows`` is the slice of the panel's images on this page, ``page`` its index and
    ``pages`` how many there are.
    """

    def __init__(self, items, rows: slice, page: int, pages: int):
        super().__init__(items)
        self.rows, self.page, self.pages = rows, page, pages

    def __repr__(self) -> str:
        where = (f"page {self.page + 1} of {self.pages}: images {self.rows.start + 1}-{self.rows.stop}"
                 if self.pages > 1 else f"images {self.rows.start + 1}-{self.rows.stop}")
        return f"# {where}\n{dict.__repr__(self)}"
