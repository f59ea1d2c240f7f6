"""``SaliencyWidget``: the Jupyter panel, a view over traits.

Standard ipywidgets 8 and ipyevents (clicks on pictures, reported in the
picture's own pixels) only, no JavaScript of its own: it works in JupyterLab,
Notebook 7, Voila, VS Code. Every control
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
from ..outputs import labels_above
from ..methods import all_methods, get_method
from ..visualize import to_display_image
from . import controls
from .classes import ClassNames, check_labels, top_classes
from .dataset_pane import DatasetPane
from .evaluate_pane import EvaluatePane
from .files import decode_picture
from .maps_pane import MapsPane
from .method_options import default_options, shown_options
from .notes import SANITY_NOTE
from .regions import regions_for
from .status import estimate_status
from .traits import PanelTraits
from .view import STOPPED, Look
from .worker import Job, Worker, run_job

DEFAULT_METHODS = ("vanilla", "smoothgrad", "integrated")
THRESHOLD = 0.5  # a multi-label head's labels above this probability are offered as targets
COMPUTE_TRAITS = ("methods", "options", "target", "layer", "page")
EVALUATION_TRAITS = ("curve_steps", "sanity_depths")
LOOK_TRAITS = ("cmap", "percentile", "scaling", "view", "overlay_method", "overlay_alpha", "cell_size", "enlarged")


def _reuses(explorer: Explorer, method: str, settings: Settings, weights: Any) -> bool:
    """Whether computing ``method`` would start from a map cached under ``weights`` (served, or resumed)."""
    try:
        return (explorer.cached(method, settings, weights) is not None
                or explorer.resume_point(method, settings, weights) is not None)
    except SaliencyError:  # settings the method refuses: computing will say so
        return False


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
    batch_size, output_index, output, multilabel, rng
        As for :func:`salwidget.attribute` (``output=`` picks one of several
        outputs by position or name; ``multilabel=True`` shows sigmoid
        probabilities).

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
        store: Any = None,
        output: int | str | None = None,
        multilabel: bool | None = None,
        **kwargs,
    ):
        from ..dataset.sources import ArraySource, as_source, is_dataset

        self.page_size = page_size
        backend = get_backend(model)
        # A forward-only model (an ONNX Runtime session) is offered the methods it can run, nothing else.
        self._forward_only = not getattr(backend, "differentiable", True)
        layout = backend.default_channels_last if channels_last is None else bool(channels_last)
        given_scan = images if type(images).__name__ == "Scan" and hasattr(images, "source") else None
        self._from_dataset = given_scan is not None or is_dataset(images)
        if self._from_dataset:  # the Maps view starts with the first images; the Dataset view picks others
            self._source = given_scan.source if given_scan is not None else as_source(
                images, labels, preprocess=preprocess, channels_last=layout, class_names=class_names)
            if class_names is None:
                class_names = given_scan.class_names if given_scan is not None else self._source.class_names
            first = np.arange(min(page_size, len(self._source)))
            batch = self._read_rows(first)
            images, display_images, labels = batch.inputs, self._pictures(batch, layout), batch.labels
        inputs, layout, _ = prepare_inputs(images, layout, backend.default_channels_last)
        self._model, self._images, self._channels_last = model, inputs[0], layout
        self._explorer_options = dict(seed=seed, batch_size=batch_size, output_index=output_index, rng=rng,
                                      output=output, multilabel=multilabel)
        self._given_scan, self._store = given_scan, store
        shown = display_images if display_images is not None else self._images
        self._display = to_display_image(shown, channels_last=True if display_images is not None else layout)
        self._preprocess = preprocess
        self._explorers: dict[int, Explorer] = {}
        explorer = self._explorer(0)
        self._dense = explorer.scores.ndim == 4  # a segmentation output: regions are explained
        self._classes = ClassNames(class_names, explorer.num_classes if not self._dense else
                                   explorer.scores.shape[-1 if layout else 1])
        self._labels = check_labels(labels, len(self._images), explorer.num_classes)
        if not self._from_dataset:  # the images are the dataset
            self._source = ArraySource(self._images, self._labels)
            self._all_display = self._display
        self._indices = np.arange(len(self._images))  # dataset index of each explained image (-1: added)
        self.set_trait("selection", self._indices.tolist())
        self._maps_pending = False
        self._worker = Worker()
        self._held: Job | None = None
        self._offered: list[int] = []  # classes a search offered in the target list (duplicated names)
        self._search_shown_for: Any = object()  # the target the search box last showed (nothing yet)
        self._group_boxes: dict[str, tuple] = {}
        self._syncing = False
        self._closed = False
        self._build_controls()
        super().__init__(children=self._layout_children(), **kwargs)
        self.add_class("salwidget-panel")
        given = dict(nsamples=nsamples, nintegration=nintegration, stdev_spread=stdev_spread, magnitude=magnitude,
                     baseline=baseline)
        start = default_options(given)
        self.options = start  # one by one: each validator sees the values set before it
        self.methods = self._runnable(tuple(methods))
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
        self.observe(self._on_selection_change, names="selection")
        self.observe(self._on_regions_change, names="regions")
        self.observe(self._on_dataset_change, names=[t for t, _ in self._dataset.pairs()])
        self._show_pane_boxes()
        if self._from_dataset:
            self.pane = "dataset"  # which images? first
        self._request()

    def _explorer(self, page: int | None = None) -> Explorer:
        """The page's explorer (its own cache of maps), made on first visit."""
        page = self.page if page is None else page
        if page not in self._explorers:
            part = self._page_slice(page)
            ids = self._indices[part] if self._from_dataset and getattr(self, "_indices", None) is not None else None
            dataset_rows = ids is not None and bool((ids >= 0).all())
            self._explorers[page] = Explorer(self._model, self._images[part], channels_last=self._channels_last,
                                             image_ids=ids if dataset_rows else None,
                                             stored=self._dataset.stored_maps if dataset_rows else None,
                                             **self._explorer_options)
        return self._explorers[page]

    def _runnable(self, methods: tuple) -> tuple:
        """``methods``, or for a forward-only model given the default ones, occlusion and RISE; a gradient
        method asked of a forward-only model is refused naming those it can use."""
        if not self._forward_only:
            return methods
        if methods == DEFAULT_METHODS:
            return ("occlusion", "rise")
        from ..backends.numpy_backend import forward_only_refusal

        for name in methods:
            if get_method(name).reads != "outputs":
                raise forward_only_refusal(name)
        return methods

    # ----------------------------------------------------------------- controls
    def _build_controls(self) -> None:
        self._method_buttons = {m.name: controls.method_button(m) for m in all_methods()
                                if not self._forward_only or m.reads == "outputs"}
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
        self._maps = MapsPane(self)
        maps = self._maps  # the Maps view's controls, under the names the panel always had
        self._image, self._grid_box, self._pager, self._page_label = maps.image, maps.grid_box, maps.pager, maps.page_label
        self._prev, self._next, self._enlarge, self._cell = maps.previous, maps.next, maps.enlarge, maps.cell
        self._cell_caption, self._cell_box, self._upload = maps.cell_caption, maps.cell_box, maps.upload
        self._downloads, self._npz_button, self._npz_link = maps.downloads, maps.npz_button, maps.npz_link
        self._enlarge.observe(self._on_enlarge_change, names="value")
        self._upload.observe(self._on_upload_change, names="value")
        self._pane = controls.named(widgets.ToggleButtons(
            options=[("Dataset", "dataset"), ("Maps", "maps"), ("Evaluate", "evaluate")], style={"button_width": "90px"},
            tooltips=["Every image's prediction: filter, sort, pick the images to explain",
                      "The grid of saliency maps", "How much to trust the maps: deletion/insertion curves against "
                                                   "a random order, and the model-randomisation sanity check"]),
            "pane", "Pick images in the dataset, see their maps, or the maps' evaluation (computed in the "
                    "background, cached).")
        self._evaluate = EvaluatePane(self)
        for trait, control in self._evaluation_pairs():
            control.observe(self._on_evaluation_control_change, names="value")
        self._dataset = DatasetPane(self, self._source, scan=self._given_scan, store=self._store)
        for trait, control in self._dataset.pairs():
            control.observe(self._on_dataset_control_change, names="value")

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
        self._maps_box, self._maps_extras = self._maps.box, self._maps.extras
        # The rows that set up the maps: hidden in the Dataset view, which has controls of its own.
        self._maps_rows = [
            controls.wrap_row(list(self._method_buttons.values())),
            self._groups,
            controls.wrap_row([self._target_view, self._search, self._search_hint]),
            controls.wrap_row(self._look_views),
        ]
        return [
            *self._maps_rows,
            controls.wrap_row([self._pane, self._compute, self._stop, self._progress, self._status]),
            self._notes,
            self._error,
            self._maps_box,
            self._evaluate.box,
            self._dataset.box,
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
            for trait, control in self._look_pairs() + self._evaluation_pairs() + self._dataset.pairs():
                controls.show_value(control, getattr(self, trait))
            self._show_layer()
            self._show_target()
            self._maps.show_pages()
            self._maps.show_enlarge_choices()
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
        if self._dense:  # regions, set by clicks on the pictures
            controls.set_choices(self._target, [("Regions: click a picture or drag a box", "predicted")])
            controls.show_value(self._target, "predicted")
            self._search.layout.display = "none"
            return
        choices = [(self._classes.target_label("predicted"), "predicted")]
        if explorer.multilabel_head:  # every label above the threshold, per image
            for i, labels in enumerate(labels_above(explorer.scores, THRESHOLD, True)):
                for c in labels:
                    choices.append((f"{self._classes.label(int(c))}; image {first + i + 1}: "
                                    f"{explorer.probabilities[i, c]:.2f}", int(c)))
        else:
            for c, i, p in top_classes(explorer.probabilities):
                choices.append((f"{self._classes.label(c)}; image {first + i + 1}: {p:.2f}", c))
        known = [v for _, v in choices]
        choices += [(self._classes.label(c), c) for c in self._offered if c not in known]
        if not any(controls.same(self.target, v) for _, v in choices):
            choices.append((self._classes.target_label(self.target), self.target))
        controls.set_choices(self._target, choices)
        controls.show_value(self._target, self.target)
        if controls.same(self._search_shown_for, self.target):
            return  # the target did not change: the search box keeps what the user typed there
        self._search_shown_for = self.target
        self._search_hint.value = ""  # a new target answers the last search
        text = self._classes.suggestions()[self.target] if isinstance(self.target, int) and self._classes.names else ""
        if self._search.value != text:
            self._search.value = text

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
                self._maps.view.clear()
            self.enlarged = None
        self._show_traits()
        self._request()

    def _on_look_change(self, change) -> None:
        self._show_traits()
        if change["name"] == "enlarged":
            with self._worker.lock:
                self._maps.show_cell()
            return
        with self._worker.lock:
            if self._maps.view.results:
                self._maps.render()
            if change["name"] == "cmap" and self._evaluate.board.sanity:  # the randomised maps' colours
                self._evaluate.changed()

    def _on_pane_change(self, change) -> None:
        pane = change["new"]
        self._show_pane_boxes()
        self._show_traits()
        if pane == "evaluate":
            if self._maps_pending:
                self._request()
            self._evaluate.request(auto=True)
            self._evaluate.show()
        elif pane == "dataset":
            self._dataset.request()
        elif self._maps_pending:
            self._request()

    def _show_pane_boxes(self) -> None:
        pane = self.pane
        for box in (self._maps_box, self._maps_extras):
            box.layout.display = "" if pane == "maps" else "none"
        self._pager.layout.display = "" if pane == "maps" and self.num_pages > 1 else "none"
        self._evaluate.box.layout.display = "" if pane == "evaluate" else "none"
        self._dataset.box.layout.display = "" if pane == "dataset" else "none"
        for row in self._maps_rows:
            row.layout.display = "none" if pane == "dataset" else ""

    def _on_dataset_control_change(self, change) -> None:
        if self._syncing:
            return
        trait = next(t for t, c in self._dataset.pairs() if c is change["owner"])
        self._set_from_control(change["owner"], lambda: setattr(self, trait, change["new"]),
                               lambda: getattr(self, trait))

    def _on_dataset_change(self, change) -> None:
        """A filter, the query or the sort changed: redraw the Dataset view (main thread, no model call)."""
        self._show_traits()
        if change["name"] != "sort_descending" or change["new"] != change["old"]:
            self._dataset.page = 0
        if self._dataset.opened is not None:
            with self._worker.lock:
                self._dataset.show()

    def _on_selection_change(self, change) -> None:
        """Explain other images of the dataset: read them back, on page 1 of the Maps view."""
        rows = np.asarray(change["new"], np.int64)
        try:
            batch = self._read_rows(rows)
            inputs, _, _ = prepare_inputs(batch.inputs, self._channels_last, self._channels_last)
        except Exception as exc:
            self._show_error(exc)
            return
        self._images = inputs[0]
        self._display = (self._all_display[rows] if not self._from_dataset else
                         to_display_image(self._pictures(batch, self._channels_last), channels_last=True))
        self._labels = batch.labels if self._labels is not None or (batch.labels >= 0).any() else None
        self._indices = rows
        self._explorers.clear()
        self._evaluate.cache.clear()
        with self._worker.lock:
            self._maps.view.clear()
        self.enlarged = None
        with self.hold_trait_notifications():
            if isinstance(self.target, tuple):
                self.target = "predicted"
            self.page = 0
        self._show_traits()
        self._request()

    def _read_rows(self, rows: np.ndarray):
        batch = self._source.read(rows)
        if batch.failed:
            row, message = next(iter(batch.failed.items()))
            raise SaliencyError(f"Image {row} of the dataset cannot be read: {message}. Pick others.")
        return batch

    @staticmethod
    def _pictures(batch, channels_last: bool) -> np.ndarray:
        """How the rows of ``batch`` look: the files' pictures when they share a size, else the inputs."""
        if batch.pictures is not None and len({p.shape for p in batch.pictures}) == 1:
            return np.stack(batch.pictures)
        return to_display_image(batch.inputs, channels_last=channels_last)

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
            self._maps.view.clear()  # other rows are shown: the old page's maps do not fit them
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
        if self._dense:  # the page's regions, one per image
            from ..targets import Region

            chosen = {i - part.start: self.regions[i] for i in range(part.start, part.stop) if i in self.regions}
            regions = regions_for(self._explorer().scores, self._channels_last, chosen)
            target = Region([k for k, _ in regions], np.stack([m for _, m in regions]))
        return Settings(tuple(self.methods), {m: dict(self.options[m]) for m in self.methods}, target, self.layer)

    def _request(self) -> None:
        """Compute the current settings (and their evaluation, when shown), or hold a long run for Compute."""
        if self._closed:
            return
        self._search_hint.value = ""  # another request: a search's note is answered or no longer current
        if self.pane == "dataset":  # the maps are computed when shown: a scan under way goes on
            self._maps_pending = True
            self._evaluate.defer()  # and the Evaluate view restaged when shown or read
            return
        self._maps_pending = False
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
                self._maps.stage(job)
                self._compute.layout.display = ""
                self._stop.disabled = True
                self.status = estimate_status(costs, seconds)  # after the grid: the status tells it is drawn
            return
        self._held = None
        self._compute.layout.display = "none"
        self._submit(job)

    def _estimate(self, job: Job) -> tuple[list, float]:
        """(method, passes) and seconds of ``job``, on the kernel's thread.

        Looked up under the weights version last read (the worker reads it anew before it computes), so a
        settings change reads nothing of the model; when that finds maps to reuse, the version is read now,
        as those maps may predate a training step: cached maps are never counted free or shown done by mistake.
        """
        explorer, settings = job.explorer, job.settings
        weights = explorer.known_weights
        if any(_reuses(explorer, method, settings, weights) for method in settings.methods):
            weights = explorer.read_weights()
        costs = []
        for method in settings.methods:
            try:
                costs.append((method, explorer.passes_needed(method, settings, weights)))
            except SaliencyError:
                costs.append((method, 0))
        return costs, sum(p for _, p in costs) * self._rate(explorer)

    def _rate(self, explorer: Explorer) -> float:
        """Seconds per pass as measured by the page's last computation (another page's before it has one);
        0.0 before any measurement (then nothing is held)."""
        rates = [explorer.seconds_per_pass] + [e.seconds_per_pass for e in self._explorers.values()]
        return next((r for r in rates if r), 0.0)

    def _submit(self, job: Job) -> None:
        self._stop.disabled = False
        self._worker.submit(lambda generation: run_job(self._worker, generation, job, self._maps))

    def _start_held(self) -> None:
        job, self._held = self._held, None
        if job is not None:
            self._compute.layout.display = "none"
            self._submit(job)
        self._evaluate.start_held()  # after the maps it evaluates

    def _show_error(self, exc: Exception, details: str | None = None) -> None:
        import traceback

        self.last_traceback = details or "".join(traceback.format_exception(exc))
        self.error = str(exc) if isinstance(exc, SaliencyError) else f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ drawing
    def _look_now(self) -> Look:
        return Look(self.cmap, self.percentile, self.scaling, self.view, self.overlay_method, self.overlay_alpha,
                    self.cell_size)

    def set_region(self, image: int, k: int, mask: Any) -> None:
        """Explain class ``k``'s score over ``mask`` (the output's H x W) for panel image ``image`` (dense outputs);
        what a click or a dragged box on the image column does."""
        self.regions = {**self.regions, int(image): (int(k), np.asarray(mask, bool))}

    def _on_regions_change(self, change) -> None:
        with self._worker.lock:
            self._maps.view.clear()
        self._request()

    @property
    def _display(self) -> np.ndarray:
        """The pictures the image column shows, (N, H, W, 3) in [0, 1]."""
        return self._shown_pictures

    @_display.setter
    def _display(self, pictures: np.ndarray) -> None:
        pictures.flags.writeable = False  # never written: the grid's renderer keeps their resampled cells
        self._shown_pictures = pictures

    # --------------------------------------------------------------- public API
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the panel shows the current settings; False on timeout.

        A run held for the Compute button (longer than ``confirm_seconds``)
        starts now: waiting for it says you want it.
        """
        if self._held is not None or self._evaluate.held is not None:
            self._start_held()
        finished = self._worker.wait(timeout)
        self._maps.snapshot.publish()  # on the main thread: a notebook saved now holds the grid
        return finished

    def stop(self) -> None:
        """Stop the computation after its current chunk (the Stop button); finished maps stay."""
        self._worker.cancel()
        with self._worker.lock:
            self._held = None
            self._compute.layout.display = "none"
            self._maps.view.mark(STOPPED)
            if self._maps.view.results:
                self._maps.render()
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
            self._maps.view.clear()
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
        if self._labels is not None:
            self._labels = np.concatenate([self._labels, np.full(len(images), -1)])
        self._indices = np.concatenate([self._indices, np.full(len(images), -1)])
        page = first // self.page_size
        self._explorers = {p: e for p, e in self._explorers.items() if p < page}
        with self.hold_trait_notifications():
            if isinstance(self.target, tuple):
                self.target = "predicted"
            self.page = page
        with self._worker.lock:
            self._maps.view.clear()
        self._show_traits()
        self._request()

    @property
    def scan(self):
        """The :class:`~salwidget.dataset.Scan` of the panel's data (the Dataset view's table): opened on first
        use with what its store holds; showing the Dataset view (``pane = 'dataset'``) completes it in the
        worker."""
        return self._dataset.scan()

    @property
    def dataset_rows(self) -> list[int]:
        """Dataset indices the Dataset view shows under the current filters, query and sort, in its order."""
        if self._dataset.opened is None:
            self._dataset.scan()
            self._dataset.show()
        return [int(r) for r in self._dataset.rows]

    def _page_note(self) -> str:
        """' (page 1 of 2: images 1-6 of 12)' when the images fill several pages, else ''."""
        if self.num_pages == 1:
            return ""
        part = self._page_slice()
        return f" (page {self.page + 1} of {self.num_pages}: images {part.start + 1}-{part.stop} of {len(self._images)})"

    @property
    def masks(self) -> "PageMaps":
        """Method -> (B, H, W) maps of the visible page as last shown complete: in [0, 1], or [-1, 1] for
        signed methods in the 'signed' view (read-only arrays shared with the grid: copy one to change it).

        Only the visible page is computed: with more images than ``page_size``, these are the maps of
        page ``page`` (its ``page``, ``pages`` and ``rows`` say which; its repr too). For every image, set
        ``page_size`` to the number of images, step ``page`` through ``range(num_pages)`` (calling
        :meth:`wait` after each), or call :func:`salwidget.attribute` on all the images.
        """
        return PageMaps(self._maps.masks, self._page_slice(), self.page, self.num_pages)

    @property
    def results(self) -> "PageMaps":
        """Method -> the :class:`~salwidget.Attribution` of the visible page, as last shown complete
        (see :attr:`masks` for the page and how to get all)."""
        return PageMaps(self._maps.results, self._page_slice(), self.page, self.num_pages)

    def to_png(self) -> bytes:
        """PNG bytes of the last complete grid."""
        return bytes(self._maps.png)

    def figure(self, dpi: float = 100):
        """A matplotlib :class:`~matplotlib.figure.Figure` of what the current view shows, for ``savefig`` to
        PDF or SVG: the Maps view's grid of the visible page (drawn from the same layout as the panel's
        picture: titles, colour bars, the overlay), or the Evaluate view's plots. ``dpi`` sets its size:
        one cell is ``cell_size / dpi`` inches."""
        if self.pane == "evaluate":
            return self._evaluate.figure()
        with self._worker.lock:
            return self._maps.figure(dpi)

    def to_npz(self) -> bytes:
        """The maps of the last complete grid as .npz bytes (``raw_<method>``, ``mask_<method>``, ...)."""
        return self._maps.npz()[0]

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
        # A panel whose construction failed (bad layout, target, labels) has only some of its parts:
        # close what was built (ipywidgets calls close() again when it is collected).
        maps = self.__dict__.get("_maps")
        worker, snapshot = self.__dict__.get("_worker"), None if maps is None else maps.snapshot
        if worker is not None:
            worker.shutdown()
        if snapshot is not None:
            snapshot.close()
        super().close()

    def __repr__(self) -> str:
        return (f"SaliencyWidget(images={len(self._images)}, methods={tuple(self.methods)}, "
                f"target={self.target!r})")

    def _ipython_display_(self) -> None:
        # The panel, then its snapshot: a PNG output that static viewers show (see panel/snapshot.py).
        from IPython.display import display

        display(super()._repr_mimebundle_(), raw=True)
        self._maps.snapshot.display()


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


def _now() -> float:
    import time

    return time.perf_counter()
