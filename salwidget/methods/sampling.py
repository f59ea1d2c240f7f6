"""The machinery shared by gradient methods that sample: groups of path steps.

Such a method evaluates, for every image, ``groups`` outer samples (noise
draws, random baselines); each group evaluates the input gradient at ``steps``
points and sums their contributions (by default ``weight_k * gradient_k``). A
group's map is then formed (by default ``(start - baseline) * sum`` on a path,
the sum itself otherwise), and the method's map reduces the groups' maps:
their mean, the mean of their squares, or their variance.

===================  ======  ===========  ==========================
method               groups  steps        group map
===================  ======  ===========  ==========================
vanilla              1       1            gradient
gradient_x_input     1       1            x * gradient
smoothgrad, vargrad  N       1            gradient at x + noise
integrated           1       N            (x - b) * weighted mean
smooth_integrated    N       nintegration (x_g - b_g) * weighted mean
===================  ======  ===========  ==========================

Passes run group-major, then step (coarse to fine, so every prefix of a path
is a rough quadrature of all of it), then image: each chunk refines every
image, and previews look like the final map early. All tensors live on the
model's device; the host only plans which (group, step, image) each pass is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..randomness import NOISE
from .base import Method, MethodOutput, Option, RunContext, Stage

REDUCTIONS = ("mean", "mean_square", "variance")


def coarse_to_fine(n: int) -> np.ndarray:
    """Indices 0..n-1 ordered ends first, then midpoints of ever finer halves."""
    if n <= 2:
        return np.arange(n)
    order, seen = [0, n - 1], {0, n - 1}
    intervals = [(0, n - 1)]
    while intervals:
        next_intervals = []
        for lo, hi in intervals:
            mid = (lo + hi) // 2
            if mid not in seen:
                seen.add(mid)
                order.append(mid)
            if mid - lo > 1:
                next_intervals.append((lo, mid))
            if hi - mid > 1:
                next_intervals.append((mid, hi))
        intervals = next_intervals
    return np.array(order)


@dataclass(frozen=True)
class Sampling:
    """The plan: ``groups`` x ``steps`` passes per image at path positions ``alphas``."""

    groups: int
    steps: int
    alphas: np.ndarray  # (steps,)
    weights: np.ndarray  # (steps,), summing to 1
    reduction: str = "mean"
    path: bool = False
    noisy: bool = False

    @property
    def order(self) -> np.ndarray:
        return coarse_to_fine(self.steps)

    @property
    def has_ends(self) -> bool:
        """Whether the path's two ends are evaluated (then completeness can be checked)."""
        return self.path and self.steps >= 2 and self.alphas[0] == 0.0 and self.alphas[-1] == 1.0


@dataclass
class Ends:
    """A group's start points and path baseline for every image: lists over inputs of (B, ...) tensors."""

    start: list
    baseline: list | None = None


@dataclass
class Block:
    """The passes of one group within a chunk: which steps of which images.

    Host arrays (``steps``, ``images``) plan the work; their device twins
    (``steps_on_device``, ``images_on_device``) index tensors without a copy
    from the host, which would stall a GPU at every chunk. ``alphas`` and
    ``weights`` are the rows' path positions and quadrature weights (device).
    """

    group: int
    rows: slice  # where the block sits in the chunk
    whole: bool  # one pass for each image of the batch, in order: no gathering needed
    steps: np.ndarray
    images: np.ndarray
    steps_on_device: Any
    images_on_device: Any
    alphas: Any
    weights: Any


@dataclass
class _OpenGroup:
    ends: Ends
    sums: list
    weight: np.ndarray  # (B,) quadrature weight seen per image
    passes: int = 0
    score_at_start: Any = None  # f(x_g), per image
    score_at_baseline: Any = None  # f(b_g), per image


@dataclass
class SamplingState:
    """Sums over closed groups (device tensors) and the groups still open."""

    sampling: Sampling
    first_group: int
    sums: list
    squares: list | None
    counts: np.ndarray  # closed groups per image
    delta: Any = None  # sum over closed groups of the completeness gap, per image
    shift: list | None = None  # variance: group 0's maps, subtracted before summing (less cancellation)
    open: dict = field(default_factory=dict)


@dataclass
class SavedSampling:
    """A finished run on the host, for resuming with more groups."""

    key: Any
    groups: int
    sums: list
    squares: list | None
    counts: np.ndarray
    delta: np.ndarray | None
    shift: list | None = None


