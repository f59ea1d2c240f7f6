"""The panel's traits and what each accepts: a value the panel cannot honour is refused at assignment.

:class:`PanelTraits` is the state of a :class:`~salwidget.SaliencyWidget`
without any control: its traits, the shortcuts into each method's options,
the pages of images, and one validator per trait (the checks themselves are
in :mod:`salwidget.panel.checks`). The widget provides ``_model``,
``_images`` and ``_classes``.
"""

from __future__ import annotations

import numpy as np
import traitlets

from ..backends import get_backend
from ..errors import SaliencyError
from . import checks
from .method_options import broadcast, first_value


def _classic_property(name: str) -> property:
    def getter(self):
        return first_value(self.options, name, self.methods)

    def setter(self, value):
        self.options = broadcast(self.options, name, value, self.methods)

    return property(getter, setter, doc=f"``{name}`` of every method that has it (reads the first selected one's).")


class PanelTraits(traitlets.HasTraits):
    """The panel's state as traits (see the module docstring)."""

    methods = traitlets.Tuple(help="Methods shown side by side, in this order, e.g. ('vanilla', 'smoothgrad').")
    options = traitlets.Dict(help="Each method's options, {method: {option: value}}; assigning a partial dict "
                                  "updates only the entries given.")
    target = traitlets.Any("predicted", help="'predicted', a class index, or one class index per image.")
    layer = traitlets.Any(None, allow_none=True, help="The layer CAMs read: None picks it automatically.")
    cmap = traitlets.Unicode("inferno", help="Matplotlib colour map of magnitude maps.")
    percentile = traitlets.Float(99.0, help="Clip percentile: values above it saturate the colour map.")
    scaling = traitlets.Unicode("image", help="One colour scale per 'image', per 'method' (all its images), "
                                              "or 'shared' by every map.")
    view = traitlets.Unicode("magnitude", help="'magnitude', or 'signed': signed methods in a diverging map.")
    overlay_method = traitlets.Unicode(None, allow_none=True, help="The method drawn over the image, or None.")
    overlay_alpha = traitlets.Float(0.5, help="Opacity of the heatmap over the image.")
    cell_size = traitlets.Int(200, help="Pixels per grid cell.")
    page = traitlets.Int(0, help="The page of images shown (0-based).")
    page_size = traitlets.Int(6, help="Images per page.")
    enlarged = traitlets.Any(None, allow_none=True, help="(image row, column) shown at full resolution, or None.")
    confirm_seconds = traitlets.Float(20.0, help="Runs estimated to take longer wait for the Compute button "
                                                 "(or wait()); float('inf') never asks.")
    pane = traitlets.Unicode("maps", help="The view under the controls: 'maps' (the grid), 'evaluate' (deletion/"
                                          "insertion curves and sanity checks of the maps shown) or 'dataset' "
                                          "(every image's prediction: filter, sort, pick images to explain).")
    curve_steps = traitlets.Int(16, help="Points per deletion/insertion curve after the first: each map's curves "
                                         "cost 2 x curve_steps forward passes per image.")
    sanity_depths = traitlets.Int(5, help="Depths the sanity check randomises down to: evenly spaced layers with "
                                          "weights, from the output layer to the first.")
    selection = traitlets.List(traitlets.Int(), help="Dataset indices of the images the Maps view explains "
                                                     "(set by the Dataset view's Explain selected).")
    regions = traitlets.Dict(help="Dense (segmentation) outputs: {image: (class, mask)}, the region each image's maps "
                                  "explain (a click or a dragged box on the image column sets it); images without "
                                  "one explain their largest predicted region.")
    query = traitlets.Unicode("", help="Dataset view: a pandas query over the scan's table, e.g. "
                                       "'not correct and probability > 0.9'.")
    sort_by = traitlets.Unicode("loss", help="Dataset view: the column the thumbnails are sorted by "
                                             "('loss', 'probability', 'margin', 'entropy', 'index' or a stored one).")
    sort_descending = traitlets.Bool(True, help="Dataset view: largest first.")
    filter_label = traitlets.Int(-1, help="Dataset view: only images of this true class (-1: all).")
    filter_predicted = traitlets.Int(-1, help="Dataset view: only images predicted as this class (-1: all).")
    filter_correct = traitlets.Unicode("all", help="Dataset view: 'all', 'correct' or 'wrong' predictions, or "
                                    "'non-finite' (images whose scores hold NaN or infinity).")
    filter_probability = traitlets.Tuple((0.0, 1.0), help="Dataset view: (low, high) probability of the prediction.")
    error = traitlets.Unicode("", help="The message shown in the panel, or '' when all is well.")
    status = traitlets.Unicode("", help="The status line: what is computing, what was done, what it cost.")
    last_traceback = traitlets.Unicode("", help="The full traceback of the last error (also logged).")

    nsamples = _classic_property("nsamples")
    nintegration = _classic_property("nintegration")
    stdev_spread = _classic_property("stdev_spread")
    magnitude = _classic_property("magnitude")
    baseline = _classic_property("baseline")

    # ------------------------------------------------------------------ pages
    @property
    def num_pages(self) -> int:
        return max(1, -(-len(self.host.images) // self.page_size))

    def _page_slice(self, page: int | None = None) -> slice:
        page = self.page if page is None else page
        return slice(page * self.page_size, min((page + 1) * self.page_size, len(self.host.images)))

    # --------------------------------------------------------------- validation
    @traitlets.validate("methods")
    def _valid_methods(self, proposal):
        names = checks.check_methods(proposal["value"])
        if self.options:
            checks.check_options({}, self.options, names)
        return names

    @traitlets.validate("options")
    def _valid_options(self, proposal):
        return checks.check_options(proposal["value"], self.options, self.methods)

    @traitlets.validate("target")
    def _valid_target(self, proposal):
        value = self.host.classes.by_name(proposal["value"])  # 'cat' when class_names has it
        return checks.check_target(value, self.host.classes.num_classes, len(self.host.images))

    @traitlets.validate("layer")
    def _valid_layer(self, proposal):
        value = proposal["value"]
        if value is None:
            return None
        try:
            name = get_backend(self.host.model).layer_name(value)
        except SaliencyError as exc:
            raise traitlets.TraitError(str(exc)) from None
        if not any(self.options.get(m, {}).get("reshape") is not None for m in self.methods):  # reshape= reads any
            checks.check_grid_layer(name, self.host.explorer(0))
        return name

    @traitlets.validate("cmap")
    def _valid_cmap(self, proposal):
        return checks.check_cmap(proposal["value"])

    @traitlets.validate("percentile")
    def _valid_percentile(self, proposal):
        return checks.check_number("percentile", proposal["value"], 0.0, 100.0, low_open=True)

    @traitlets.validate("overlay_alpha")
    def _valid_overlay_alpha(self, proposal):
        return checks.check_number("overlay_alpha", proposal["value"], 0.0, 1.0)

    @traitlets.validate("scaling")
    def _valid_scaling(self, proposal):
        return checks.check_choice("scaling", proposal["value"], checks.SCALINGS)

    @traitlets.validate("view")
    def _valid_view(self, proposal):
        return checks.check_choice("view", proposal["value"], checks.VIEWS)

    @traitlets.validate("overlay_method")
    def _valid_overlay_method(self, proposal):
        value = proposal["value"]
        if value is not None and value not in self.methods:
            raise traitlets.TraitError(f"overlay_method must be None or one of the methods shown {self.methods}; "
                                       f"got {value!r}.")
        return value

    @traitlets.validate("cell_size")
    def _valid_cell_size(self, proposal):
        return checks.check_int("cell_size", proposal["value"], 32, 2000, " pixels")

    @traitlets.validate("page_size")
    def _valid_page_size(self, proposal):
        return checks.check_int("page_size", proposal["value"], 1)

    @traitlets.validate("page")
    def _valid_page(self, proposal):
        value = checks.check_int("page", proposal["value"], 0)
        if value >= self.num_pages:
            raise traitlets.TraitError(f"page must be below {self.num_pages} (pages of {self.page_size} images); "
                                       f"got {value}.")
        return value

    @traitlets.validate("enlarged")
    def _valid_enlarged(self, proposal):
        value = proposal["value"]
        if value is None:
            return None
        rows = self._page_slice().stop - self._page_slice().start
        columns = ("image", "overlay", *self.methods)
        if (not isinstance(value, (tuple, list)) or len(value) != 2 or not isinstance(value[0], (int, np.integer))
                or not 0 <= value[0] < rows or value[1] not in columns):
            raise traitlets.TraitError(f"enlarged must be None or (row, column) with row < {rows} and column one of "
                                       f"{columns}; got {value!r}.")
        return (int(value[0]), value[1])

    @traitlets.validate("selection")
    def _valid_selection(self, proposal):
        rows = [int(r) for r in proposal["value"]]
        size = len(self.host.source)
        bad = [r for r in rows if not 0 <= r < size]
        if not rows or bad:
            raise traitlets.TraitError(f"selection must be dataset indices from 0 to {size - 1}, at least one; "
                                       f"got {bad[:3] if bad else 'none'}.")
        return rows

    @traitlets.validate("filter_correct")
    def _valid_filter_correct(self, proposal):
        return checks.check_choice("filter_correct", proposal["value"], checks.CORRECTNESS)

    @traitlets.validate("filter_probability")
    def _valid_filter_probability(self, proposal):
        value = proposal["value"]
        if (not isinstance(value, (tuple, list)) or len(value) != 2 or not all(checks.is_number(v) for v in value)
                or not 0 <= value[0] <= value[1] <= 1):
            raise traitlets.TraitError(f"filter_probability must be (low, high) with 0 <= low <= high <= 1; "
                                       f"got {value!r}.")
        return (float(value[0]), float(value[1]))

    @traitlets.validate("pane")
    def _valid_pane(self, proposal):
        return checks.check_choice("pane", proposal["value"], checks.PANES)

    @traitlets.validate("curve_steps")
    def _valid_curve_steps(self, proposal):
        return checks.check_int("curve_steps", proposal["value"], 1, 1024)

    @traitlets.validate("sanity_depths")
    def _valid_sanity_depths(self, proposal):
        return checks.check_int("sanity_depths", proposal["value"], 1, 64)

    @traitlets.validate("confirm_seconds")
    def _valid_confirm_seconds(self, proposal):
        value = proposal["value"]
        if checks.is_number(value) and value == float("inf"):
            return float(value)
        if not checks.is_number(value) or not value >= 0:  # NaN too
            raise traitlets.TraitError(f"confirm_seconds must be a number >= 0 (0: every run waits for Compute; "
                                       f"float('inf'): none does); got {value!r}.")
        return float(value)
