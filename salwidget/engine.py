"""Running a method: chunking samples through the model, accumulating, reporting.

The work of one call is a list of passes (image, group, step). They are sent
through the model in chunks of ``batch_size`` passes, group by group with all
images side by side, so that every chunk refines every image (good previews),
memory is bounded by the chunk (not by ``nsamples``), and a cancel request is
honoured between chunks. Noise and random baselines are drawn with numpy from
a seed per (input, image, group): the result does not depend on the chunk size,
the device or the framework.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .attribution import Attribution
from .backends import get_backend
from .errors import AttributionCancelled, SaliencyError
from .inputs import check_output, choose_output, prepare_baselines, prepare_inputs, prepare_target
from .methods import METHODS, Plan, make_plan

ProgressFn = Callable[[int, int, Attribution], None]

_NOISE_STREAM, _BASELINE_STREAM = 1, 2
# Passes per chunk on a CPU for a 224x224x3 image; found by sweeping on a 2-core
# machine (benchmarks/chunk_sweep.py): bigger chunks lose cache locality.
_CPU_ELEMENTS_PER_CHUNK = 8 * 3 * 224 * 224
_GPU_ELEMENTS_PER_CHUNK = 64 * 3 * 224 * 224


def auto_batch_size(device: str, inputs: Sequence[np.ndarray]) -> int:
    """Passes per chunk for ``batch_size='auto'``: sized by the input, capped for memory."""
    elements = sum(int(np.prod(x.shape[1:])) for x in inputs)
    on_gpu = not device.lower().startswith("cpu") and "CPU" not in device
    budget, cap = (_GPU_ELEMENTS_PER_CHUNK, 512) if on_gpu else (_CPU_ELEMENTS_PER_CHUNK, 64)
    return int(max(1, min(cap, round(budget / max(elements, 1)))))


def _fingerprint(arrays: Sequence[Any]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if isinstance(a, str):
            digest.update(a.encode())
        else:
            digest.update(str(a.shape).encode())
            digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


@dataclass
class _Group:
    """One open group: running weighted gradient sums and its path ends."""

    start: list[np.ndarray]  # x_g per input
    baseline: list[np.ndarray] | None
    sums: list[np.ndarray]
    weight: float = 0.0
    passes: int = 0
    score_at_baseline: float = 0.0
    score_at_input: float = 0.0


@dataclass
class _Accumulator:
    """Finished groups summed per image; what a later call can resume from."""

    sums: list[np.ndarray]
    counts: np.ndarray
    delta_sums: np.ndarray
    groups_done: int = 0
    key: str = ""
    open: dict = field(default_factory=dict)

    def copy(self) -> "_Accumulator":
        return _Accumulator([s.copy() for s in self.sums], self.counts.copy(), self.delta_sums.copy(), self.groups_done, self.key)


class _Run:
    """One attribution computation over a batch; see the module docstring."""

    def __init__(self, backend, inputs, targets, plan: Plan, baselines, stdev_spread, seed, batch_size, channels_last):
        self.backend = backend
        self.channels_last = channels_last
        self.inputs = inputs
        self.targets = targets  # {output index: (B,) int}
        self.plan = plan
        self.baselines = baselines
        self.seed = seed
        self.batch_size = batch_size
        self.batch = len(inputs[0])
        flat = [x.reshape(self.batch, -1) for x in inputs]
        self.low = [f.min(axis=1) for f in flat]
        self.high = [f.max(axis=1) for f in flat]
        self.sigma = [stdev_spread * (h - lo) for h, lo in zip(self.high, self.low)]

    # --- drawing the points -------------------------------------------------
    def _random(self, stream: int, m: int, i: int, g: int, draw) -> np.ndarray:
        """Draw one image's worth of noise, always in channels-last order, so that
        a torch (C, H, W) and a Keras (H, W, C) input get the same numbers."""
        rng = np.random.default_rng([self.seed, stream, m, i, g])
        shape = self.inputs[m].shape[1:]
        if len(shape) == 3 and not self.channels_last:
            return np.moveaxis(draw(rng, shape[1:] + shape[:1]), -1, 0)
        return draw(rng, shape)

    def _open_group(self, i: int, g: int) -> _Group:
        starts = []
        for m, x in enumerate(self.inputs):
            start = x[i]
            if self.plan.noisy and g > 0:
                noise = self._random(_NOISE_STREAM, m, i, g, lambda r, shape: r.standard_normal(shape, np.float32))
                start = start + noise * np.float32(self.sigma[m][i])
            starts.append(start)
        baselines = None
        if self.plan.integrate:
            baselines = []
            for m, b in enumerate(self.baselines):
                if isinstance(b, str):  # 'uniform': the seed's random image in the image's range
                    low, high = self.low[m][i], self.high[m][i]
                    b = self._random(
                        _BASELINE_STREAM, m, i, g, lambda r, shape: r.uniform(low, high, shape).astype(np.float32)
                    )
                else:
                    b = b[i]
                baselines.append(b)
        sums = [np.zeros(x.shape[1:], np.float64) for x in self.inputs]
        return _Group(starts, baselines, sums)

    def _point(self, group: _Group, m: int, k: int) -> np.ndarray:
        if not self.plan.integrate:
            return group.start[m]
        b = group.baseline[m]
        return b + np.float32(self.plan.alphas[k]) * (group.start[m] - b)

    # --- combining ----------------------------------------------------------
    def _group_map(self, group: _Group, m: int, normalise: bool) -> np.ndarray:
        summed = group.sums[m] / group.weight if normalise else group.sums[m]
        if self.plan.integrate:
            summed = (group.start[m] - group.baseline[m]) * summed
        return summed

    def _close_group(self, acc: _Accumulator, i: int, group: _Group) -> None:
        maps = [self._group_map(group, m, normalise=False) for m in range(len(self.inputs))]
        if self.plan.integrate:
            total = sum(float(mp.sum()) for mp in maps)
            acc.delta_sums[i] += total - (group.score_at_input - group.score_at_baseline)
        for m, mp in enumerate(maps):
            acc.sums[m][i] += mp * mp if self.plan.magnitude else mp
        acc.counts[i] += 1

    def current_raw(self, acc: _Accumulator) -> list[np.ndarray]:
        """Finished groups plus the provisional maps of open ones (for previews)."""
        out = []
        for m in range(len(self.inputs)):
            sums, counts = acc.sums[m].copy(), acc.counts.astype(np.float64).copy()
            for (i, _g), group in acc.open.items():
                if group.weight > 0:
                    mp = self._group_map(group, m, normalise=True)
                    sums[i] += mp * mp if self.plan.magnitude else mp
                    counts[i] += 1
            shape = (-1,) + (1,) * (sums.ndim - 1)
            safe = np.maximum(counts, 1).reshape(shape)
            out.append((sums / safe).astype(np.float32))
        return out

    # --- the loop -----------------------------------------------------------
    def run(self, acc: _Accumulator, progress, cancel, make_result) -> _Accumulator:
        plan, batch = self.plan, self.batch
        groups = np.arange(acc.groups_done, plan.groups)
        # Group-major, then step (coarse to fine), then image: each chunk refines all images.
        g_idx, k_idx, i_idx = (a.ravel() for a in np.meshgrid(groups, plan.order, np.arange(batch), indexing="ij"))
        total = len(i_idx)
        # Even chunks: 50 passes at 8 per chunk run as 7 chunks of 7 or 8, not 6 x 8 + 2.
        chunks = -(-total // self.batch_size)
        bounds = np.linspace(0, total, chunks + 1).round().astype(int)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            if cancel is not None and cancel():
                raise AttributionCancelled("Attribution cancelled by the caller.")
            rows = list(zip(i_idx[start:stop], g_idx[start:stop], k_idx[start:stop]))
            for i, g, _k in rows:
                if (i, g) not in acc.open:
                    acc.open[(i, g)] = self._open_group(i, g)
            points = [
                np.stack([self._point(acc.open[(i, g)], m, k) for i, g, k in rows])
                for m in range(len(self.inputs))
            ]
            chunk_targets = {o: t[i_idx[start:stop]] for o, t in self.targets.items()}
            grads, outputs = self.backend.gradients(points, chunk_targets)
            scores = sum(outputs[o][np.arange(len(rows)), t] for o, t in chunk_targets.items())
            for r, (i, g, k) in enumerate(rows):
                group = acc.open[(i, g)]
                w = plan.weights[k]
                for m in range(len(self.inputs)):
                    group.sums[m] += w * grads[m][r]
                group.weight += w
                group.passes += 1
                if plan.alphas[k] == 0.0:
                    group.score_at_baseline = float(scores[r])
                if plan.alphas[k] == 1.0:
                    group.score_at_input = float(scores[r])
                if group.passes == plan.steps:
                    self._close_group(acc, i, acc.open.pop((i, g)))
            if progress is not None:
                progress(stop, total, make_result(self.current_raw(acc), stop, total, acc))
        acc.groups_done = plan.groups
        return acc


def attribute(
    model: Any,
    x: Any,
    method: str,
    *,
    target: Any = None,
    nsamples: int = 25,
    stdev_spread: float = 0.15,
    magnitude: bool = True,
    nintegration: int | None = None,
    baseline: Any = "uniform",
    batch_size: int | str = "auto",
    seed: int | None = None,
    channels_last: bool | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    output_index: int | None = None,
    quadrature: str = "riemann",
    framework: str | None = None,
    resume_from: Attribution | None = None,
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
    method : {'vanilla', 'smoothgrad', 'integrated', 'smooth_integrated'}
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
    seed : int, optional
        Same seed, same result (across chunk sizes, devices and frameworks).
        None draws one; it is recorded in ``Attribution.seed``.
    channels_last : bool, optional
        Layout of ``x``; the input goes to the model as given.
    progress : callable(done, total, partial), optional
        Called after each chunk with the passes done so far and a partial
        :class:`Attribution` to preview.
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
        only the missing samples are computed (SmoothGrad and SmoothGrad+IG).

    Returns
    -------
    Attribution
    """
    started = time.perf_counter()
    backend = get_backend(model, framework)
    plan = make_plan(method, nsamples, nintegration, magnitude, quadrature)
    inputs, layout, several = prepare_inputs(x, channels_last, backend.default_channels_last)

    def pick_targets(clean: list[np.ndarray]) -> dict[int, Any]:
        return {choose_output(clean, output_index): target}

    return compute(
        backend, inputs, layout, several, plan, pick_targets,
        stdev_spread=stdev_spread, baseline=baseline, batch_size=batch_size, seed=seed,
        progress=progress, cancel=cancel, resume_from=resume_from, quadrature=quadrature, started=started,
    )


