"""``SaliencyWidget``: the Jupyter panel, a shell over traits.

Standard ipywidgets 8 and ipyevents (clicks on pictures, reported in the
picture's own pixels) only, no JavaScript of its own: it works in JupyterLab,
Notebook 7, Voila, VS Code. Every control
mirrors a trait; a value the panel cannot honour is refused at assignment
with a ``TraitError`` (from Python) or shown in the panel (from a control),
and nothing changes. The widget builds a :class:`~salwidget.panel.host.PanelHost`
(the images, the worker thread, the status line, the page, the map cache) and
the views that take it: the settings controls (:mod:`~salwidget.panel.settings_view`),
Dataset, Maps and Evaluate (``dataset_pane``, ``maps_pane``, ``evaluate_pane``);
it keeps the public traits and methods and routes trait changes to the views.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import ipywidgets as widgets
import numpy as np

from ..arrays import to_display_image
from . import controls
from .dataset_pane import DatasetPane
from .evaluate_pane import EvaluatePane
from .host import PageMaps, PanelHost
from .maps_pane import MapsPane
from .method_options import default_options
from .settings_view import SettingsView
from .traits import PanelTraits
from ..drawing.grid import STOPPED

DEFAULT_METHODS = ("vanilla", "smoothgrad", "integrated")
COMPUTE_TRAITS = ("methods", "options", "target", "layer", "page")
EVALUATION_TRAITS = ("curve_steps", "sanity_depths")
LOOK_TRAITS = ("cmap", "percentile", "scaling", "view", "overlay_method", "overlay_alpha", "cell_size", "enlarged")


class SaliencyWidget(PanelTraits, widgets.VBox):
    """An interactive grid of saliency maps for a batch of images.

    Parameters
    ----------
    model : torch.nn.Module, Keras model, ONNX Runtime session or numpy callable
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
    framework : {'torch', 'tensorflow', 'numpy'}, optional
        As for :func:`salwidget.attribute`. A numpy callable or an ONNX Runtime session gets the
        forward-only methods (occlusion and RISE by default); a gradient method is refused.

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
        framework: str | None = None,
        **kwargs,
    ):
        self.page_size = page_size
        given_scan = images if type(images).__name__ == "Scan" and hasattr(images, "source") else None
        host = self.host = PanelHost(self, model, channels_last=channels_last, preprocess=preprocess,
                                     explorer_options=dict(seed=seed, batch_size=batch_size, output_index=output_index,
                                                           rng=rng, output=output, multilabel=multilabel,
                                                           framework=framework))
        host.load(images, labels=labels, class_names=class_names, display_images=display_images, scan=given_scan)
        self.set_trait("selection", host.indices.tolist())
        self.settings_view = SettingsView(host, self._show_traits)
        self._maps, self._evaluate = MapsPane(host), EvaluatePane(host)
        self._dataset = DatasetPane(host, host.source, scan=given_scan, store=store)
        host.attach(self.settings_view, self._maps, self._evaluate, self._dataset, self._show_traits)
        self._build_controls()
        super().__init__(children=self._layout_children(), **kwargs)
        self.add_class("salwidget-panel")
        given = dict(nsamples=nsamples, nintegration=nintegration, stdev_spread=stdev_spread, magnitude=magnitude,
                     baseline=baseline)
        self.options = default_options(given)  # one by one: each validator sees the values set before it
        self.methods = self.host.runnable(tuple(methods), DEFAULT_METHODS)
        self.options = options or {}
        self.overlay_method = self.methods[-1] if self.methods else None
        self.target = target
        self._show_traits()
        self.observe(self._on_compute_change, names=list(COMPUTE_TRAITS))
        self.observe(self._maps.on_look_change, names=list(LOOK_TRAITS))
        self.observe(self._on_page_size_change, names="page_size")
        self.observe(self._on_pane_change, names="pane")
        self.observe(self._evaluate.on_settings_change, names=list(EVALUATION_TRAITS))
        self.observe(host.on_error_change, names="error")
        self.observe(host.on_status_change, names="status")
        self.observe(self._on_selection_change, names="selection")
        self.observe(self._maps.on_regions_change, names="regions")
        self.observe(self._dataset.on_filters_change, names=[t for t, _ in self._dataset.pairs()])
        self._show_pane_boxes()
        if host.from_dataset:
            self.pane = "dataset"  # which images? first
        self.host.request()

    # ----------------------------------------------------------------- controls
    def _build_controls(self) -> None:
        maps, settings = self._maps, self.settings_view
        maps.enlarge.observe(settings.mirror(lambda: [("enlarged", maps.enlarge)], controls.chosen), names="value")
        self.host.compute_button.on_click(lambda button: self.host.on_compute_click())
        self.host.stop_button.on_click(lambda button: self.stop())
        self._pane = controls.pane_toggle()
        for trait, control in self._evaluation_pairs():
            control.observe(settings.mirror(self._evaluation_pairs), names="value")
        for trait, control in self._dataset.pairs():
            control.observe(settings.mirror(self._dataset.pairs), names="value")

    def _evaluation_pairs(self) -> list[tuple[str, Any]]:
        return [("pane", self._pane), ("curve_steps", self._evaluate.steps),
                ("sanity_depths", self._evaluate.depths)]

    def _layout_children(self) -> list:
        # The Evaluate view takes the grid's place (a toggle above both): beside the grid it would leave
        # either too little room at 900 px. The rows setting up the maps, and the look below the grid, hide in Dataset.
        host, above, look = self.host, self.settings_view.rows(), self.settings_view.look_row
        self._maps_rows = [*above, look]
        return [*above,
                controls.wrap_row([self._pane, host.compute_button, host.stop_button, host.progress, host.status_line]),
                host.notes, host.error_line, self._maps.box, self._evaluate.box, self._dataset.box, self._maps.pager,
                look, self._maps.extras]

    def _show_traits(self) -> None:
        """Put every trait's value on its control (controls always show the traits)."""
        self.settings_view.show([*self._evaluation_pairs(), *self._dataset.pairs()])
        self._maps.show_pages()
        self._maps.show_enlarge_choices()

    # -------------------------------------------------------------- from traits
    def _on_compute_change(self, change) -> None:
        self.error = ""  # a new request: the last one's error goes (this one shows its own)
        if change["name"] == "methods":
            if self.overlay_method not in self.methods:
                self.overlay_method = self.methods[-1] if self.methods else None
            if self.enlarged is not None and self.enlarged[1] not in ("image", "overlay", *self.methods):
                self.enlarged = None
        if change["name"] == "page":
            with self.host.worker.lock:
                self._maps.view.clear()
            self.enlarged = None
        self._show_traits()
        self.host.request()

    def _on_pane_change(self, change) -> None:
        pane = change["new"]
        self.host.show_status_of(pane)  # not "Evaluated in 163 s" over the grid: a request may say more below
        self._show_pane_boxes()
        self._show_traits()
        if pane == "evaluate":
            if self.host.maps_pending:
                self.host.request()
            self._evaluate.request(auto=True)
            self._evaluate.show()
        elif pane == "dataset":
            self._dataset.request()
        elif self.host.maps_pending:
            self.host.request()

    def _show_pane_boxes(self) -> None:
        pane = self.pane
        for box in (self._maps.box, self._maps.extras):
            box.layout.display = "" if pane == "maps" else "none"
        self._maps.pager.layout.display = "" if pane == "maps" and self.num_pages > 1 else "none"
        self._evaluate.box.layout.display = "" if pane == "evaluate" else "none"
        self._dataset.box.layout.display = "" if pane == "dataset" else "none"
        for row in self._maps_rows:
            row.layout.display = "none" if pane == "dataset" else ""

    def _on_selection_change(self, change) -> None:
        """Explain other images of the dataset: read them back, on page 1 of the Maps view."""
        try:
            self.host.select_rows(np.asarray(change["new"], np.int64))
        except Exception as exc:
            self.host.show_error(exc)
            return
        self._show_other_images(0)

    def _on_page_size_change(self, change) -> None:
        self.host.forget_pages()  # other rows are shown: the old page's maps do not fit them
        self._show_other_images(0, keep_target=True)

    def _show_other_images(self, page: int, keep_target: bool = False) -> None:
        """Other images are shown from ``page`` on: per-image targets go (unless ``keep_target``), then compute."""
        self.enlarged = None
        with self.hold_trait_notifications():
            if isinstance(self.target, tuple) and not keep_target:
                self.target = "predicted"
            self.page = page
        self._show_traits()
        self.host.request()

    def set_region(self, image: int, k: int, mask: Any) -> None:
        """Explain class ``k``'s score over ``mask`` (the output's H x W) for panel image ``image`` (dense outputs);
        what a click or a dragged box on the image column does."""
        self.regions = {**self.regions, int(image): (int(k), np.asarray(mask, bool))}

    # --------------------------------------------------------------- public API
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the panel shows the current settings; False on timeout.

        A run held for the Compute button (longer than ``confirm_seconds``)
        starts now: waiting for it says you want it.
        """
        if self.host.held is not None or self._evaluate.held is not None:
            self.host.start_held()
        finished = self.host.worker.wait(timeout)
        self._maps.snapshot.publish()  # on the main thread: a notebook saved now holds the grid
        return finished

    def stop(self) -> None:
        """Stop the computation after its current chunk (the Stop button); finished maps stay."""
        self.host.worker.cancel()
        with self.host.worker.lock:
            self.host.drop_held()
            self._maps.view.mark(STOPPED)
            if self._maps.view.results:
                self._maps.render()
            self._evaluate.stopped()
            self.host.stop_button.disabled = True
            self.host.offer_resume()
            self.host.say(self.pane,
                          "Stopped: the maps done so far stay. Press Compute to go on, or change a setting.")

    def refresh(self) -> None:
        """Re-read the model's predictions and forget cached maps, after its weights changed.

        Until then the titles, the target list and 'predicted' targets of
        maps already on screen are those of the weights at the last refresh;
        maps computed later always use the current weights (the cache knows the
        weights, so it never serves maps of other weights), and the panel
        notes when the weights have changed.
        """
        for explorer in self.host.explorers.values():
            explorer.refresh()
        with self.host.worker.lock:
            self._maps.view.clear()
        self._show_traits()
        self.host.request()

    def add_pictures(self, pictures: Sequence[np.ndarray]) -> None:
        """Add pictures (RGB uint8 (H, W, 3)) through ``preprocess`` and show the page of the first one."""
        self.add_images(*self.host.preprocessed(pictures))

    def add_images(self, images: np.ndarray, display_images: np.ndarray | None = None) -> None:
        """Append model-ready ``images`` (and how they look) to the panel; show the page of the first one."""
        host = self.host
        images = np.asarray(images, dtype=host.images.dtype)
        shown = (to_display_image(images, channels_last=host.channels_last) if display_images is None
                 else to_display_image(display_images, channels_last=True))
        page = host.append(images, shown)
        with self.hold_trait_notifications():
            if isinstance(self.target, tuple):
                self.target = "predicted"
            self.page = page
        with host.worker.lock:
            self._maps.view.clear()
        self._show_traits()
        self.host.request()

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
        with self.host.worker.lock:
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
        if sanity_check:
            self.host.check_sanity_check()
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
        # A panel whose construction failed (bad layout, target, labels) has only some of its parts:
        # close what was built (ipywidgets calls close() again when it is collected).
        host, maps = self.__dict__.get("host"), self.__dict__.get("_maps")
        if host is not None:
            host.closed = True
        worker, snapshot = None if host is None else host.worker, None if maps is None else maps.snapshot
        if worker is not None:
            worker.shutdown()
        if snapshot is not None:
            snapshot.close()
        super().close()

    def __repr__(self) -> str:
        return (f"SaliencyWidget(images={len(self.host.images)}, methods={tuple(self.methods)}, "
                f"target={self.target!r})")

    def _ipython_display_(self) -> None:
        # The panel, then its snapshot: a PNG output that static viewers show (see panel/snapshot.py).
        from IPython.display import display

        display(super()._repr_mimebundle_(), raw=True)
        self._maps.snapshot.display()


