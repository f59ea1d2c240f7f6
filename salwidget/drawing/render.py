"""Drawing the grid: cells composed with Pillow, colour maps from matplotlib, PNG out.

No figure, no pyplot: nothing global, safe from a worker thread, nothing
shown by accident, and fast enough for previews (each map is resampled once,
straight to its cell). The layout is in pixels: ``cell_px`` square cells, a
title band above each row, and a colour bar under every column that has one.
Maps are resampled smoothly: bilinear when enlarged, area-filtered when
reduced, before the colour map is applied (no colours that are not on it).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GAP_PX = 8
FONT_PX = 11
LINE_PX = 14
BAR_PX = 10
FADED = 0.35  # opacity of maps from earlier settings, shown while the current ones compute


@dataclass
class ColorBar:
    """A horizontal colour bar under a column: what the colours mean."""

    cmap: str
    vmin: float
    vmax: float
    caption: str
    ticks: list  # (value, label)


@dataclass
class Column:
    """One column of the grid.

    ``data`` holds (B, H, W, 3) RGB images in [0, 1] (``cmap`` None) or
    (B, H, W) maps in [vmin, vmax]; None draws a placeholder saying
    ``placeholder``. ``faded`` dims maps from earlier settings while the
    current ones compute.
    """

    title: str
    data: np.ndarray | None
    cmap: str | None = None
    vmin: float = 0.0
    vmax: float = 1.0
    faded: bool = False
    colorbar: ColorBar | None = None
    placeholder: str = "pending"


@lru_cache(maxsize=64)
def _lut(cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


@lru_cache(maxsize=64)
def _palette(cmap: str) -> bytes:
    return _lut(cmap).tobytes()


def _levels(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Maps in [vmin, vmax] as the colour map's 256 levels (uint8): what :func:`colorize` indexes with."""
    scaled = np.clip((np.asarray(values, np.float32) - vmin) / (vmax - vmin), 0, 1)
    return (scaled * 255).round().astype(np.uint8)


@lru_cache(maxsize=4)
def load_font(size: int):
    from matplotlib import get_data_path
    from PIL import ImageFont

    return ImageFont.truetype(f"{get_data_path()}/fonts/ttf/DejaVuSans.ttf", size)


def colorize(values: np.ndarray, cmap: str, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Maps (..., H, W) in [vmin, vmax] -> uint8 RGB (..., H, W, 3) through a matplotlib colour map."""
    return _lut(cmap)[_levels(values, vmin, vmax)]


def overlay(images: np.ndarray, masks: np.ndarray, cmap: str, alpha: float, vmin: float = 0.0) -> np.ndarray:
    """Blend colour-mapped masks (B, H, W) in [vmin, 1] onto RGB images (B, H, W, 3).

    Signed masks (``vmin < 0``) are blended in proportion to their strength.
    """
    coloured = colorize(masks, cmap, vmin, 1.0).astype(np.float32) / 255
    if images.shape[1:3] != masks.shape[1:3]:
        images = _resize_nearest(images, masks.shape[1:3])
    # Signed maps: zero is the colour map's white, so blend by strength (its square root: weak evidence
    # stays visible) and let the picture show where there is none.
    weight = alpha * np.sqrt(np.abs(masks))[..., None] if vmin < 0 else alpha
    return np.clip((1 - weight) * images + weight * coloured, 0, 1).astype(np.float32)


def _resize_nearest(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rows = np.linspace(0, images.shape[1] - 1, size[0]).round().astype(int)
    cols = np.linspace(0, images.shape[2] - 1, size[1]).round().astype(int)
    return images[:, rows][:, :, cols]


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def fit_size(shape: tuple[int, int], box: int) -> tuple[int, int]:
    """(width, height) of an (h, w) picture scaled to fit a ``box`` square."""
    h, w = shape
    scale = box / max(h, w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def picture(data: np.ndarray, cmap: str | None, vmin: float, vmax: float, size: tuple[int, int], resampled=None):
    """One cell as a Pillow image of ``size`` (width, height): resampled smoothly, then colour-mapped.
    ``resampled``: the resampling already done (:func:`resample`), e.g. by an earlier draw."""
    from PIL import Image

    image = resample(data, cmap is None, size) if resampled is None else resampled
    if cmap is None:
        return image
    # The colours of colorize(), looked up by Pillow: a paletted image of the same levels, converted.
    levels = Image.fromarray(_levels(np.asarray(image), vmin, vmax), "L")
    levels.putpalette(_palette(cmap))
    return levels.convert("RGB")


NEAREST_FACTOR = 4  # a picture enlarged this much or more (an 8 x 8 digit) keeps its pixels square


def crisp(shape: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether a picture of ``shape`` (h, w) drawn at ``size`` (width, height) is enlarged with nearest
    neighbours: a tiny picture's pixels are its content, and bilinear blur would hide them."""
    return min(size[0] / shape[1], size[1] / shape[0]) >= NEAREST_FACTOR


def resample(data: np.ndarray, rgb: bool, size: tuple[int, int]):
    """A cell's data resampled to ``size``: RGB in [0, 1] as an 8-bit RGB image (tiny pictures with nearest
    neighbours, see :func:`crisp`), a map as a float image."""
    from PIL import Image

    if rgb:
        image = Image.fromarray((np.clip(data, 0, 1) * 255).round().astype(np.uint8))
        if image.size == size:
            return image
        return image.resize(size, Image.NEAREST if crisp(data.shape[:2], size) else Image.BILINEAR)
    image = Image.fromarray(np.ascontiguousarray(data, dtype=np.float32))  # mode "F"
    if image.size != size:
        image = image.resize(size, Image.BILINEAR)  # Pillow filters over the reduced area when shrinking
    return image


def enlarge(data: np.ndarray, cmap: str | None = None, vmin: float = 0.0, vmax: float = 1.0,
            min_px: int = 448) -> bytes:
    """One cell at full resolution as PNG: every pixel of the map, enlarged bilinearly to ``min_px``."""
    h, w = data.shape[:2]
    factor = max(1, math.ceil(min_px / max(h, w)))
    return encode_png(picture(data, cmap, vmin, vmax, (w * factor, h * factor)))


_Z_RLE = 3  # zlib's Z_RLE strategy


def encode_png(image) -> bytes:
    # zlib level 1: about half the encoding time of the default level, for a few per cent more bytes;
    # its run-length strategy (Z_RLE) another quarter off, and no bigger on a grid of maps and photos.
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=1, compress_type=_Z_RLE)
    return buffer.getvalue()


