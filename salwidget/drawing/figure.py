"""The grid as a matplotlib figure, for papers: the panel's layout, drawn as vectors and images.

:func:`grid_figure` paints any :class:`~salwidget.drawing.render.GridLayout`
(:func:`salwidget.drawing.plot.plot_grid` draws core results with it). Both follow the same layout description
as the panel's Pillow renderer (:func:`salwidget.drawing.render.grid_layout`), so the
figure and the panel show the same cells, titles and colour bars in the same
places. No pyplot: the figure belongs to nobody's global state; save it with
``figure.savefig("grid.pdf")`` (or ``.svg``, ``.png``), or show it in a
notebook by returning it from a cell.
"""

from __future__ import annotations

import numpy as np

from .render import BAR_PX, FADED, FONT_PX, LINE_PX, GridLayout, Placed, crisp, fit_size


def grid_figure(layout: GridLayout, dpi: float = 100):
    """A :class:`matplotlib.figure.Figure` of ``layout``, one pixel of the layout per ``1/dpi`` inch.

    Parameters
    ----------
    layout : GridLayout
        From :func:`salwidget.drawing.render.grid_layout`.
    dpi : float, default 100
        Layout pixels per inch: sets the figure's size in inches (``savefig(dpi=...)``
        then only sets the resolution of the maps' pixels in the file).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(layout.width / dpi, layout.height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(figure)
    points = 72.0 / dpi  # layout pixels -> font points
    for item in layout.items:
        column = layout.columns[item.column]
        if item.kind == "cell":
            _cell(figure, layout, column, item, points)
        elif item.kind == "title":
            x, y = _point(layout, item.left + item.width / 2, item.top + item.height)
            figure.text(x, y, item.text, ha="center", va="bottom", fontsize=FONT_PX * points,
                        linespacing=LINE_PX / FONT_PX, multialignment="center")
        else:
            _colorbar(figure, layout, column.colorbar, item, points)
    return figure


def _point(layout: GridLayout, x: float, y: float) -> tuple[float, float]:
    """Layout pixels (from the top left) -> figure fractions (from the bottom left)."""
    return x / layout.width, 1 - y / layout.height


def _axes(figure, layout: GridLayout, left: float, top: float, width: float, height: float):
    x, y = _point(layout, left, top + height)
    return figure.add_axes((x, y, width / layout.width, height / layout.height))


def _cell(figure, layout: GridLayout, column, item: Placed, points: float) -> None:
    if column.data is None:
        ax = _axes(figure, layout, item.left, item.top, item.width, item.height)
        ax.set_facecolor("#ececec")
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.text(0.5, 0.5, column.placeholder, ha="center", va="center", color="#666666",
                fontsize=(FONT_PX + 1) * points, transform=ax.transAxes)
        return
    data = column.data[item.row]
    width, height = fit_size(data.shape[:2], int(item.width))
    ax = _axes(figure, layout, item.left + (item.width - width) // 2, item.top + (item.height - height) // 2,
               width, height)
    ax.set_axis_off()
    alpha = FADED if column.faded else None
    if column.cmap is None:
        smooth = "nearest" if crisp(data.shape[:2], (width, height)) else "bilinear"  # as the Pillow painter
        ax.imshow(np.clip(data, 0, 1), interpolation=smooth, alpha=alpha, aspect="auto")
    else:
        ax.imshow(data, cmap=column.cmap, vmin=column.vmin, vmax=column.vmax, interpolation="bilinear",
                  alpha=alpha, aspect="auto")


def _colorbar(figure, layout: GridLayout, bar, item: Placed, points: float) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    ax = _axes(figure, layout, item.left, item.top, item.width, BAR_PX)
    mappable = ScalarMappable(Normalize(bar.vmin, bar.vmax), bar.cmap)
    colorbar = figure.colorbar(mappable, cax=ax, orientation="horizontal")
    colorbar.set_ticks([value for value, _ in bar.ticks], labels=[label for _, label in bar.ticks])
    colorbar.ax.tick_params(labelsize=(FONT_PX - 1) * points, length=3, pad=1)
    colorbar.outline.set_edgecolor("#555555")
    x, y = _point(layout, item.left + item.width / 2, item.top + BAR_PX + 4 + LINE_PX)
    figure.text(x, y, item.text, ha="center", va="top", fontsize=(FONT_PX - 1) * points, color="#333333",
                linespacing=LINE_PX / FONT_PX, multialignment="center")
