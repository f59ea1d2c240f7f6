"""The Evaluate view's picture: deletion/insertion curves, sanity-check similarity and the randomised maps.

No widgets and no pyplot: a :class:`matplotlib.figure.Figure` drawn by the
Agg canvas (nothing global, safe from the panel's worker thread) for the
plots, and the grid's Pillow renderer (:class:`salwidget.render.GridRenderer`)
for the strip of randomised maps under them; one PNG out.

Curves are drawn as the mean over the page's images of each step's score;
the legend gives the mean area under each curve. Progress previews hold NaN
for steps not computed yet: a curve is drawn through the steps every image
already has. Similarities are drawn as the mean over the images with a band
from the lowest to the highest image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..drawing.render import GridRenderer, Column, colorize, png_bytes, stack_pictures

DPI = 100
WIDTH_IN = 8.6  # 860 px: fits a 900 px notebook once scaled to its width, and stays sharp at 1900 px
CURVES_IN = 3.9  # the legends sit under the axes (inside they covered the curves): room for them
SIMILARITY_IN = 3.2
STRIP_CELL_PX = 92
RANDOM = "random"
RANDOM_LABEL = "random order"
PENDING_GREY = 0.92


@dataclass
class Shown:
    """One entry of the picture: a label, its result (None while pending), its state and a note."""

    label: str
    result: Any = None
    state: str = "pending"
    note: str = ""
    warn: bool = False  # fails the sanity check: said in the legend

    @property
    def final(self) -> bool:
        return self.result is not None and getattr(self.result, "complete", True) and self.state == "done"


def colours(names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method (tab10 order), the random order in black."""
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:olive", "tab:cyan", "tab:gray"]
    unique = dict.fromkeys(n for n in names if n != RANDOM)  # a method in both parts keeps one colour
    out = {name: palette[i % len(palette)] for i, name in enumerate(unique)}
    out[RANDOM] = "black"
    return out


def known_mean(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the steps every image has, the mean over images at those steps)."""
    known = np.isfinite(curves).all(axis=0)
    return known, curves[:, known].mean(axis=0) if known.any() else np.empty(0)


def mean_auc(values: np.ndarray) -> float:
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def short_names(names: Sequence[str], limit: int = 18) -> list[str]:
    """Layer names without their shared dotted prefix; long ones lose leading dotted parts, then characters."""
    parts = [n.split(".") for n in names]
    common = 0
    while len(names) > 1 and all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    out = []
    for p in parts:
        kept = p[common:]
        while len(kept) > 1 and len(".".join(kept)) > limit:
            kept = kept[1:]
        name = ".".join(kept)
        if kept != p[common:]:
            name = "\u2026" + name
        out.append(name if len(name) <= limit + 1 else "\u2026" + name[-limit:])
    return out


def draw(curves: dict[str, Shown], sanity: dict[str, Shown], *, cmap: str = "inferno",
         image_label: str = "image 1", images: int = 1) -> bytes:
    """The picture of the Evaluate view as PNG bytes.

    Parameters
    ----------
    curves : {method or 'random': Shown}
        Each shown method's deletion/insertion curves (a :class:`~salwidget.evaluation.Curves`, or a preview).
    sanity : {method: Shown}
        Sanity checks to draw (a :class:`~salwidget.evaluation.SanityCheck`, or a preview); empty: no such part.
    cmap : str
        Colour map of the randomised maps.
    image_label : str
        Which image the strip of randomised maps shows.
    images : int
        Images on the page (said in the titles).
    """
    figure = plots_figure(curves, sanity, images=images)
    canvas = figure.canvas
    canvas.draw()
    plots = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    pictures = [plots]
    if sanity:
        strip = _strip(sanity, cmap, image_label)
        if strip is not None:
            pictures.append(strip)
    return png_bytes(stack_pictures(pictures))


def plots_figure(curves: dict[str, Shown], sanity: dict[str, Shown], *, images: int = 1):
    """The Evaluate view's plots as a matplotlib Figure: deletion and insertion curves and, with ``sanity``,
    the similarity against depth (the strip of randomised maps is drawn by :func:`draw` only)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colour = colours(list(curves) + list(sanity))
    with_sanity = bool(sanity)
    height = CURVES_IN + (SIMILARITY_IN if with_sanity else 0.0)
    # Constrained layout keeps every title, tick and axis label inside the picture, whatever the legends hold.
    figure = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    figure.get_layout_engine().set(h_pad=0.06, hspace=0.04)
    FigureCanvasAgg(figure)
    ratios = [CURVES_IN, SIMILARITY_IN] if with_sanity else [CURVES_IN]
    grid = figure.add_gridspec(len(ratios), 2, height_ratios=ratios)
    deletion, insertion = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])
    _curves(deletion, curves, colour, "deletion", images)
    _curves(insertion, curves, colour, "insertion", images)
    if with_sanity:
        _similarity(figure.add_subplot(grid[1, :]), sanity, colour, images)
    return figure


