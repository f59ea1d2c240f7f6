"""DeepLIFT (Rescale rule) and DeepLiftShap: gradients with each nonlinearity's derivative replaced.

DeepLIFT (Shrikumar et al. 2017) explains ``f(x) - f(b)`` against a reference
``b``. Its Rescale rule gives every elementwise nonlinearity ``y = s(t)`` the
multiplier ``(s(t) - s(t_b)) / (t - t_b)`` in place of ``s'(t)`` (the ordinary
derivative where ``|t - t_b| < 1e-10``, as Captum; for ReLU, whose quotient is
exact, only where ``t = t_b``); linear layers keep their
gradient. The map is ``(x - b) * m``, ``m`` the input's multiplier, and
``sum(map) = f(x) - f(b)`` up to rounding on networks of linear layers and
elementwise nonlinearities; the gap is reported as ``Attribution.delta`` (as
IG's). DeepLiftShap (Lundberg and Lee 2017) averages DeepLIFT maps over a batch
of references (``references=``), as Captum's ``DeepLiftShap``.

How it runs: each pass feeds the images and their references in one batch,
``[x_1..x_n; b_1..b_r]`` (``r = 1`` when every image shares one baseline, a
number or one array: the reference's activations are computed once per
chunk). Explaining raw class scores, that pass is also the engine's clean
forward (``single_pass``): the images' rows give the clean outputs and
predictions, and the reference rows are scored again for each image's class
from the same outputs, so a chunk is one model call. The model runs as a
:class:`RescaleVariant`:

- torch: a thread-local ``TorchFunctionMode`` (as Guided Backprop's) routes
  ``relu`` (and ReLU6, hardtanh), ``sigmoid``, ``tanh``, ``softplus``, ``elu``,
  ``leaky_relu``, ``gelu``, ``silu`` calls (modules and functional calls alike;
  Captum hooks modules only) through the Rescale rule on the shadow copy.
- Keras: a clone whose ReLU layers and layers with those activations get a
  ``tf.custom_gradient`` twin; references are always one per image there.

Differences from Captum: max pooling keeps its gradient (the DeepLIFT paper's
choice; Captum rescales it), and functional nonlinearities are covered.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..errors import SaliencyError
from ..inputs import prepare_baselines
from ..randomness import BASELINE
from .base import Method, MethodOutput, Option, RunContext, Stage, register
from .expected_gradients import REFERENCES
from .paths import check_baseline

EPSILON = 1e-10  # below this input difference the ordinary derivative is used (Captum's eps)
_LOCAL = threading.local()  # rows of the current pass that are images (the rest are references)


@contextmanager
def image_rows(count: int):
    """Within this block, model calls on this thread see ``count`` image rows followed by references."""
    previous = getattr(_LOCAL, "rows", None)
    _LOCAL.rows = count
    try:
        yield
    finally:
        _LOCAL.rows = previous


# ---------------------------------------------------------------- torch
_torch_parts: dict = {}


def _relu_quotient(t_reference, dt, dy):
    """ReLU's Rescale multiplier from ``dt = t - t_b`` and ``dy = relu(t) - relu(t_b)`` (both written over):
    ``dy / dt``, and ``[t_b > 0]`` where ``dt = 0``.

    In float32 and float64 that is ``(dy + [t_b > 0] tiny) / (dt + tiny)`` with ``tiny`` the dtype's smallest
    normal number: adding it changes no difference larger than 2**24 tiny (1e-31 in float32), and where
    ``dt = 0`` (so ``dy = 0``) it gives ``[t_b > 0]`` exactly. Four passes over the images' rows with no
    boolean temporary (a compare and a select took as long as five arithmetic passes); other dtypes, whose
    smallest normal is not negligible, select."""
    import torch

    if dt.dtype not in (torch.float32, torch.float64):
        return torch.where(dt == 0, t_reference > 0, dy.div_(dt))
    tiny = torch.finfo(dt.dtype).tiny
    on = (t_reference > 0).to(dt.dtype).mul_(tiny)  # the reference rows only (one row when shared)
    return dy.add_(on).div_(dt.add_(tiny))


def _torch_rescale_mode():
    if _torch_parts:
        return _torch_parts["mode"]
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class Rescale(torch.autograd.Function):
        """Returns ``y = s(t)``; backward sends the image rows' gradient times the Rescale multiplier to
        ``t`` and, where ``|t - t_b|`` is tiny, the ordinary derivative: ReLU's ``[t > 0]`` directly, any other
        function's through ``y``'s own graph."""

        @staticmethod
        def forward(ctx, t, y, rows, relu):
            ctx.save_for_backward(t, y)
            ctx.rows, ctx.relu = rows, relu
            return y.view_as(y)

        @staticmethod
        def backward(ctx, grad):
            t, y = ctx.saved_tensors
            n = ctx.rows
            dt, dy = t[:n] - t[n:], y[:n] - y[n:]
            # No branch on a mask's any(): reading it back is a host sync per nonlinearity (on a GPU).
            to_t = torch.empty_like(grad)  # written in place: fewer full-size temporaries than where/cat
            to_t[n:].zero_()
            if ctx.relu:
                # ReLU's quotient is exact wherever t != t_b (both above 0: dy and dt are the same subtraction,
                # 1 exactly; both below: 0; across 0: one side's value over dt, no cancellation), so only
                # t == t_b, a 0/0, needs the derivative [t > 0] = [t_b > 0]: read off the reference rows
                # (one row when the baseline is shared). NaN or infinite activations stay NaN: the run's
                # finiteness check names them.
                torch.mul(grad[:n], _relu_quotient(t[n:], dt, dy), out=to_t[:n])
                return to_t, None, None, None
            small = dt.abs() < EPSILON
            quotient = dy.masked_fill_(small, 0.0).div_(dt.masked_fill_(small, 1.0))
            to_y = torch.zeros_like(grad)  # zero except where the difference is tiny
            torch.mul(grad[:n], small, out=to_y[:n])
            torch.mul(grad[:n], quotient, out=to_t[:n])
            return to_t, to_y, None, None

    elementwise = {torch.relu, F.relu, torch.Tensor.relu, F.relu6, F.hardtanh, torch.sigmoid, F.sigmoid,
                   torch.Tensor.sigmoid, torch.tanh, F.tanh, torch.Tensor.tanh, F.softplus, F.elu, F.leaky_relu,
                   F.gelu, F.silu}
    in_place = {torch.relu_, torch.Tensor.relu_, torch.sigmoid_, torch.Tensor.sigmoid_, torch.tanh_,
                torch.Tensor.tanh_}

    relus = {torch.relu, F.relu, torch.Tensor.relu}

    class RescaleMode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            rows = getattr(_LOCAL, "rows", None)
            if rows is None or not (func in elementwise or func in in_place):
                return func(*args, **kwargs)
            t = args[0]
            if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] not in (rows + 1, 2 * rows):
                return func(*args, **kwargs)
            plain = {torch.relu_: torch.relu, torch.Tensor.relu_: torch.relu, torch.sigmoid_: torch.sigmoid,
                     torch.Tensor.sigmoid_: torch.sigmoid, torch.tanh_: torch.tanh, torch.Tensor.tanh_: torch.tanh}
            call = plain.get(func, func)
            kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
            if len(args) > 1 and func in (F.relu, F.relu6):
                args = args[:1]  # (input, inplace)
            if func is F.hardtanh and len(args) > 3:
                args = args[:3]
            if func in (F.elu, F.leaky_relu) and len(args) > 2:
                args = args[:2]
            with torch._C.DisableTorchFunction():
                y = call(*args, **kwargs)
            out = Rescale.apply(t, y, rows, call in relus)
            if func in in_place or kwargs.get("inplace"):
                return t.copy_(out)
            return out

    _torch_parts["mode"] = RescaleMode
    return RescaleMode


# ---------------------------------------------------------------- Keras
_KERAS_ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "softplus", "elu", "gelu", "silu", "swish")


def _keras_rescale(function):
    import tensorflow as tf

    @tf.custom_gradient
    def rescaled(t):
        y = function(t)

        def grad(upstream):
            n = tf.shape(t)[0] // 2  # Keras passes always pair each image with its own reference row
            dt, dy = t[:n] - t[n:], y[:n] - y[n:]
            small = tf.abs(dt) < EPSILON
            with tf.GradientTape() as tape:
                tape.watch(t)
                again = function(t)
            derivative = tape.gradient(again, t, output_gradients=upstream)[:n]
            safe = tf.where(small, tf.ones_like(dt), dt)
            images = tf.where(small, derivative, upstream[:n] * dy / safe)
            return tf.concat([images, tf.zeros_like(upstream[n:])], 0)

        return y, grad

    rescaled.__name__ = f"rescaled_{getattr(function, '__name__', 'activation')}"
    return rescaled


def _keras_function(name: str, top: float | None = None):
    import keras

    if name == "relu" and top is not None:
        return lambda t: keras.ops.clip(t, 0.0, top)
    if name == "relu6":
        return keras.ops.relu6
    return keras.activations.get(name)


class _RescaleClone:
    """A Keras model's twin with Rescale activations, and the layers whose weights it copies."""

    def __init__(self, model):
        import keras

        self.pairs: list = []

        def clone(layer):
            if isinstance(layer, keras.layers.ReLU):
                config = layer.get_config()
                if config.get("negative_slope") or config.get("threshold"):
                    raise SaliencyError(f"DeepLIFT in Keras has no rule for the leaky ReLU layer {layer.name!r}.")
                top = config.get("max_value")
                return keras.layers.Activation(_keras_rescale(_keras_function("relu", top)), name=layer.name)
            activation = getattr(layer, "activation", None)
            name = getattr(activation, "__name__", activation)
            if not isinstance(name, str) or name not in _KERAS_ACTIVATIONS:
                return layer
            rescaled = _keras_rescale(_keras_function(name))
            if isinstance(layer, keras.layers.Activation):
                return keras.layers.Activation(rescaled, name=layer.name)
            copy = type(layer).from_config(dict(layer.get_config(), activation=rescaled))
            self.pairs.append((layer, copy))
            return copy

        try:
            self.model = keras.models.clone_model(model, clone_function=clone, recursive=True)
        except SaliencyError:
            raise
        except Exception as exc:
            raise SaliencyError(
                f"DeepLIFT cannot rebuild this {type(model).__name__} with Rescale activations ({exc}). It needs a "
                "functional or Sequential Keras model."
            ) from exc
        self.refresh()

    def refresh(self) -> None:
        for original, copy in self.pairs:
            copy.set_weights(original.get_weights())


