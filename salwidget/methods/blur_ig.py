"""Blur IG: Integrated Gradients along a path of ever stronger Gaussian blurs.

Xu et al. (2020) integrate from a heavily blurred image (``max_sigma``) down
to the image itself, so the path adds information scale by scale instead of
brightness. This follows PAIR saliency's ``saliency/core/blur_ig.py``:
``nsamples`` steps at ``sigma_i = i * max_sigma / nsamples`` (or
``sqrt(i * max_sigma / nsamples)``), each contributing
``-(sigma_{i+1} - sigma_i) * d blur / d sigma * gradient`` with the sigma
derivative a forward difference of ``grad_step``, and blurs that see zeros
outside the image (scipy's ``gaussian_filter(mode='constant')``).

Blurs run on the model's device as matrix products: a Gaussian blur of an
(H, W) image is ``A_H @ X @ A_W.T`` with banded (n, n) matrices, which a
matrix unit does far faster than a long convolution. The forward difference
``blur(sigma + grad_step) - blur(sigma)`` is formed from the differences of
the matrices (computed in float64 on the host), so it keeps its precision in
float32 where subtracting two blurred float32 images would not (PAIR loses
it that way on float32 images: give it float64 images to compare). The
products cost O(H + W) per pixel whatever the sigma: fine for images up to a
few hundred pixels a side.
"""

from __future__ import annotations

import numpy as np

from ..errors import SaliencyError
from ..backends.blur import gaussian_taps
from .base import Option, register
from .sampling import SampledGradients, Sampling
from .sampling_options import nsamples_option


def blur_sigmas(steps: int, max_sigma: float, sqrt: bool) -> np.ndarray:
    """The ``steps + 1`` sigmas of PAIR's path, from 0 (the image) to ``max_sigma``."""
    fractions = np.arange(steps + 1, dtype=np.float64) * max_sigma / steps
    return np.sqrt(fractions) if sqrt else fractions


def blur_matrix(length: int, sigma: float) -> np.ndarray:
    """(n, n) float64 ``A`` with ``A @ v`` = ``scipy.ndimage.gaussian_filter1d(v, sigma, mode='constant')``
    (taps out to ``int(4 sigma + 0.5)``, zeros outside); the identity for sigma 0."""
    if sigma == 0:
        return np.eye(length)
    taps = gaussian_taps(sigma)
    radius = (len(taps) - 1) // 2
    offsets = np.arange(length)[None, :] - np.arange(length)[:, None]
    return np.where(np.abs(offsets) <= radius, taps[np.clip(offsets + radius, 0, 2 * radius)], 0.0)


def _matrices(ops, length: int, sigmas: np.ndarray, step: float):
    """Per row (rows, 1, n, n) device stacks: the blur A, the change A(sigma + step) - A (made in
    float64), and both transposed (for the other axis)."""
    blurs = np.stack([blur_matrix(length, s) for s in sigmas])
    changes = np.stack([blur_matrix(length, s + step) for s in sigmas]) - blurs
    stacks = (blurs, changes, blurs.transpose(0, 2, 1), changes.transpose(0, 2, 1))
    return tuple(ops.asarray(np.ascontiguousarray(a[:, None]).astype(np.float32)) for a in stacks)


class BlurIG(SampledGradients):
    name = "blur_ig"
    order = 66
    label = "Blur IG"
    summary = ("Integrated gradients along a path of Gaussian blurs from max_sigma down to the image "
               "(Xu et al. 2020), as PAIR saliency computes it; signed.")
    signed = True
    options = (
        nsamples_option("Path steps (PAIR uses 100); cost grows linearly.", default=50, label="steps"),
        Option("max_sigma", 50.0, "The strongest blur (pixels), where the path starts; any value costs the "
               "same (blurs are matrix products).", kind="float", minimum=0.1, maximum=1000.0, label="max blur",
               slider_max=100.0, step=1.0),
        Option("grad_step", 0.01, "Sigma step of the finite difference that measures how the blur changes.",
               kind="float", minimum=1e-6, maximum=10.0, label="sigma step", slider_max=1.0, step=0.01),
        Option("sqrt", False, "Space the sigmas as square roots (finer steps near the image).", kind="bool",
               label="sqrt spacing"),
    )

    def sampling(self, options: dict) -> Sampling:
        steps = options["nsamples"]
        sigmas = blur_sigmas(steps, options["max_sigma"], options["sqrt"])
        widths = np.diff(sigmas)
        # Weights only scale previews (a partial path normalised by the width seen); the sum uses widths.
        return Sampling(1, steps, sigmas[:-1], widths / widths.sum(), "mean")

    def start(self, ctx, resume=None):
        if any(x.ndim != 4 for x in ctx.host_inputs):
            raise SaliencyError("blur_ig blurs images: every input must be a batch of images (rank 4).")
        options = ctx.options
        sigmas = blur_sigmas(options["nsamples"], options["max_sigma"], options["sqrt"])
        ctx.cache["blur_ig"] = {"widths": np.diff(sigmas), "pending": {}}
        return super().start(ctx, resume)

    def point(self, ctx, block, start, baseline):
        """The blurred images at each row's sigma; their sigma derivative is kept for ``contribution``."""
        ops = ctx.ops
        cache = ctx.cache["blur_ig"]
        sigmas = ctx.plan.alphas[block.steps]
        step = ctx.options["grad_step"]
        x = ops.transpose(start, (0, 3, 1, 2)) if ctx.channels_last else start
        height, width = (int(d) for d in x.shape[2:])
        rows_h = _matrices(ops, height, sigmas, step)
        rows_w = rows_h if width == height else _matrices(ops, width, sigmas, step)
        blur_h, change_h, _, _ = rows_h
        _, _, blur_w_t, change_w_t = rows_w
        further_w_t = blur_w_t + change_w_t
        partly = blur_h @ x  # blurred down the columns
        blurred = partly @ blur_w_t
        change = (change_h @ x) @ further_w_t + partly @ change_w_t  # blur(sigma + step) - blur(sigma)
        scale = ops.asarray((-cache["widths"][block.steps] / step).astype(np.float32))
        change = change * ops.per_row(scale, change)
        if ctx.channels_last:
            blurred, change = ops.transpose(blurred, (0, 2, 3, 1)), ops.transpose(change, (0, 2, 3, 1))
        cache["pending"].setdefault(id(block), []).append(change)
        return blurred

    def contribution(self, ctx, block, m, gradient, start, baseline):
        """``-(sigma_{i+1} - sigma_i) * d blur / d sigma * gradient`` (PAIR's sum, sign included)."""
        pending = ctx.cache["blur_ig"]["pending"]
        weights = pending[id(block)][m]
        if m == len(ctx.inputs) - 1:
            del pending[id(block)]
        return weights * gradient

    def group_map(self, ctx, m, summed, start, baseline):
        return summed


BLUR_IG = register(BlurIG())