def _curves(ax, curves: dict[str, Shown], colour: dict[str, str], kind: str, images: int) -> None:
    better = "lower" if kind == "deletion" else "higher"
    ax.set_title(f"{kind.capitalize()}: area under the curve, {better} is better", fontsize=9.5)
    ax.set_xlabel(f"share of pixels {'removed (set to 0)' if kind == 'deletion' else 'revealed on a blur'}",
                  fontsize=8.5)
    ax.set_ylabel("probability of the explained class" + (f"\n(mean of {images} images)" if images > 1 else ""),
                  fontsize=8.5)
    ax.tick_params(labelsize=8)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.25)
    top = 0.0
    for name, shown in curves.items():
        style = dict(color=colour[name], lw=1.6 if name != RANDOM else 1.2, ls="--" if name == RANDOM else "-")
        result = shown.result
        if result is None:
            ax.plot([], [], label=f"{shown.label}: {shown.state}", alpha=0.5, **style)
            continue
        values = getattr(result, kind)
        known, mean = known_mean(values)
        auc = mean_auc(getattr(result, f"auc_{kind}"))
        label = f"{shown.label}: {auc:.3f}" if math.isfinite(auc) else f"{shown.label}: {shown.state}"
        if not shown.final:
            label += f" ({shown.state}{', ' + shown.note if shown.note else ''})"
        ax.plot(result.fractions[known], mean, marker="o" if known.sum() <= 9 else None, ms=3, label=label, **style)
        if mean.size:
            top = max(top, float(np.nanmax(mean)))
    ax.set_ylim(0, max(0.05, top) * 1.08)
    _legend_below(ax, title="AUC (mean)")


def _legend_below(ax, **options) -> None:
    """The axes' legend under its x label, outside the data area: inside, wherever it goes, a curve of some
    model runs under it (constrained layout makes room for it)."""
    entries = len(ax.get_legend_handles_labels()[1])
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=min(2, max(1, entries)),
              framealpha=0.85, title_fontsize=7.5, borderaxespad=0.0, **options)