class SampledGradients(Method):
    """Base class for the methods of the table in the module docstring."""

    def sampling(self, options: dict) -> Sampling:
        raise NotImplementedError

    def passes(self, options: dict, batch: int) -> int:
        plan = self.sampling(options)
        return plan.groups * plan.steps * batch

    def single_pass(self, options: dict) -> bool:
        plan = self.sampling(options)
        return plan.groups == 1 and plan.steps == 1 and not plan.path and not plan.noisy

    # --- what subclasses may change ------------------------------------------
    def group_ends(self, ctx: RunContext, group: int, plan: Sampling) -> Ends:
        """Start points (x, or x + noise for groups > 0 of a noisy method) and no baseline."""
        starts = []
        for m, x in enumerate(ctx.inputs):
            if plan.noisy and group > 0:
                if "sigma" not in ctx.cache:  # per image, shaped to broadcast: computed once per run
                    ctx.cache["sigma"] = [ctx.ops.per_row(ctx.options["stdev_spread"] * (high - low), x)
                                          for x, low, high in zip(ctx.inputs, ctx.low, ctx.high)]
                x = x + ctx.draws.normal(NOISE, m, group) * ctx.cache["sigma"][m]
            starts.append(x)
        return Ends(starts)

    def point(self, ctx: RunContext, block: Block, start, baseline):
        """The pass's input: ``baseline + alpha (start - baseline)`` on a path, else ``start``.

        ``start`` and ``baseline`` are the block's rows (a baseline may be a
        plain number, or None off a path)."""
        if baseline is None:
            return start
        alpha = ctx.ops.per_row(block.alphas, start)
        if isinstance(baseline, float):
            return start * alpha if baseline == 0.0 else start * alpha + baseline * (1 - alpha)
        return ctx.ops.lerp(baseline, start, alpha)

    def contribution(self, ctx: RunContext, block: Block, m: int, gradient, start, baseline):
        """What a pass adds to its group's sum: ``weight_k * gradient`` (equal weights are
        applied once, when the group closes: see ``_unweighted``)."""
        if ctx.plan.steps == 1 or _unweighted(self, ctx.plan):
            return gradient
        return gradient * ctx.ops.per_row(block.weights, gradient)

    def group_map(self, ctx: RunContext, m: int, summed, start, baseline):
        """A group's map from its summed contributions (``start``/``baseline``: the same images' rows)."""
        if baseline is None:
            return summed
        return (start - baseline) * summed

    # --- the run ---------------------------------------------------------------
    def start(self, ctx: RunContext, resume: SavedSampling | None = None) -> SamplingState:
        plan = self.sampling(ctx.options)
        ctx.plan = plan
        ops = ctx.ops
        # Path positions, weights and step order live on the device; chunks index them there.
        ctx.cache["sampling"] = (ops.asarray(plan.alphas.astype(np.float32)),
                                 ops.asarray(plan.weights.astype(np.float32)), ops.asarray(plan.order, "int"))
        if resume is not None:
            sums = [ops.asarray(s, "wide") for s in resume.sums]
            squares = None if resume.squares is None else [ops.asarray(s, "wide") for s in resume.squares]
            delta = None if resume.delta is None else ops.asarray(resume.delta, "wide")
            shift = None if resume.shift is None else [ops.asarray(s, "wide") for s in resume.shift]
            return SamplingState(plan, resume.groups, sums, squares, resume.counts.copy(), delta, shift)
        sums = [ops.accumulator(x.shape) for x in ctx.host_inputs]
        squares = [ops.accumulator(x.shape) for x in ctx.host_inputs] if plan.reduction == "variance" else None
        delta = ops.accumulator((ctx.batch,)) if plan.has_ends else None
        shift = [ops.accumulator(x.shape) for x in ctx.host_inputs] if plan.reduction == "variance" else None
        return SamplingState(plan, 0, sums, squares, np.zeros(ctx.batch, np.int64), delta, shift)

    def passes_left(self, ctx: RunContext, state: SamplingState) -> int:
        plan = state.sampling
        return max(0, plan.groups - state.first_group) * plan.steps * ctx.batch

    def stages(self, ctx: RunContext, state: SamplingState) -> Iterator[Stage]:
        total = self.passes_left(ctx, state)
        if total > 0:
            yield Stage(total, lambda start, stop: self._run_chunk(ctx, state, start, stop), align=ctx.batch)

    def _blocks(self, ctx: RunContext, state: SamplingState, start: int, stop: int) -> list[Block]:
        """The chunk's passes [start, stop), group by group (passes are ordered group-major)."""
        ops, plan, batch = ctx.ops, state.sampling, ctx.batch
        alphas, weights, order = ctx.cache["sampling"]
        per_group = plan.steps * batch
        r = np.arange(start, stop)
        groups = state.first_group + r // per_group
        steps, images = plan.order[(r % per_group) // batch], r % batch
        if ops.host_indices:  # cheaper than a few device ops per chunk, where a copy does not stall
            steps_on_device, images_on_device = ops.asarray(steps, "int"), ops.asarray(images, "int")
        else:
            on_device = ops.arange(start, stop)
            steps_on_device = ops.take(order, (on_device % per_group) // batch)
            images_on_device = on_device % batch
        blocks, offset = [], 0
        for group in dict.fromkeys(groups.tolist()):
            count = int((groups == group).sum())
            rows = slice(offset, offset + count)
            block_steps = steps_on_device[rows]
            whole = count == batch and bool((images[rows] == np.arange(batch)).all())
            if plan.steps == 1:  # no path: positions and weights are unused
                block_alphas = block_weights = None
            else:
                block_alphas, block_weights = ops.take(alphas, block_steps), ops.take(weights, block_steps)
            blocks.append(Block(group, rows, whole, steps[rows], images[rows], block_steps, images_on_device[rows],
                                block_alphas, block_weights))
            offset += count
        return blocks

    def _open(self, ctx: RunContext, state: SamplingState, group: int) -> _OpenGroup:
        if group not in state.open:
            ends = self.group_ends(ctx, group, state.sampling)
            sums = [ctx.ops.zeros(x.shape) for x in ctx.host_inputs] if state.sampling.steps > 1 else []
            state.open[group] = _OpenGroup(ends, sums, np.zeros(ctx.batch))
        return state.open[group]

    @staticmethod
    def _rows_of(ctx, value, block: Block):
        """A group end's rows for the block's images (a plain number or None stays as it is)."""
        if value is None or isinstance(value, float) or block.whole:
            return value
        return ctx.ops.take(value, block.images_on_device)

    def _run_chunk(self, ctx: RunContext, state: SamplingState, start: int, stop: int) -> None:
        ops = ctx.ops
        blocks = self._blocks(ctx, state, start, stop)
        work, points = [], [[] for _ in ctx.inputs]
        for block in blocks:
            opened = self._open(ctx, state, block.group)
            ends = []
            for m in range(len(ctx.inputs)):
                start_rows = self._rows_of(ctx, opened.ends.start[m], block)
                base_rows = None if opened.ends.baseline is None else self._rows_of(ctx, opened.ends.baseline[m], block)
                points[m].append(self.point(ctx, block, start_rows, base_rows))
                ends.append((start_rows, base_rows))
            work.append((block, opened, ends))
        images = np.concatenate([block.images for block in blocks])
        grads, scores = ctx.gradients([ops.concat(p) for p in points], images, scores=state.sampling.has_ends)
        for block, opened, ends in work:
            self._add_block(ctx, state, block, opened, ends, [g[block.rows] for g in grads],
                            None if scores is None else scores[block.rows])

    def _add_block(self, ctx, state: SamplingState, block: Block, opened: _OpenGroup, ends: list, grads: list,
                   scores) -> None:
        ops, plan = ctx.ops, state.sampling
        images = block.images_on_device
        if plan.steps == 1:  # each pass is a whole group: straight into the sums
            maps = [self.group_map(ctx, m, self.contribution(ctx, block, m, grads[m], *ends[m]), *ends[m])
                    for m in range(len(grads))]
            self._accumulate(ctx, state, maps, block.images, None if block.whole else images, block.group)
        else:
            for m, gradient in enumerate(grads):
                opened.sums[m] = ops.index_add(opened.sums[m], images,
                                               self.contribution(ctx, block, m, gradient, *ends[m]))
            np.add.at(opened.weight, block.images, plan.weights[block.steps])
            if plan.has_ends:
                opened.score_at_baseline = self._record(ctx, opened.score_at_baseline, scores, block, 0)
                opened.score_at_start = self._record(ctx, opened.score_at_start, scores, block, plan.steps - 1)
        opened.passes += len(block.images)
        if opened.passes == plan.steps * ctx.batch:
            del state.open[block.group]
            if plan.steps > 1:
                self._close(ctx, state, opened, block.group)

    @staticmethod
    def _record(ctx, held, scores, block: Block, step: int):
        """Keep the scores of passes at ``step`` (a path end) per image, on the device."""
        if not (block.steps == step).any():
            return held
        held = ctx.ops.zeros((ctx.batch,)) if held is None else held
        at_step = ctx.ops.cast_like(block.steps_on_device == step, scores)
        return ctx.ops.index_add(held, block.images_on_device, scores * at_step)

    def _accumulate(self, ctx, state: SamplingState, maps: list, images: np.ndarray, images_on_device,
                    group: int) -> None:
        """Add group maps to the sums; ``images_on_device`` None means every image in order."""
        ops = ctx.ops
        host_images, images = images, images_on_device

        def add(acc, values):
            return ops.add(acc, values) if images is None else ops.index_add(acc, images, values)

        for m, mp in enumerate(maps):
            if state.sampling.reduction == "mean_square":
                state.sums[m] = add(state.sums[m], ops.square(mp))
            elif state.shift is not None:  # variance of (map - group 0's map): the same variance, less cancellation
                if group == 0:
                    state.shift[m] = ops.wide(mp) if images is None else ops.put(state.shift[m], images, mp)
                else:
                    moved = ops.wide(mp) - (state.shift[m] if images is None else ops.take(state.shift[m], images))
                    state.sums[m] = add(state.sums[m], moved)
                    state.squares[m] = add(state.squares[m], ops.square(moved))
            else:
                state.sums[m] = add(state.sums[m], mp)
                if state.squares is not None:
                    state.squares[m] = add(state.squares[m], ops.square(mp))
        np.add.at(state.counts, host_images, 1)

    def _group_maps(self, ctx, opened: _OpenGroup, normalise: bool) -> list:
        ops = ctx.ops
        # Sums of unweighted gradients carry the equal weight 1/steps as a factor here.
        factor = 1.0 / ctx.plan.steps if _unweighted(self, ctx.plan) else 1.0
        maps = []
        for m, summed in enumerate(opened.sums):
            if normalise:
                weight = np.where(opened.weight > 0, opened.weight, 1.0)
                summed = summed * (factor / _per_image(ops, weight, summed, wide=False))
            elif factor != 1.0:
                summed = summed * factor
            base = None if opened.ends.baseline is None else opened.ends.baseline[m]
            maps.append(self.group_map(ctx, m, summed, opened.ends.start[m], base))
        return maps

    def _close(self, ctx, state: SamplingState, opened: _OpenGroup, group: int) -> None:
        everyone = np.arange(ctx.batch)
        maps = self._group_maps(ctx, opened, normalise=False)
        if state.delta is not None:
            total = None
            for mp in maps:
                total = ctx.ops.row_sum(ctx.ops.wide(mp)) if total is None else total + ctx.ops.row_sum(ctx.ops.wide(mp))
            gain = ctx.ops.wide(opened.score_at_start) - ctx.ops.wide(opened.score_at_baseline)
            state.delta = state.delta + total - gain
        self._accumulate(ctx, state, maps, everyone, None, group)

    # --- results -----------------------------------------------------------------
    def _reduce(self, ctx, state: SamplingState, sums, squares, counts: np.ndarray) -> list:
        ops = ctx.ops
        out = []
        for m, summed in enumerate(sums):
            n = _per_image(ops, np.maximum(counts, 1), summed, wide=True)
            mean = summed / n
            if state.sampling.reduction == "variance":
                mean = ops.relu(squares[m] / n - ops.square(mean))  # rounding can dip below 0
            out.append(ops.narrow(mean))
        return out

    def _extras(self, ctx, state: SamplingState) -> dict:
        if state.delta is None or state.sampling.reduction != "mean":
            return {}
        counts = np.maximum(state.counts, 1).astype(np.float64)
        delta = ctx.ops.numpy(state.delta) / counts
        return {"delta": np.where(state.counts > 0, delta, np.nan)}

    def finish(self, ctx: RunContext, state: SamplingState) -> MethodOutput:
        raw = self._reduce(ctx, state, state.sums, state.squares, state.counts)
        return MethodOutput(raw, self._samples(state, ctx), self._extras(ctx, state))

    def preview(self, ctx: RunContext, state: SamplingState) -> MethodOutput:
        """Closed groups plus the provisional maps of open ones (a path normalised by the weight seen)."""
        if not state.open or state.sampling.steps == 1 or state.shift is not None:
            return self.finish(ctx, state)
        ops = ctx.ops
        sums = list(state.sums)
        squares = None if state.squares is None else list(state.squares)
        counts = state.counts.copy()
        for opened in state.open.values():
            seen = np.nonzero(opened.weight > 0)[0]
            if not len(seen):
                continue
            for m, mp in enumerate(self._group_maps(ctx, opened, normalise=True)):
                mp = ops.wide(mp) * _per_image(ops, (opened.weight > 0).astype(np.float64), mp, wide=True)
                if state.sampling.reduction == "mean_square":
                    sums[m] = sums[m] + ops.square(mp)
                else:
                    sums[m] = sums[m] + mp
                    if squares is not None:
                        squares[m] = squares[m] + ops.square(mp)
            counts[seen] += 1
        raw = self._reduce(ctx, state, sums, squares, counts)
        return MethodOutput(raw, self._samples(state, ctx, preview=True), self._extras(ctx, state))

    def _samples(self, state: SamplingState, ctx, preview: bool = False) -> int:
        """Noise samples (groups) in the map; path steps seen for a one-group path."""
        plan = state.sampling
        if plan.groups == 1 and plan.steps > 1:
            if not state.open:
                return plan.steps if state.counts.min() > 0 else 0
            opened = next(iter(state.open.values()))
            return int(opened.passes // ctx.batch)
        return int(state.counts.min())

    def saved_state(self, ctx: RunContext, state: SamplingState) -> SavedSampling | None:
        if self.resumable is None or state.open:
            return None
        ops = ctx.ops
        return SavedSampling(
            None, state.sampling.groups, [ops.numpy(s) for s in state.sums],
            None if state.squares is None else [ops.numpy(s) for s in state.squares],
            state.counts.copy(), None if state.delta is None else ops.numpy(state.delta),
            None if state.shift is None else [ops.numpy(s) for s in state.shift],
        )


def _unweighted(method: SampledGradients, plan: Sampling) -> bool:
    """Whether a group's passes can be summed as bare gradients and scaled once at the end:
    equal path weights, and the default ``contribution`` (one multiply per pass saved)."""
    return (plan.steps > 1 and type(method).contribution is SampledGradients.contribution
            and bool(np.all(plan.weights == plan.weights[0])))


def _per_image(ops, values: np.ndarray, like, wide: bool):
    """Per-image numbers shaped to broadcast against ``like``: a plain number when
    they are all equal (nothing to copy to the device), else a device tensor
    (in the accumulators' dtype when ``wide``: TensorFlow does not promote)."""
    if np.all(values == values[0]):
        return float(values[0])
    return ops.per_row(ops.asarray(values, "wide" if wide else "float"), like)


# ------------------------------------------------------------- shared options
def nsamples_option(help: str, default: int = 25, minimum: int = 1, label: str = "samples") -> Option:
    return Option("nsamples", default, help, kind="int", minimum=minimum, label=label, slider_max=200)


STDEV_SPREAD = Option(
    "stdev_spread", 0.15, "Noise sigma as a fraction of each image's own max - min.",
    kind="float", minimum=0.0, label="noise", slider_max=0.5, step=0.01,
)
MAGNITUDE = Option(
    "magnitude", True, "Average squared maps (as FastEstimator's SaliencyNet does) instead of signed ones.",
    kind="bool", label="squared",
)
QUADRATURE = Option(
    "quadrature", "riemann",
    "Path weights: 'riemann' weighs every step equally (the seed's mean), 'trapezoid' halves the two ends.",
    kind="choice", choices=("riemann", "trapezoid"), label="quadrature",
)
RNG_OPTION_NAMES = ("seed", "rng")


def path_weights(steps: int, quadrature: str) -> tuple[np.ndarray, np.ndarray]:
    """Alphas ``linspace(0, 1, steps)`` and weights summing to 1 (see ``QUADRATURE``)."""
    alphas = np.linspace(0.0, 1.0, steps)
    weights = np.ones(steps)
    if quadrature == "trapezoid":
        weights[[0, -1]] = 0.5
    return alphas, weights / weights.sum()
