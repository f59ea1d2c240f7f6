"""``SaliencyWidget``: the Jupyter panel. A thin view over :class:`~salwidget.explorer.Explorer`.

Standard ipywidgets 8 only (no custom JavaScript), so it works wherever
ipywidgets do: JupyterLab, Notebook 7, Voila, VS Code, Colab.
Gradients are computed in one worker thread; every request bumps a generation
counter, and work for an older generation stops at the next chunk and is
never drawn.
"""

from __future__ import annotations

import base64
import html
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import ipywidgets as widgets
import numpy as np
import traitlets

from .attribution import Attribution
from .errors import AttributionCancelled, SaliencyError
from .explorer import Explorer, Settings
from .methods import CLASSIC, all_methods, get_method
from .render import CMAPS, Column, GridRenderer, overlay
from .visualize import to_display_image, to_grayscale

BASELINES = (("random uniform", "uniform"), ("black (zeros)", 0.0), ("blurred image", "blur"))
COMPUTE_TRAITS = ("methods", "nsamples", "nintegration", "stdev_spread", "magnitude", "baseline", "target")
LOOK_TRAITS = ("cmap", "percentile", "overlay_alpha")
PREVIEW_INTERVAL_S = 0.25


class SaliencyWidget(widgets.VBox):
    """An interactive grid of saliency maps for a batch of images.

    Parameters
    ----------
    model : torch.nn.Module or Keras model
    images : array or tensor
        A model-ready batch, as :func:`salwidget.attribute` takes it.
    class_names : sequence of str, optional
        Names of the model's classes (titles and the class search box).
    labels : sequence of int, optional
        True classes, shown in the titles.
    methods : tuple of str
        Methods shown side by side.
    display_images : array, optional
        The same images as a person sees them (uint8 or [0, 1], RGB or grey,
        channels last) when the model input is normalised. By default the
        widget scales ``images`` per image for display.
    channels_last : bool, optional
        Layout of ``images``.
    seed : int, default 0
        Seed of every noisy or random computation.

    The traits below are mirrored both ways with the controls.
    """

    methods = traitlets.Tuple(help="Methods shown side by side, e.g. ('vanilla', 'smoothgrad').")
    nsamples = traitlets.Int(16, help="SmoothGrad noise samples (the first is the clean image).")
    nintegration = traitlets.Int(16, help="Integrated Gradients path steps.")
    stdev_spread = traitlets.Float(0.15, help="SmoothGrad noise as a fraction of each image's range.")
    magnitude = traitlets.Bool(True, help="SmoothGrad averages squared maps.")
    baseline = traitlets.Union([traitlets.Unicode(), traitlets.Float()], default_value="uniform",
                               help="IG baseline: 'uniform', 'blur' or a number (0.0 = black).")
    target = traitlets.Any("predicted", help="'predicted', a class index, or one class index per image.")
    cmap = traitlets.Unicode("inferno", help="Matplotlib colour map of the heatmaps.")
    percentile = traitlets.Float(99.0, help="Per-image clip percentile of the greyscale maps.")
    overlay_alpha = traitlets.Float(0.5, help="Opacity of the heatmap over the image.")
    error = traitlets.Unicode("", help="The message shown in the panel, or '' when all is well.")
    status = traitlets.Unicode("", help="The status line: method, samples, seconds, device.")

    def __init__(
        self,
        model: Any,
        images: Any,
        *,
        class_names: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        methods: Sequence[str] = CLASSIC,
        display_images: Any = None,
        channels_last: bool | None = None,
        seed: int = 0,
        nsamples: int = 16,
        nintegration: int = 16,
        batch_size: int | str = "auto",
        output_index: int | None = None,
        rng: str = "device",
        **kwargs,
    ):
        self._explorer = Explorer(model, images, channels_last=channels_last, seed=seed, batch_size=batch_size,
                                  output_index=output_index, rng=rng)
        self.class_names = list(class_names) if class_names is not None else None
        self.labels = None if labels is None else np.asarray(labels).reshape(-1)
        shown = display_images if display_images is not None else self._explorer.images
        self._display = to_display_image(
            shown, channels_last=True if display_images is not None else self._explorer.channels_last
        )
        self._renderer = GridRenderer()
        self._render_lock = threading.Lock()
        self._state_lock = threading.Condition()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salwidget")
        self._generation = 0
        self._drawn_generation = -1
        self._results: dict[str, Attribution] = {}
        self._masks: dict[str, np.ndarray] = {}
        self._png = b""
        self._last_preview = 0.0
        self._syncing = False
        self._build_controls()
        super().__init__(children=self._layout_children(), **kwargs)
        self.add_class("salwidget-panel")
        with self.hold_trait_notifications():
            self.methods = tuple(methods)
            self.nsamples = nsamples
            self.nintegration = nintegration
        self.observe(self._on_compute_change, names=list(COMPUTE_TRAITS))
        self.observe(self._on_look_change, names=list(LOOK_TRAITS))
        self.observe(self._on_error_change, names="error")
        self._request()

    # ------------------------------------------------------------------ controls
    def _build_controls(self) -> None:
        slider = dict(continuous_update=False, style={"description_width": "initial"})
        self._method_buttons = {
            m.name: widgets.ToggleButton(description=m.label, layout=widgets.Layout(width="auto"))
            for m in all_methods()
        }
        for name, button in self._method_buttons.items():
            button.add_class(f"salwidget-method-{name}")
            button.observe(self._on_method_button_change, names="value")
        self._nsamples = widgets.IntSlider(min=1, max=200, description="SmoothGrad samples", **slider)
        self._nintegration = widgets.IntSlider(min=2, max=200, description="IG steps", **slider)
        self._stdev = widgets.FloatSlider(min=0.0, max=0.5, step=0.01, description="noise", **slider)
        self._magnitude = widgets.Checkbox(description="squared (magnitude)", indent=False)
        self._baseline = widgets.Dropdown(options=BASELINES, description="IG baseline")
        self._target = widgets.Dropdown(description="target", layout=widgets.Layout(width="420px"))
        self._class_search = widgets.Combobox(
            placeholder="any class by name", options=tuple(self.class_names or ()), ensure_option=True,
            layout=widgets.Layout(width="220px", display="" if self.class_names else "none"),
        )
        self._cmap = widgets.Dropdown(options=CMAPS, description="colours")
        self._percentile = widgets.FloatSlider(min=90.0, max=100.0, step=0.1, description="clip %", **slider)
        self._alpha = widgets.FloatSlider(min=0.0, max=1.0, step=0.05, description="overlay", **slider)
        self._image = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start"))
        self._progress = widgets.IntProgress(min=0, max=100, layout=widgets.Layout(width="200px"))
        self._status = widgets.Label()
        self._error = widgets.HTML(layout=widgets.Layout(display="none"))
        for control, name in [
            (self._nsamples, "nsamples"), (self._nintegration, "nintegration"), (self._stdev, "stdev"),
            (self._magnitude, "magnitude"), (self._baseline, "baseline"), (self._target, "target"),
            (self._class_search, "class-search"), (self._cmap, "cmap"), (self._percentile, "percentile"),
            (self._alpha, "overlay"), (self._image, "grid"), (self._progress, "progress"),
            (self._status, "status"), (self._error, "error"),
        ]:
            control.add_class(f"salwidget-{name}")
        for trait, control in [
            ("nsamples", self._nsamples), ("nintegration", self._nintegration), ("stdev_spread", self._stdev),
            ("magnitude", self._magnitude), ("baseline", self._baseline), ("cmap", self._cmap),
            ("percentile", self._percentile), ("overlay_alpha", self._alpha),
        ]:
            control.value = getattr(self, trait)
            widgets.link((self, trait), (control, "value"))
        widgets.dlink((self, "status"), (self._status, "value"))
        self._target.options = self._target_options()
        self._target.value = "predicted"
        self._target.observe(self._on_target_select_change, names="value")
        self._class_search.observe(self._on_class_search_change, names="value")

    def _layout_children(self) -> list:
        return [
            widgets.HBox(list(self._method_buttons.values())),
            widgets.HBox([self._nsamples, self._nintegration, self._stdev]),
            widgets.HBox([self._magnitude, self._baseline, self._target, self._class_search]),
            widgets.HBox([self._cmap, self._percentile, self._alpha]),
            widgets.HBox([self._progress, self._status]),
            self._error,
            self._image,
        ]

    def class_name(self, index: int) -> str:
        """The display name of class ``index``."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return f"class {index}"

    def _target_options(self) -> list[tuple[str, Any]]:
        """'Predicted', then each image's top-5 classes with probabilities."""
        options: list[tuple[str, Any]] = [("Predicted class (per image)", "predicted")]
        seen = set()
        probabilities = self._explorer.probabilities
        for i, row in enumerate(probabilities):
            for c in np.argsort(row)[::-1][:5]:
                if int(c) not in seen:
                    seen.add(int(c))
                    options.append((f"{self.class_name(int(c))} (#{c}; image {i}: {row[c]:.2f})", int(c)))
        return options

    # ---------------------------------------------------------------- observers
    def _on_method_button_change(self, change) -> None:
        if self._syncing:
            return
        self.methods = tuple(m for m, button in self._method_buttons.items() if button.value)

    @traitlets.observe("methods")
    def _on_methods_trait(self, change) -> None:
        self._syncing = True
        try:
            for m, button in self._method_buttons.items():
                button.value = m in change["new"]
        finally:
            self._syncing = False

    @traitlets.observe("target")
    def _on_target_trait(self, change) -> None:
        value = change["new"]
        if isinstance(value, list):
            value = tuple(value)
        values = [v for _, v in self._target.options]
        if value not in values:
            label = (f"{self.class_name(value)} (#{value})" if isinstance(value, (int, np.integer))
                     else f"per image: {value}")
            self._syncing = True
            try:
                self._target.options = list(self._target.options) + [(label, value)]
            finally:
                self._syncing = False
        self._syncing = True
        try:
            self._target.value = value
        finally:
            self._syncing = False

    def _on_target_select_change(self, change) -> None:
        if not self._syncing and change["new"] is not None:
            self.target = change["new"]

    def _on_class_search_change(self, change) -> None:
        if self.class_names and change["new"] in self.class_names:
            self.target = self.class_names.index(change["new"])

    def _on_compute_change(self, change) -> None:
        self._request()

    def _on_look_change(self, change) -> None:
        if self._results:
            self._draw(self._results, final=True)

    def _on_error_change(self, change) -> None:
        message = change["new"]
        self._error.value = f"<span style='color:#b00020'><b>Error:</b> {html.escape(message)}</span>"
        self._error.layout.display = "" if message else "none"

    # ---------------------------------------------------------------- computing
    def _settings(self) -> Settings:
        target = tuple(self.target) if isinstance(self.target, (list, tuple)) else self.target
        options = (("nsamples", int(self.nsamples)), ("nintegration", int(self.nintegration)),
                   ("stdev_spread", float(self.stdev_spread)), ("magnitude", bool(self.magnitude)),
                   ("baseline", self.baseline))
        return Settings(tuple(self.methods), options, target)

    def _request(self) -> None:
        with self._state_lock:
            self._generation += 1
            generation = self._generation
        self._executor.submit(self._work, generation, self._settings())

    def _stale(self, generation: int) -> bool:
        return generation != self._generation

    def _work(self, generation: int, settings: Settings) -> None:
        started = time.perf_counter()
        results: dict[str, Attribution] = {}
        try:
            if not settings.methods:
                raise SaliencyError("No method selected: pick at least one.")
            for index, method in enumerate(settings.methods):
                if self._stale(generation):
                    return
                cached = self._explorer.cached(method, settings)
                if cached is None:
                    progress = self._progress_callback(generation, index, len(settings.methods), method, results)
                    cached = self._explorer.compute(method, settings, progress, lambda: self._stale(generation))
                results[method] = cached
            if self._stale(generation):
                return
            self._progress.value = 100
            self.error = ""
            self._draw(results, final=True)
            seconds = time.perf_counter() - started
            self.status = (f"done: {', '.join(settings.methods)} in {seconds:.1f} s on {self._explorer.device}"
                           + ("" if seconds > 0.05 else " (cached)"))
        except AttributionCancelled:
            return
        except Exception as exc:  # shown in the panel; the panel keeps working
            if not self._stale(generation):
                self.error = str(exc) if isinstance(exc, SaliencyError) else f"{type(exc).__name__}: {exc}"
                self.status = "error"
        finally:
            with self._state_lock:
                if not self._stale(generation):
                    self._drawn_generation = generation
                self._state_lock.notify_all()

    def _progress_callback(self, generation, index, count, method, results):
        started = time.perf_counter()

        def progress(done: int, total: int, partial: Attribution) -> None:
            if self._stale(generation):
                return
            self._progress.value = int(100 * (index + done / total) / count)
            samples = partial.nsamples
            self.status = (f"{method}: {samples} samples, {done}/{total} passes, "
                           f"{time.perf_counter() - started:.1f} s on {self._explorer.device}")
            now = time.perf_counter()
            if now - self._last_preview >= PREVIEW_INTERVAL_S and done < total:
                self._last_preview = now
                self._draw({**results, method: partial}, final=False)

        return progress

    # ------------------------------------------------------------------ drawing
    def _draw(self, results: dict[str, Attribution], final: bool) -> None:
        with self._render_lock:
            masks = {m: to_grayscale(a, self.percentile) for m, a in results.items()}
            columns = [Column("image", self._display)]
            for method, mask in masks.items():
                a = results[method]
                count = "" if a.nsamples <= 1 else f" (n={a.nsamples})"
                columns.append(Column(get_method(method).label + count, mask, self.cmap))
            if masks:
                first = list(masks)[-1]  # the last method picked, usually the most refined
                columns.append(Column(f"overlay: {get_method(first).label}",
                                      overlay(self._display, masks[first], self.cmap, self.overlay_alpha)))
            target = next(iter(results.values())).target if results else self._explorer.predicted
            png = self._renderer.render(columns, self._row_titles(target))
            if final:
                self._results, self._masks, self._png = dict(results), masks, png
        self._image.value = png

    def _row_titles(self, target: np.ndarray) -> list[str]:
        probabilities, predicted = self._explorer.probabilities, self._explorer.predicted
        titles = []
        for i, p in enumerate(predicted):
            lines = []
            if self.labels is not None:
                lines.append(f"true: {self.class_name(int(self.labels[i]))}")
            lines.append(f"pred: {self.class_name(int(p))} ({probabilities[i, p]:.2f})")
            if int(target[i]) != int(p):
                lines.append(f"explains: {self.class_name(int(target[i]))} ({probabilities[i, target[i]]:.2f})")
            titles.append("\n".join(lines))
        return titles

    # --------------------------------------------------------------- public API
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the panel shows the current state; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state_lock:
            while self._drawn_generation != self._generation:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._state_lock.wait(remaining)
        return True

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Method -> (B, H, W) greyscale masks in [0, 1] currently shown."""
        return dict(self._masks)

    @property
    def results(self) -> dict[str, Attribution]:
        """Method -> the :class:`~salwidget.Attribution` currently shown."""
        return dict(self._results)

    def to_png(self) -> bytes:
        """PNG bytes of the current grid."""
        return bytes(self._png)

    def save(self, path) -> None:
        """Write the current grid to ``path`` as PNG."""
        with open(path, "wb") as handle:
            handle.write(self.to_png())

    def close(self) -> None:
        with self._state_lock:
            self._generation += 1  # stops any running work at its next chunk
        self._executor.shutdown(wait=False)
        super().close()

    def __repr__(self) -> str:
        return (f"SaliencyWidget(images={len(self._explorer.images)}, methods={tuple(self.methods)}, "
                f"nsamples={self.nsamples}, nintegration={self.nintegration}, target={self.target!r})")

    def _repr_mimebundle_(self, **kwargs):
        # A PNG snapshot beside the widget view: GitHub and nbconvert show the
        # last grid. No text/html, which nbval would compare.
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        if self._png:
            bundle["image/png"] = base64.b64encode(self._png).decode("ascii")
        return bundle
