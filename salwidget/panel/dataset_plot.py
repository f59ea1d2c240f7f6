"""The Dataset view's pictures: a page of thumbnails and a confusion matrix, each with where things are.

Pillow only (fast, thread-safe). Each drawing returns the PNG and the boxes of
what can be clicked, in the picture's pixels: the panel maps a click (ipyevents
reports it in the image's own pixels, however the browser scales it) to a
thumbnail or a cell with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..drawing.render import FONT_PX, colorize, encode_png, load_font

THUMB_CELL_PX = 96  # a thumbnail's square on the page
CAPTION_PX = 30  # two lines under it
GAP = 6
PICKED = (30, 100, 230)
WRONG = (200, 30, 30)


@dataclass
class Clickable:
    """A picture and the boxes (left, top, right, bottom) of what a click on it can mean."""

    png: bytes
    boxes: list  # (box, value)
    width: int
    height: int

    def at(self, x: float, y: float):
        """The value under the point (x, y) of the picture, or None."""
        for (left, top, right, bottom), value in self.boxes:
            if left <= x < right and top <= y < bottom:
                return value
        return None


NO_MATCH = "No image matches the filters."


def thumbnail_page(thumbnails: np.ndarray, rows: list[int], captions: list[tuple[str, str]], wrong: list[bool],
                   picked: set, columns: int, empty: str = NO_MATCH) -> Clickable:
    """A grid of thumbnails (n, h, w, 3) uint8 with two caption lines each; wrong predictions framed red,
    picked rows framed blue and ticked. Clicking a thumbnail gives its dataset row. Without rows, the
    ``empty`` message, on a picture as wide as it."""
    from PIL import Image, ImageDraw

    count = len(rows)
    if not count:
        font = load_font(FONT_PX + 1)
        width = int(font.getlength(empty)) + 2 * GAP + 2  # the whole message: one thumbnail's width cut it
        canvas = Image.new("RGB", (width, 40), "white")
        ImageDraw.Draw(canvas).text((GAP, GAP), empty, fill="#666666", font=font)
        return Clickable(encode_png(canvas), [], width, 40)
    columns = max(1, min(columns, count))
    lines = -(-count // columns)
    width = columns * (THUMB_CELL_PX + GAP) + GAP
    height = lines * (THUMB_CELL_PX + CAPTION_PX + GAP) + GAP
    canvas = Image.new("RGB", (width, max(height, 40)), "white")
    draw = ImageDraw.Draw(canvas)
    small = load_font(FONT_PX - 1)
    boxes = []
    for k, (row, thumb) in enumerate(zip(rows, thumbnails)):
        left = GAP + (k % columns) * (THUMB_CELL_PX + GAP)
        top = GAP + (k // columns) * (THUMB_CELL_PX + CAPTION_PX + GAP)
        picture = Image.fromarray(np.ascontiguousarray(thumb)).resize((THUMB_CELL_PX, THUMB_CELL_PX), Image.NEAREST)
        canvas.paste(picture, (left, top))
        frame = PICKED if row in picked else (WRONG if wrong[k] else None)
        if frame is not None:
            thick = 4 if row in picked else 2
            draw.rectangle([left - 1, top - 1, left + THUMB_CELL_PX, top + THUMB_CELL_PX], outline=frame, width=thick)
        if row in picked:
            draw.rectangle([left + THUMB_CELL_PX - 18, top + 2, left + THUMB_CELL_PX - 3, top + 17], fill=PICKED)
            draw.line([left + THUMB_CELL_PX - 15, top + 10, left + THUMB_CELL_PX - 11, top + 14,
                       left + THUMB_CELL_PX - 5, top + 5], fill="white", width=2)
        first, second = captions[k]
        draw.text((left + THUMB_CELL_PX / 2, top + THUMB_CELL_PX + 2), fit_size(first, small), fill="black", font=small,
                  anchor="ma")
        draw.text((left + THUMB_CELL_PX / 2, top + THUMB_CELL_PX + 15), fit_size(second, small),
                  fill=WRONG if wrong[k] else "#333333", font=small, anchor="ma")
        boxes.append(((left, top, left + THUMB_CELL_PX, top + THUMB_CELL_PX + CAPTION_PX), int(row)))
    return Clickable(encode_png(canvas), boxes, width, height)


def fit_size(text: str, font) -> str:
    """``text`` cut with an ellipsis to fit under a thumbnail."""
    limit = THUMB_CELL_PX + GAP - 2
    if font.getlength(text) <= limit:
        return text
    while text and font.getlength(text + "\u2026") > limit:
        text = text[:-1]
    return text + "\u2026"


def confusion_picture(counts: np.ndarray, classes: list[int], names: list[str], cell: int = 26,
                      selected: tuple[int, int] | None = None) -> Clickable:
    """The confusion matrix of ``classes`` (rows: true label, columns: prediction), counts in the cells,
    the diagonal green, errors red by their share of the row. Clicking a cell gives (label, predicted);
    the ``selected`` cell (the filters' pair) is framed blue."""
    from PIL import Image, ImageDraw

    k = len(classes)
    small = load_font(FONT_PX - 1)
    label_px = int(min(130, max([small.getlength(n) for n in names] + [20]) + 8))
    width = max(label_px + k * cell + GAP + 14, 230)
    height = label_px + k * cell + GAP + 14
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    sub = counts[np.ix_(classes, classes)]
    rows_total = np.maximum(sub.sum(axis=1, keepdims=True), 1)
    share = sub / rows_total
    greens = colorize(share, "Greens", 0.0, 1.0)
    reds = colorize(np.sqrt(share), "Reds", 0.0, 1.0)
    boxes = []
    for i in range(k):
        for j in range(k):
            left, top = label_px + j * cell, label_px + i * cell
            colour = tuple(int(c) for c in (greens[i, j] if i == j else reds[i, j])) if sub[i, j] else (248, 248, 248)
            draw.rectangle([left, top, left + cell - 1, top + cell - 1], fill=colour, outline="#dddddd")
            if sub[i, j]:
                text = str(sub[i, j]) if sub[i, j] < 1000 else f"{sub[i, j] / 1000:.0f}k"
                dark = share[i, j] > 0.55
                draw.text((left + cell / 2, top + cell / 2), text, fill="white" if dark else "black", font=small,
                          anchor="mm")
            boxes.append(((left, top, left + cell, top + cell), (int(classes[i]), int(classes[j]))))
    for (left, top, right, bottom), pair in boxes:  # after every cell: no neighbour paints over the frame
        if pair == selected:
            draw.rectangle([left, top, right - 1, bottom - 1], outline=PICKED, width=3)
    for i, name in enumerate(names):
        short = _cut(name, small, label_px - 6)
        draw.text((label_px - 4, label_px + i * cell + cell / 2), short, fill="black", font=small, anchor="rm")
        # column names written upwards
        text = Image.new("RGBA", (label_px, cell), (255, 255, 255, 0))
        ImageDraw.Draw(text).text((4, cell / 2), short, fill="black", font=small, anchor="lm")
        rotated = text.rotate(90, expand=True)
        canvas.paste(rotated, (label_px + i * cell, 0), rotated)
    draw.text((label_px + k * cell / 2, height - 2), "rows: true class, columns: predicted", fill="#444444",
              font=small, anchor="md")
    return Clickable(encode_png(canvas), boxes, width, height)


def _cut(text: str, font, limit: float) -> str:
    if font.getlength(text) <= limit:
        return text
    while text and font.getlength(text + "\u2026") > limit:
        text = text[:-1]
    return text + "\u2026"


def confused_classes(counts: np.ndarray, limit: int = 20) -> list[int]:
    """The classes to show: all when there are few, else those in the most errors (as label or prediction)."""
    k = len(counts)
    if k <= limit:
        return list(range(k))
    errors = counts - np.diag(np.diag(counts))
    weight = errors.sum(axis=0) + errors.sum(axis=1)
    present = counts.sum(axis=0) + counts.sum(axis=1)
    order = np.lexsort((-present, -weight))
    return sorted(int(c) for c in order[:limit])