def compute(
    backend,
    inputs: list[np.ndarray],
    layout: bool,
    several: bool,
    plan: Plan,
    pick_targets: Callable[[list[np.ndarray]], dict[int, Any]],
    *,
    stdev_spread: float,
    baseline: Any,
    batch_size: int | str,
    seed: int | None,
    progress: ProgressFn | None,
    cancel: Callable[[], bool] | None,
    resume_from: Attribution | None,
    quadrature: str,
    started: float,
) -> Attribution:
    """Run ``plan`` on checked inputs; ``pick_targets(clean outputs)`` says which
    outputs to explain, mapping each output index to its user target (or None).
    The scores reported are those of the first output picked."""
    if not stdev_spread >= 0:
        raise SaliencyError(f"stdev_spread must be >= 0; got {stdev_spread!r}.")
    chunk = _check_batch_size(batch_size, backend, inputs)
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else int(seed)
    baselines = prepare_baselines(baseline, inputs, layout) if plan.integrate else []

    with backend.session():
        clean = _forward_in_chunks(backend, inputs, chunk)
        targets = {}
        for index, user_target in pick_targets(clean).items():
            check_output(clean[index], index, len(inputs[0]))
            out = clean[index]
            targets[index] = prepare_target(user_target, len(out), out.shape[1], out.argmax(axis=1))
        out_index = next(iter(targets))
        scores = clean[out_index]
        run = _Run(backend, inputs, targets, plan, baselines, float(stdev_spread), seed, chunk, layout)
        settings = np.array([stdev_spread, seed, plan.steps, plan.magnitude], np.float64)
        key = _fingerprint([*inputs, *baselines, *targets.values(), settings, plan.method, quadrature])
        acc = _resumable(resume_from, key, plan) or _Accumulator(
            [np.zeros(x.shape, np.float64) for x in inputs], np.zeros(len(scores), np.int64), np.zeros(len(scores)), 0, key
        )

        def make_result(raw, done, total, state):
            return _result(run, raw, scores, targets, out_index, state, layout, several, backend, started,
                           baseline, stdev_spread, done, total, complete=False)

        acc = run.run(acc, progress, cancel, make_result)
    raw = run.current_raw(acc)
    total = acc.groups_done * plan.steps * len(scores)
    return _result(run, raw, scores, targets, out_index, acc, layout, several, backend, started,
                   baseline, stdev_spread, total, total, complete=True)


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
        outputs = _forward_in_chunks(backend, inputs, _check_batch_size(batch_size, backend, inputs))
    index = choose_output(outputs, output_index)
    check_output(outputs[index], index, len(inputs[0]))
    return outputs[index]


