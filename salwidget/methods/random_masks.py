"""RISE and Sobol: scores of the image under many soft masks, turned into a map.

``rise`` (Petsiuk et al. 2018): ``nmasks`` binary ``grid`` x ``grid`` grids,
each cell kept with probability ``keep``, upsampled bilinearly to
``(grid + 1) * ceil(H / grid)`` (half-pixel centres, edges clamped: torch's and
TensorFlow's resize; the original's scikit-image resize mirrors at the edges
instead) and cropped at a random shift in ``[0, cell)`` per axis; the map is
``sum_i f(x * M_i) M_i / (N keep)`` (with ``fill``: ``fill + M (x - fill)``).
Grids and shifts are drawn on the host per image, seeded by ``(seed, image
id)`` (each from its own stream, so fewer masks are a prefix of more: a
result resumes with more masks). Bilinear upsampling is separable, so a chunk's cropped masks are
``Y_i G_i X_i^T`` on the device (two batched products, ``Y_i``, ``X_i`` the crop's rows of each axis's
interpolation matrix): no upsampled stack and no gather. Each chunk adds ``f M`` to a device sum as one
product ``scores @ masks``.

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


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 weights of a bilinear resize along one axis: half-pixel centres, edges clamped
    (torch's ``interpolate(align_corners=False)`` and TensorFlow's ``resize``)."""
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), low), 1 - (position - low))  # add: low == high at the last edge
    np.add.at(weights, (np.arange(n_out), high), position - low)
    return weights


def rise_upsampling(ops, size: tuple[int, int], grid: int) -> tuple:
    """Device (big, grid) interpolation matrices of rows and columns from ``grid`` cells to
    ``(grid + 1) * cell`` pixels (what :func:`rise_masks` crops rows of)."""
    cell = (math.ceil(size[0] / grid), math.ceil(size[1] / grid))
    return tuple(ops.asarray(interpolation_matrix(grid, (grid + 1) * c)) for c in cell)


def rise_masks(ops, grids, shifts: np.ndarray, size: tuple[int, int], upsampling: tuple):
    """(n, H, W) device masks: (n, grid, grid) device grids upsampled bilinearly and cropped at ``shifts``.

    Upsampling is separable: a mask is ``Y G X^T`` with ``Y``, ``X`` the (big, grid) matrices of
    :func:`rise_upsampling`, and its crop keeps ``H`` rows of ``Y`` and ``W`` of ``X``: two small batched
    products per chunk instead of a (n, big, big) resize and a (n, H, W) gather (15x less time on a CPU).
    """
    height, width = size
    rows = ops.take(upsampling[0], shifts[:, :1] + np.arange(height)[None])  # (n, H, grid)
    columns = ops.take(upsampling[1], shifts[:, 1:] + np.arange(width)[None])  # (n, W, grid)
    return (rows @ grids) @ ops.transpose(columns, (0, 2, 1))


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
                "sum": ctx.ops.zeros((ctx.batch, height, width)),
                "upsampling": rise_upsampling(ctx.ops, (height, width), options["grid"])}
        return images, plan

    def masks(self, ctx: RunContext, state: PassState, picks: np.ndarray):
        grids = ctx.ops.asarray(state.plan["grids"][picks])
        return rise_masks(ctx.ops, grids, state.plan["shifts"][picks], self.image_size(ctx), state.plan["upsampling"])

    def accumulate(self, ctx: RunContext, state: PassState, picks: np.ndarray, masks, scores) -> None:
        ops = ctx.ops
        n, height, width = (int(d) for d in masks.shape)
        images = state.images[picks]
        # Passes are image-major, so a chunk whose ends agree is one image's (no np.unique per chunk).
        present, which = (images[:1], None) if images[0] == images[-1] else np.unique(images, return_inverse=True)
        # sum_i f_i M_i per image as one (images, n) @ (n, H W) product: no (n, H, W) weighted copy.
        weights = ops.cast_like(ops.reshape(scores, (1, n)), masks)
        if len(present) > 1:  # most chunks are one image's masks; else each image's row keeps its own scores
            rows = np.zeros((len(present), n), np.float32)
            rows[which, np.arange(n)] = 1.0
            weights = ops.cast_like(ops.asarray(rows), masks) * weights
        total = weights @ ops.reshape(masks, (n, height * width))
        state.plan["sum"] = ops.index_add(state.plan["sum"], present, ops.reshape(total, (len(present), height, width)))

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
