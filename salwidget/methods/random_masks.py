"""RISE and Sobol: scores of the image under many soft masks, turned into a map.

``rise`` (Petsiuk et al. 2018): ``nmasks`` binary ``grid`` x ``grid`` grids,
each cell kept with probability ``keep``, upsampled bilinearly to
``(grid + 1) * ceil(H / grid)`` (half-pixel centres, edges clamped: torch's and
TensorFlow's resize; the original's scikit-image resize mirrors at the edges
instead) and cropped at a random shift in ``[0, cell)`` per axis; the map is
``sum_i f(x * M_i) M_i / (N keep)`` (with ``fill``: ``fill + M (x - fill)``).
Grids and shifts are drawn on the host per image, seeded by ``(seed, image
id)`` (each from its own stream, so fewer masks are a prefix of more: a
result resumes with more masks); a chunk's masks are upsampled and cropped on the device (one resize,
one gather), and each chunk adds ``f M`` to a device sum.

``sobol`` (Fel et al. 2021, xplique's ``SobolAttributionMethod`` with its
defaults): quasi-Monte Carlo masks on a ``grid`` x ``grid`` grid from an
unscrambled Sobol sequence of dimension ``2 grid^2`` (scipy's ``qmc.Sobol``)
with ``nmasks`` points (a power of two): matrices ``A``, ``B`` and, for each
cell ``i``, ``C_i`` (``A`` with column ``i`` from ``B``), so
``nmasks * (grid^2 + 2)`` passes per image. Masks are upsampled to the image
with nearest neighbours and applied as ``x * M + fill (1 - M)`` (xplique's
inpainting). Each cell's total-order index is Jansen's estimator
``sum_n (f(A_n) - f(C_i,n))^2 / (2 N var(f(A)))`` (``var`` with ``ddof=1``,
floored at 1e-12). The map is the (B, grid, grid) indices, unsigned (kind
``'layer'``: drawn upsampled bilinearly; xplique resizes bicubically).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SaliencyError
from .base import Option, RunContext, register
from .forward_only import FILL, FILL_SIGMA, ForwardOnlyMethod, PassState

RISE_MASKS = 12  # random stream of RISE's grids and shifts
SOBOL_VARIANCE_FLOOR = 1e-12  # xplique's EPS


def rise_draws(nmasks: int, grid: int, keep: float, cell: tuple[int, int], rng: np.random.Generator):
    """(nmasks, grid, grid) uint8 grids (1 keeps) and (nmasks, 2) shifts in ``[0, cell)``.

    Grids, row shifts and column shifts come from three streams spawned from ``rng``: the draws for ``n``
    masks are the first ``n`` of any larger count (what a resume relies on).
    """
    streams = rng.spawn(3)
    grids = (streams[0].random((nmasks, grid, grid)) < keep).astype(np.uint8)
    shifts = np.stack([streams[1].integers(0, cell[0], nmasks), streams[2].integers(0, cell[1], nmasks)], axis=1)
    return grids, shifts


def rise_masks(ops, grids, shifts: np.ndarray, size: tuple[int, int], grid: int):
    """(n, H, W) device masks: (n, grid, grid) device grids upsampled bilinearly and cropped at ``shifts``."""
    height, width = size
    cell = (math.ceil(height / grid), math.ceil(width / grid))
    big = ((grid + 1) * cell[0], (grid + 1) * cell[1])
    upsampled = ops.resize(grids, big)
    n = len(shifts)
    # One gather: flat index of (mask, row + shift, column + shift) in the upsampled stack.
    base = ops.asarray(np.arange(n) * big[0] * big[1] + shifts[:, 0] * big[1] + shifts[:, 1], "int")
    offsets = ops.asarray(np.arange(height)[:, None] * big[1] + np.arange(width)[None, :], "int")
    return ops.take(ops.reshape(upsampled, (-1,)), ops.reshape(base, (n, 1, 1)) + offsets[None])


def sobol_design(cells: int, nmasks: int) -> np.ndarray:
    """(nmasks * (cells + 2), cells) float32: xplique's replicated design A, B, C_1..C_cells."""
    from scipy.stats import qmc

    ab = qmc.Sobol(cells * 2, scramble=False).random(nmasks).astype(np.float32)
    a, b = ab[:, :cells], ab[:, cells:]
    c = np.repeat(a[None], cells, axis=0)
    c[np.arange(cells), :, np.arange(cells)] = b.T
    return np.concatenate([a, b, c.reshape(-1, cells)])


def jansen_total_order(scores: np.ndarray, nmasks: int, cells: int) -> np.ndarray:
    """(cells,) total-order indices from the scores of the design (A, B, C_1..C_cells, in order)."""
    a = scores[:nmasks]
    c = scores[2 * nmasks:].reshape(cells, nmasks)
    variance = max(float(np.var(a, ddof=1)), SOBOL_VARIANCE_FLOOR)
    return ((a[None] - c) ** 2).sum(axis=1) / (2 * nmasks * variance)


def nearest_cells(size: int, grid: int) -> np.ndarray:
    """The grid cell of each of ``size`` positions under nearest resizing (half-pixel centres)."""
    return np.minimum(((np.arange(size) + 0.5) * grid / size).astype(np.int64), grid - 1)