def _similarity(ax, sanity: dict[str, Shown], colour: dict[str, str], images: int) -> None:
    layers: tuple = ()
    low = 0.0
    for name, shown in sanity.items():
        result = shown.result
        label = shown.label + (" (known to fail)" if shown.warn else "")
        if result is None:
            ax.plot([], [], color=colour[name], label=f"{label}: {shown.state}", alpha=0.5)
            continue
        layers = max(layers, tuple(result.layers), key=len)
        similarity = np.asarray(result.similarity, np.float64)  # (B, L)
        depth = np.arange(similarity.shape[1])
        done = np.isfinite(similarity).any(axis=0)
        if not shown.final:
            label += f" ({shown.state}{', ' + shown.note if shown.note else ''})"
        if not done.any():
            ax.plot([], [], color=colour[name], label=label, alpha=0.5)
            continue
        with np.errstate(all="ignore"):
            mean = np.nanmean(similarity[:, done], axis=0)
            lowest, highest = np.nanmin(similarity[:, done], axis=0), np.nanmax(similarity[:, done], axis=0)
        ax.plot(depth[done], mean, "o-", color=colour[name], lw=1.6, ms=4, label=label)
        if similarity.shape[0] > 1:
            ax.fill_between(depth[done], lowest, highest, color=colour[name], alpha=0.15, lw=0)
        low = min(low, float(np.nanmin(lowest)))
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_ylim(min(-0.1, low - 0.05), 1.05)
    ax.set_title("Sanity check: similarity to the trained model's map as the weights are re-drawn "
                 "(cascading, from the output down)", fontsize=9.5)
    ax.set_ylabel("Spearman rank correlation" + (f"\n(mean of {images} images, band: min-max)" if images > 1 else ""),
                  fontsize=8.5)
    ax.set_xlabel("randomised down to layer", fontsize=8.5)
    if layers:
        ax.set_xticks(range(len(layers)), short_names(layers), fontsize=7.5, rotation=12)
        ax.set_xlim(-0.3, len(layers) - 0.7)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)
    _legend_below(ax)


def strip_titles(layers: Sequence[str], cell_px: int = STRIP_CELL_PX) -> list[str]:
    """The strip's column titles, "to" over each layer's short name, every line narrower than a cell.

    The grid's titles break between words only: a dotted layer name wider than its cell ran into its
    neighbours' titles. A name that does not fit keeps its end (the layer's own name) after an ellipsis."""
    from ..drawing.render import FONT_PX, load_font

    font, room = load_font(FONT_PX), cell_px - 6
    titles = []
    for name in short_names(layers):
        while font.getlength(name) > room and len(name) > 2:
            name = "\u2026" + name.lstrip("\u2026")[1:]
        titles.append(f"to\n{name}")
    return titles


def _strip(sanity: dict[str, Shown], cmap: str, image_label: str) -> np.ndarray | None:
    """The trained and randomised maps of the page's first image, one row per method (RGB uint8)."""
    rows = [(name, shown) for name, shown in sanity.items() if shown.result is not None]
    if not rows:
        return None
    layers = max((tuple(shown.result.layers) for _, shown in rows), key=len)
    size = next((shown.result.maps.shape[2:] for _, shown in rows), (1, 1))
    grey = np.full((*size, 3), PENDING_GREY, np.float32)

    def cell(mask) -> np.ndarray:
        if mask is None or not np.isfinite(mask).all():
            return grey
        return colorize(mask, cmap).astype(np.float32) / 255

    columns = [Column("trained", np.stack([cell(s.result.original_mask[0] if s.result.original_mask is not None
                                                     else None) for _, s in rows]))]
    for index, title in enumerate(strip_titles(layers)):
        data = [cell(s.result.maps[index, 0] if index < len(s.result.maps) else None) for _, s in rows]
        columns.append(Column(title, np.stack(data)))
    titles = [f"{shown.label}\ntrained" for _, shown in rows]
    strip = np.asarray(GridRenderer(STRIP_CELL_PX).draw(columns, titles))
    grey_cells = any(column.data is not None and (column.data == grey).all(axis=(1, 2, 3)).any()
                     for column in columns)
    # Grey means "not computed yet" only while a check is under way; once all are done it is a map that
    # could not be drawn (not finite, or a layer a method has not).
    running = any(not shown.final for _, shown in rows)
    note = (" (grey: not computed yet)" if running else " (grey: no map)") if grey_cells else ""
    return _with_caption(strip, f"Randomised maps of {image_label}{note}")


def _with_caption(picture: np.ndarray, caption: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    from ..drawing.render import FONT_PX, LINE_PX, load_font

    band = LINE_PX + 8
    canvas = Image.new("RGB", (picture.shape[1], picture.shape[0] + band), "white")
    canvas.paste(Image.fromarray(picture), (0, band))
    ImageDraw.Draw(canvas).text((8, band - 4), caption, fill="black", font=load_font(FONT_PX + 1), anchor="ld")
    return np.asarray(canvas)
