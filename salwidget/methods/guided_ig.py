"""Guided Integrated Gradients: a path that moves the least important features first.

Kapishnikov et al. (2021) start at the baseline and, at each of ``nsamples``
steps, move the ``fraction`` of features with the smallest absolute gradient
towards the input until the path has covered its share of the L1 distance,
never letting a feature stray more than ``max_dist`` (as a fraction of the
path) from the straight line. The attribution sums ``(x_new - x_old) *
gradient`` along the way. This is PAIR saliency's
``saliency/core/guided_ig.py`` step for step, in float64 on the host as PAIR
computes it (a multi-input model's inputs are one vector of features).

Each step needs the gradient at the point the previous step reached, so the
steps are sequential: every step is one :class:`~salwidget.methods.base.Stage`
whose passes are the batch's images (one gradient each, batched together);
the selection between gradients is host numpy work on every image. It gives
PAIR's float64 results bit for bit in about half PAIR's host time: the same
arithmetic in preallocated arrays, with branch-free masked copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import SaliencyError
from ..inputs import prepare_baselines
from ..randomness import BASELINE
from .base import Method, MethodOutput, Option, Stage, register
from .paths import check_baseline
from .sampling_options import nsamples_option

EPSILON = 1e-9  # PAIR's tolerance for "the step has covered its L1 distance"


@dataclass
class GuidedPath:
    """Every image's path so far, on the host: (B, F) float64 over all inputs' features."""

    x: np.ndarray
    x_input: np.ndarray
    x_baseline: np.ndarray
    attr: np.ndarray
    l1_total: np.ndarray  # (B,)
    done: int = 0  # steps finished by every image
    work: Workspace | None = None  # scratch arrays shared by every image's steps


class Workspace:
    """Scratch arrays for :func:`guided_step` on ``size`` features, reused across steps and images
    (fresh megabyte-sized temporaries cost more than the arithmetic on them)."""

    def __init__(self, size: int):
        self.old = np.empty(size)
        self.scratch = np.empty(size)
        self.bits = np.empty(size, np.int64)
        self.grad = np.empty(size, np.float32)
        self.magnitude = np.empty(size, np.float32)
        self.sorted = np.empty(size, np.float32)
        self.mask = np.empty(size, bool)
        self.selected = np.empty(size, bool)
        self.gradient = np.empty(size)
        self.span = np.empty(size)
        self.x_min = np.empty(size)
        self.x_max = np.empty(size)
        self.moving = np.empty(size, bool)


def select(target: np.ndarray, where: np.ndarray, source: np.ndarray, work: Workspace) -> None:
    """``target[where] = source[where]`` for float64 arrays, bit for bit, without branching per element
    (a boolean-indexed or masked copy mispredicts on scattered masks)."""
    keep, bits = target.view(np.int64), work.bits
    np.copyto(bits, where, casting="unsafe")
    np.negative(bits, out=bits)  # all ones where selected
    flips = np.bitwise_xor(keep, source.view(np.int64))
    np.bitwise_and(flips, bits, out=flips)
    np.bitwise_xor(keep, flips, out=keep)


def guided_step(x, x_input, x_baseline, grad_actual, attr, step: int, steps: int, fraction: float,
                max_dist: float, l1_total: float, work: Workspace | None = None) -> None:
    """One Guided IG step of one image, in place on ``x`` and ``attr``.

    PAIR's inner loop with the same arithmetic in the same order (so the same
    float64 results), in preallocated arrays with branch-free selections.
    """
    work = Workspace(x.size) if work is None else work
    old, scratch, selected, mask = work.old, work.scratch, work.selected, work.mask
    grad, magnitude = work.grad, work.magnitude
    np.copyto(grad, grad_actual)
    gradient = work.gradient
    np.copyto(gradient, grad_actual)  # exact: what float64 * float32 converts to anyway
    alpha = (step + 1.0) / steps
    alpha_min = max(alpha - max_dist, 0.0)
    alpha_max = min(alpha + max_dist, 1.0)
    span, x_min, x_max, moving = work.span, work.x_min, work.x_max, work.moving
    np.subtract(x_input, x_baseline, out=span)
    np.add(x_baseline, np.multiply(span, alpha_min, out=x_min), out=x_min)
    np.add(x_baseline, np.multiply(span, alpha_max, out=x_max), out=x_max)
    l1_target = l1_total * (1 - (step + 1) / steps)
    np.not_equal(span, 0, out=moving)  # features equal in input and baseline never fall behind
    rank = int(np.floor((x.size - 1) * fraction))  # numpy's index rule for quantile(method='lower')
    gamma = np.inf
    while gamma > 1.0:
        np.copyto(old, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.subtract(x, x_baseline, out=scratch)
            np.divide(scratch, span, out=scratch)
        np.less(scratch, alpha_min, out=mask)
        np.logical_and(mask, moving, out=mask)
        select(x, mask, x_min, work)  # features behind the allowed range catch up
        np.subtract(x, x_input, out=scratch)
        l1_current = np.abs(scratch, out=scratch).sum()
        if math.isclose(l1_target, l1_current, rel_tol=EPSILON, abs_tol=EPSILON):
            np.subtract(x, old, out=scratch)
            attr += np.multiply(scratch, gradient, out=scratch)
            return
        np.equal(x, x_max, out=mask)
        np.putmask(grad, mask, np.inf)  # features at the end of their range are not selected
        np.abs(grad, out=magnitude)
        threshold = lower_quantile(magnitude, rank, work.sorted)
        np.less_equal(magnitude, threshold, out=selected)
        np.not_equal(grad, np.inf, out=mask)
        np.logical_and(selected, mask, out=selected)
        np.subtract(x, x_max, out=scratch)
        np.abs(scratch, out=scratch)
        l1_selected = np.multiply(scratch, selected, out=scratch).sum()
        gamma = (l1_current - l1_target) / l1_selected if l1_selected > 0 else np.inf
        if gamma > 1.0:
            select(x, selected, x_max, work)
        else:
            np.subtract(x_max, x, out=scratch)
            np.multiply(scratch, gamma, out=scratch)
            np.add(x, scratch, out=scratch)
            select(x, selected, scratch, work)
        np.subtract(x, old, out=scratch)
        attr += np.multiply(scratch, gradient, out=scratch)
        if gamma > 1.0 and np.array_equal(x, old):
            return  # nothing left to move this step (PAIR would loop for ever)


def lower_quantile(values: np.ndarray, rank: int, scratch: np.ndarray) -> float:
    """``np.quantile(values, fraction, method='lower')`` with ``rank = floor((n - 1) * fraction)``."""
    if np.isnan(values).any():  # numpy's quantile of data with NaN is NaN
        return np.nan
    np.copyto(scratch, values)
    scratch.partition(rank)
    return scratch[rank]


class GuidedIG(Method):
    name = "guided_ig"
    order = 68
    label = "Guided IG"
    summary = ("Integrated gradients along a path that first moves the features with the smallest gradients "
               "(Kapishnikov et al. 2021), as PAIR saliency computes it; steps are sequential, the feature "
               "selection is host numpy work; signed.")
    signed = True
    options = (
        nsamples_option("Path steps, one after the other (PAIR uses 200); cost grows linearly.", default=50,
                        label="steps"),
        Option("fraction", 0.25, "Share of the features (smallest gradients first) moved per iteration; smaller "
               "values take more iterations per step.", kind="float", minimum=0.01, maximum=1.0, label="fraction",
               slider_max=1.0, step=0.01),
        Option("max_dist", 0.02, "How far (fraction of the path) a feature may stray from the straight line; 0 is "
               "plain IG, 1 unbounded.", kind="float", minimum=0.0, maximum=1.0, label="max distance",
               slider_max=1.0, step=0.01),
        Option(
            "baseline", 0.0,
            "Where the path starts: a number (0.0 = black in the model's input space), an array shaped like x, "
            "'uniform' (random in each image's range) or 'blur'.",
            label="baseline", check=check_baseline,
        ),
    )

    def passes(self, options: dict, batch: int) -> int:
        return options["nsamples"] * batch

    def passes_left(self, ctx, state: GuidedPath) -> int:
        return (ctx.options["nsamples"] - state.done) * ctx.batch

    def start(self, ctx, resume=None) -> GuidedPath:
        batch = ctx.batch
        inputs = np.concatenate([x.reshape(batch, -1) for x in ctx.host_inputs], axis=1).astype(np.float64)
        baselines = np.concatenate([b.reshape(batch, -1) for b in self._host_baselines(ctx)], axis=1)
        baselines = baselines.astype(np.float64)
        return GuidedPath(baselines.copy(), inputs, baselines, np.zeros_like(inputs),
                          np.abs(inputs - baselines).sum(axis=1), work=Workspace(inputs.shape[1]))

    @staticmethod
    def _host_baselines(ctx) -> list[np.ndarray]:
        ops = ctx.ops
        out = []
        resolved = prepare_baselines(ctx.options["baseline"], ctx.host_inputs, ctx.channels_last)
        for m, value in enumerate(resolved):
            if isinstance(value, str) and value == "uniform":
                u = ctx.draws.uniform(BASELINE, m, 0)
                value = ops.numpy(ops.per_row(ctx.low[m], u) + u * ops.per_row(ctx.high[m] - ctx.low[m], u))
            elif isinstance(value, str):  # 'blur'
                value = ops.numpy(ops.blur(ctx.inputs[m], min(ctx.spatial_size) / 8, ctx.channels_last))
            out.append(np.asarray(value, np.float32))
        return out

    def stages(self, ctx, state: GuidedPath):
        for step in range(state.done, ctx.options["nsamples"]):
            yield Stage(ctx.batch, lambda start, stop, step=step: self._advance(ctx, state, step, start, stop))
            state.done = step + 1

    def _split(self, ctx, flat: np.ndarray, rows: int) -> list:
        """Features (rows, F) back into each input's (rows, ...) shape."""
        out, offset = [], 0
        for x in ctx.host_inputs:
            size = int(np.prod(x.shape[1:]))
            out.append(flat[:, offset: offset + size].reshape((rows,) + x.shape[1:]))
            offset += size
        return out

    def _advance(self, ctx, state: GuidedPath, step: int, start: int, stop: int) -> None:
        ops = ctx.ops
        images = np.arange(start, stop)
        points = [ops.asarray(p.astype(np.float32)) for p in self._split(ctx, state.x[start:stop], stop - start)]
        grads, _ = ctx.gradients(points, images, scores=False)
        flat = np.concatenate([ops.numpy(g).astype(np.float32, copy=False).reshape(stop - start, -1) for g in grads],
                              axis=1)
        options = ctx.options
        for row, image in enumerate(images):
            if state.l1_total[image] == 0:  # the input is the baseline: the attribution is zero
                continue
            x = state.x[image]
            guided_step(x, state.x_input[image], state.x_baseline[image], flat[row], state.attr[image], step,
                        options["nsamples"], options["fraction"], options["max_dist"], state.l1_total[image],
                        state.work)
            if not np.isfinite(x).all():
                raise SaliencyError("Guided IG produced non-finite values: the model's gradients contain NaN or inf.")

    def finish(self, ctx, state: GuidedPath) -> MethodOutput:
        maps = [ctx.ops.asarray(a.astype(np.float32)) for a in self._split(ctx, state.attr, ctx.batch)]
        return MethodOutput(maps, state.done)


GUIDED_IG = register(GuidedIG())
