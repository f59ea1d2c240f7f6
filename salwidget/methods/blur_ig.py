"""Blur IG: Integrated Gradients along a path of ever stronger Gaussian blurs.

Xu et al. (2020) integrate from a heavily blurred image (``max_sigma``) down
to the image itself, so the path adds information scale by scale instead of
brightness. This follows PAIR saliency's ``saliency/core/blur_ig.py`` exactly:
``nsamples`` steps at ``sigma_i = i * max_sigma / nsamples`` (or
``sqrt(i * max_sigma / nsamples)``), each contributing
``-(sigma_{i+1} - sigma_i) * d blur / d sigma * gradient`` with the sigma
derivative a forward difference of ``grad_step``, and blurs that see zeros
outside the image (scipy's ``mode='constant'``). All blurs run on the model's
device (``Ops.blur``).
"""

from __future__ import annotations

import numpy as np

from ..errors import SaliencyError
from .base import Option, register
from .sampling import SampledGradients, Sampling, nsamples_option


def blur_sigmas(steps: int, max_sigma: float, sqrt: bool) -> np.ndarray:
    """The ``steps + 1`` sigmas of PAIR's path, from 0 (the image) to ``max_sigma``."""
    fractions = np.arange(steps + 1, dtype=np.float64) * max_sigma / steps
    return np.sqrt(fractions) if sqrt else fractions


class BlurIG(SampledGradients):
    name = "blur_ig"
    order = 66
    label = "Blur IG"
    summary = ("Integrated gradients along a path of Gaussian blurs from max_sigma down to the image "
               "(Xu et al. 2020), as PAIR saliency computes it; signed.")
    signed = True
    options = (
        nsamples_option("Path steps (PAIR uses 100); cost grows linearly.", default=50, label="steps"),
        Option("max_sigma", 50.0, "The strongest blur (pixels), where the path starts; larger blurs cost more "
               "device time per step.", kind="float", minimum=0.1, maximum=1000.0, label="max blur",
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
        """The blurred image at each row's sigma; the blur's sigma derivative is kept for ``contribution``."""
        ops, plan = ctx.ops, ctx.plan
        cache = ctx.cache["blur_ig"]
        sigmas = plan.alphas[block.steps]
        step = ctx.options["grad_step"]
        blurred = ops.blur(start, sigmas, ctx.channels_last, mode="constant")
        further = ops.blur(start, sigmas + step, ctx.channels_last, mode="constant")
        scale = ops.asarray((-cache["widths"][block.steps] / step).astype(np.float32))
        cache["pending"].setdefault(id(block), []).append((further - blurred) * ops.per_row(scale, blurred))
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
