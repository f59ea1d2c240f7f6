"""The grid as the panel shows it: which map each column holds, how it looks, the picture.

Columns are stable while computing: every selected method keeps a column,
showing its map for the current settings once there is one (a preview while
it computes), else its last map dimmed, else a placeholder, and its title
says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..attribution import Attribution
from ..errors import SaliencyError
from ..methods import get_method
from .render import ColorBar, Column, GridRenderer, enlarge, overlay
from .scaling import DIVERGING_CMAP, Scale, shown_maps
from .titles import describe

PENDING, COMPUTING, DONE, STOPPED, FAILED = "pending", "computing", "done", "stopped", "failed"


@dataclass
class ColumnState:
    """One method's column: the map to show, whether it belongs to the current settings, and its state."""

    result: Attribution | None = None
    current: bool = False
    state: str = PENDING
    note: str = ""


@dataclass
class Look:
    """Everything that changes the picture but not the maps."""

    cmap: str = "inferno"
    percentile: float = 99.0
    scaling: str = "image"
    view: str = "magnitude"
    overlay_method: str | None = None
    overlay_alpha: float = 0.5
    cell_px: int = 200


@dataclass
class Picture:
    """One render: the PNG, the maps shown (method -> masks) and their scales."""

    png: bytes
    masks: dict = field(default_factory=dict)
    scales: dict = field(default_factory=dict)
    complete: bool = False


class GridView:
    """Column states in, PNG out (no widgets: the panel puts the PNG on screen)."""

    def __init__(self):
        self.renderer = GridRenderer()
        self.columns: dict[str, ColumnState] = {}
        self.layout = None  # the last drawn grid's layout
        self._shown: tuple | None = None  # (results, percentile, scaling, view, masks, scales) of the last draw

    def select(self, methods: tuple[str, ...]) -> None:
        """Keep a column for each of ``methods``, in that order; maps already there stay, marked pending."""
        self.columns = {m: self._pending(self.columns.get(m)) for m in methods}

    @staticmethod
    def _pending(column: ColumnState | None) -> ColumnState:
        if column is None:
            return ColumnState()
        return ColumnState(column.result, current=False, state=PENDING)

    def clear(self) -> None:
        """Forget every map (other images are shown)."""
        self.columns = {m: ColumnState() for m in self.columns}

    def set(self, method: str, result: Attribution, state: str, note: str = "") -> None:
        self.columns[method] = ColumnState(result, current=True, state=state, note=note)

    def mark(self, state: str) -> None:
        """Every column not done gets ``state`` (stopped, failed)."""
        for column in self.columns.values():
            if column.state != DONE:
                column.state = state

    @property
    def complete(self) -> bool:
        return bool(self.columns) and all(c.state == DONE for c in self.columns.values())

    @property
    def results(self) -> dict[str, Attribution]:
        return {m: c.result for m, c in self.columns.items() if c.result is not None}

    def columns_for(self, look: Look, images: np.ndarray) -> tuple[list[Column], dict, dict]:
        """The grid's layout description: the images, one column per method, the overlay; and the
        (masks, scales) they show. The panel's PNG and :meth:`figure` both draw these columns."""
        masks, scales = self._masks(self.results, look)
        columns = [Column("image", images)]
        for method, state in self.columns.items():
            columns.append(self._column(method, state, masks.get(method), scales.get(method), look))
        if look.overlay_method in self.columns:
            columns.append(self._overlay(look, images, masks.get(look.overlay_method), scales.get(look.overlay_method),
                                         self.columns[look.overlay_method]))
        return columns, masks, scales

    def draw(self, look: Look, images: np.ndarray, row_titles: list[str]) -> Picture:
        """Render the grid: the images, one column per method, the overlay."""
        self.renderer.cell_px = look.cell_px
        columns, masks, scales = self.columns_for(look, images)
        png = self.renderer.render(columns, row_titles)
        self.layout = self.renderer.layout  # where a click on the picture lands
        return Picture(png, masks, scales, self.complete)

    def figure(self, look: Look, images: np.ndarray, row_titles: list[str], dpi: float = 100):
        """The same grid as :meth:`draw`, as a matplotlib Figure (for ``savefig`` to PDF or SVG)."""
        from .figure import grid_figure
        from .render import grid_layout

        columns, _, _ = self.columns_for(look, images)
        return grid_figure(grid_layout(columns, row_titles, look.cell_px), dpi)

    def _masks(self, results: dict, look: Look) -> tuple[dict, dict]:
        """The shown maps of ``results`` under ``look``'s clip, scaling and view: those of the last draw
        when these are the same results (a colour, overlay or size change needs no new percentiles).
        The arrays are read-only, as they are shared between draws."""
        known = self._shown
        if (known is not None and known[0].keys() == results.keys()
                and all(a is b for a, b in zip(known[0].values(), results.values()))
                and known[1:4] == (look.percentile, look.scaling, look.view)):
            return known[4], known[5]
        masks, scales = shown_maps(results, look.percentile, look.scaling, look.view)
        for mask in masks.values():
            mask.flags.writeable = False
        self._shown = (results, look.percentile, look.scaling, look.view, masks, scales)
        return masks, scales

    def _column(self, method: str, state: ColumnState, mask, scale: Scale | None, look: Look) -> Column:
        label = describe(state.result) if state.result is not None and state.current else get_method(method).label
        if state.state != DONE:
            label += f"\n{state.state}" + (f" {state.note}" if state.note else "")
        if mask is None:
            return Column(label, None, placeholder=state.state)
        cmap = DIVERGING_CMAP if scale.signed else look.cmap
        bar = ColorBar(cmap, scale.vmin, 1.0, scale.caption, scale.ticks)
        return Column(label, mask, cmap, scale.vmin, 1.0, faded=not state.current, colorbar=bar)

    @staticmethod
    def _overlay(look: Look, images: np.ndarray, mask, scale: Scale | None, state: ColumnState) -> Column:
        try:
            shown = get_method(look.overlay_method).label
        except SaliencyError:  # a column titled by the caller (plot_grid), not a method name
            shown = describe(state.result) if state.result is not None else str(look.overlay_method)
        title = f"overlay: {shown}"
        if mask is None:
            return Column(title, None)
        cmap = DIVERGING_CMAP if scale.signed else look.cmap
        return Column(title, overlay(images, mask, cmap, look.overlay_alpha, scale.vmin))

    def cell(self, picture: Picture, look: Look, images: np.ndarray, row: int, column: str) -> tuple[bytes, str]:
        """(PNG, caption) of one cell at full resolution: ``column`` is 'image', 'overlay' or a method."""
        if column == "image":
            return enlarge(images[row]), f"image {row + 1}"
        method = look.overlay_method if column == "overlay" else column
        mask, scale = picture.masks.get(method), picture.scales.get(method)
        if mask is None:
            raise KeyError(column)
        cmap = DIVERGING_CMAP if scale.signed else look.cmap
        label = describe(self.columns[method].result)
        if column == "overlay":
            blended = overlay(images[row : row + 1], mask[row : row + 1], cmap, look.overlay_alpha, scale.vmin)[0]
            return enlarge(blended), f"image {row + 1}, overlay of {label}"
        return enlarge(mask[row], cmap, scale.vmin, 1.0), f"image {row + 1}, {label}; {scale.caption}"