def png_bytes(picture) -> bytes:
    """A Pillow image or an RGB ``uint8`` array (H, W, 3) as PNG bytes (fast zlib level)."""
    from PIL import Image

    return encode_png(picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture, np.uint8)))


def stack_pictures(pictures: list) -> np.ndarray:
    """RGB ``uint8`` pictures (H, W, 3) one under the other, each centred, on white."""
    width = max(p.shape[1] for p in pictures)
    out = np.full((sum(p.shape[0] for p in pictures), width, 3), 255, np.uint8)
    top = 0
    for p in pictures:
        left = (width - p.shape[1]) // 2
        out[top : top + p.shape[0], left : left + p.shape[1]] = p[..., :3]
        top += p.shape[0]
    return out


@lru_cache(maxsize=512)
def wrap(text: str, width_px: float, size: int = FONT_PX) -> str:
    """``text`` broken into lines no wider than ``width_px`` (long words stay whole; remembered: a
    redraw wraps the same titles)."""
    font = load_font(size)
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width_px:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return "\n".join(lines)


@dataclass
class Placed:
    """One thing drawn on the grid, with its box in pixels from the top left.

    ``kind`` is ``'cell'`` (``column``'s entry ``row``, fitted and centred in the
    box), ``'title'`` (``text`` centred on the box's bottom edge) or
    ``'colorbar'`` (``column``'s bar in the box, ticks and ``text`` under it).
    """

    kind: str
    left: float
    top: float
    width: float
    height: float
    column: int = 0
    row: int = 0
    text: str = ""


@dataclass
class GridLayout:
    """Where everything of a grid goes: one description that every painter follows.

    The panel's Pillow renderer and the matplotlib figure (:mod:`salwidget.figure`)
    both draw from it, so the picture on screen and the figure for a paper cannot
    disagree about what is where.
    """

    columns: list
    width: int
    height: int
    cell_px: int
    items: list


def grid_layout(columns: list[Column], row_titles: list[str] | None = None, cell_px: int = 200) -> GridLayout:
    """Lay out ``columns`` (each with one entry per row) in ``cell_px`` cells.

    ``row_titles`` replace the first column's titles, one per row. A title band sits
    above each row, and a colour bar under every column that has one.
    """
    cell = cell_px
    rows = next(len(c.data) for c in columns if c.data is not None)
    titles = [wrap(c.title, cell) for c in columns]
    row_titles = [wrap(t, cell) for t in row_titles] if row_titles else None
    lines = max(t.count("\n") + 1 for t in titles + (row_titles or []))
    captions = [wrap(c.colorbar.caption, 0.95 * cell, FONT_PX - 1) if c.colorbar else "" for c in columns]
    caption_lines = max([c.count("\n") + 1 for c in captions if c] + [0])
    title_px = LINE_PX * lines + 6
    band = BAR_PX + 20 + LINE_PX * caption_lines + 6 if caption_lines else 0
    width = len(columns) * (cell + GAP_PX) + GAP_PX
    height = rows * (title_px + cell + GAP_PX) + GAP_PX + band
    items = []
    for c, column in enumerate(columns):
        left = GAP_PX + c * (cell + GAP_PX)
        for r in range(rows):
            top = GAP_PX + r * (title_px + cell + GAP_PX) + title_px
            items.append(Placed("cell", left, top, cell, cell, c, r))
            title = row_titles[r] if c == 0 and row_titles else (titles[c] if r == 0 else "")
            if title:
                items.append(Placed("title", left, top - title_px, cell, title_px - 4, c, r, title))
        if column.colorbar is not None:
            length = round(0.9 * cell)
            items.append(Placed("colorbar", left + (cell - length) // 2, height - band + 4, length, BAR_PX, c, 0,
                                captions[c]))
    return GridLayout(columns, width, height, cell, items)


