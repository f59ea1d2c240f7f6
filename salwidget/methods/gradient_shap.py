"""GradientSHAP: Expected Gradients from noisy copies of the image (Lundberg and Lee 2017; Captum's GradientShap).

Each sample ``s`` of image ``x`` draws a reference ``r_s`` (from ``references=``,
or the other images of the batch; without replacement within each round, as
Expected Gradients), a position ``alpha_s`` in [0, 1) and Gaussian noise
``e_s`` of sigma ``stdev_spread * (max(x) - min(x))``; the map is the mean
over samples of ``(x + e_s - r_s) * grad f(r_s + alpha_s (x + e_s - r_s))``.
Every draw is seeded and keyed by (seed, image, sample), so any chunk size
gives the same map. ``stdev_spread=0`` (the default, as Captum's ``stdevs``)
is Expected Gradients. Captum's ``stdevs`` is an absolute sigma; salwidget's
is a fraction of each image's range, as SmoothGrad's.
"""

from __future__ import annotations

from ..randomness import NOISE
from .base import Option, register
from .expected_gradients import REFERENCES, ExpectedGradients
from .sampling import Ends, Sampling
from .sampling_options import nsamples_option


class GradientShap(ExpectedGradients):
    name = "gradient_shap"
    order = 65
    label = "GradientSHAP"
    summary = ("The mean over samples of (x + noise - r) times the gradient at a random point between a random "
               "reference r and the noisy image (Lundberg and Lee 2017, Captum's GradientShap); signed.")
    options = (
        nsamples_option("Samples per image (a reference, a position and a noise draw each); cost grows linearly."),
        REFERENCES,
        Option("stdev_spread", 0.0, "Noise sigma as a fraction of each image's own max - min (0: no noise).",
               kind="float", minimum=0.0, label="noise", slider_max=0.5, step=0.01),
    )

    def group_ends(self, ctx, group: int, plan: Sampling) -> Ends:
        ends = super().group_ends(ctx, group, plan)
        spread = ctx.options["stdev_spread"]
        if spread > 0:  # every sample is noisy (Captum's NoiseTunnel), group 0 included
            if "sigma" not in ctx.cache:
                ctx.cache["sigma"] = [ctx.ops.per_row(spread * (high - low), x)
                                      for x, low, high in zip(ctx.inputs, ctx.low, ctx.high)]
            ends.start = [x + ctx.draws.normal(NOISE, m, group) * ctx.cache["sigma"][m]
                          for m, x in enumerate(ends.start)]
        return ends


GRADIENT_SHAP = register(GradientShap())
