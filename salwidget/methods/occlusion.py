"""Occlusion: the score lost when a window of the image is hidden (Zeiler & Fergus 2014).

A ``window`` x ``window`` square slides over the image with ``stride``; each
position is one forward pass with the square replaced by ``fill``. As Captum's
``Occlusion`` (``sliding_window_shapes=(C, window, window)``,
``strides=(C, stride, stride)``): ``ceil((H - window) / stride) + 1`` positions
per axis, the last ones cut at the border, and each pixel's value is the mean of
``f(x) - f(occluded)`` over the windows that cover it (B, H, W). Each image gets
one more pass, unoccluded, for ``f(x)`` in the model's own dtype.

A chunk's occluded copies are made on the device from the windows' corners:
where the backend can write into a batch (torch, numpy), the image's row copied
once per pass and each window's square pasted from the fill; otherwise two
comparisons per axis and one ``where`` over the chunk. The map is
separable: ``R^T D C / R^T 1 C`` with ``D`` the (rows, columns) grid of score
differences and ``R``, ``C`` the windows' row and column indicators, computed
as prefix sums over each axis (windows are runs of ones).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import SaliencyError
from .base import Option, RunContext, register
from .forward_only import FILL, FILL_SIGMA, ForwardOnlyMethod, PassState


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
    """Start of each window along an axis of ``size`` (Captum's count; the last may pass the border)."""
    return np.arange(math.ceil((size - window) / stride) + 1, dtype=np.int64) * stride


def indicator(size: int, starts: np.ndarray, window: int) -> np.ndarray:
    """(windows, size) float64: 1 where a window covers a position (cut at the border)."""
    positions = np.arange(size)
    return ((positions >= starts[:, None]) & (positions < starts[:, None] + window)).astype(np.float64)


def spread(values: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """``values @ cover`` for a (n, size) ``cover`` whose rows are runs of ones (windows), as prefix sums:
    each window adds its value at its first position and takes it back past its last.

    ``values`` is (..., n); the result (..., size). O(size) per row instead of a product, and no BLAS call
    (whose threads, on a loaded machine, took 5-40 ms for one 224 x 224 map).
    """
    size = cover.shape[1]
    first = cover.argmax(axis=1)
    past = first + cover.sum(axis=1).astype(np.int64)  # an empty row: past == first, so nothing is added
    edges = np.zeros((size + 1,) + values.shape[:-1])
    moved = np.moveaxis(values, -1, 0)
    np.add.at(edges, first, moved)
    np.subtract.at(edges, past, moved)
    return np.moveaxis(np.cumsum(edges[:size], axis=0), 0, -1)


def occlusion_maps(differences: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(B, H, W) maps from (B, ny, nx) score differences and (ny, H), (nx, W) indicators; NaN differences
    (passes not run yet) count as absent windows."""
    seen = ~np.isnan(differences)

    def both_axes(values: np.ndarray) -> np.ndarray:  # rows^T values columns, as two runs of prefix sums
        return np.swapaxes(spread(np.swapaxes(spread(values, columns), 1, 2), rows), 1, 2)

    total = both_axes(np.where(seen, differences, 0.0))
    if seen.all():  # every window ran: the counts are an outer product
        count = np.broadcast_to(np.outer(rows.sum(axis=0), columns.sum(axis=0)), total.shape)
    else:
        count = both_axes(seen.astype(np.float64))
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


class Occlusion(ForwardOnlyMethod):
    name = "occlusion"
    order = 80
    label = "Occlusion"
    summary = ("The score lost when a sliding window hides part of the image, averaged over the windows "
               "covering each pixel (Zeiler & Fergus 2014; Captum's Occlusion).")
    options = (
        Option("window", 16, "Side of the occluding square in pixels.", kind="int", minimum=1, label="window",
               slider_max=64),
        Option("stride", 8, "Step between windows in pixels; halving it quadruples the forward passes.",
               kind="int", minimum=1, label="stride", slider_max=64),
        FILL,
        FILL_SIGMA,
    )

    def _grid(self, ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.image_size(ctx)
        window, stride = ctx.options["window"], ctx.options["stride"]
        if window > min(height, width):
            raise SaliencyError(
                f"window={window} is larger than the image ({height} x {width}); pass window <= {min(height, width)}."
            )
        return window_starts(height, window, stride), window_starts(width, window, stride)

    def passes(self, options: dict, batch: int) -> int:
        """For a 224 x 224 image (the count depends on the size; passes_left has the exact one)."""
        per_axis = math.ceil((224 - min(options["window"], 224)) / options["stride"]) + 1
        return batch * (1 + per_axis * per_axis)

    def plan(self, ctx: RunContext):
        tops, lefts = self._grid(ctx)
        per_image = 1 + len(tops) * len(lefts)  # pass 0 of each image: unoccluded
        images = np.repeat(np.arange(ctx.batch), per_image)
        return images, {"per_image": per_image, "tops": tops, "lefts": lefts}

    def _corners(self, ctx: RunContext, state: PassState, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top and left of each pass's window; the unoccluded pass puts its window past the image."""
        height, width = self.image_size(ctx)
        plan = state.plan
        position = picks % plan["per_image"] - 1  # -1: the unoccluded pass
        nx = len(plan["lefts"])
        top = np.where(position < 0, height, plan["tops"][np.maximum(position, 0) // nx])
        left = np.where(position < 0, width, plan["lefts"][np.maximum(position, 0) % nx])
        return top, left

    def copies(self, ctx: RunContext, state: PassState, picks: np.ndarray) -> tuple[list, Any]:
        # Where the backend can write squares into a batch, each copy is the image with one square pasted
        # from the fill: a gather and n small writes, not an (n, H, W) mask and a where over every pixel
        # (which took a third of a 224 x 224 run beside a small CNN's passes).
        paste = getattr(ctx.ops, "paste_squares", None)
        if paste is None:
            return super().copies(ctx, state, picks)
        ops, images, x = ctx.ops, state.images[picks], ctx.inputs[0]
        top, left = self._corners(ctx, state, picks)
        fill = self.fill_tensor(ctx)
        rows = images if int(fill.shape[0]) > 1 else np.zeros(len(images), np.int64)
        one = int(images[0])
        # A fresh batch per chunk (the model never sees a tensor written later). One image's copies are its
        # row broadcast into a block no live tensor holds: plain copies (a third of an indexed gather's time
        # on a CPU) and no page faults of a new allocation.
        batch = self.fresh_batch(ctx, (len(images),) + tuple(x.shape[1:])) if (images == one).all() else None
        if batch is None:
            batch = ops.take(x, images)
        else:
            batch[...] = x[one:one + 1]
        copies = paste(batch, fill, rows, top, left, ctx.options["window"], ctx.channels_last)
        return [copies] + [ops.take(other, images) for other in ctx.inputs[1:]], None

    def masks(self, ctx: RunContext, state: PassState, picks: np.ndarray):
        ops = ctx.ops
        height, width = self.image_size(ctx)
        window = ctx.options["window"]
        top, left = self._corners(ctx, state, picks)
        rows, columns = ops.asarray(np.arange(height), "int"), ops.asarray(np.arange(width), "int")
        top, left = ops.asarray(top, "int")[:, None], ops.asarray(left, "int")[:, None]
        in_rows = (rows[None, :] >= top) & (rows[None, :] < top + window)
        in_columns = (columns[None, :] >= left) & (columns[None, :] < left + window)
        return ~(in_rows[:, :, None] & in_columns[:, None, :])

    def combine(self, ctx: RunContext, state: PassState, scores: np.ndarray) -> np.ndarray:
        height, width = self.image_size(ctx)
        plan, window = state.plan, ctx.options["window"]
        ny, nx = len(plan["tops"]), len(plan["lefts"])
        per_image = scores.reshape(ctx.batch, plan["per_image"])
        differences = (per_image[:, :1] - per_image[:, 1:]).reshape(ctx.batch, ny, nx)
        return occlusion_maps(differences, indicator(height, plan["tops"], window),
                              indicator(width, plan["lefts"], window))


OCCLUSION = register(Occlusion())
