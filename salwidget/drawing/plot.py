"""``plot_grid``: core results drawn as the panel draws its grid, as a matplotlib figure for papers.

It builds the panel's :class:`~salwidget.drawing.grid.GridView` from
:class:`~salwidget.Attribution` objects and paints its layout with
:func:`~salwidget.drawing.figure.grid_figure`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .figure import grid_figure
from .grid import DONE, GridView, Look
from .render import grid_layout


def plot_grid(
    attributions: Any,
    images: Any = None,
    *,
    row_titles: Sequence[str] | None = None,
    cmap: str = "inferno",
    percentile: float = 99.0,
    scaling: str = "image",
    view: str = "magnitude",
    overlay: str | int | None = None,
    overlay_alpha: float = 0.5,
    cell_px: int = 200,
    dpi: float = 100,
):
    """Draw the panel's grid from core results, as a matplotlib figure.

    Parameters
    ----------
    attributions : Attribution, sequence of Attribution, or mapping of title -> Attribution
        One column each (same images, same order). A mapping's keys become the column titles;
        otherwise the panel's titles are used ("SmoothGrad (n=25)").
    images : array (B, H, W, 3) or (B, H, W) in [0, 1], or (B, 3, H, W), optional
        The pictures, shown in the first column and under ``overlay``. None leaves the image
        column out.
    row_titles : sequence of str, optional
        One title per image, above the image column (e.g. "tiger cat 0.87").
    cmap, percentile, scaling, view
        As the panel's look: a matplotlib colour map for magnitude maps (signed ones use a
        diverging map centred at zero); the clip percentile; ``'image'`` (each map alone, as
        :func:`salwidget.to_grayscale`), ``'method'`` (each column across its images) or
        ``'shared'``; ``'magnitude'`` or ``'signed'`` (signed methods in ``[-1, 1]``).
    overlay : str or int, optional
        A column (its title or index) to blend over the pictures in a last column.
    overlay_alpha : float
    cell_px, dpi : int, float
        Each cell is ``cell_px`` layout pixels, ``cell_px / dpi`` inches (2 by default).

    Returns
    -------
    matplotlib.figure.Figure
        ``figure.savefig("grid.pdf")`` writes it.
    """
    from ..attribution import Attribution
    from ..errors import SaliencyError

    if isinstance(attributions, Attribution):
        attributions = [attributions]
    if isinstance(attributions, Mapping):
        titled = dict(attributions)
    else:
        titled = {f"{i}": a for i, a in enumerate(attributions)}
    if not titled or not all(isinstance(a, Attribution) for a in titled.values()):
        raise SaliencyError("plot_grid takes an Attribution, a list of them or a dict of title -> Attribution.")
    batches = {len(a.target) for a in titled.values()}
    if len(batches) > 1:
        raise SaliencyError(f"The attributions explain different numbers of images {sorted(batches)}; "
                            "plot_grid needs one column per method over the same images.")
    pictures = None if images is None else pictures_of(images, batches.pop())
    keys = list(titled)
    overlay_key = None
    if overlay is not None:
        overlay_key = keys[overlay] if isinstance(overlay, int) else overlay
        if overlay_key not in titled:
            raise SaliencyError(f"overlay={overlay!r} names no column; use one of {keys} or an index.")
        if pictures is None:
            raise SaliencyError("overlay needs the images: pass images=.")
    grid = GridView()
    grid.select(tuple(keys))
    for key, result in titled.items():
        grid.set(key, result, DONE)
    look = Look(cmap, percentile, scaling, view, overlay_key, overlay_alpha, cell_px)
    rows = len(next(iter(titled.values())).target)
    blank = pictures if pictures is not None else np.ones((rows, 8, 8, 3), np.float32)
    columns, _, _ = grid.columns_for(look, blank)
    if isinstance(attributions, Mapping):
        for column, key in zip(columns[1:], keys):
            column.title = str(key)
        if overlay_key is not None:
            columns[-1].title = f"overlay: {overlay_key}"
    if pictures is None:
        columns = columns[1:]
        row_titles = None
    elif row_titles is not None and len(row_titles) != rows:
        raise SaliencyError(f"row_titles has {len(row_titles)} titles for {rows} images; give one per image.")
    return grid_figure(grid_layout(columns, list(row_titles) if row_titles else None, cell_px), dpi)


def pictures_of(images: Any, rows: int) -> np.ndarray:
    """Display pictures (B, H, W, 3) in [0, 1] from what a user has at hand."""
    from ..errors import SaliencyError
    from ..inputs import to_numpy

    pictures = np.asarray(to_numpy(images), np.float32)
    if pictures.ndim == 4 and pictures.shape[1] in (1, 3) and pictures.shape[-1] not in (1, 3):
        pictures = pictures.transpose(0, 2, 3, 1)  # channels first
    if pictures.ndim == 4 and pictures.shape[-1] == 1:
        pictures = pictures[..., 0]
    if pictures.ndim == 3:
        pictures = np.repeat(pictures[..., None], 3, axis=-1)
    if pictures.ndim != 4 or pictures.shape[-1] != 3 or len(pictures) != rows:
        raise SaliencyError(f"images must be {rows} pictures (B, H, W, 3) or (B, H, W) in [0, 1]; "
                            f"got shape {np.shape(images)}.")
    low, high = float(pictures.min()), float(pictures.max())
    if low < 0 or high > 1:  # e.g. normalised model inputs: stretch for display
        pictures = (pictures - low) / (high - low) if high > low else np.zeros_like(pictures)
    return pictures
