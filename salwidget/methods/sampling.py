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
from .base import Method, MethodOutput, RunContext, Stage

# ``group_ends`` of subclasses whose start points and baselines whole chunks serve too (paths.py adds the
# straight path's); a list the subclasses fill, so this module imports none of them.
WHOLE_CHUNK_ENDS: list = []

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
    """A finished run on the host, for resuming with more groups.

    Its arrays are read-only copies: a result is a value, never changed by a run that resumes from it
    (that run copies what it extends). A request for fewer groups than saved starts afresh, since the
    groups' sums cannot be split.
    """

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
        if resume is not None and resume.groups <= plan.groups:
            # The sums are extended in place: a resume works on copies (a saved result is a value, and
            # torch on a CPU would share the host arrays' memory). A saved run with more groups than asked
            # is not cut down: the map starts afresh (see SavedSampling).
            def extend(value):
                return ops.asarray(np.array(value, copy=True), "wide")

            sums = [extend(s) for s in resume.sums]
            squares = None if resume.squares is None else [extend(s) for s in resume.squares]
            delta = None if resume.delta is None else extend(resume.delta)
            shift = None if resume.shift is None else [extend(s) for s in resume.shift]
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
            yield Stage(total, lambda start, stop: self._run_chunk(ctx, state, start, stop), align=ctx.batch,
                        grid=self._noise_grid(ctx, state))

    def _noise_grid(self, ctx: RunContext, state: SamplingState) -> tuple[int, int] | None:
        """Where the noise blocks of one-pass noisy groups start, in the stage's passes (chunks that keep
        to them take their noise without a concatenation); None for other methods."""
        plan = state.sampling
        if not (plan.noisy and plan.steps == 1 and self._whole_chunks(plan) and ctx.draws.blocked()):
            return None
        per_block = ctx.draws.block_samples() * ctx.batch
        return ((1 - state.first_group) * ctx.batch % per_block, per_block)

    def _blocks(self, ctx: RunContext, state: SamplingState, start: int, stop: int) -> list[Block]:
        """The chunk's passes [start, stop), group by group (passes are ordered group-major)."""
        ops, plan, batch = ctx.ops, state.sampling, ctx.batch
        alphas, weights, order = _device_plan(ctx, plan)
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

    # --- whole chunks: a number of operations that does not grow with the chunk's passes ----------------
    def _whole_chunks(self, plan: Sampling) -> bool:
        """Whether chunks run as whole tensors (:meth:`_run_whole_chunk`): the default start points (x, or
        x + noise), pass inputs and contributions, so each is elementwise over a chunk's rows; a method
        that changes them (random references, its own path) takes the block-by-block path."""
        cls = type(self)
        return (cls.group_ends in (SampledGradients.group_ends, *WHOLE_CHUNK_ENDS)
                and cls.point is SampledGradients.point and cls.contribution is SampledGradients.contribution
                and (plan.steps == 1 or cls.group_map is SampledGradients.group_map))

    def _run_whole_chunk(self, ctx: RunContext, state: SamplingState, start: int, stop: int) -> bool:
        """Run passes [start, stop) as one tensor per input: the noise of each sample drawn once (one
        draw per sample, keyed as before: maps do not depend on the chunk), points, squares and sums over
        the chunk at once, per-image sums by one index_add (or a sum for a single image). False when the
        chunk spans several groups of a path (the block path then runs it)."""
        ops, plan, batch = ctx.ops, state.sampling, ctx.batch
        per_group = plan.steps * batch
        r = np.arange(start, stop)
        groups = state.first_group + r // per_group
        if plan.steps > 1 and groups[0] != groups[-1]:
            return False
        images = r % batch
        steps = plan.order[(r % per_group) // batch] if plan.steps > 1 else None
        if batch == 1:
            on_device = None  # one image: its rows broadcast, sums are a sum over the chunk
        elif ops.host_indices:
            on_device = ops.asarray(images, "int")
        else:
            on_device = ops.arange(start, stop) % batch

        def rows(value):
            return value if on_device is None or value is None or isinstance(value, float) else ops.take(value, on_device)

        def where(row: int) -> str:
            block = Block(int(groups[row]), slice(0, len(r)), False, np.zeros(len(r), int) if steps is None else steps,
                          images, None, None, None, None)
            return self._where(plan, [block], row)

        if plan.steps == 1:
            points, starts, bases = self._noisy_points(ctx, plan, groups, images, rows), None, None
        else:
            opened = self._open(ctx, state, int(groups[0]))
            if opened.ends.baseline is None:
                return False
            starts = [rows(v) for v in opened.ends.start]
            bases = [rows(v) for v in opened.ends.baseline]
            alpha = ops.asarray(plan.alphas[steps].astype(np.float32)) if ops.host_indices else \
                ops.take(_device_plan(ctx, plan)[0], ops.take(_device_plan(ctx, plan)[2], (ops.arange(start, stop) % per_group) // batch))
            points = []
            for m, (x, b) in enumerate(zip(starts, bases)):
                alpha_m = ops.per_row(alpha, ctx.inputs[m])
                if isinstance(b, float):
                    points.append(x * alpha_m if b == 0.0 else x * alpha_m + b * (1 - alpha_m))
                else:
                    points.append(ops.lerp(b, x, alpha_m))
        grads, scores = ctx.gradients(points, images, scores=plan.has_ends, where=where, summed=True)
        if plan.steps == 1:
            self._add_whole(ctx, state, grads, groups, images, on_device, rows)
            return True
        weights = None if _unweighted(self, plan) else ops.asarray(plan.weights[steps].astype(np.float32))
        for m, gradient in enumerate(grads):
            if weights is not None:
                gradient = gradient * ops.per_row(weights, gradient)
            opened.sums[m] = _add_rows(ops, opened.sums[m], gradient, on_device)
        np.add.at(opened.weight, images, plan.weights[steps])
        if plan.has_ends:
            block = Block(int(groups[0]), slice(0, len(r)), False, steps, images, None,
                          on_device if on_device is not None else ops.asarray(images, "int"), None, None)
            if (steps == 0).any() or (steps == plan.steps - 1).any():
                block.steps_on_device = ops.asarray(steps, "int")
            opened.score_at_baseline = self._record(ctx, opened.score_at_baseline, scores, block, 0)
            opened.score_at_start = self._record(ctx, opened.score_at_start, scores, block, plan.steps - 1)
        opened.passes += len(r)
        if opened.passes == plan.steps * batch:
            del state.open[int(groups[0])]
            self._close(ctx, state, opened, int(groups[0]))
        return True

    def _noisy_points(self, ctx: RunContext, plan: Sampling, groups: np.ndarray, images: np.ndarray, rows) -> list:
        """Each input's pass inputs for a chunk of one-pass groups: x, plus (noisy methods, groups > 0) the
        group's own noise draw for its images, scaled by each image's sigma."""
        ops = ctx.ops
        if not plan.noisy:
            return [rows(x) for x in ctx.inputs]
        if "sigma" not in ctx.cache:  # per image, shaped to broadcast: computed once per run
            ctx.cache["sigma"] = [ops.per_row(ctx.options["stdev_spread"] * (high - low), x)
                                  for x, low, high in zip(ctx.inputs, ctx.low, ctx.high)]
        points = []
        blocked = ctx.draws.blocked()
        for m, x in enumerate(ctx.inputs):
            if blocked:  # one span of the stream of noisy passes (group 0, the clean input, draws none):
                # noisy pass q is image q % B of sample q // B + 1, so no numbers are drawn and thrown away
                clean = int((groups == 0).sum())
                first = int(groups[clean] - 1) * ctx.batch + int(images[clean]) if clean < len(groups) else None
                if first is None:
                    points.append(rows(x))
                    continue
                noise = ctx.draws.normal_span(NOISE, m, first, first + len(groups) - clean)
                if clean:  # the clean rows lead the chunk: x + 0 is x exactly
                    noise = ops.concat([ops.zeros((clean,) + tuple(x.shape[1:])), noise])
                points.append(rows(x) + noise * rows(ctx.cache["sigma"][m]))
                continue
            draws = []
            for group in dict.fromkeys(groups.tolist()):
                mine = images[groups == group]
                if group == 0:  # the clean input: x + 0 * sigma is x exactly
                    draws.append(ops.zeros((len(mine),) + tuple(x.shape[1:])))
                    continue
                draw = ctx.draws.normal(NOISE, m, group)
                if len(mine) != ctx.batch or (mine != np.arange(ctx.batch)).any():
                    draw = ops.take(draw, mine)
                draws.append(draw)
            noise = ops.concat(draws)
            points.append(rows(x) + noise * rows(ctx.cache["sigma"][m]))
        return points

    def _add_whole(self, ctx, state: SamplingState, grads: list, groups: np.ndarray, images: np.ndarray,
                   on_device, rows) -> None:
        """Add a chunk of one-pass groups' maps to the sums: squares, shifts and per-image sums over the
        whole chunk at once."""
        ops, reduction = ctx.ops, state.sampling.reduction
        for m, gradient in enumerate(grads):
            mp = self.group_map(ctx, m, gradient, rows(ctx.inputs[m]), None)
            if reduction == "mean_square":
                state.sums[m] = _add_rows(ops, state.sums[m], mp * mp, on_device)
            elif state.shift is not None:  # variance of (map - group 0's map): group 0's rows lead the chunk
                first = int((groups == 0).sum())
                if first:
                    clean = ops.wide(mp[:first])
                    # the whole of group 0 in this chunk: its rows are every image, in order
                    state.shift[m] = clean if first == ctx.batch else ops.put(state.shift[m], images[:first], clean)
                moved = ops.wide(mp) - rows(state.shift[m])  # group 0's rows: exactly zero
                state.sums[m] = _add_rows(ops, state.sums[m], moved, on_device)
                state.squares[m] = _add_rows(ops, state.squares[m], moved * moved, on_device)
            else:
                state.sums[m] = _add_rows(ops, state.sums[m], mp, on_device)
                if state.squares is not None:
                    state.squares[m] = _add_rows(ops, state.squares[m], mp * mp, on_device)
        np.add.at(state.counts, images, 1)

    def _run_chunk(self, ctx: RunContext, state: SamplingState, start: int, stop: int) -> None:
        ops = ctx.ops
        if self._whole_chunks(state.sampling) and self._run_whole_chunk(ctx, state, start, stop):
            return
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
        grads, scores = ctx.gradients([ops.concat(p) for p in points], images, scores=state.sampling.has_ends,
                                      where=lambda row: self._where(state.sampling, blocks, row))
        for block, opened, ends in work:
            self._add_block(ctx, state, block, opened, ends, [g[block.rows] for g in grads],
                            None if scores is None else scores[block.rows])

    def nonfinite_advice(self, options: dict, where: str) -> str:
        from ..finite import DEFAULT_ADVICE

        if self.sampling(options).noisy and "(the clean image)" not in where:
            return (DEFAULT_ADVICE + " Noisy copies can leave the inputs where the model is defined (e.g. below 0): "
                    "a smaller stdev_spread keeps them closer.")
        return DEFAULT_ADVICE

    @staticmethod
    def _where(plan: Sampling, blocks: list[Block], row: int) -> str:
        """A chunk row's pass in words, for an error (see :mod:`salwidget.finite`)."""
        for block in blocks:
            if block.rows.start <= row < block.rows.stop:
                image, step = int(block.images[row - block.rows.start]), int(block.steps[row - block.rows.start])
                break
        else:
            return f"row {row} of a chunk"
        text = f"image {image}"
        if plan.path:
            alpha = float(plan.alphas[step])
            text += f"'s path point at alpha = {alpha:.4g}"
            text += " (the baseline)" if alpha == 0.0 else " (the image itself)" if alpha == 1.0 else ""
        if plan.groups > 1 or plan.noisy:
            text += f", sample {block.group}" + (" (the clean image)" if plan.noisy and block.group == 0 else "")
        return text

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
        def frozen(tensor) -> np.ndarray:  # a host copy of its own (torch on a CPU shares the tensor's memory)
            value = np.array(ctx.ops.numpy(tensor), copy=True)
            value.setflags(write=False)
            return value

        counts = state.counts.copy()
        counts.setflags(write=False)
        return SavedSampling(
            None, state.sampling.groups, [frozen(s) for s in state.sums],
            None if state.squares is None else [frozen(s) for s in state.squares],
            counts, None if state.delta is None else frozen(state.delta),
            None if state.shift is None else [frozen(s) for s in state.shift],
        )


def _device_plan(ctx: RunContext, plan: Sampling) -> tuple:
    """Path positions, weights and step order on the device, made on first use (chunks index them there;
    a method without a path, or whose whole chunks index on the host, never needs them)."""
    if "sampling" not in ctx.cache:
        ops = ctx.ops
        ctx.cache["sampling"] = (ops.asarray(plan.alphas.astype(np.float32)),
                                 ops.asarray(plan.weights.astype(np.float32)), ops.asarray(plan.order, "int"))
    return ctx.cache["sampling"]


def _add_rows(ops, acc, values, rows_on_device):
    """``acc[rows[r]] += values[r]`` for every row (``rows_on_device`` None: one image, every row its)."""
    if rows_on_device is None:
        return ops.add(acc, ops.sum(values, axis=0, keepdims=True) if values.shape[0] > 1 else values)
    return ops.index_add(acc, rows_on_device, values)


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
