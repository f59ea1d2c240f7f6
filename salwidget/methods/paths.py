"""Integrated Gradients and SmoothGrad over IG maps: gradients along a straight path."""

from __future__ import annotations

import numpy as np

from ..errors import SaliencyError
from ..inputs import prepare_baselines, to_numpy
from ..randomness import BASELINE
from .base import Option, hashable, register
from .sampling import WHOLE_CHUNK_ENDS, Ends, SampledGradients, Sampling
from .sampling_options import MAGNITUDE, QUADRATURE, QUADRATURE_ALIASES, STDEV_SPREAD, nsamples_option, path_weights

DEFAULT_NINTEGRATION = 10
BASELINES = ("uniform", "blur")


def check_baseline(value, method: str):
    """'uniform', 'blur', a number or an array (per input: a tuple of them)."""
    if isinstance(value, str):
        if value not in BASELINES:
            raise SaliencyError(
                f"Unknown baseline {value!r}: use 'uniform', 'blur', a number "
                "(0.0 = black in the model's input space) or an array shaped like x."
            )
        return value
    if isinstance(value, (bool, np.bool_)):
        raise SaliencyError(f"baseline must be 'uniform', 'blur', a number or an array; got {value!r}.")
    if np.isscalar(value):
        value = float(value)
        if not np.isfinite(value):
            raise SaliencyError("The baseline contains NaN or infinite values.")
        return value
    if isinstance(value, tuple):
        return tuple(check_baseline(v, method) for v in value)
    array = to_numpy(value).astype(np.float32)
    if not np.isfinite(array).all():
        raise SaliencyError("The baseline contains NaN or infinite values.")
    return array


BASELINE_OPTION = Option(
    "baseline", "uniform",
    "Where the path starts: 'uniform' (random in each image's range, drawn per sample), 'blur' (a blurred "
    "copy), a number (0.0 = black in the model's input space) or an array shaped like x.",
    label="baseline", check=check_baseline,
)
NINTEGRATION_HELP = "Path steps per map (>= 2); cost grows linearly."


class _StraightPath(SampledGradients):
    """Gradients along ``baseline + alpha (start - baseline)``."""

    signed = True

    def group_ends(self, ctx, group: int, plan: Sampling) -> Ends:
        ends = super().group_ends(ctx, group, plan)
        baselines = []
        for m, fixed in enumerate(ctx.cache["baselines"]):
            if isinstance(fixed, str):  # 'uniform': a random image in each image's own range
                low, high = ctx.low[m], ctx.high[m]
                u = ctx.draws.uniform(BASELINE, m, group)
                fixed = ctx.ops.per_row(low, u) + u * ctx.ops.per_row(high - low, u)
            baselines.append(fixed)
        ends.baseline = baselines
        return ends

    def start(self, ctx, resume=None):
        ctx.cache["baselines"] = _device_baselines(ctx)
        return super().start(ctx, resume)

    def resolve(self, given: dict) -> dict:
        quadrature = given.get("quadrature")
        if isinstance(quadrature, str) and quadrature.lower() in QUADRATURE_ALIASES:  # Captum's spelling
            given = {**given, "quadrature": QUADRATURE_ALIASES[quadrature.lower()]}
        return super().resolve(given)

    def nonfinite_advice(self, options: dict, where: str) -> str:
        ends = ("Gauss-Legendre points never touch the path's ends: quadrature='gauss_legendre' (Captum's "
                "default) avoids them" if options.get("quadrature") != "gauss_legendre" else
                "the path itself crosses such a point")
        return (f"The model's gradient is undefined there (e.g. sqrt, log or a division at 0, or a torch.where whose "
                f"unused branch is NaN). Take another baseline (baseline='blur', 'uniform' or a constant where the "
                f"model is differentiable), or, if it is a path end, {ends}; or make the model finite there "
                "(a small epsilon).")


WHOLE_CHUNK_ENDS.append(_StraightPath.group_ends)  # whole chunks serve its start points and baselines


def _device_baselines(ctx) -> list:
    """Each input's baseline on the device, or 'uniform' (drawn per group)."""
    given = ctx.options["baseline"]
    resolved = prepare_baselines(given, ctx.host_inputs, ctx.channels_last)
    out = []
    for m, value in enumerate(resolved):
        constant = given[m] if isinstance(given, tuple) else given
        if isinstance(constant, float):  # a number stays a number: nothing to gather per pass
            value = constant
        elif isinstance(value, str) and value == "blur":
            size = ctx.spatial_size
            value = ctx.ops.blur(ctx.inputs[m], min(size) / 8, ctx.channels_last)
        elif not isinstance(value, str):
            value = ctx.ops.asarray(value)
        out.append(value)
    return out


class Integrated(_StraightPath):
    name = "integrated"
    label = "Integrated Gradients"
    order = 30
    summary = ("(x - baseline) times the mean gradient along the straight path from the baseline "
               "(Sundararajan et al. 2017); sum(map) ~ f(x) - f(baseline), the gap is reported as delta.")
    options = (
        nsamples_option("Path steps (>= 2) when nintegration is not given; cost grows linearly.", label="steps"),
        Option("nintegration", None, "Path steps; overrides nsamples when given.", kind="int", minimum=2,
               allow_none=True, label="steps", slider_max=200),
        BASELINE_OPTION,
        QUADRATURE,
    )

    def resolve(self, given: dict) -> dict:
        options = super().resolve(given)
        steps = options["nintegration"] if options["nintegration"] is not None else options["nsamples"]
        if steps < 2:
            raise SaliencyError(f"The number of path steps (nintegration) must be an integer >= 2; got {steps}.")
        return options

    def key(self, options: dict) -> tuple:
        return (self.name, ("steps", self._steps(options)), ("baseline", hashable(options["baseline"])),
                ("quadrature", options["quadrature"]))

    @staticmethod
    def _steps(options: dict) -> int:
        return options["nintegration"] if options["nintegration"] is not None else options["nsamples"]

    def sampling(self, options: dict) -> Sampling:
        alphas, weights = path_weights(self._steps(options), options["quadrature"])
        return Sampling(1, len(alphas), alphas, weights, "mean", path=True)


class SmoothIntegrated(_StraightPath):
    name = "smooth_integrated"
    label = "SmoothGrad + IG"
    order = 40
    signed = False  # by default: squared (magnitude) samples

    def is_signed(self, options: dict) -> bool:
        return not options["magnitude"]

    summary = "SmoothGrad whose samples are IG maps, each integrated from its own noisy copy of the image."
    options = (
        nsamples_option("Noise samples per image (the first is the clean image); each costs nintegration passes."),
        Option("nintegration", DEFAULT_NINTEGRATION, NINTEGRATION_HELP, kind="int", minimum=2, label="IG steps",
               slider_max=100, allow_none=True),
        STDEV_SPREAD,
        MAGNITUDE,
        BASELINE_OPTION,
        QUADRATURE,
    )
    resumable = "nsamples"

    def resolve(self, given: dict) -> dict:
        options = super().resolve(given)
        if options["nintegration"] is None:
            options["nintegration"] = DEFAULT_NINTEGRATION
        return options

    def sampling(self, options: dict) -> Sampling:
        alphas, weights = path_weights(options["nintegration"], options["quadrature"])
        reduction = "mean_square" if options["magnitude"] else "mean"
        return Sampling(options["nsamples"], len(alphas), alphas, weights, reduction, path=True, noisy=True)


INTEGRATED = register(Integrated())
SMOOTH_INTEGRATED = register(SmoothIntegrated())
