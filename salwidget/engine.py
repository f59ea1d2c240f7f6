"""Running a method: one scheduler for gradient, layer and forward-only work.

:func:`attribute` checks the input once, opens a backend session (the model's
device and dtype are read then), computes the clean outputs and targets, and
hands the method a :class:`~salwidget.methods.RunContext`. The method yields
stages of passes; the scheduler runs each stage in even chunks (sized by
memory: ``batch_size='auto'``), checks ``cancel`` between chunks, and reports
progress with a preview whose maps stay on the device until someone reads them.
Resuming and caching use one key (:func:`result_key`): the method's own
result-changing options, the targets, the seed, the model's identity and
weights version, the output explained and the input bytes.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from . import chunk_tuner
from .attribution import Attribution
from .backends import get_backend
from .chunk_tuner import TUNER
from .errors import AttributionCancelled, SaliencyError
from .inputs import check_output, check_target_range, choose_output, prepare_inputs, prepare_target
from .methods import CLASSIC, MethodOutput, RunContext, get_method
from .randomness import Draws, check_rng

ProgressFn = Callable[[int, int, Attribution], None]

# Passes per chunk on a CPU for a 224x224x3 image; found by sweeping on a 2-core
# machine (benchmarks/run.py --only sweep): bigger chunks lose cache locality.
_CPU_ELEMENTS_PER_CHUNK = 8 * 3 * 224 * 224
# A first GPU chunk; later chunks are sized from the memory it took (see _fit_chunk).
_GPU_ELEMENTS_PER_CHUNK = 64 * 3 * 224 * 224
_GPU_MEMORY_SHARE, _GPU_MAX_CHUNK = 0.5, 1024

METHODS = CLASSIC


def auto_batch_size(device: str, inputs: Sequence[np.ndarray]) -> int:
    """Passes per chunk for ``batch_size='auto'`` before any measurement: sized by the input."""
    elements = sum(math.prod(x.shape[1:]) for x in inputs)
    on_gpu = not device.lower().startswith("cpu") and "CPU" not in device
    budget, cap = (_GPU_ELEMENTS_PER_CHUNK, 512) if on_gpu else (_CPU_ELEMENTS_PER_CHUNK, 64)
    return int(max(1, min(cap, round(budget / max(elements, 1)))))


@dataclass
class Request:
    """One computation, as :func:`attribute` received it (options already resolved)."""

    method: Any
    options: dict
    batch_size: int | str = "auto"
    seed: int | None = None
    rng: str = "device"
    layer: Any = None
    pairing: Any = None
    randomize: tuple = ()
    progress: ProgressFn | None = None
    cancel: Callable[[], bool] | None = None
    resume_from: Attribution | None = None
    fuse: bool = False  # the only output is explained: a single-pass method may read the clean outputs itself
    fuse_target: Any = None  # the user's target when fused (None: each image's prediction)


def attribute(
    model: Any,
    x: Any,
    method: str,
    *,
    target: Any = None,
    nsamples: int | None = None,
    stdev_spread: float | None = None,
    magnitude: bool | None = None,
    nintegration: int | None = None,
    baseline: Any = None,
    batch_size: int | str = "auto",
    seed: int | None = None,
    channels_last: bool | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    output_index: int | None = None,
    quadrature: str | None = None,
    framework: str | None = None,
    resume_from: Attribution | None = None,
    rng: str = "device",
    layer: Any = None,
    **options: Any,
) -> Attribution:
    """Compute a saliency map for each image of a batch.

    Parameters
    ----------
    model : torch.nn.Module, Keras model, tf.Module or TF callable
        Detected, not declared (``framework=`` for a plain function). Its raw
        output for the target class is differentiated; no softmax is added.
    x : array or tensor, or a tuple/list of them for a multi-input model
        A batch, (B, C, H, W) for torch or (B, H, W, C) for TensorFlow by
        default; ``channels_last`` says otherwise. Float, finite.
    method : str
        A registered method: ``'vanilla'``, ``'smoothgrad'``, ``'integrated'``,
        ``'smooth_integrated'``, ``'gradient_x_input'``, ``'vargrad'`` and the
        others listed by ``salwidget.methods.all_methods()``.
    target : None, int or sequence of int
        Class to explain. None takes the argmax of the clean input, once, and
        holds it fixed for every noisy or interpolated sample.
    nsamples : int, default 25
        SmoothGrad noise samples (the first is the clean input), or the path
        steps of ``'integrated'``.
    stdev_spread : float, default 0.15
        Noise sigma as a fraction of each image's own ``max - min``.
    magnitude : bool, default True
        SmoothGrad averages squared maps (the seed's default).
    nintegration : int, optional
        Path steps of each SmoothGrad+IG sample (default 10); for
        ``'integrated'`` it overrides ``nsamples``.
    baseline : 'uniform', 'blur', float or array, default 'uniform'
        IG path start: a random uniform image in each image's [min, max]
        (drawn anew for every SmoothGrad+IG sample), a blurred copy of the
        input, a constant (0.0 is black in the model's input space) or an array.
    batch_size : 'auto' or int
        Passes per chunk through the model. Results do not depend on it.
        'auto' sizes chunks by the input on a CPU and by free memory on a GPU.
    seed : int, optional
        Same seed, same result (for any chunk size, in the same framework on
        the same kind of device). None draws one; it is recorded in
        ``Attribution.seed``.
    channels_last : bool, optional
        Layout of ``x``; the input goes to the model as given.
    progress : callable(done, total, partial), optional
        Called after each chunk with the passes done so far and a partial
        :class:`Attribution`; its ``raw`` is fetched from the device when read.
    cancel : callable() -> bool, optional
        Checked between chunks; True raises :class:`AttributionCancelled`.
    output_index : int, optional
        Which output to explain when the model returns several.
    quadrature : {'riemann', 'trapezoid'}
        IG path weights: the seed's equal weights, or trapezoid.
    framework : {'torch', 'tensorflow'}, optional
        Only for callables that cannot be detected.
    resume_from : Attribution, optional
        An earlier complete result of the same call with fewer noise samples:
        only the missing samples are computed (SmoothGrad, VarGrad,
        SmoothGrad+IG). Anything else (another model, other weights, other
        options or images) starts afresh.
    rng : {'device', 'numpy'}
        Where noise and random baselines are drawn: on the model's device
        (fast), or on the host (the same numbers in torch and TensorFlow).
    layer : str or layer object, optional
        The layer a CAM method reads (None: picked automatically).
    **options
        Options of other methods (see each method's ``options``), e.g.
        ``references=`` for ``'expected_gradients'``.

    Returns
    -------
    Attribution
    """
    started = time.perf_counter()
    backend = get_backend(model, framework)
    chosen = get_method(method)
    given = {k: v for k, v in dict(
        nsamples=nsamples, stdev_spread=stdev_spread, magnitude=magnitude, nintegration=nintegration,
        baseline=baseline, quadrature=quadrature,
    ).items() if v is not None}
    resolved = chosen.resolve({**given, **options})
    inputs, layout, several = prepare_inputs(x, channels_last, backend.default_channels_last)
    request = Request(chosen, resolved, batch_size, seed, rng, layer, None, (), progress, cancel, resume_from,
                      fuse=output_index is None, fuse_target=target)

    def pick_targets(clean: list[np.ndarray]) -> dict[int, Any]:
        return {choose_output(clean, output_index): target}

    return run(backend, inputs, layout, several, request, pick_targets, started)


def run(backend, inputs: list[np.ndarray], layout: bool, several: bool, request: Request,
        pick_targets: Callable[[list[np.ndarray]], dict[int, Any]], started: float | None = None) -> Attribution:
    """Run ``request`` on checked inputs; ``pick_targets(clean outputs)`` maps each
    output index to explain to its user target (or None). Scores and the
    targets reported are those of the first output picked."""
    started = time.perf_counter() if started is None else started
    method = request.method
    targets_np: dict[int, np.ndarray] = {}
    chunk = _check_batch_size(request.batch_size, backend, inputs)
    seed = int(np.random.SeedSequence().entropy % 2**32) if request.seed is None else int(request.seed)
    rng = check_rng(request.rng)

    # A single-pass method explaining the prediction reads the clean outputs from its own pass.
    fused = request.fuse and method.single_pass(request.options)
    with backend.session(randomize=request.randomize, seed=seed, variant=method.variant(request.options)):
        ops = backend.ops
        device_inputs = [ops.asarray(x) for x in inputs]
        if fused:  # targets None: each row's argmax, taken in the pass; given ones: range-checked after the first
            clean_pass, out_index, scores = CleanPass(len(inputs[0]), request.fuse_target is not None), 0, None
            if request.fuse_target is None:
                targets = {0: None}
            else:
                targets_np = {0: prepare_target(request.fuse_target, len(inputs[0]), None, None)}
                targets = {0: ops.asarray(targets_np[0], "int")}
        else:
            clean_pass = None
            clean = [ops.numpy(o).astype(np.float32, copy=False) for o in _forward_in_chunks(backend, device_inputs, chunk)]
            for index, user_target in pick_targets(clean).items():
                check_output(clean[index], index, len(inputs[0]))
                out = clean[index]
                targets_np[index] = prepare_target(user_target, len(out), out.shape[1], out.argmax(axis=1))
            out_index = next(iter(targets_np))
            targets, scores = {o: ops.asarray(t, "int") for o, t in targets_np.items()}, clean[out_index]
        ctx = RunContext(
            backend=backend, ops=ops, inputs=device_inputs, host_inputs=inputs, channels_last=layout,
            targets=targets, targets_np=targets_np, output_index=out_index, scores=scores,
            options=request.options, seed=seed, draws=Draws(ops, [x.shape for x in inputs], seed, rng, layout),
            pairing=request.pairing, chunk=chunk, clean=clean_pass,
            low=[ops.row_min(x) for x in device_inputs], high=[ops.row_max(x) for x in device_inputs],
        )
        if method.reads == "layer":
            ctx.layer = method.pick_layer(ctx, request.layer)

        def key() -> str:
            return result_key(method, request.options, ctx.targets_np, seed, rng, out_index, request.pairing,
                              ctx.layer, backend, inputs, request.randomize)

        # The key is made only when needed (a resume to check, a resumable result to label): it reads
        # the weights' version and hashes the input.
        state = method.start(ctx, None if fused else _resumable(request.resume_from, key))
        total = method.passes_left(ctx, state)

        def make_result(output: MethodOutput, done: int, complete: bool) -> Attribution:
            if fused:
                clean_pass.publish(ctx)
            return _result(method, ctx, output, several, backend, started, seed, done, max(total, done),
                           complete, key if complete else None, state if complete else None)

        def report(done: int) -> None:
            if request.progress is not None:  # the preview's maps are reduced on the device, fetched if read
                request.progress(done, max(total, done), make_result(method.preview(ctx, state), done, False))

        done = _schedule(method.stages(ctx, state), ctx, backend, request, report)
        result = make_result(method.finish(ctx, state), done, True)
    return result


class CleanPass:
    """The clean outputs of a single-pass method, gathered from its own passes.

    Its passes explain each row's argmax (targets None) or the given targets
    (``given``: their range is checked against the first chunk's outputs; the
    backends clamp targets in a pass, so an out-of-range one fails here, with
    the clean forward's message, never inside the model's gather). This keeps
    the rows' outputs on the device and, when a result is made, publishes the
    scores (and the predicted targets) to the context as the clean forward would.
    """

    def __init__(self, batch: int, given: bool = False):
        self.batch, self.given, self.parts, self.count = batch, given, [], None

    def record(self, ctx: RunContext, outputs, images: np.ndarray) -> None:
        if self.count is None:  # the first chunk: what the clean forward would have checked
            self.count = len(outputs)
            choose_output(outputs, None)
            check_output(outputs[0], 0, len(images))
            if self.given:
                check_target_range(ctx.targets_np[0], int(outputs[0].shape[1]))
        self.parts.append((np.asarray(images), outputs[0]))

    def publish(self, ctx: RunContext) -> None:
        if not self.parts:
            return
        scores = None
        for images, rows in self.parts:
            values = ctx.ops.numpy(rows).astype(np.float32, copy=False)
            if scores is None:
                scores = np.zeros((self.batch, values.shape[1]), np.float32)
            scores[images] = values
        ctx.scores = scores
        if not self.given:
            ctx.targets_np = {0: scores.argmax(axis=1)}


def _schedule(stages, ctx: RunContext, backend, request: Request, report: Callable[[int], None]) -> int:
    """Run each stage's passes in even chunks; cancel between chunks; report after each.

    With ``batch_size='auto'`` the first chunk on a GPU is measured and sizes the
    rest to the free memory (a cap); after it, each stage's chunks follow the
    :mod:`~salwidget.chunk_tuner`, which times the first chunks of a kind of work
    at a few sizes and keeps the fastest (results do not depend on the size).
    """
    done = 0
    auto = measure = request.batch_size == "auto"
    capped = False  # the free memory bounds the chunk (ctx.chunk, in full passes)
    for stage in stages:
        start, plan = 0, None
        work = _work_key(ctx, backend, request, stage) if auto else None
        while start < stage.passes:
            if request.cancel is not None and request.cancel():
                raise AttributionCancelled("Attribution cancelled by the caller.")
            remaining = stage.passes - start
            timed = False
            # 'auto' fits more cheap (forward-only) passes in a chunk; a given batch_size is a hard cap.
            per_chunk = max(1, int(round(ctx.chunk / stage.cost))) if auto else ctx.chunk
            if auto and measure:  # a size tuned by an earlier run serves the first chunk too
                per_chunk = TUNER.chosen(backend, work) or per_chunk
            elif auto:
                if plan is None:
                    plan = TUNER.tuning(backend, work, per_chunk, per_chunk if capped else None)
                per_chunk, timed = plan.propose(remaining)
            # Even chunks: 50 passes at 8 per chunk run as 7 chunks of 7 or 8, not 6 x 8 + 2 (a timed
            # chunk runs at its size); rounded down to whole blocks of ``align`` passes when that keeps
            # most of the chunk.
            size = min(per_chunk, remaining) if timed else -(-remaining // -(-remaining // per_chunk))
            if stage.align > 1 and size // stage.align * stage.align >= 0.75 * size:
                size = size // stage.align * stage.align
            stop = min(stage.passes, start + size)
            if measure:
                fitted = backend.fit_chunk(lambda: stage.run(start, stop), stop - start)
                if fitted is not None:
                    fitted = max(1, int(fitted * stage.cost))
                    # whole blocks (e.g. one pass per image) rather than a few passes more
                    ctx.chunk = fitted // stage.align * stage.align if fitted >= stage.align else fitted
                    capped = True
                measure = False
            elif timed:
                began = chunk_tuner.clock()
                stage.run(start, stop)
                getattr(backend, "synchronize", _nothing)()
                plan.record(per_chunk, stop - start, chunk_tuner.clock() - began)
            else:
                stage.run(start, stop)
            done += stop - start
            start = stop
            report(done)
    return done


def _work_key(ctx: RunContext, backend, request: Request, stage) -> tuple:
    """What a tuned chunk size is remembered under (with the backend: the model): the per-image input
    shapes, the device and dtype, and the kind of work."""
    work = "forward" if stage.cost < 1 else request.method.reads
    shapes = tuple(tuple(x.shape[1:]) for x in ctx.host_inputs)
    return (shapes, str(backend.device), str(getattr(ctx.ops, "dtype", "")), work)


def _nothing() -> None:
    return None


def result_key(method, options, targets, seed, rng, output_index, pairing, layer, backend, inputs, randomize) -> str:
    """The one key behind resuming and caching (see the module docstring)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((method.key(options), seed, rng, output_index, pairing, layer, tuple(randomize),
                        backend.identity())).encode())
    for o, t in targets.items():
        digest.update(f"target{o}".encode())
        digest.update(memoryview(np.ascontiguousarray(t)))
    digest.update(input_digest(inputs))
    return digest.hexdigest()


def input_digest(inputs: Sequence[np.ndarray]) -> bytes:
    """A digest of the inputs' shapes and bytes, read now: an array changed in place gets another.

    SHA-256 (about twice BLAKE2b's speed on x86 with its SHA instructions): the
    input's bytes are the one part of the key that grows with the batch.
    """
    digest = hashlib.sha256()
    for x in inputs:
        digest.update(f"{x.shape}{x.dtype}".encode())
        digest.update(memoryview(np.ascontiguousarray(x)).cast("B"))
    return digest.digest()


def predict(
    model: Any,
    x: Any,
    *,
    channels_last: bool | None = None,
    output_index: int | None = None,
    batch_size: int | str = "auto",
    framework: str | None = None,
) -> np.ndarray:
    """The model's scores (B, num_classes) on ``x`` as numpy, in inference mode.

    Takes the same inputs as :func:`attribute` and checks them the same way.
    """
    backend = get_backend(model, framework)
    inputs, _, _ = prepare_inputs(x, channels_last, backend.default_channels_last)
    with backend.session():
        device_inputs = [backend.ops.asarray(x) for x in inputs]
        outputs = [backend.ops.numpy(o).astype(np.float32, copy=False) for o in
                   _forward_in_chunks(backend, device_inputs, _check_batch_size(batch_size, backend, inputs))]
    index = choose_output(outputs, output_index)
    check_output(outputs[index], index, len(inputs[0]))
    return outputs[index]


def _check_batch_size(batch_size, backend, inputs) -> int:
    if batch_size == "auto":
        return auto_batch_size(backend.device, inputs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise SaliencyError(f"batch_size must be 'auto' or an integer >= 1; got {batch_size!r}.")
    return int(batch_size)


def _forward_in_chunks(backend, inputs, chunk) -> list:
    ops = backend.ops
    batch = int(inputs[0].shape[0])
    parts = [backend.outputs([x[s : s + chunk] for x in inputs]) for s in range(0, batch, chunk)]
    return [ops.concat([p[o] for p in parts]) for o in range(len(parts[0]))]


def _resumable(previous: Attribution | None, key: Callable[[], str]):
    state = getattr(previous, "_state", None)
    if state is None or not previous.complete or getattr(state, "key", None) != key():
        return None
    return state


def _result(method, ctx: RunContext, output: MethodOutput, several: bool, backend, started, seed,
            done, total, complete, key: Callable[[], str] | None, state) -> Attribution:
    options = ctx.options
    raw_tensors = output.raw

    def to_numpy():
        if method.output == "input":
            arrays = [ctx.ops.numpy(t).astype(np.float32, copy=False) for t in raw_tensors]
            return tuple(arrays) if several else arrays[0]
        return ctx.ops.numpy(raw_tensors).astype(np.float32, copy=False)

    saved = method.saved_state(ctx, state) if complete else None
    if saved is not None:
        saved.key = key()
    baseline = options.get("baseline")
    return Attribution(
        raw=to_numpy() if complete else None,
        _fetch=None if complete else to_numpy,
        target=ctx.targets_np[ctx.output_index],
        scores=ctx.scores,
        delta=output.extras.get("delta"),
        method=method.name,
        label=method.label,
        signed=method.is_signed(options),
        kind=method.output,
        layer=ctx.layer,
        options=dict(options),
        nsamples=output.samples,
        nintegration=options.get("nintegration"),
        seconds=time.perf_counter() - started,
        seed=seed,
        stdev_spread=options.get("stdev_spread"),
        magnitude=options.get("magnitude"),
        baseline=None if baseline is None else (baseline if isinstance(baseline, str) else type(baseline).__name__),
        channels_last=ctx.channels_last,
        framework=backend.framework,
        device=backend.device,
        batch_size=ctx.chunk,
        passes_done=done,
        passes_total=total,
        complete=complete,
        targets=tuple(ctx.targets_np.values()),
        input_size=ctx.spatial_size,
        output_index=ctx.output_index,
        extras={k: v for k, v in output.extras.items() if k != "delta"},
        _state=saved,
    )


__all__ = ["METHODS", "Request", "attribute", "auto_batch_size", "input_digest", "predict", "result_key", "run"]
