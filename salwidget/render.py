"""Drawing the grid: one matplotlib Figure on an Agg canvas, reused between renders.

No pyplot: nothing global, safe from a worker thread, nothing shown by accident.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

CMAPS = ("inferno", "magma", "viridis", "plasma", "hot", "gray", "jet", "turbo")


@dataclass
class Column:
    """One column of the grid: a title per row and either images or maps."""

    title: str
    data: np.ndarray  # (B, H, W, 3) RGB in [0, 1], or (B, H, W) maps in [0, 1]
    cmap: str | None = None  # None for RGB columns


def overlay(images: np.ndarray, masks: np.ndarray, cmap: str, alpha: float) -> np.ndarray:
    """Blend colour-mapped masks (B, H, W) onto RGB images (B, H, W, 3)."""
    from matplotlib import colormaps

    coloured = colormaps[cmap](masks)[..., :3]
    if images.shape[1:3] != masks.shape[1:3]:
        images = _resize_nearest(images, masks.shape[1:3])
    return np.clip((1 - alpha) * images + alpha * coloured, 0, 1).astype(np.float32)


def _resize_nearest(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rows = np.linspace(0, images.shape[1] - 1, size[0]).round().astype(int)
    cols = np.linspace(0, images.shape[2] - 1, size[1]).round().astype(int)
    return images[:, rows][:, :, cols]


class GridRenderer:
    """Renders rows of images x columns of maps to PNG bytes.

    The figure and its axes are kept while the grid's shape stays the same;
    a new render only swaps the pixel data and the titles.
    """

    LINE_INCHES = 0.17  # one line of title text

    def __init__(self, cell_inches: float = 2.0, dpi: int = 80):
        self.cell_inches = cell_inches
        self.dpi = dpi
        self._figure = None
        self._layout: tuple | None = None
        self._artists: list[list] = []
        self._titles: list[list] = []

    def _build(self, rows: int, cols: int, title_lines: int) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        title = self.LINE_INCHES * title_lines + 0.08  # room above each row for its titles
        height = rows * (self.cell_inches + title) + 0.05
        figure = Figure(figsize=(self.cell_inches * cols, height), dpi=self.dpi)
        FigureCanvasAgg(figure)
        axes = figure.subplots(rows, cols, squeeze=False)
        figure.subplots_adjust(left=0.01, right=0.99, bottom=0.05 / height, top=1 - title / height,
                               wspace=0.04, hspace=title / self.cell_inches)
        self._figure, self._axes = figure, axes
        for ax in axes.ravel():
            ax.set_axis_off()
        self._artists = [[None] * cols for _ in range(rows)]
        self._titles = [[ax.set_title("", fontsize=8) for ax in row] for row in axes]

    def render(self, columns: list[Column], row_titles: list[str] | None = None) -> bytes:
        """Draw ``columns`` (each with one entry per row) and return PNG bytes.

        ``row_titles`` replace the first column's titles, one per row.
        """
        rows, cols = len(columns[0].data), len(columns)
        title_lines = max([t.count("\n") + 1 for t in (row_titles or [])] + [1])
        layout = (rows, cols, title_lines, tuple((c.data.shape[1:], c.cmap is None) for c in columns))
        if layout != self._layout:
            self._build(rows, cols, title_lines)
            self._layout = layout
        for c, column in enumerate(columns):
            for r in range(rows):
                data = column.data[r]
                artist = self._artists[r][c]
                if artist is None:
                    kwargs = {} if column.cmap is None else {"cmap": column.cmap, "vmin": 0.0, "vmax": 1.0}
                    self._artists[r][c] = self._axes[r, c].imshow(data, interpolation="none", **kwargs)
                else:
                    artist.set_data(data)
                    if column.cmap is not None:
                        artist.set_cmap(column.cmap)
                if c == 0 and row_titles:
                    title = row_titles[r]
                else:  # column titles once, on the top row
                    title = column.title if r == 0 else ""
                self._titles[r][c].set_text(title)
        return self._encode_png()

    def _encode_png(self) -> bytes:
        # The grid is redrawn on every change: RGB without alpha and zlib level 1
        # encode in about half the time of savefig's RGBA at level 6.
        from PIL import Image

        canvas = self._figure.canvas
        canvas.draw()
        rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="png", compress_level=1)
        return buffer.getvalue()
