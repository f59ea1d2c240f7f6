"""Dense outputs in the panel: which region each image's maps explain, how it looks, where a click lands.

For a model whose output is a map of class scores, (B, K, H, W) (Keras: (B, H,
W, K)), the maps explain a region: ``sw.targets.Region(k, mask)``, class
``k``'s score summed over a pixel mask. By default each image's largest
predicted region (its most frequent predicted class, every pixel of it); a
click on the image column picks the predicted region under the pointer, a
dragged box the part of it inside the box (:func:`salwidget.outputs.region_at`).
The image column shows the predicted classes over the picture, the explained
region in full colour.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..outputs import predicted_masks, region_at

PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)],
                   np.float32) / 255  # matplotlib's tab10


def default_region(predicted: np.ndarray) -> tuple[int, np.ndarray]:
    """(class, mask) of an image's largest predicted region: its most frequent predicted class."""
    counts = np.bincount(predicted.ravel())
    k = int(counts.argmax())
    return k, predicted == k


def regions_for(scores: np.ndarray, channels_last: bool, chosen: dict) -> list[tuple[int, np.ndarray]]:
    """Each image's (class, mask): the one chosen for it (``chosen[image]``), else its largest region."""
    masks = predicted_masks(scores, channels_last)
    return [chosen.get(i) or default_region(masks[i]) for i in range(len(masks))]


def shaded(display: np.ndarray, scores: np.ndarray, channels_last: bool, regions: list) -> np.ndarray:
    """The pictures with each pixel's predicted class tinted over them, the explained region in full colour."""
    masks = predicted_masks(scores, channels_last)
    out = np.empty_like(display, dtype=np.float32)
    for i, (picture, predicted) in enumerate(zip(display, masks)):
        k, region = regions[i]
        h, w = picture.shape[:2]
        rows = (np.arange(h) * predicted.shape[0] // h)[:, None]
        cols = (np.arange(w) * predicted.shape[1] // w)[None, :]
        classes, inside = predicted[rows, cols], region[rows, cols]
        colour = PALETTE[classes % len(PALETTE)]
        weight = np.where(inside, 0.55, 0.2)[..., None]
        out[i] = (1 - weight) * picture[..., :3] + weight * colour
    return np.clip(out, 0, 1)


def pixel_under(layout: Any, x: float, y: float, output_size: tuple[int, int]) -> tuple[int, int, int] | None:
    """(image row of the grid, output row, output column) under the point (x, y) of the grid picture, when it
    falls on a picture of the image column; None elsewhere."""
    from ..drawing.render import fit_size

    for item in layout.items:
        if item.kind != "cell" or item.column != 0:
            continue
        column = layout.columns[0]
        if column.data is None:
            return None
        shape = column.data[item.row].shape[:2]
        width, height = fit_size(shape, int(item.width))
        left = item.left + (item.width - width) // 2
        top = item.top + (item.height - height) // 2
        if left <= x < left + width and top <= y < top + height:
            fx, fy = (x - left) / width, (y - top) / height
            return item.row, min(int(fy * output_size[0]), output_size[0] - 1), min(int(fx * output_size[1]),
                                                                                   output_size[1] - 1)
    return None


def region_from_gesture(scores: np.ndarray, channels_last: bool, image: int, start: tuple[int, int],
                        end: tuple[int, int]) -> tuple[int, np.ndarray]:
    """The region a click (start == end, give or take a pixel) or a dragged box picks on one image."""
    (r0, c0), (r1, c1) = start, end
    if abs(r1 - r0) <= 1 and abs(c1 - c0) <= 1:
        return region_at(scores, image, r0, c0, channels_last=channels_last)
    box = (min(r0, r1), min(c0, c1), max(r0, r1) + 1, max(c0, c1) + 1)
    return region_at(scores, image, r0, c0, box=box, channels_last=channels_last)