def _check_batch_size(batch_size, backend, inputs) -> int:
    if batch_size == "auto":
        return auto_batch_size(backend.device, inputs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise SaliencyError(f"batch_size must be 'auto' or an integer >= 1; got {batch_size!r}.")
    return int(batch_size)


def _forward_in_chunks(backend, inputs, chunk) -> list[np.ndarray]:
    parts = [backend.forward([x[s : s + chunk] for x in inputs]) for s in range(0, len(inputs[0]), chunk)]
    return [np.concatenate([p[o] for p in parts]) for o in range(len(parts[0]))]


def _resumable(previous: Attribution | None, key: str, plan: Plan) -> _Accumulator | None:
    state = getattr(previous, "_state", None)
    if state is None or state.key != key or not previous.complete:
        return None
    if plan.groups <= 1 or state.groups_done > plan.groups:
        return None
    return state.copy()


def _result(run, raw, scores, targets, out_index, acc, layout, several, backend, started,
            baseline, stdev_spread, done, total, complete) -> Attribution:
    plan, batch = run.plan, run.batch
    if plan.integrate and not plan.magnitude:
        delta = np.divide(acc.delta_sums, acc.counts, out=np.full(batch, np.nan), where=acc.counts > 0)
    else:
        delta = None
    # Samples in the map: path steps seen for IG, finished noise samples otherwise.
    included = done // batch if plan.method == "integrated" else int(acc.counts.min())
    return Attribution(
        raw=tuple(raw) if several else raw[0],
        target=targets[out_index],
        scores=scores,
        delta=delta,
        method=plan.method,
        nsamples=included,
        nintegration=plan.steps if plan.method == "smooth_integrated" else None,
        seconds=time.perf_counter() - started,
        seed=run.seed,
        stdev_spread=float(stdev_spread) if plan.noisy else None,
        magnitude=plan.magnitude if plan.noisy else None,
        baseline=(baseline if isinstance(baseline, str) else type(baseline).__name__) if plan.integrate else None,
        channels_last=layout,
        framework=backend.framework,
        device=backend.device,
        batch_size=run.batch_size,
        passes_done=done,
        passes_total=total,
        complete=complete,
        targets=tuple(targets.values()),
        _state=acc if complete else None,
    )


__all__ = ["METHODS", "attribute", "auto_batch_size", "compute", "predict"]
