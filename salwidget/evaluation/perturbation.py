"""The deletion/insertion protocol as a forward-only method run by the engine's scheduler.

The method is internal (not registered, so it is not among the panel's method
buttons): :func:`salwidget.deletion_insertion` builds one per call, holding the
pixel ranking, and runs it with :func:`salwidget.engine.run`. Every pass is
one perturbed image, built on the device from the image, its ranking and the
replacement (deletion) or starting image (insertion): the host only plans
which (step, curve, image) each pass is.

Passes run step-major in coarse-to-fine order (the two ends, then midpoints),
then curve, then image: a progress preview holds points spread over the whole
curve, so its partial AUC is a coarse quadrature of the final one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..methods.base import Method, MethodOutput, RunContext, Stage, hashable
from ..methods.sampling import coarse_to_fine
from ..outputs import is_multilabel
from ..targets import DeviceTarget

DELETION, INSERTION = 0, 1
# A forward pass costs about a third of a forward+backward pass: bigger chunks.
FORWARD_COST = 1.0 / 3.0


def pixels_replaced(steps: int, pixels: int) -> np.ndarray:
    """Pixels replaced at each step k = 0..steps: ``floor(k * pixels / steps)``."""
    return np.arange(steps + 1, dtype=np.int64) * pixels // steps


@dataclass
class Fill:
    """What replaces pixels: a number, ``'blur'`` (with its sigma) or an array like the input."""

    value: Any
    sigma: float = 0.0

    def tensor(self, ctx: RunContext):
        ops, x = ctx.ops, ctx.inputs[0]
        if isinstance(self.value, str):  # 'blur'
            return ops.blur(x, self.sigma, ctx.channels_last)
        if isinstance(self.value, np.ndarray):
            return ops.asarray(self.value)
        return ops.full(tuple(x.shape), float(self.value))

    def key(self) -> Any:
        return (hashable(self.value), self.sigma)


@dataclass
class _State:
    ranks: Any  # (B, H, W) device ints: position of each pixel in the order, 0 = first replaced
    deletion_fill: Any  # (B, ...) device tensors
    insertion_start: Any
    curves: Any  # flat (2 * (steps + 1) * B,) device sums, index (curve, step, image)
    seen: np.ndarray  # (2, steps + 1, B) bool on the host
    plan: np.ndarray  # (passes, 3): step, curve, image of each pass


class PerturbationCurves(Method):
    """Scores of the target class as ranked pixels are deleted from, or revealed on, each image."""

    name = "deletion_insertion"
    label = "Deletion/insertion curves"
    summary = "Target scores as the most salient pixels are removed from, or revealed on, the image."
    reads = "outputs"
    output = "pixel"

    def __init__(self, ranks: np.ndarray, steps: int, deletion: Fill, insertion: Fill, score: str,
                 cost: float = FORWARD_COST, multilabel: bool | None = None):
        self.ranks, self.steps, self.deletion, self.insertion = ranks, steps, deletion, insertion
        self.score, self.cost, self.multilabel = score, cost, multilabel
        self.counts = pixels_replaced(steps, int(np.prod(ranks.shape[1:])))

    def key(self, options: dict) -> tuple:
        return (self.name, self.steps, self.score, self.multilabel, hashable(self.ranks), self.deletion.key(),
                self.insertion.key())

    def passes(self, options: dict, batch: int) -> int:
        return 2 * self.steps * batch

    def passes_left(self, ctx: RunContext, state: _State) -> int:
        return len(state.plan)

    # ------------------------------------------------------------ the run
    def start(self, ctx: RunContext, resume: Any = None) -> _State:
        ops, batch, last = ctx.ops, ctx.batch, self.steps
        # Deleting nothing and revealing everything give the clean image: its score is known.
        known = {(DELETION, 0), (INSERTION, last)}
        plan = np.array([(k, curve, image) for k in coarse_to_fine(last + 1) for curve in (DELETION, INSERTION)
                         if (curve, k) not in known for image in range(batch)], np.int64).reshape(-1, 3)
        state = _State(
            ranks=ops.asarray(self.ranks, "int"), deletion_fill=self.deletion.tensor(ctx),
            insertion_start=self.insertion.tensor(ctx), curves=ops.accumulator((2 * (last + 1) * batch,)),
            seen=np.zeros((2, last + 1, batch), bool), plan=plan,
        )
        everyone = np.arange(batch)
        ctx.cache["probability"] = self._probability(ctx.scores)
        clean = self._scores(ctx, {ctx.output_index: ops.asarray(ctx.scores)}, everyone)  # the explained output
        for curve, k in known:
            self._store(ctx, state, np.full(batch, k), np.full(batch, curve), everyone, clean)
        return state

    def stages(self, ctx: RunContext, state: _State) -> Iterator[Stage]:
        if len(state.plan):
            yield Stage(len(state.plan), lambda start, stop: self._run_chunk(ctx, state, start, stop), self.cost)

    def _run_chunk(self, ctx: RunContext, state: _State, start: int, stop: int) -> None:
        ops = ctx.ops
        rows = state.plan[start:stop]
        parts, order = [], []
        for curve in (DELETION, INSERTION):
            chosen = rows[rows[:, 1] == curve]
            if len(chosen):
                parts.append(self._perturbed(ctx, state, curve, chosen[:, 0], chosen[:, 2]))
                order.append(chosen)
        rows = np.concatenate(order)
        outputs = ctx.backend.outputs([ops.concat(parts)])
        self._store(ctx, state, rows[:, 0], rows[:, 1], rows[:, 2], self._scores(ctx, outputs, rows[:, 2]))

    def _perturbed(self, ctx: RunContext, state: _State, curve: int, steps: np.ndarray, images: np.ndarray):
        """Images ``images`` with their first ``counts[steps]`` ranked pixels replaced (all channels)."""
        ops = ctx.ops
        ranks = ops.take(state.ranks, images)
        limits = ops.asarray(self.counts[steps], "int")
        chosen = ranks < ops.per_row(limits, ranks)
        n, height, width = (int(d) for d in ranks.shape)
        chosen = ops.reshape(chosen, (n, height, width, 1) if ctx.channels_last else (n, 1, height, width))
        x = ops.take(ctx.inputs[0], images)
        if curve == DELETION:
            return ops.where(chosen, ops.take(state.deletion_fill, images), x)
        return ops.where(chosen, x, ops.take(state.insertion_start, images))

    def _probability(self, scores: np.ndarray) -> str | None:
        """How a class target's probability is read from clean (B, K) scores: 'softmax', 'sigmoid',
        'as_is' (a head already giving independent probabilities), or None (the logit)."""
        if self.score != "probability" or np.ndim(scores) != 2:
            return None
        if scores.shape[1] == 1:
            return "sigmoid"
        if is_multilabel(scores) if self.multilabel is None else self.multilabel:
            return "as_is" if scores.min() >= 0 and scores.max() <= 1 else "sigmoid"
        return "softmax"

    def _scores(self, ctx: RunContext, outputs, images: np.ndarray):
        """The score of each row's target: a class's probability (see ``_probability``) or logit; any
        other target's own score."""
        ops = ctx.ops
        target = ctx.targets[ctx.output_index]
        logits = outputs[ctx.output_index]
        if isinstance(target, DeviceTarget):
            return target.rows(ops, images)(ops, logits)
        kind = ctx.cache["probability"]
        if kind == "sigmoid":
            logits = ops.sigmoid(logits)
        elif kind == "softmax":
            logits = ops.softmax(logits, axis=-1)
        return ops.take_along_rows(logits, ops.take(target, images))

    def _store(self, ctx, state: _State, steps, curves, images, scores) -> None:
        batch, width = ctx.batch, self.steps + 1
        flat = (curves * width + steps) * batch + images
        state.curves = ctx.ops.put(state.curves, flat, scores)
        state.seen[curves, steps, images] = True

    def finish(self, ctx: RunContext, state: _State) -> MethodOutput:
        curves = ctx.ops.reshape(state.curves, (2, self.steps + 1, ctx.batch))
        return MethodOutput(curves, int(state.seen.all(axis=(0, 2)).sum()), {"seen": state.seen.copy()})


__all__ = ["DELETION", "FORWARD_COST", "Fill", "INSERTION", "PerturbationCurves", "pixels_replaced"]