class RescaleVariant:
    """The :class:`~salwidget.backends.base.ModelVariant` of DeepLIFT."""

    keeps_shadow = True

    def __init__(self):
        self._clones: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def torch(self, shadow):
        return shadow

    @property
    def torch_context(self):
        return _torch_rescale_mode()

    def keras(self, model):
        if not hasattr(model, "layers"):
            raise SaliencyError(f"DeepLIFT in TensorFlow needs a Keras model with layers; got a {type(model).__name__}.")
        with self._lock:
            clone = self._clones.get(model)
            if clone is None:
                clone = self._clones[model] = _RescaleClone(model)
            else:
                clone.refresh()
        return clone.model


RESCALE = RescaleVariant()


# ---------------------------------------------------------------- the methods
@dataclass
class DeepLiftState:
    maps: list  # per input, (B, ...) sums of (x - b) * multiplier over references
    delta: Any  # (B,) summed completeness gaps
    done: int = 0


def multipliers(ctx: RunContext, points: list, references: list, images: np.ndarray):
    """DeepLIFT multipliers of ``points`` (n rows per input) against ``references`` (1 or n rows per
    input), and the target scores f(points) and f(references) (n rows each)."""
    ops = ctx.ops
    n = len(images)
    shared = int(references[0].shape[0]) == 1 and n > 1
    if shared and ctx.backend.framework == "tensorflow":  # Keras' rule splits the batch in halves
        references = [ops.concat([r] * n) for r in references]
        shared = False
    rows = np.concatenate([images, images[:1] if shared else images])
    with image_rows(n):
        grads, scores, outputs = ctx.gradients([ops.concat([p, r]) for p, r in zip(points, references)], rows,
                                               observed=n, with_outputs=True)
    grads = [g[:n] for g in grads]
    targets = ctx.row_targets(images)
    if not shared and all(t is not None for t in targets.values()):
        return grads, scores[:n], scores[n:]  # each reference row was scored for its image's target
    # A shared reference row was scored for image 0's target, and when the targets come from this pass (the
    # engine's clean forward left out) every row for its own argmax: score the reference rows' outputs again
    # for each image's target, the images' own argmax where none was given.
    targets = {o: ops.argmax(outputs[o][:n], 1) if t is None else t for o, t in targets.items()}
    at_references = [ops.concat([o[n:]] * n) if shared else o[n:] for o in outputs]
    return grads, scores[:n], ctx.target_scores(at_references, images, targets)


