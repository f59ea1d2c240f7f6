"""``SaliencyWidget``: the Jupyter panel, a view over traits.

Standard ipywidgets 8 only (no custom JavaScript), so it works wherever
ipywidgets do: JupyterLab, Notebook 7, Voila, VS Code, Colab. Every control
mirrors a trait; a value the panel cannot honour is refused at assignment
with a ``TraitError`` (from Python) or shown in the panel (from a control),
and nothing changes. Computing happens in one worker thread
(:mod:`salwidget.panel.worker`); drawing in :mod:`salwidget.panel.view`.
"""

from __future__ import annotations

import html
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import numpy as np
import traitlets

from ..backends import get_backend
from ..errors import SaliencyError
from ..explorer import Explorer, Settings
from ..inputs import prepare_inputs
from ..methods import all_methods, get_method
from ..visualize import to_display_image
from . import controls
from .classes import ClassNames, row_titles, top_classes
from .evaluate_pane import EvaluatePane
from .files import decode_picture, maps_npz, npz_link, png_link
from .notes import SANITY_NOTE, notes_html
from .method_options import default_options, shown_options
from .snapshot import Snapshot
from .status import done_status, estimate_status, progress_status
from .view import COMPUTING, DONE, FAILED, STOPPED, GridView, Look, Picture
from .traits import PanelTraits
from .worker import Job, Worker, run_job

DEFAULT_METHODS = ("vanilla", "smoothgrad", "integrated")
COMPUTE_TRAITS = ("methods", "options", "target", "layer", "page")
EVALUATION_TRAITS = ("curve_steps", "sanity_depths")
LOOK_TRAITS = ("cmap", "percentile", "scaling", "view", "overlay_method", "overlay_alpha", "cell_size", "enlarged")
MIN_CELL_PX = 160  # the grid shrinks with the panel's width down to this many pixels per cell, then scrolls