class GridRenderer:
    """Renders rows of images x columns of maps to PNG bytes (Pillow, following :func:`grid_layout`)."""

    def __init__(self, cell_px: int = 200):
        self.cell_px = cell_px
        self.layout: GridLayout | None = None  # the last drawn grid's layout (where a click lands)
        # Resampled cells by (array memory, shape, strides, row, size), each with its array: a redraw of the
        # same maps in another colour map resamples nothing (the array held, its memory cannot be reused).
        self._resampled: dict[tuple, tuple[np.ndarray, object]] = {}

    def render(self, columns: list[Column], row_titles: list[str] | None = None) -> bytes:
        """Draw ``columns`` (each with one entry per row) and return PNG bytes.

        ``row_titles`` replace the first column's titles, one per row.
        """
        return encode_png(self.draw(columns, row_titles))

    def draw(self, columns: list[Column], row_titles: list[str] | None = None):
        """The picture :meth:`render` encodes, as a Pillow RGB image (to compose it into another)."""
        self.layout = grid_layout(columns, row_titles, self.cell_px)
        return self.paint(self.layout)

    def paint(self, layout: GridLayout):
        """A Pillow RGB image of ``layout``."""
        from PIL import Image, ImageDraw

        shown = {_address(c.data) for c in layout.columns if c.data is not None}  # cells of other arrays go
        self._resampled = {k: v for k, v in self._resampled.items() if k[0] in shown}
        canvas = Image.new("RGB", (layout.width, layout.height), "white")
        draw = ImageDraw.Draw(canvas)
        for item in layout.items:
            column = layout.columns[item.column]
            if item.kind == "cell":
                self._cell(canvas, draw, column, item)
            elif item.kind == "title":
                draw.multiline_text((item.left + item.width / 2, item.top + item.height), item.text, fill="black",
                                    font=load_font(FONT_PX), anchor="md", align="center", spacing=LINE_PX - FONT_PX)
            else:
                self._colorbar(canvas, draw, column.colorbar, item)
        return canvas

    def _cell(self, canvas, draw, column: Column, item: Placed) -> None:
        left, top, cell = int(item.left), int(item.top), int(item.width)
        if column.data is None:
            draw.rectangle([left, top, left + cell - 1, top + cell - 1], fill="#ececec")
            draw.text((left + cell / 2, top + cell / 2), column.placeholder, fill="#666666", font=load_font(FONT_PX + 1),
                      anchor="mm")
            return
        data = column.data[item.row]
        size = fit_size(data.shape[:2], cell)
        image = picture(data, column.cmap, column.vmin, column.vmax, size, self._resample(column.data, item.row, size,
                                                                                      column.cmap is None))
        if column.faded:
            from PIL import Image

            image = Image.blend(Image.new("RGB", size, "white"), image, FADED)
        canvas.paste(image, (left + (cell - size[0]) // 2, top + (cell - size[1]) // 2))

    def _resample(self, block: np.ndarray, r: int, size: tuple[int, int], rgb: bool):
        """Row ``r`` of ``block`` resampled to ``size``, remembered while ``block`` is not written (read-only)."""
        if block.flags.writeable:  # may change in place: not remembered
            return resample(block[r], rgb, size)
        key = (_address(block), block.shape, block.strides, block.dtype.str, r, size, rgb)
        hit = self._resampled.get(key)
        if hit is None:
            hit = self._resampled[key] = (block, resample(block[r], rgb, size))
        return hit[1]

    @staticmethod
    def _colorbar(canvas, draw, bar: ColorBar, item: Placed) -> None:
        from PIL import Image

        start, top, length = int(item.left), int(item.top), int(item.width)
        strip = colorize(np.linspace(0, 1, length)[None, :].repeat(BAR_PX, 0), bar.cmap)
        canvas.paste(Image.fromarray(strip), (start, top))
        draw.rectangle([start - 1, top - 1, start + length, top + BAR_PX], outline="#555555")
        small = load_font(FONT_PX - 1)
        for value, label in bar.ticks:
            share = (value - bar.vmin) / (bar.vmax - bar.vmin)
            x = start + share * (length - 1)
            draw.line([x, top + BAR_PX, x, top + BAR_PX + 3], fill="#555555")
            anchor = "la" if share <= 0 else "ra" if share >= 1 else "ma"  # end labels stay under the bar
            draw.text((x, top + BAR_PX + 4), label, fill="black", font=small, anchor=anchor)
        draw.multiline_text((start + length / 2, top + BAR_PX + 4 + LINE_PX), item.text, fill="#333333",
                            font=small, anchor="ma", align="center", spacing=LINE_PX - FONT_PX + 1)