class _Rescaled(Method):
    reads = "input_gradients"
    output = "input"
    signed = True

    def variant(self, options: dict):
        return RESCALE

    def start(self, ctx: RunContext, resume: Any = None) -> DeepLiftState:
        ctx.cache["references"] = self.references(ctx)
        return DeepLiftState([ctx.ops.zeros(x.shape) for x in ctx.host_inputs], ctx.ops.zeros((ctx.batch,)))

    def passes_left(self, ctx: RunContext, state: DeepLiftState) -> int:
        return self.passes(ctx.options, ctx.batch) - state.done

    def stages(self, ctx: RunContext, state: DeepLiftState) -> Iterator[Stage]:
        total = self.passes_left(ctx, state)
        if total > 0:
            yield Stage(total, lambda start, stop: self._run_chunk(ctx, state, start, stop), cost=self.cost(ctx),
                        align=ctx.batch)

    def cost(self, ctx: RunContext) -> float:
        return 2.0  # an image and its reference per pass

    def _run_chunk(self, ctx: RunContext, state: DeepLiftState, start: int, stop: int) -> None:
        ops = ctx.ops
        passes = np.arange(start, stop)  # reference-major: pass p is image p % B against reference p // B
        images, which = passes % ctx.batch, passes // ctx.batch
        points = [ops.take(x, images) for x in ctx.inputs]
        references = self.pass_references(ctx, images, which)
        grads, at_points, at_references = multipliers(ctx, points, references, images)
        total = None
        for m, (g, x, r) in enumerate(zip(grads, points, references)):
            contribution = (x - r) * ops.cast_like(g, x)  # a Keras float64 model's gradient, float32 inputs
            state.maps[m] = ops.index_add(state.maps[m], images, contribution)
            part = ops.row_sum(contribution)
            total = part if total is None else total + part
        gain = ops.cast_like(at_points, total) - ops.cast_like(at_references, total)
        state.delta = ops.index_add(state.delta, images, total - gain)
        state.done += stop - start

    def finish(self, ctx: RunContext, state: DeepLiftState) -> MethodOutput:
        count = self.passes(ctx.options, ctx.batch) // ctx.batch
        scale = 1.0 / count
        return MethodOutput([m * scale for m in state.maps], count,
                            {"delta": ctx.ops.numpy(state.delta).astype(np.float64) * scale})

    def preview(self, ctx: RunContext, state: DeepLiftState) -> MethodOutput:
        return MethodOutput(list(state.maps), 0)