class SaliencyWidget(PanelTraits, widgets.VBox):
    """An interactive grid of saliency maps for a batch of images.

    Parameters
    ----------
    model : torch.nn.Module or Keras model
    images : array or tensor
        A model-ready batch, as :func:`salwidget.attribute` takes it.
    class_names : sequence of str, optional
        Names of the model's classes (titles, target list and class search).
    labels : sequence of int, optional
        True classes, shown in the titles.
    methods : sequence of str
        Methods shown side by side (any of ``salwidget.METHODS``).
    display_images : array, optional
        The same images as a person sees them (uint8 or [0, 1], RGB or grey,
        channels last) when the model input is normalised. By default each
        image is scaled to [0, 1] for display.
    channels_last : bool, optional
        Layout of ``images``.
    seed : int, default 0
        Seed of every noisy or random computation: a setting always gives
        the same maps.
    nsamples, nintegration, stdev_spread, magnitude, baseline : optional
        Start values for every method that has that option.
    options : dict, optional
        Start values per method, ``{method: {option: value}}``.
    target : 'predicted', int or sequence of int
    preprocess : callable, optional
        Turns an uploaded picture, an RGB ``uint8`` array (H, W, 3), into one
        model-ready image shaped like ``images[0]`` (or a pair: that and the
        picture to display). With it the panel shows an upload button.
    page_size : int, default 6
        Images per page; only the visible page is computed.
    batch_size, output_index, rng
        As for :func:`salwidget.attribute`.

    Notes
    -----
    Every trait (see :class:`~salwidget.panel.traits.PanelTraits`) is
    mirrored both ways with its control. ``nsamples``, ``nintegration``,
    ``stdev_spread``, ``magnitude`` and ``baseline`` are shortcuts into
    :attr:`options`: setting one sets it for every method that has it.

    The Evaluate view (``pane = 'evaluate'``, or the Maps/Evaluate toggle)
    shows how much to trust the maps: deletion and insertion curves of every
    shown method against a random pixel order, with their areas, and on
    request the cascading model-randomisation sanity check. See
    :meth:`evaluate`, :attr:`curves`, :attr:`sanity`, :meth:`evaluation_png`.
    """


    def __init__(
        self,
        model: Any,
        images: Any,
        *,
        class_names: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        methods: Sequence[str] = DEFAULT_METHODS,
        display_images: Any = None,
        channels_last: bool | None = None,
        seed: int = 0,
        nsamples: int | None = 16,
        nintegration: int | None = 16,
        stdev_spread: float | None = None,
        magnitude: bool | None = None,
        baseline: Any = None,
        options: dict | None = None,
        target: Any = "predicted",
        preprocess: Callable | None = None,
        page_size: int = 6,
        batch_size: int | str = "auto",
        output_index: int | None = None,
        rng: str = "device",
        **kwargs,
    ):
        self.page_size = page_size
        backend = get_backend(model)
        inputs, layout, _ = prepare_inputs(images, channels_last, backend.default_channels_last)
        self._model, self._images, self._channels_last = model, inputs[0], layout
        self._explorer_options = dict(seed=seed, batch_size=batch_size, output_index=output_index, rng=rng)
        shown = display_images if display_images is not None else self._images
        self._display = to_display_image(shown, channels_last=True if display_images is not None else layout)
        self._display.flags.writeable = False  # never written: the grid's renderer keeps its resampled cells
        self._labels = None if labels is None else np.asarray(labels).reshape(-1)
        self._preprocess = preprocess
        self._explorers: dict[int, Explorer] = {}
        explorer = self._explorer(0)
        self._classes = ClassNames(class_names, explorer.num_classes)
        self._worker = Worker()
        self._view = GridView()
        self._snapshot = Snapshot()
        self._picture = Picture(b"")
        self._png, self._results, self._masks = b"", {}, {}
        self._npz_for: tuple = ()  # the results the .npz link holds
        self._held: Job | None = None
        self._offered: list[int] = []  # classes a search offered in the target list (duplicated names)
        self._group_boxes: dict[str, tuple] = {}
        self._job_started = 0.0
        self.draw_seconds = 0.0  # how long the last grid took to draw (previews are spaced by it)
        self._syncing = False
        self._closed = False
        self._build_controls()
        super().__init__(children=self._layout_children(), **kwargs)
        self.add_class("salwidget-panel")
        given = dict(nsamples=nsamples, nintegration=nintegration, stdev_spread=stdev_spread, magnitude=magnitude,
                     baseline=baseline)
        start = default_options(given)
        self.options = start  # one by one: each validator sees the values set before it
        self.methods = tuple(methods)
        self.options = options or {}
        self.overlay_method = self.methods[-1] if self.methods else None
        self.target = target
        self._show_traits()
        self.observe(self._on_compute_change, names=list(COMPUTE_TRAITS))
        self.observe(self._on_look_change, names=list(LOOK_TRAITS))
        self.observe(self._on_page_size_change, names="page_size")
        self.observe(self._on_pane_change, names="pane")
        self.observe(self._on_evaluation_change, names=list(EVALUATION_TRAITS))
        self.observe(self._on_error_change, names="error")
        self.observe(self._on_status_change, names="status")
        self._request()

    def _explorer(self, page: int | None = None) -> Explorer:
        """The page's explorer (its own cache of maps), made on first visit."""
        page = self.page if page is None else page
        if page not in self._explorers:
            self._explorers[page] = Explorer(self._model, self._images[self._page_slice(page)],
                                             channels_last=self._channels_last, **self._explorer_options)
        return self._explorers[page]

    # ----------------------------------------------------------------- controls
    def _build_controls(self) -> None:
        self._method_buttons = {m.name: controls.method_button(m) for m in all_methods()}
        for button in self._method_buttons.values():
            button.observe(self._on_method_button_change, names="value")
        self._option_controls: dict[tuple[str, str], Any] = {}
        self._groups = widgets.VBox(layout=widgets.Layout(margin="2px 0"))
        self._option_views: dict[tuple[str, str], Any] = {}
        tip = "The layer class activation maps read: automatic (the last layer with a spatial output) or any one."
        self._layer = controls.named(widgets.Dropdown(options=[("automatic", controls.NONE)],
                                                      layout=widgets.Layout(width="320px")), "layer", tip)
        self._layer.observe(self._on_layer_change, names="value")
        self._layer_row = controls.wrap_row([controls.labelled(self._layer, "CAM layer", tip)])
        tip = ("The class whose score is explained: each image's prediction, or one class for all images "
               "(the top classes are listed; search for any other).")
        self._target = controls.named(widgets.Dropdown(layout=widgets.Layout(width="340px")), "target", tip)
        self._target_view = controls.labelled(self._target, "explain", tip)
        self._target.observe(self._on_target_change, names="value")
        self._search = controls.named(widgets.Combobox(placeholder="search a class, press Enter",
                                                       options=self._classes.suggestions(), ensure_option=False,
                                                       continuous_update=False,
                                                       layout=widgets.Layout(width="260px")),
                                      "class-search", "Type a class name and press Enter: a unique match becomes "
                                                      "the target; duplicated names show their indices.")
        self._search.layout.display = "" if self._classes.names else "none"
        self._search.observe(self._on_search_change, names="value")
        self._search_hint = controls.named(widgets.HTML(), "search-hint", None)
        looks = controls.look_controls()
        self._look = {name: control for name, (control, _) in looks.items()}
        self._look_views = [view for _, view in looks.values()]
        for trait, control in self._look_pairs():
            control.observe(self._on_look_control_change, names="value")
        self._compute = controls.named(widgets.Button(description="Compute", icon="play", button_style="primary",
                                                      layout=widgets.Layout(width="110px", display="none")),
                                       "compute", "Start the long computation described in the status line.")
        self._compute.on_click(self._on_compute_click)
        self._stop = controls.named(widgets.Button(description="Stop", icon="stop", disabled=True,
                                                   layout=widgets.Layout(width="90px")),
                                    "stop", "Stop the computation after its current chunk; maps done so far stay.")
        self._stop.on_click(self._on_stop_click)
        self._progress = controls.named(widgets.IntProgress(min=0, max=100, layout=widgets.Layout(width="160px")),
                                        "progress", "Progress of the current computation.")
        self._status = controls.named(widgets.HTML(layout=widgets.Layout(flex="1 1 320px")), "status", None)
        self._notes = controls.named(widgets.HTML(), "notes", None)
        self._error = controls.named(widgets.HTML(layout=widgets.Layout(display="none")), "error", None)
        self._image = controls.named(widgets.Image(format="png", layout=widgets.Layout(width="100%", height="auto")),
                                     "grid", None)
        self._grid_box = widgets.Box([self._image], layout=widgets.Layout(overflow="auto", width="100%"))
        self._prev = controls.named(widgets.Button(description="Previous", icon="arrow-left",
                                                   layout=widgets.Layout(width="110px")),
                                    "previous-page", "Show the previous page of images.")
        self._next = controls.named(widgets.Button(description="Next", icon="arrow-right",
                                                   layout=widgets.Layout(width="110px")),
                                    "next-page", "Show the next page of images (computed when shown).")
        self._prev.on_click(self._on_prev_click)
        self._next.on_click(self._on_next_click)
        self._page_label = controls.named(widgets.Label(), "page", None)
        self._pager = controls.wrap_row([self._prev, self._page_label, self._next])
        tip = "Show one cell of the grid at full resolution, every pixel of the map."
        self._enlarge = controls.named(widgets.Dropdown(layout=widgets.Layout(width="280px")), "enlarge", tip)
        self._enlarge_view = controls.labelled(self._enlarge, "enlarge", tip)
        self._enlarge.observe(self._on_enlarge_change, names="value")
        self._cell = controls.named(widgets.Image(format="png", layout=widgets.Layout(max_width="100%")), "cell", None)
        self._cell_caption = controls.named(widgets.HTML(), "cell-caption", None)
        self._cell_box = widgets.VBox([self._cell_caption, self._cell], layout=widgets.Layout(display="none"))
        self._upload = controls.named(widgets.FileUpload(accept="image/*", multiple=True, description="Add images",
                                                         layout=widgets.Layout(width="150px")),
                                      "upload", "Add your own pictures: they go through the preprocess function "
                                                "and appear on the last page.")
        self._upload.layout.display = "" if self._preprocess is not None else "none"
        self._upload.observe(self._on_upload_change, names="value")
        self._downloads = controls.named(widgets.HTML(), "downloads", None)
        self._npz_button = controls.named(widgets.Button(description="Maps (.npz)", icon="download",
                                                         layout=widgets.Layout(width="130px", display="none")),
                                          "prepare-npz", "Prepare a NumPy archive of the raw maps, the masks shown "
                                                         "and the targets (megabytes for big images), then save it.")
        self._npz_button.on_click(self._on_npz_click)
        self._npz_link = controls.named(widgets.HTML(), "npz", None)
        self._pane = controls.named(widgets.ToggleButtons(
            options=[("Maps", "maps"), ("Evaluate", "evaluate")], style={"button_width": "90px"},
            tooltips=["The grid of saliency maps", "How much to trust the maps: deletion/insertion curves against "
                                                   "a random order, and the model-randomisation sanity check"]),
            "pane", "Show the maps, or their evaluation (computed in the background, cached).")
        self._evaluate = EvaluatePane(self)
        for trait, control in self._evaluation_pairs():
            control.observe(self._on_evaluation_control_change, names="value")

    def _look_pairs(self) -> list[tuple[str, Any]]:
        return [("cmap", self._look["cmap"]), ("percentile", self._look["percentile"]),
                ("scaling", self._look["scaling"]), ("view", self._look["view"]),
                ("overlay_method", self._look["overlay"]), ("overlay_alpha", self._look["alpha"]),
                ("cell_size", self._look["cell_size"])]

    def _evaluation_pairs(self) -> list[tuple[str, Any]]:
        return [("pane", self._pane), ("curve_steps", self._evaluate.steps),
                ("sanity_depths", self._evaluate.depths)]

    def _layout_children(self) -> list:
        # The Evaluate view takes the grid's place (a toggle above both): beside the grid it would leave
        # either too little room at 900 px.
        self._maps_box = widgets.VBox([self._grid_box], layout=widgets.Layout(width="100%"))
        self._maps_extras = widgets.VBox([
            controls.wrap_row([self._enlarge_view, self._upload, self._downloads, self._npz_button, self._npz_link]),
            self._cell_box,
        ], layout=widgets.Layout(width="100%"))
        return [
            controls.wrap_row(list(self._method_buttons.values())),
            self._groups,
            controls.wrap_row([self._target_view, self._search, self._search_hint]),
            controls.wrap_row(self._look_views),
            controls.wrap_row([self._pane, self._compute, self._stop, self._progress, self._status]),
            self._notes,
            self._error,
            self._maps_box,
            self._evaluate.box,
            self._pager,
            self._maps_extras,
        ]

    def _show_groups(self) -> None:
        """A box per selected method (its name, note and options), rebuilt only when what it shows changes."""
        boxes = []
        for name in self.methods:
            method = get_method(name)
            shown = tuple(o.name for o in shown_options(method, self.options[name]))
            if self._group_boxes.get(name, (None,))[0] != shown:
                self._group_boxes[name] = (shown, self._group_box(method, shown))
            boxes.append(self._group_boxes[name][1])
        if any(get_method(m).reads == "layer" for m in self.methods):
            boxes.append(self._layer_row)
        if tuple(self._groups.children) != tuple(boxes):
            self._groups.children = boxes

    def _group_box(self, method, shown: tuple[str, ...]) -> widgets.VBox:
        items = []
        for option in (method.option(n) for n in shown):
            key = (method.name, option.name)
            if key not in self._option_controls:
                control, view = controls.option_control(method, option, self.options[method.name][option.name])
                control.observe(lambda change, key=key: self._on_option_control_change(key, change), names="value")
                self._option_controls[key], self._option_views[key] = control, view
            items.append(self._option_views[key])
        note = f" <span style='color:#8a5300'>&#9888; {html.escape(SANITY_NOTE)}</span>" if method.fails_sanity_check else ""
        empty = "" if items or note else " <span style='color:#777'>(no options)</span>"
        title = html.escape(method.summary, quote=True)
        header = controls.named(widgets.HTML(f"<b title=\"{title}\">{html.escape(method.label)}</b>{note}{empty}"),
                                f"group-{method.name}", None)
        return widgets.VBox([header, controls.wrap_row(items)], layout=widgets.Layout(margin="0 0 4px 0"))

    def _show_traits(self) -> None:
        """Put every trait's value on its control (controls always show the traits)."""
        self._syncing = True
        try:
            for name, button in self._method_buttons.items():
                button.value = name in self.methods
            self._show_groups()
            for (method, option), control in self._option_controls.items():
                controls.show_value(control, self.options[method][option])
            controls.set_choices(self._look["overlay"],
                                 [("none", controls.NONE)] + [(get_method(m).label, m) for m in self.methods])
            for trait, control in self._look_pairs() + self._evaluation_pairs():
                controls.show_value(control, getattr(self, trait))
            self._show_layer()
            self._show_target()
            self._show_pages()
            self._show_enlarge_choices()
        finally:
            self._syncing = False

    def _show_layer(self) -> None:
        if any(get_method(m).reads == "layer" for m in self.methods) and len(self._layer.options) == 1:
            try:
                layers = self._explorer(0).spatial_layers()
            except Exception as exc:  # the CAM itself will say what is wrong when it runs
                layers = []
                self.error = f"Could not list the model's layers: {exc}"
            self._layer.options = [("automatic", controls.NONE)] + [(f"{n} {tuple(s[1:])}", n) for n, s in layers]
        controls.show_value(self._layer, self.layer)

    def _show_target(self) -> None:
        explorer, first = self._explorer(), self._page_slice().start
        choices = [(self._classes.target_label("predicted"), "predicted")]
        for c, i, p in top_classes(explorer.probabilities):
            choices.append((f"{self._classes.label(c)}; image {first + i + 1}: {p:.2f}", c))
        known = [v for _, v in choices]
        choices += [(self._classes.label(c), c) for c in self._offered if c not in known]
        if not any(controls.same(self.target, v) for _, v in choices):
            choices.append((self._classes.target_label(self.target), self.target))
        controls.set_choices(self._target, choices)
        controls.show_value(self._target, self.target)
        text = self._classes.suggestions()[self.target] if isinstance(self.target, int) and self._classes.names else ""
        if self._search.value != text:
            self._search.value = text

    def _show_pages(self) -> None:
        part = self._page_slice()
        self._page_label.value = f"images {part.start + 1}-{part.stop} of {len(self._images)}"
        self._prev.disabled = self.page == 0
        self._next.disabled = self.page >= self.num_pages - 1
        self._pager.layout.display = "" if self.num_pages > 1 else "none"

    def _show_enlarge_choices(self) -> None:
        part = self._page_slice()
        columns = [("image", "image")] + [(get_method(m).label, m) for m in self.methods]
        if self.overlay_method is not None:
            columns.append(("overlay", "overlay"))
        choices = [("none", controls.NONE)] + [(f"image {part.start + r + 1}: {label}", (r, key))
                                      for r in range(part.stop - part.start) for label, key in columns]
        value = self.enlarged if self.enlarged in [v for _, v in choices] else None
        controls.set_choices(self._enlarge, choices)
        controls.show_value(self._enlarge, value)

    # ------------------------------------------------------------ from controls
    def _set_from_control(self, control, apply: Callable[[], None], shown: Any) -> None:
        """Apply a control's change; if the panel cannot honour it, put the control back and say why."""
        if self._syncing:
            return
        try:
            apply()
        except traitlets.TraitError as exc:
            self.error = str(exc)
            self._syncing = True
            try:
                controls.show_value(control, shown())
            finally:
                self._syncing = False

    def _on_method_button_change(self, change) -> None:
        button = change["owner"]
        name = next(m for m, b in self._method_buttons.items() if b is button)
        wanted = (*self.methods, name) if change["new"] else tuple(m for m in self.methods if m != name)
        self._set_from_control(button, lambda: setattr(self, "methods", wanted), lambda: name in self.methods)

    def _on_option_control_change(self, key: tuple[str, str], change) -> None:
        method, option = key
        self._set_from_control(change["owner"], lambda: setattr(self, "options", {method: {option: change["new"]}}),
                               lambda: self.options[method][option])

    def _on_look_control_change(self, change) -> None:
        trait = next(t for t, c in self._look_pairs() if c is change["owner"])
        self._set_from_control(change["owner"], lambda: setattr(self, trait, controls.chosen(change["new"])),
                               lambda: getattr(self, trait))

    def _on_evaluation_control_change(self, change) -> None:
        trait = next(t for t, c in self._evaluation_pairs() if c is change["owner"])
        self._set_from_control(change["owner"], lambda: setattr(self, trait, change["new"]),
                               lambda: getattr(self, trait))

    def _on_layer_change(self, change) -> None:
        self._set_from_control(self._layer, lambda: setattr(self, "layer", controls.chosen(change["new"])),
                               lambda: self.layer)

    def _on_target_change(self, change) -> None:
        if change["new"] is not None:
            self._set_from_control(self._target, lambda: setattr(self, "target", change["new"]), lambda: self.target)

    def _on_search_change(self, change) -> None:
        if self._syncing:
            return
        found = self._classes.search(change["new"])
        if len(found.matches) == 1:
            self.target = found.matches[0]
        elif found.exact:  # a duplicated name: offer each in the target list
            self._offered = [*self._offered, *[c for c in found.matches if c not in self._offered]]
            self._show_traits()
        self._search_hint.value = html.escape(found.hint(self._classes), quote=False)

    def _on_enlarge_change(self, change) -> None:
        self._set_from_control(self._enlarge, lambda: setattr(self, "enlarged", controls.chosen(change["new"])),
                               lambda: self.enlarged)

    def _on_prev_click(self, button) -> None:
        if self.page > 0:
            self.page -= 1

    def _on_next_click(self, button) -> None:
        if self.page < self.num_pages - 1:
            self.page += 1

    def _on_stop_click(self, button) -> None:
        self.stop()

    def _on_compute_click(self, button) -> None:
        self._start_held()

    def _on_upload_change(self, change) -> None:
        files = change["new"]
        if not files:
            return
        try:
            pictures = [decode_picture(f["content"]) for f in files]
            self.add_pictures(pictures)
        except Exception as exc:  # a bad file or preprocess: said in the panel, the panel goes on
            self._show_error(exc)
        finally:
            self._syncing = True
            try:
                self._upload.value = ()
            finally:
                self._syncing = False

    # -------------------------------------------------------------- from traits
    def _on_compute_change(self, change) -> None:
        self.error = ""  # a new request: the last one's error goes (this one shows its own)
        if change["name"] == "methods":
            if self.overlay_method not in self.methods:
                self.overlay_method = self.methods[-1] if self.methods else None
            if self.enlarged is not None and self.enlarged[1] not in ("image", "overlay", *self.methods):
                self.enlarged = None
        if change["name"] == "page":
            with self._worker.lock:
                self._view.clear()
            self.enlarged = None
        self._show_traits()
        self._request()

    def _on_look_change(self, change) -> None:
        self._show_traits()
        if change["name"] == "enlarged":
            with self._worker.lock:
                self._show_cell()
            return
        with self._worker.lock:
            if self._view.results:
                self._render()
            if change["name"] == "cmap" and self._evaluate.board.sanity:  # the randomised maps' colours
                self._evaluate.changed()

    def _on_pane_change(self, change) -> None:
        evaluate = change["new"] == "evaluate"
        self._maps_box.layout.display = "none" if evaluate else ""
        self._maps_extras.layout.display = "none" if evaluate else ""
        self._evaluate.box.layout.display = "" if evaluate else "none"
        self._show_traits()
        if evaluate:
            self._evaluate.request(auto=True)
            self._evaluate.show()

    def _on_evaluation_change(self, change) -> None:
        self.error = ""
        self._show_traits()
        if self.pane == "evaluate":
            self._evaluate.request(auto=True)
        else:
            self._evaluate.defer()  # restaged when shown

    def _on_page_size_change(self, change) -> None:
        self._explorers.clear()
        self._evaluate.cache.clear()  # keyed by the pages' explorers, gone now
        with self._worker.lock:
            self._view.clear()  # other rows are shown: the old page's maps do not fit them
        self.enlarged = None
        with self.hold_trait_notifications():
            self.page = 0
        self._show_traits()
        self._request()

    def _on_status_change(self, change) -> None:
        self._status.value = html.escape(change["new"], quote=False)

    def _on_error_change(self, change) -> None:
        message = change["new"]
        self._error.value = f"<span style='color:#b00020'><b>Error:</b> {html.escape(message)}</span>"
        self._error.layout.display = "" if message else "none"

    # ---------------------------------------------------------------- computing
    def _settings(self) -> Settings:
        part = self._page_slice()
        target = self.target[part] if isinstance(self.target, tuple) else self.target
        return Settings(tuple(self.methods), {m: dict(self.options[m]) for m in self.methods}, target, self.layer)

    def _request(self) -> None:
        """Compute the current settings (and their evaluation, when shown), or hold a long run for Compute."""
        if self._closed:
            return
        self._request_maps()
        if self.pane == "evaluate":
            self._evaluate.request(auto=True)
        else:
            self._evaluate.defer()  # restaged when shown: no cache lookups or cost lines for a hidden view

    def _request_maps(self) -> None:
        job = Job(self._explorer(), self._settings())
        costs, seconds = self._estimate(job)
        if seconds > self.confirm_seconds:
            self._worker.cancel()
            with self._worker.lock:
                self._held = job
                self._stage(job)
                self._compute.layout.display = ""
                self._stop.disabled = True
                self.status = estimate_status(costs, seconds)  # after the grid: the status tells it is drawn
            return
        self._held = None
        self._compute.layout.display = "none"
        self._submit(job)

    def _estimate(self, job: Job) -> tuple[list, float]:
        costs = []
        weights = job.explorer.known_weights  # on the kernel's thread: the worker reads them before it computes
        for method in job.settings.methods:
            try:
                costs.append((method, job.explorer.passes_needed(method, job.settings, weights)))
            except SaliencyError:
                costs.append((method, 0))
        return costs, sum(p for _, p in costs) * self._rate(job.explorer)

    def _rate(self, explorer: Explorer) -> float:
        """Seconds per pass as measured by the page's last computation (another page's before it has one);
        0.0 before any measurement (then nothing is held)."""
        rates = [explorer.seconds_per_pass] + [e.seconds_per_pass for e in self._explorers.values()]
        return next((r for r in rates if r), 0.0)

    def _submit(self, job: Job) -> None:
        self._stop.disabled = False
        self._worker.submit(lambda generation: run_job(self._worker, generation, job, self))

    def _start_held(self) -> None:
        job, self._held = self._held, None
        if job is not None:
            self._compute.layout.display = "none"
            self._submit(job)
        self._evaluate.start_held()  # after the maps it evaluates

    # ---- the sink of run_job: called in the worker thread, under the worker's lock, only while current
    def _stage(self, job: Job) -> None:
        """Columns for the job's methods: cached maps done at once (never flashed as pending), the rest pending."""
        self._select(job, job.explorer.known_weights)
        if not self._view.complete:
            self._render()

    def _select(self, job: Job, weights: Any) -> None:
        """Columns for the job's methods, with the maps cached under ``weights`` (a weights version) done."""
        self._view.select(job.settings.methods)
        for method in job.settings.methods:
            hit = job.explorer.cached(method, job.settings, weights)
            if hit is not None:
                self._view.set(method, hit, DONE)

    def begin(self, job: Job) -> None:
        self._job_started = _now()
        self._progress.value = 0
        self._select(job, job.explorer.read_weights())  # in the worker: the weights as they are now
        if not self._view.complete:
            # Before the grid of pending columns: a "Done" must never describe that grid.
            self.status = "Computing..."
            self._render()

    def progress(self, method: str, partial, done: int, total: int, draw: bool) -> None:
        index = list(self._view.columns).index(method)
        self._progress.value = int(100 * (index + done / total) / len(self._view.columns))
        self.status = progress_status(method, partial, done, total, _now() - self._job_started)
        if draw:
            self._view.set(method, partial, COMPUTING, f"{done}/{total}")
            self._render()

    def column_done(self, outcome) -> None:
        self._view.set(outcome.method, outcome.result, DONE)
        if outcome.how != "cached" and not self._view.complete:
            self._render()

    def finish(self, outcomes, seconds: float) -> None:
        self._render()
        self._progress.value = 100
        self.error = ""
        self._stop.disabled = True
        self.status = done_status(outcomes, seconds, self._explorer().device)  # after the grid it describes

    def fail(self, exc: Exception, details: str) -> None:
        self._view.mark(FAILED)
        self._show_error(exc, details)
        self.status = "Failed: see the message below."
        self._stop.disabled = True
        if self._view.results:
            self._render()

    def _show_error(self, exc: Exception, details: str | None = None) -> None:
        import traceback

        self.last_traceback = details or "".join(traceback.format_exception(exc))
        self.error = str(exc) if isinstance(exc, SaliencyError) else f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ drawing
    def _look_now(self) -> Look:
        return Look(self.cmap, self.percentile, self.scaling, self.view, self.overlay_method, self.overlay_alpha,
                    self.cell_size)

    def _render(self) -> None:
        """Draw the grid as it stands (call under the worker's lock)."""
        started = _now()
        part = self._page_slice()
        results = self._view.results
        target = next(iter(results.values())).target if results else None
        explorer = self._explorer()
        titles = row_titles(self._classes, explorer.probabilities, explorer.predicted, target,
                            None if self._labels is None else self._labels[part], part.start)
        picture = self._view.draw(self._look_now(), self._display[part], titles)
        self._picture = picture
        columns = 1 + len(self._view.columns) + (self.overlay_method is not None)
        natural = columns * (self.cell_size + 8) + 8
        self._image.layout.max_width = f"{natural}px"
        self._image.layout.min_width = f"{min(natural, columns * min(MIN_CELL_PX, self.cell_size))}px"
        self._image.value = picture.png
        if picture.complete:
            self._snapshot.set(picture.png)  # first: whoever sees the new to_png() finds it in the snapshot too
            self._png, self._results, self._masks = picture.png, self._view.results, picture.masks
            self._show_downloads()
            self._notes.value = notes_html(self.methods, self._results, self._page_slice().start,
                                           self._explorer().weights_changed(read=False))
        self._show_cell()
        self.draw_seconds = _now() - started

    def _show_downloads(self) -> None:
        self._downloads.value = png_link(self._png)
        if self._npz_for != tuple(id(r) for r in self._results.values()):  # other maps: the old archive goes
            self._npz_link.value = ""
            self._npz_button.layout.display = ""

    def _on_npz_click(self, button) -> None:
        with self._worker.lock:
            npz, with_raw = maps_npz(self._results, self._masks, self._display[self._page_slice()])
            self._npz_for = tuple(id(r) for r in self._results.values())
            self._npz_link.value = npz_link(npz, with_raw)
            self._npz_button.layout.display = "none"

    def _show_cell(self) -> None:
        if self.enlarged is None or not self._picture.png:
            self._cell_box.layout.display = "none"
            return
        row, column = self.enlarged
        try:
            png, caption = self._view.cell(self._picture, self._look_now(), self._display[self._page_slice()],
                                           row, column)
        except KeyError:
            png, caption = b"", "not computed yet"
        self._cell.value = png
        self._cell_caption.value = html.escape(caption)
        self._cell_box.layout.display = ""

    # --------------------------------------------------------------- public API
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the panel shows the current settings; False on timeout.

        A run held for the Compute button (longer than ``confirm_seconds``)
        starts now: waiting for it says you want it.
        """
        if self._held is not None or self._evaluate.held is not None:
            self._start_held()
        finished = self._worker.wait(timeout)
        self._snapshot.publish()  # on the main thread: a notebook saved now holds the grid
        return finished

    def stop(self) -> None:
        """Stop the computation after its current chunk (the Stop button); finished maps stay."""
        self._worker.cancel()
        with self._worker.lock:
            self._held = None
            self._compute.layout.display = "none"
            self._view.mark(STOPPED)
            if self._view.results:
                self._render()
            self._evaluate.stopped()
            self._stop.disabled = True
            self.status = "Stopped. Change a setting to compute again."

    def refresh(self) -> None:
        """Re-read the model's predictions and forget cached maps, after its weights changed.

        Until then the titles, the target list and 'predicted' targets of
        maps already on screen are those of the weights at the last refresh;
        maps computed later always use the current weights (the cache knows the
        weights, so it never serves maps of other weights), and the panel
        notes when the weights have changed.
        """
        for explorer in self._explorers.values():
            explorer.refresh()
        with self._worker.lock:
            self._view.clear()
        self._show_traits()
        self._request()

    def add_pictures(self, pictures: Sequence[np.ndarray]) -> None:
        """Add pictures (RGB uint8 (H, W, 3)) through ``preprocess`` and show the page of the first one."""
        if self._preprocess is None:
            raise SaliencyError("Pass preprocess= to SaliencyWidget to add pictures: it turns a picture into a "
                                "model-ready image.")
        inputs, shown = [], []
        for picture in pictures:
            made = self._preprocess(picture)
            x, display = made if isinstance(made, tuple) else (made, None)
            x = np.asarray(x, dtype=self._images.dtype)
            if x.shape != self._images.shape[1:]:
                raise SaliencyError(f"preprocess returned shape {x.shape}; the panel's images are "
                                    f"{self._images.shape[1:]}. Return one image without the batch axis.")
            inputs.append(x)
            shown.append(to_display_image((display if display is not None else x)[None],
                                          channels_last=True if display is not None else self._channels_last)[0])
        self.add_images(np.stack(inputs), np.stack(shown))

    def add_images(self, images: np.ndarray, display_images: np.ndarray | None = None) -> None:
        """Append model-ready ``images`` (and how they look) to the panel; show the page of the first one."""
        images = np.asarray(images, dtype=self._images.dtype)
        first = len(self._images)
        shown = (to_display_image(images, channels_last=self._channels_last) if display_images is None
                 else to_display_image(display_images, channels_last=True))
        self._images = np.concatenate([self._images, images])
        self._display = np.concatenate([self._display, shown])
        self._display.flags.writeable = False
        if self._labels is not None:
            self._labels = np.concatenate([self._labels, np.full(len(images), -1)])
        page = first // self.page_size
        self._explorers = {p: e for p, e in self._explorers.items() if p < page}
        with self.hold_trait_notifications():
            if isinstance(self.target, tuple):
                self.target = "predicted"
            self.page = page
        with self._worker.lock:
            self._view.clear()
        self._show_traits()
        self._request()

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Method -> (B, H, W) maps of the visible page as last shown complete: in [0, 1], or [-1, 1] for
        signed methods in the 'signed' view (read-only arrays, shared with the grid: copy to change one)."""
        return dict(self._masks)

    @property
    def results(self) -> dict[str, Any]:
        """Method -> the :class:`~salwidget.Attribution` of the visible page, as last shown complete."""
        return dict(self._results)

    def to_png(self) -> bytes:
        """PNG bytes of the last complete grid."""
        return bytes(self._png)

    def to_npz(self) -> bytes:
        """The maps of the last complete grid as .npz bytes (``raw_<method>``, ``mask_<method>``, ...)."""
        return maps_npz(self._results, self._masks, self._display[self._page_slice()])[0]

    # ------------------------------------------------------------ evaluation
    def evaluate(self, sanity_check: bool = False) -> None:
        """Evaluate the maps of the visible page in the worker, and show the Evaluate view.

        Computes the deletion and insertion curves
        (:func:`salwidget.deletion_insertion` with ``curve_steps`` steps,
        deleted pixels set to 0.0, insertion from a blur, the explained class's
        probability) of every shown method's map (:attr:`results`) and of a
        random pixel order seeded with the panel's ``seed`` (the chance level).
        With ``sanity_check=True`` also runs the cascading model-randomisation
        check (:func:`salwidget.sanity_check`) of each shown method at
        ``sanity_depths`` evenly spaced layers with weights (XRAI is left
        out: see the view). Returns at once; :meth:`wait` blocks until done.
        Results are cached by page, each method's settings, target, layer,
        weights and the steps or depths: asking again computes nothing. The
        Stop button (:meth:`stop`) and any change of what the maps are drop a
        running evaluation.

        Results: :attr:`curves`, :attr:`sanity`, :meth:`evaluation_png`.
        Showing the view (``w.pane = 'evaluate'`` or its toggle) asks for the
        curves by itself.
        """
        self.error = ""
        if self.pane != "evaluate":
            self.pane = "evaluate"
        self._evaluate.request(sanity=sanity_check)

    @property
    def curves(self) -> dict[str, Any]:
        """Method -> :class:`~salwidget.evaluation.Curves` of the visible page's maps under the current settings
        (finished ones only), plus ``'random'``: a seeded random pixel order, the chance level."""
        return self._evaluate.curves()

    @property
    def sanity(self) -> dict[str, Any]:
        """Method -> :class:`~salwidget.evaluation.SanityCheck` (cascading) of the visible page under the current
        settings, for the methods whose check has finished."""
        return self._evaluate.sanity()

    def evaluation_png(self) -> bytes:
        """PNG bytes of the Evaluate view's picture: curves with their AUCs and, once run, the sanity check."""
        return self._evaluate.to_png()

    def save(self, path) -> None:
        """Write the last complete grid to ``path`` as PNG."""
        with open(path, "wb") as handle:
            handle.write(self.to_png())

    def close(self) -> None:
        self._closed = True
        self._worker.shutdown()
        self._snapshot.close()
        super().close()

    def __repr__(self) -> str:
        return (f"SaliencyWidget(images={len(self._images)}, methods={tuple(self.methods)}, "
                f"target={self.target!r})")

    def _ipython_display_(self) -> None:
        # The panel, then its snapshot: a PNG output that static viewers show (see panel/snapshot.py).
        from IPython.display import display

        display(super()._repr_mimebundle_(), raw=True)
        self._snapshot.display()


def _now() -> float:
    import time

    return time.perf_counter()