class Rise(ForwardOnlyMethod):
    name = "rise"
    order = 84
    label = "RISE"
    summary = ("The score under random soft masks, averaged with the masks as weights "
               "(Petsiuk et al. 2018).")
    binary_masks = False
    resumable = "nmasks"
    saved_sums = ("sum",)
    options = (
        Option("nmasks", 2000, "Random masks, one forward pass each: more give a smoother map.", kind="int",
               minimum=1, label="masks", slider_max=8000),
        Option("grid", 7, "Cells per side of the random grid (the map's coarseness).", kind="int", minimum=1,
               label="grid", slider_max=32),
        Option("keep", 0.5, "Probability that a grid cell is kept.", kind="float", minimum=1e-6, maximum=1.0,
               label="keep", slider_max=1.0, step=0.05),
        FILL,
        FILL_SIGMA,
    )

    def passes(self, options: dict, batch: int) -> int:
        return batch * options["nmasks"]

    def plan(self, ctx: RunContext):
        height, width = self.image_size(ctx)
        options = ctx.options
        if options["grid"] > min(height, width):
            raise SaliencyError(f"grid={options['grid']} is finer than the image ({height} x {width}); "
                                f"pass grid <= {min(height, width)}.")
        cell = (math.ceil(height / options["grid"]), math.ceil(width / options["grid"]))
        ids = ctx.draws.image_ids or list(range(ctx.batch))
        draws = [rise_draws(options["nmasks"], options["grid"], options["keep"], cell,
                            np.random.default_rng([ctx.seed, RISE_MASKS, int(i)])) for i in ids]
        images = np.repeat(np.arange(ctx.batch), options["nmasks"])
        plan = {"grids": np.concatenate([g for g, _ in draws]), "shifts": np.concatenate([s for _, s in draws]),
                "sum": ctx.ops.zeros((ctx.batch, height, width))}
        return images, plan

    def masks(self, ctx: RunContext, state: PassState, picks: np.ndarray):
        grids = ctx.ops.asarray(state.plan["grids"][picks])
        return rise_masks(ctx.ops, grids, state.plan["shifts"][picks], self.image_size(ctx), ctx.options["grid"])

    def accumulate(self, ctx: RunContext, state: PassState, picks: np.ndarray, masks, scores) -> None:
        ops = ctx.ops
        weighted = ops.reshape(ops.cast_like(scores, masks), (len(picks), 1, 1)) * masks
        images = state.images[picks]
        if (images == images[0]).all():  # most chunks are one image's masks: one reduction, not n row adds
            state.plan["sum"] = ops.index_add(state.plan["sum"], images[:1], ops.sum(weighted, axis=0, keepdims=True))
        else:
            state.plan["sum"] = ops.index_add(state.plan["sum"], images, weighted)

    def combine(self, ctx: RunContext, state: PassState, scores: np.ndarray) -> np.ndarray:
        ran = np.bincount(state.images[state.ran], minlength=ctx.batch).astype(np.float64)
        total = ctx.ops.numpy(state.plan["sum"]).astype(np.float64)
        return total / np.maximum(ran, 1)[:, None, None] / ctx.options["keep"]


class Sobol(ForwardOnlyMethod):
    name = "sobol"
    order = 85
    label = "Sobol"
    summary = ("Total-order Sobol indices of grid cells under quasi-Monte Carlo masks: the share of the "
               "score's variance each cell takes part in (Fel et al. 2021; xplique).")
    signed = False
    output = "layer"
    binary_masks = False
    resumable = "nmasks"
    options = (
        Option("grid", 8, "Cells per side of the grid (xplique's grid_size); passes grow with its square.",
               kind="int", minimum=1, label="grid", slider_max=16),
        Option("nmasks", 32, "Quasi-Monte Carlo designs (xplique's nb_design), a power of two; passes are "
               "nmasks * (grid^2 + 2) per image.", kind="int", minimum=2, label="designs", slider_max=128),
        FILL,
        FILL_SIGMA,
    )

    def resolve(self, given: dict) -> dict:
        options = super().resolve(given)
        if options["nmasks"] & (options["nmasks"] - 1):
            raise SaliencyError(f"nmasks must be a power of two for sobol (a Sobol sequence's balance); got "
                                f"{options['nmasks']}. Try {1 << (options['nmasks'].bit_length() - 1)}.")
        return options

    def passes(self, options: dict, batch: int) -> int:
        return batch * options["nmasks"] * (options["grid"] ** 2 + 2)

    def blocks(self, options: dict) -> int:
        return options["grid"] ** 2 + 2  # A, B and one C_i per cell, each nmasks long

    def plan(self, ctx: RunContext):
        height, width = self.image_size(ctx)
        grid = ctx.options["grid"]
        if grid > min(height, width):
            raise SaliencyError(f"grid={grid} is finer than the image ({height} x {width}); "
                                f"pass grid <= {min(height, width)}.")
        design = sobol_design(grid * grid, ctx.options["nmasks"])
        index = nearest_cells(height, grid)[:, None] * grid + nearest_cells(width, grid)[None, :]
        plan = {"design": ctx.ops.asarray(design.reshape(-1)), "pixels": ctx.ops.asarray(index, "int"),
                "per_image": len(design), "cells": grid * grid}
        return np.repeat(np.arange(ctx.batch), len(design)), plan

    def masks(self, ctx: RunContext, state: PassState, picks: np.ndarray):
        ops, plan = ctx.ops, state.plan
        rows = ops.asarray((picks % plan["per_image"]) * plan["cells"], "int")
        return ops.take(plan["design"], ops.reshape(rows, (len(picks), 1, 1)) + plan["pixels"][None])

    def combine(self, ctx: RunContext, state: PassState, scores: np.ndarray) -> np.ndarray:
        grid, plan = ctx.options["grid"], state.plan
        maps = np.zeros((ctx.batch, grid, grid))
        per_image = scores.reshape(ctx.batch, plan["per_image"])
        for image in range(ctx.batch):
            if not np.isnan(per_image[image]).any():
                maps[image] = jansen_total_order(per_image[image], ctx.options["nmasks"], plan["cells"]).reshape(
                    grid, grid)
        return maps


RISE = register(Rise())
SOBOL = register(Sobol())