class DeepLift(_Rescaled):
    name = "deeplift"
    order = 66
    label = "DeepLIFT"
    summary = ("(x - baseline) times DeepLIFT's multipliers: each nonlinearity's derivative replaced by its "
               "difference quotient against the baseline's (Rescale rule, Shrikumar et al. 2017); sum(map) = "
               "f(x) - f(baseline), the gap is reported as delta.")
    options = (
        Option(
            "baseline", 0.0,
            "The reference: a number (0.0 = black in the model's input space), 'uniform' (random in each "
            "image's range), 'blur' or an array shaped like x.", label="baseline", check=check_baseline),
    )

    def passes(self, options: dict, batch: int) -> int:
        return batch

    def single_pass(self, options: dict) -> bool:
        return True  # each image once, at its clean input (its reference rows ride along, not observed)

    def references(self, ctx: RunContext) -> list:
        given = ctx.options["baseline"]
        resolved = prepare_baselines(given, ctx.host_inputs, ctx.channels_last)
        out = []
        for m, value in enumerate(resolved):
            if isinstance(value, str) and value == "uniform":
                low, high = ctx.low[m], ctx.high[m]
                u = ctx.draws.uniform(BASELINE, m, 0)
                out.append(ctx.ops.per_row(low, u) + u * ctx.ops.per_row(high - low, u))
            elif isinstance(value, str):  # blur
                out.append(ctx.ops.blur(ctx.inputs[m], min(ctx.spatial_size) / 8, ctx.channels_last))
            elif (value == value[:1]).all():  # one baseline for every image: its pass is shared
                out.append(ctx.ops.asarray(np.ascontiguousarray(value[:1])))
            else:
                out.append(ctx.ops.asarray(value))
        return out

    def cost(self, ctx: RunContext) -> float:
        shared = all(int(r.shape[0]) == 1 for r in ctx.cache["references"])
        return 1.0 if shared and ctx.backend.framework != "tensorflow" else 2.0

    def pass_references(self, ctx: RunContext, images: np.ndarray, which: np.ndarray) -> list:
        references = ctx.cache["references"]
        if all(int(r.shape[0]) == 1 for r in references):
            return list(references)
        return [ctx.ops.take(r, images) for r in references]


