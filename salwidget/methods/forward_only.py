"""What the perturbation (forward-only) methods share: passes of perturbed copies, scores, fills.

Each such method plans, for every image, a list of perturbed copies of input 0
(occluded windows, coalitions of segments, random masks); a pass is one copy.
The scheduler runs the passes in chunks: a chunk's copies are built on the
model's device from the images and a (n, H, W) mask in a few operations (one
``where`` or one product over the chunk, never a loop over copies; products and
occlusion's copies, on torch and numpy, go into a run's pooled blocks that no
live tensor holds), the target
score of each copy is kept on the device (a (passes,) vector), and the method
turns the scores into maps at the end (and for a preview, from the passes run
so far). Other inputs of a multi-input model are passed unchanged.

``fill`` is what replaces the hidden pixels: a number (in the model's input
space), ``"mean"`` (each image's per-channel mean) or ``"blur"`` (a Gaussian
blur of the image, ``fill_sigma`` pixels).

The methods that draw samples (RISE, Sobol, LIME, KernelSHAP) resume: their
draws for ``n`` samples are the first ``n`` of any larger count (each random
quantity from its own stream; Sobol's sequence is a prefix by construction),
so a result saves every pass's score (and RISE its device sum) and a call with
more samples (``resume_from=``) runs only the new passes. The estimators that
regress over all samples (LIME, KernelSHAP) or read all of them (Sobol's
variance) are recomputed from the kept scores, which is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..errors import SaliencyError
from .base import Method, MethodOutput, Option, RunContext, Stage

# A forward pass costs about a third of a forward+backward pass: bigger chunks.
FORWARD_COST = 1.0 / 3.0
FILL_WORDS = ("mean", "blur")

FILL = Option(
    "fill", 0.0,
    "What replaces hidden pixels: a number in the model's input space (0.0 is black for [0, 1] images, the "
    "mean colour for normalised ones), 'mean' (each image's channel means) or 'blur' (a Gaussian blur of the "
    "image, fill_sigma pixels). Any choice costs the same passes; 'blur' adds one blur per image, once. Other "
    "numbers: options={method: {'fill': value}}.",
    kind="any", label="fill", presets=(("0.0", 0.0), ("image mean", "mean"), ("blurred image", "blur")),
)
FILL_SIGMA = Option(
    "fill_sigma", 5.0, "Blur of fill='blur', in pixels (0 to 20 on the slider; any value >= 0); no extra passes.",
    kind="float", minimum=0.0, label="fill sigma", slider_max=20.0, step=0.5,
)


def check_fill(value: Any, method: str) -> Any:
    """``fill`` as a float or one of :data:`FILL_WORDS`; a clear error otherwise."""
    if isinstance(value, str) and value in FILL_WORDS:
        return value
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    raise SaliencyError(f"fill must be a finite number, 'mean' or 'blur' (method {method!r}); got {value!r}.")


@dataclass
class SavedPasses:
    """A finished forward-only run on the host, for resuming with a larger count.

    Read-only copies (a result is a value: a run resuming from it copies what it extends). A request for
    fewer samples than saved starts afresh.
    """

    key: Any
    count: int  # the resumable option's value (masks, designs or coalitions per image)
    scores: np.ndarray  # (passes,) each pass's target score, in the run's order
    sums: dict  # the method's device sums (``ForwardOnlyMethod.saved_sums``) as host arrays


@dataclass
class PassState:
    """The passes of a forward-only method: which image each is, and its target score once run."""

    images: np.ndarray  # (passes,) the image each pass perturbs
    scores: Any  # (passes,) device target scores, NaN until run
    ran: np.ndarray  # (passes,) bool on the host
    plan: dict = field(default_factory=dict)  # the method's own (host or device) arrays

    @property
    def passes(self) -> int:
        return len(self.images)

    @property
    def done(self) -> int:
        return int(self.ran.sum())


class ForwardOnlyMethod(Method):
    """Base of the perturbation methods: subclasses plan passes, build masks, combine scores.

    A subclass defines :meth:`plan` (the image of each pass and its own arrays),
    :meth:`masks` (the (n, H, W) keep-masks of some passes, on the device: 1
    keeps the pixel, 0 replaces it by the fill, values between blend) and
    :meth:`combine` (host float64 maps (B, H, W) from the scores so far).
    """

    reads = "outputs"
    output = "pixel"
    signed = True
    binary_masks = True  # masks are 0/1: copies are made with ``where`` (exact); else ``fill + m (x - fill)``
    saved_sums: tuple = ()  # names of ``plan`` entries summed over passes on the device (kept for a resume)

    def resolve(self, given: dict) -> dict:
        options = super().resolve(given)
        if "fill" in options:
            options["fill"] = check_fill(options["fill"], self.name)
        return options

    def key(self, options: dict) -> tuple:
        """As :meth:`Method.key`, without ``fill_sigma`` unless the fill is a blur (it changes nothing else:
        the cache serves the map, and the panel hides its slider)."""
        if options.get("fill") != "blur" and "fill_sigma" in options:
            return super().key({**options, "fill_sigma": None})
        return super().key(options)

    # --- what each method defines -------------------------------------------
    def plan(self, ctx: RunContext) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def masks(self, ctx: RunContext, state: PassState, picks: np.ndarray):
        raise NotImplementedError

    def combine(self, ctx: RunContext, state: PassState, scores: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def accumulate(self, ctx: RunContext, state: PassState, picks: np.ndarray, masks, scores) -> None:
        """Called after each chunk with its masks and scores (RISE sums on the device here)."""

    def blocks(self, options: dict) -> int:
        """Runs of passes per image that each grow with the resumable count (Sobol: A, B and one per cell)."""
        return 1
    # --- the run ---------------------------------------------------------------
    def image_size(self, ctx: RunContext) -> tuple[int, int]:
        if ctx.spatial_size is None:
            raise SaliencyError(
                f"{self.label} needs images as input 0, (B, C, H, W) or (B, H, W, C); got shape "
                f"{ctx.host_inputs[0].shape}."
            )
        return ctx.spatial_size

    def start(self, ctx: RunContext, resume: SavedPasses | None = None) -> PassState:
        self.image_size(ctx)
        images, plan = self.plan(ctx)
        images = np.asarray(images, np.int64)
        state = PassState(images, ctx.ops.full((len(images),), np.nan), np.zeros(len(images), bool), plan)
        if resume is not None and self.resumable and resume.count <= ctx.options[self.resumable]:
            carried = self._carried(state, resume.count, ctx.options[self.resumable], self.blocks(ctx.options))
            state.scores = ctx.ops.put(state.scores, carried, ctx.ops.asarray(np.array(resume.scores)))
            state.ran[carried] = True
            for name in self.saved_sums:  # a copy on the device: the saved result is never written
                plan[name] = ctx.ops.asarray(np.array(resume.sums[name], copy=True))
        return state

    @staticmethod
    def _carried(state: PassState, old: int, new: int, blocks: int) -> np.ndarray:
        """Where each pass of a run with ``old`` samples per block sits in this run of ``new``: passes are
        image-major, then block-major; the first ``old`` draws of a block are the earlier run's."""
        starts = np.searchsorted(state.images, np.arange(int(state.images.max()) + 1))
        within = (np.arange(blocks)[:, None] * new + np.arange(old)[None, :]).reshape(-1)
        return (starts[:, None] + within[None, :]).reshape(-1)

    def saved_state(self, ctx: RunContext, state: PassState) -> SavedPasses | None:
        if not self.resumable or not state.ran.all():
            return None

        def frozen(tensor) -> np.ndarray:  # a host copy of its own (torch on a CPU shares the tensor's memory)
            value = np.array(ctx.ops.numpy(tensor), copy=True)
            value.setflags(write=False)
            return value

        return SavedPasses(None, int(ctx.options[self.resumable]), frozen(state.scores),
                           {name: frozen(state.plan[name]) for name in self.saved_sums})

    def passes_left(self, ctx: RunContext, state: PassState) -> int:
        return state.passes - state.done

    def stages(self, ctx: RunContext, state: PassState) -> Iterator[Stage]:
        if self.passes_left(ctx, state) > 0:
            todo = np.nonzero(~state.ran)[0]
            yield Stage(len(todo), lambda start, stop: self._run_chunk(ctx, state, todo[start:stop]),
                        cost=FORWARD_COST)

    def fill_tensor(self, ctx: RunContext):
        """The fill of every image, (B, ...) like input 0, or (1, ...) for a number (computed once)."""
        if "fill_tensor" not in ctx.cache:
            ops, x = ctx.ops, ctx.inputs[0]
            fill = ctx.options.get("fill", 0.0)
            spatial = (1, 2) if ctx.channels_last else (2, 3)
            if fill == "mean":
                value = ops.mean(x, axis=spatial, keepdims=True)
            elif fill == "blur":
                value = ops.blur(x, float(ctx.options.get("fill_sigma", 5.0)), ctx.channels_last)
            else:
                value = ops.full((1,) * len(x.shape), float(fill))
            ctx.cache["fill_tensor"] = value
        return ctx.cache["fill_tensor"]

    def perturbed(self, ctx: RunContext, images: np.ndarray, masks):
        """Input 0 of ``images`` with (n, H, W) ``masks`` applied, and the other inputs unchanged."""
        ops = ctx.ops
        one = images[0] if len(images) and (images == images[0]).all() else None
        # A chunk of one image's copies reads it broadcast from a slice (one allocation per chunk: the copies
        # themselves; the copies are never written, so a view of the input is safe).
        rows = images if one is None else np.array([one])
        x = ops.take(ctx.inputs[0], rows) if one is None else ctx.inputs[0][int(one):int(one) + 1]
        fill = self.fill_tensor(ctx)
        if int(fill.shape[0]) > 1:
            fill = ops.take(fill, rows)
        n, height, width = (int(d) for d in masks.shape)
        shape = (n, height, width, 1) if ctx.channels_last else (n, 1, height, width)
        keep = ops.reshape(masks, shape)
        multiply_into = getattr(ops, "multiply_into", None)  # optional, as ``fresh`` (torch, numpy)
        out = None if self.binary_masks or multiply_into is None else self.fresh_batch(ctx, (n,) + tuple(x.shape[1:]))
        if self.binary_masks:
            copies = ops.where(keep, x, ops.cast_like(fill, x))
        elif out is not None:  # written into a fresh batch: the same products, no new allocation
            zero, fill = ctx.options.get("fill", 0.0) == 0.0, ops.cast_like(fill, x)
            copies = multiply_into(x if zero else x - fill, ops.cast_like(keep, x), out)
            if not zero:
                copies += fill
        elif ctx.options.get("fill", 0.0) == 0.0:
            copies = x * ops.cast_like(keep, x)
        else:
            fill = ops.cast_like(fill, x)
            copies = fill + ops.cast_like(keep, x) * (x - fill)
        return [copies] + [ops.take(other, images) for other in ctx.inputs[1:]]

    @staticmethod
    def fresh_batch(ctx: RunContext, shape: tuple):
        """An uninitialised writable batch for a chunk's copies, from the run's pool of blocks no live tensor
        holds (``Ops.fresh``, with ``Ops.multiply_into``: torch, numpy), or None where the backend makes its own
        (TensorFlow)."""
        fresh = getattr(ctx.ops, "fresh", None)
        return None if fresh is None else fresh(shape, ctx.cache.setdefault("fresh batches", []))

    def copies(self, ctx: RunContext, state: PassState, picks: np.ndarray) -> tuple[list, Any]:
        """The model inputs of passes ``picks`` and their masks (what :meth:`accumulate` gets; None when a
        method builds its copies without masks)."""
        masks = self.masks(ctx, state, picks)
        return self.perturbed(ctx, state.images[picks], masks), masks

    def _run_chunk(self, ctx: RunContext, state: PassState, picks: np.ndarray) -> None:
        ops = ctx.ops
        images = state.images[picks]
        inputs, masks = self.copies(ctx, state, picks)
        scores = ctx.target_scores(ctx.backend.outputs(inputs), images)
        state.scores = ops.put(state.scores, picks, scores)
        self.accumulate(ctx, state, picks, masks, scores)
        state.ran[picks] = True

    def _maps(self, ctx: RunContext, state: PassState) -> MethodOutput:
        scores = ctx.ops.numpy(state.scores).astype(np.float64)
        maps = self.combine(ctx, state, scores)
        # A sampling method counts its samples per image (a resume's count); the others count passes.
        done = state.done // (ctx.batch * self.blocks(ctx.options)) if self.resumable else state.done
        return MethodOutput(ctx.ops.asarray(maps), done, dict(state.plan.get("extras", {})))

    def preview(self, ctx: RunContext, state: PassState) -> MethodOutput:
        return self._maps(ctx, state)

    def finish(self, ctx: RunContext, state: PassState) -> MethodOutput:
        return self._maps(ctx, state)


def forward_only_methods() -> list[str]:
    """Names of the registered methods that need only forward passes (any model can run them)."""
    from .base import all_methods

    return [m.name for m in all_methods() if m.reads == "outputs"]


__all__ = ["FILL", "FILL_SIGMA", "FORWARD_COST", "ForwardOnlyMethod", "PassState", "SavedPasses", "check_fill",
           "forward_only_methods"]
