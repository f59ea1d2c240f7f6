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
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from .attribution import Attribution
from .backends import get_backend
from .errors import AttributionCancelled, SaliencyError
from .inputs import check_output, check_seed, prepare_inputs
from .methods import MethodOutput, RunContext, get_method, layer_methods
from .digests import bytes_digest
from .finite import FiniteWatch, NonFiniteError, check_maps, check_outputs
from .outputs import choose_output, is_multilabel, output_selector
from .randomness import Draws, check_rng
from .targets import Class, as_target, bind, is_plain

ProgressFn = Callable[[int, int, Attribution], None]

# Passes per chunk on a CPU for a 224x224x3 image; found by sweeping on a 2-core
# machine (benchmarks/run.py --only sweep): bigger chunks lose cache locality.
_CPU_ELEMENTS_PER_CHUNK = 8 * 3 * 224 * 224
# A first GPU chunk; later chunks are sized from the memory it took (see _fit_chunk).
_GPU_ELEMENTS_PER_CHUNK = 64 * 3 * 224 * 224
_GPU_MEMORY_SHARE, _GPU_MAX_CHUNK = 0.5, 1024



def auto_batch_size(device: str, inputs: Sequence[np.ndarray]) -> int:
    """Passes per chunk for ``batch_size='auto'`` before any measurement: sized by the input."""
    elements = sum(int(np.prod(x.shape[1:])) for x in inputs)
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
    image_ids: Any = None  # ids that key each image's random draws (dataset indices), else its row
    multilabel: bool | None = None  # the explained head's labels are independent sigmoids (None: detect)


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
    image_ids: Any = None,
    output: int | str | None = None,
    multilabel: bool | None = None,
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
    target : None, int, sequence of int, a ``sw.targets`` target or a callable
        What to explain. None takes each image's predicted class (argmax of the
        clean output), once, and holds it fixed for every noisy or interpolated
        sample; an int (or one per image) a class's raw score. ``sw.targets``
        also has ``Class(k, score='softmax' | 'sigmoid')``, ``Region(k, mask)``
        (a region of a dense output), ``Output(i)`` (a regression head),
        ``Similarity(reference)`` (an embedding); a callable ``f(output) -> (B,)``
        written in the model's framework is any score (see :mod:`salwidget.targets`).
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
        Which output to explain when the model returns several (the same as ``output=`` with an int).
    quadrature : {'riemann', 'trapezoid'}
        IG path weights: the seed's equal weights, or trapezoid.
    framework : {'torch', 'tensorflow', 'numpy'}, optional
        Only for callables that cannot be detected. ``'numpy'``: any function ``f(numpy batch) -> numpy
        scores`` (the batch in the layout ``channels_last`` declares, channels first by default); it runs
        the forward-only methods (occlusion, rise, sobol, lime, kernel_shap, feature_ablation). An
        ``onnxruntime.InferenceSession`` is detected as one.
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
    image_ids : sequence of int, optional
        One id per image (e.g. its dataset index) that keys its random draws (noise, random baselines,
        positions) instead of its row in the batch: the same image gets the same numbers in any batch, so
        a dataset computed in other blocks or on other workers gives the same maps.
    output : int or str, optional
        Which output to explain when the model returns several: its position,
        or its name (a dict key, a Hugging Face output field such as
        ``'logits'``, a Keras output layer's name). Errors list every output's
        name and shape.
    multilabel : bool, optional
        Whether the explained (B, K) head's labels are independent sigmoids
        (None: detected where unambiguous, see
        :func:`salwidget.outputs.is_multilabel`). It changes no map ("predicted"
        is each image's top label either way): ``Attribution.probabilities``
        are then sigmoids, and the evaluation scores sigmoids.
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
    selected = output_selector(output, output_index)
    request = Request(chosen, resolved, batch_size, seed, rng, layer, None, (), progress, cancel, resume_from,
                      fuse=selected is None, fuse_target=as_target(target), multilabel=multilabel,
                      image_ids=image_ids)

    def pick_targets(clean: list[np.ndarray], names: list | None = None) -> dict[int, Any]:
        return {choose_output(clean, selected, names): request.fuse_target}

    return run(backend, inputs, layout, several, request, pick_targets, started)


def run(backend, inputs: list[np.ndarray], layout: bool, several: bool, request: Request,
        pick_targets: Callable[[list[np.ndarray]], dict[int, Any]], started: float | None = None,
        watch_everything: bool = False) -> Attribution:
    """Run ``request`` on checked inputs; ``pick_targets(clean outputs, their names)`` maps
    each output index to explain to its user target (None, classes, a
    :class:`~salwidget.targets.Target` or a callable). Scores and the targets
    reported are those of the first output picked."""
    started = time.perf_counter() if started is None else started
    method = request.method
    if method.reads != "outputs" and not getattr(backend, "differentiable", True):
        from .backends.numpy_backend import forward_only_refusal

        raise forward_only_refusal(method.name)
    targets_np: dict[int, np.ndarray] = {}
    chunk = _check_batch_size(request.batch_size, backend, inputs)
    seed = int(np.random.SeedSequence().entropy % 2**32) if request.seed is None else check_seed(request.seed)
    if request.layer is not None and method.reads != "layer":
        raise SaliencyError(f"layer= is read only by the methods that read a layer ({', '.join(layer_methods())}); "
                            f"{method.name!r} reads input gradients. Leave layer= out, or choose one of those.")
    rng = check_rng(request.rng)

    # A single-pass method explaining raw class scores (predicted or given) reads the clean outputs from its
    # own pass. Other targets take the clean forward first: their checks (a mask's size, an index's range, a
    # reference's length) need the output's shape before any pass computes their score.
    batch = len(inputs[0])
    fused = request.fuse and method.single_pass(request.options) and is_plain(request.fuse_target)
    explained: dict[int, Any] = {}
    with backend.session(randomize=request.randomize, seed=seed, variant=method.variant(request.options)):
        ops = backend.ops
        device_inputs = [ops.asarray(x) for x in inputs]
        if fused:  # targets None: each row's argmax, taken in the pass; given ones: range-checked after the first
            given = as_target(request.fuse_target).k is not None
            clean_pass, out_index, scores = CleanPass(batch, given), 0, None
            if not given:
                targets = {0: None}
            else:
                explained = {0: bind(request.fuse_target, batch)}
                targets_np = {0: explained[0].labels}
                targets = {0: explained[0].on_device(ops)}
        else:
            clean_pass = None
            clean = [ops.numpy(o).astype(np.float32, copy=False) for o in _forward_in_chunks(backend, device_inputs, chunk)]
            for index, user_target in pick_targets(clean, backend.output_names).items():
                explained[index] = bind(user_target, batch, output=clean[index], channels_last=layout, index=index)
                targets_np[index] = explained[index].labels
            out_index = next(iter(targets_np))
            for index in explained:  # before any pass: a non-finite score has no map
                check_outputs(clean[index], method.label)
            targets, scores = {o: b.on_device(ops) for o, b in explained.items()}, clean[out_index]
        ctx = RunContext(
            backend=backend, ops=ops, inputs=device_inputs, host_inputs=inputs, channels_last=layout,
            targets=targets, targets_np=targets_np, output_index=out_index, scores=scores,
            options=request.options, seed=seed,
            draws=Draws(ops, [x.shape for x in inputs], seed, rng, layout, request.image_ids),
            pairing=request.pairing, chunk=chunk, clean=clean_pass,
            explained=explained, finite=FiniteWatch(ops, defer=not watch_everything),
        )
        output_name = _name_of(backend.output_names, out_index)
        if method.reads == "layer":
            ctx.layer = method.pick_layer(ctx, request.layer)

        def key() -> str | None:
            return result_key(method, request.options, ctx.explained, seed, rng, out_index, request.pairing,
                              ctx.layer, backend, inputs,
                              (*request.randomize, None if request.image_ids is None else tuple(request.image_ids)))

        state = method.start(ctx, None if fused else _resumable(request.resume_from, key))
        total = method.passes_left(ctx, state)

        def make_result(output: MethodOutput, done: int, complete: bool) -> Attribution:
            if fused:
                clean_pass.publish(ctx)
            return _result(method, ctx, output, several, backend, started, seed, done, max(total, done),
                           complete, key if complete else None, state if complete else None,
                           output_name, request.multilabel, checked)

        def checked() -> None:  # the run's finiteness flags, read once (at the end, or when a preview is read)
            if fused:
                clean_pass.publish(ctx)
                check_outputs(ctx.scores, method.label)
            ctx.finite.check(method.label, lambda where: method.nonfinite_advice(ctx.options, where))

        def report(done: int) -> None:
            if request.progress is not None:  # the preview's maps are reduced on the device, fetched if read
                request.progress(done, max(total, done), make_result(method.preview(ctx, state), done, False))

        done = _schedule(method.stages(ctx, state), ctx, backend, request, report,
                         _tuner(backend, request, inputs, method, ctx))
        checked()
        try:
            return make_result(method.finish(ctx, state), done, True)
        except NonFiniteError as unnamed:
            if not ctx.finite.deferred:
                raise
            found = unnamed
    # A map is not finite and some gradients went unwatched (see FiniteWatch.defer): the same run again, every
    # tensor watched, names the first pass at fault; if none is (a sum that overflowed), the map's error stands.
    # The seed is the one drawn above, so the passes are the same.
    again = replace(request, seed=seed, progress=None, resume_from=None)
    run(backend, inputs, layout, several, again, pick_targets, watch_everything=True)
    raise found


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
            choose_output(outputs, None, ctx.backend.output_names)
            check_output(outputs[0], 0, len(images))
            if self.given:
                ctx.explained[0].check(tuple(outputs[0].shape), 0, len(images))
        self.parts.append((np.asarray(images), outputs[0]))

    def publish(self, ctx: RunContext) -> None:
        if not self.parts or getattr(self, "_published", None) == len(self.parts):
            return  # nothing new since the last publish: no second read from the device
        self._published = len(self.parts)
        scores = None
        for images, rows in self.parts:
            values = ctx.ops.numpy(rows).astype(np.float32, copy=False)
            if scores is None:
                scores = np.zeros((self.batch, values.shape[1]), np.float32)
            scores[images] = values
        ctx.scores = scores
        if not self.given:
            ctx.targets_np = {0: scores.argmax(axis=1)}
            ctx.explained = {0: Class(ctx.targets_np[0]).bind(self.batch)}


def _tuner(backend, request: Request, inputs: list[np.ndarray], method, ctx: RunContext):
    """A :class:`~salwidget.chunk_tuning.Tuner` for an 'auto' run on a CPU whose best chunk is not known yet
    (a remembered one is used at once); None otherwise (a given batch_size, a GPU)."""
    from . import chunk_tuning as tuning

    device = str(backend.device)
    on_cpu = device.lower().startswith("cpu") or "CPU" in device
    model = getattr(backend, "model", None)
    if request.batch_size != "auto" or not on_cpu or model is None:
        return None
    key = (tuple(tuple(x.shape[1:]) for x in inputs), device, method.reads)
    best = tuning.remembered(model, key)
    if best is not None:
        ctx.chunk = best
        return None
    return tuning.tuner_for(model, key, ctx.chunk)


def _schedule(stages, ctx: RunContext, backend, request: Request, report: Callable[[int], None],
              tuner=None) -> int:
    """Run each stage's passes in even chunks; cancel between chunks; report after each.

    With ``batch_size='auto'`` on a GPU the first chunk is measured and later
    chunks are sized to the free memory; on a CPU the first chunks try a few
    sizes (``tuner``, :mod:`salwidget.chunk_tuning`). Results do not depend on the size.
    """
    from . import chunk_tuning as tuning

    done = 0
    auto = measure = request.batch_size == "auto"
    for stage in stages:
        start = 0
        while start < stage.passes:
            if request.cancel is not None and request.cancel():
                raise AttributionCancelled("Attribution cancelled by the caller.")
            remaining = stage.passes - start
            if tuner is not None and tuner.tuning:  # a size to try, on real work
                tried = tuner.size()
                size = min(remaining, max(1, int(round(tried / stage.cost))))
                began, drawn = tuning.clock(), ctx.draws.block_seconds
                stage.run(start, start + size)
                # A noise block drawn in this chunk serves later ones too: left out, or small chunks (which
                # draw in fewer of their chunks) would look cheaper than they are
                tuner.done(tried, size * stage.cost, tuning.clock() - began - (ctx.draws.block_seconds - drawn))
                if not tuner.tuning:
                    ctx.chunk = tuner.best
                done += size
                start += size
                report(done)
                continue
            # 'auto' fits more cheap (forward-only) passes in a chunk; a given batch_size is a hard cap.
            per_chunk = max(1, int(round(ctx.chunk / stage.cost))) if auto else ctx.chunk
            # Even chunks: 50 passes at 8 per chunk run as 7 chunks of 7 or 8, not 6 x 8 + 2;
            # rounded down to whole blocks of ``align`` passes when that keeps most of the chunk.
            size = -(-remaining // -(-remaining // per_chunk))
            if stage.align > 1 and size // stage.align * stage.align >= 0.75 * size:
                size = size // stage.align * stage.align
            on_grid = _grid_stop(start, stage.passes, per_chunk, stage.grid)
            stop = min(stage.passes, start + size) if on_grid is None else on_grid
            if measure and tuner is None:
                fitted = backend.fit_chunk(lambda: stage.run(start, stop), stop - start)
                if fitted is not None:
                    fitted = max(1, int(fitted * stage.cost))
                    # whole blocks (e.g. one pass per image) rather than a few passes more
                    ctx.chunk = fitted // stage.align * stage.align if fitted >= stage.align else fitted
                measure = False
            else:
                stage.run(start, stop)
            done += stop - start
            start = stop
            report(done)
    return done


def _grid_stop(start: int, end: int, per_chunk: int, grid: tuple[int, int] | None) -> int | None:
    """The stop of a chunk from ``start`` that ends on the grid ``offset + k * size`` (and so do the chunks
    after it, ``size``-multiples of at most ``per_chunk`` passes each), when that schedule takes no more
    chunks than even ones; None otherwise (no grid, blocks larger than a chunk, or more chunks)."""
    if grid is None:
        return None
    offset, size = grid
    per = per_chunk // size * size
    if per == 0:
        return None
    if end - start <= per_chunk:
        return end
    first = offset if start < offset else offset + ((start - offset) // size + 1) * size
    if first - start > per_chunk:
        return None
    stop = first + (start + per_chunk - first) // size * size
    if stop >= end:
        return end
    if 1 + -(-(end - stop) // per) > -(-(end - start) // per_chunk):
        return None
    return stop


def result_key(method, options, targets, seed, rng, output_index, pairing, layer, backend, inputs,
               randomize) -> str | None:
    """The one key behind resuming and caching (see the module docstring); None when a target cannot be
    keyed (a function): such a result is never resumed from."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((method.key(options), seed, rng, output_index, pairing, layer, tuple(randomize),
                        backend.identity())).encode())
    for o, t in targets.items():  # bound targets (salwidget.targets.Bound) or arrays of classes
        digest.update(f"target{o}".encode())
        if isinstance(t, np.ndarray):
            digest.update(memoryview(np.ascontiguousarray(t)))
        elif t.key is None:
            return None
        else:
            digest.update(t.key)
    for x in inputs:
        digest.update(str(x.shape).encode())
        # The input's bytes through XXH3 (memory speed), not blake2b (0.4 GB/s here): a change detector
        # is what a resume needs, and this runs on every resumable call.
        digest.update(bytes_digest(np.ascontiguousarray(x)).encode())
    return digest.hexdigest()


def predict(
    model: Any,
    x: Any,
    *,
    channels_last: bool | None = None,
    output_index: int | None = None,
    batch_size: int | str = "auto",
    framework: str | None = None,
    output: int | str | None = None,
) -> np.ndarray:
    """The model's chosen output on ``x`` as numpy, in inference mode.

    Takes the same inputs as :func:`attribute` and checks them the same way.
    ``output=`` (a position or a name) picks one of several outputs. Class
    scores are (B, num_classes); a dense output (B, K, H, W) (Keras:
    (B, H, W, K)), a regression head or an embedding come back in their own
    shape (see :mod:`salwidget.outputs` for what to read from them).
    """
    backend = get_backend(model, framework)
    inputs, _, _ = prepare_inputs(x, channels_last, backend.default_channels_last)
    with backend.session():
        device_inputs = [backend.ops.asarray(x) for x in inputs]
        outputs = [backend.ops.numpy(o).astype(np.float32, copy=False) for o in
                   _forward_in_chunks(backend, device_inputs, _check_batch_size(batch_size, backend, inputs))]
        names = backend.output_names
    index = choose_output(outputs, output_selector(output, output_index), names)
    if len(outputs[index].shape) == 0 or outputs[index].shape[0] != len(inputs[0]):
        raise SaliencyError(
            f"Model output {index} has shape {tuple(outputs[index].shape)}; its first axis must be the batch "
            f"({len(inputs[0])} images)."
        )
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


def _name_of(names: list | None, index: int) -> str | None:
    return names[index] if names is not None and index < len(names) else None


def _resumable(previous: Attribution | None, key: Callable[[], str | None]):
    state = getattr(previous, "_state", None)
    if state is None or not previous.complete:
        return None
    current = key()  # None: a target that cannot be keyed (a function) is never resumed
    if current is None or getattr(state, "key", None) != current:
        return None
    return state


def _result(method, ctx: RunContext, output: MethodOutput, several: bool, backend, started, seed,
            done, total, complete, key, state, output_name=None, multilabel=None, checked=None) -> Attribution:
    options = ctx.options
    raw_tensors = output.raw

    def to_numpy():
        if not complete and checked is not None:  # a preview read: the flags so far (the end checks them all)
            checked()
        if method.output == "input":
            arrays = [ctx.ops.numpy(t).astype(np.float32, copy=False) for t in raw_tensors]
            maps = tuple(arrays) if several else arrays[0]
        else:
            maps = ctx.ops.numpy(raw_tensors).astype(np.float32, copy=False)
        check_maps(maps, method.label)  # the last guard, for passes no flag watched
        return maps

    saved = method.saved_state(ctx, state) if complete else None
    if saved is not None:  # only a resumable result needs its key (hashing the input is not free)
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
        output_name=output_name,
        explained=_explained(ctx),
        multilabel=_multilabel(ctx.scores, multilabel),
        extras={k: v for k, v in output.extras.items() if k != "delta"},
        _state=saved,
    )


def _explained(ctx: RunContext):
    bound = ctx.explained.get(ctx.output_index)
    return None if bound is None else bound.target


def _multilabel(scores, given: bool | None) -> bool:
    if scores is None or np.ndim(scores) != 2:
        return False
    return is_multilabel(scores) if given is None else bool(given)


__all__ = ["Request", "attribute", "auto_batch_size", "predict", "result_key", "run"]