class DeepLiftShap(_Rescaled):
    name = "deeplift_shap"
    order = 67
    label = "DeepLiftShap"
    summary = ("DeepLIFT averaged over a batch of references (Lundberg and Lee 2017, as Captum's DeepLiftShap); "
               "one pass per image and reference.")
    options = (REFERENCES,)

    def passes(self, options: dict, batch: int) -> int:
        references = options["references"]
        if references is None:
            return batch * max(batch - 1, 1)
        first = references[0] if isinstance(references, tuple) else references
        return batch * len(first)

    def references(self, ctx: RunContext) -> list:
        given = ctx.options["references"]
        if given is None:
            if ctx.batch < 2:
                raise SaliencyError(
                    "deeplift_shap takes its references from the other images of the batch, and this batch has one "
                    "image: pass references= (a batch of reference images shaped like the input's images)."
                )
            return None
        given = given if isinstance(given, tuple) else (given,)
        if len(given) != len(ctx.inputs):
            raise SaliencyError(f"Got references for {len(given)} inputs; the model takes {len(ctx.inputs)}.")
        for m, (r, x) in enumerate(zip(given, ctx.host_inputs)):
            if r.shape[1:] != x.shape[1:]:
                raise SaliencyError(
                    f"The references of input {m} have shape {r.shape}; each must be shaped like one image "
                    f"{x.shape[1:]} (the input's layout)."
                )
        if len({len(r) for r in given}) != 1:
            raise SaliencyError("Every input needs the same number of references.")
        return [ctx.ops.asarray(r) for r in given]

    def pass_references(self, ctx: RunContext, images: np.ndarray, which: np.ndarray) -> list:
        references = ctx.cache["references"]
        if references is None:  # the other images of the batch, in order
            picked = which + (which >= images)
            return [ctx.ops.take(x, picked) for x in ctx.inputs]
        return [ctx.ops.take(r, which) for r in references]


DEEPLIFT = register(DeepLift())
DEEPLIFT_SHAP = register(DeepLiftShap())
