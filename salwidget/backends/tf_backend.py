"""TensorFlow/Keras backend: passes, gradients and arithmetic where TensorFlow places the model.

Every call passes ``training=False``, so the model itself is never switched.
The pass through the model is a ``tf.function`` traced once per kind of pass
(with a free batch dimension, so chunk sizes do not retrace); the arithmetic
around it (noise, path points, sums) runs eagerly on the same device. A
layer's activations come from a functional sub-model over the same layers
and weights: the user's model is not changed.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from ..caches import BoundedCache
from ..errors import SaliencyError
from ..inputs import check_output
from ..outputs import flatten_outputs
from ..targets import RowScore, names_function
from .base import reference as _reference
from .base import model_call_error, not_differentiable, unknown_layer
from .keras_clones import outputs_with_replaced_layer, randomized_clone

_NO_TARGET = tf.zeros((0,), tf.int64)  # stands for "each row's argmax" in a traced step
_GPU_MEMORY_SHARE, _MAX_GPU_CHUNK = 0.5, 1024  # as torch's chunks: half of the free memory, at most 1024 passes
_LAYOUT_HINT = "Keras models usually take (B, H, W, C); pass channels_last=False if yours takes (B, C, H, W)"


def _is_keras(model) -> bool:
    return any(cls.__module__.split(".")[0] in ("keras", "tf_keras") for cls in type(model).__mro__)


def _as_list(output) -> tuple[list, list]:
    """(tensors, names) of what the model returned (see :func:`salwidget.outputs.flatten_outputs`)."""
    return flatten_outputs(output, lambda value: tf.is_tensor(value) or isinstance(value, np.ndarray))


def _compute_dtype(model) -> tf.DType:
    """float64 for a Keras model that computes in float64, else float32 (mixed-precision models take
    float32 inputs and cast them themselves)."""
    policy = getattr(model, "dtype_policy", None)
    name = getattr(policy, "compute_dtype", None) or getattr(model, "compute_dtype", None)
    return tf.float64 if name == "float64" else tf.float32


def _rows(rows) -> tf.Tensor:
    if isinstance(rows, tf.Tensor):
        return tf.cast(rows, tf.int64)
    return tf.constant(np.asarray(rows, np.int64))


class TFOps:
    """:class:`~salwidget.backends.base.Ops` for TensorFlow tensors in the model's compute dtype (float32,
    or float64 for a float64 model: its inputs are not rounded to float32 first)."""

    def __init__(self, dtype=tf.float32):
        self.dtype = dtype

    def asarray(self, value, dtype: str = "float") -> tf.Tensor:
        return tf.cast(tf.convert_to_tensor(value), {"float": self.dtype, "int": tf.int64, "wide": tf.float64}[dtype])

    @staticmethod
    def numpy(tensor) -> np.ndarray:
        """A host copy; float16 becomes float32, float64 stays (saved sums)."""
        value = np.asarray(tensor)
        return value.astype(np.float32) if value.dtype == np.float16 else value

    def zeros(self, shape) -> tf.Tensor:
        return tf.zeros(tuple(shape), self.dtype)

    @staticmethod
    def accumulator(shape) -> tf.Tensor:
        """Zeros for running sums, in the wide dtype (float64)."""
        return tf.zeros(tuple(shape), tf.float64)

    @staticmethod
    def wide(tensor) -> tf.Tensor:
        return tf.cast(tensor, tf.float64)

    def narrow(self, tensor) -> tf.Tensor:
        return tf.cast(tensor, self.dtype)

    def full(self, shape, value: float) -> tf.Tensor:
        return tf.fill(tuple(shape), tf.constant(float(value), self.dtype))

    # Small index arrays come from the host: a handful of eager ops per chunk costs more.
    host_indices = True

    @staticmethod
    def add(acc, values) -> tf.Tensor:
        return acc + tf.cast(values, acc.dtype)

    @staticmethod
    def arange(start: int, stop: int) -> tf.Tensor:
        """Integers start..stop-1 made on the device."""
        return tf.range(start, stop, dtype=tf.int64)

    @staticmethod
    def lerp(start, end, weight) -> tf.Tensor:
        """``start + weight (end - start)``."""
        return start + weight * (end - start)

    @staticmethod
    def cast_like(tensor, like) -> tf.Tensor:
        return tf.cast(tensor, like.dtype)

    @staticmethod
    def take(tensor, rows) -> tf.Tensor:
        return tf.gather(tensor, _rows(rows))

    @staticmethod
    def index_add(acc, rows, values) -> tf.Tensor:
        return tf.tensor_scatter_nd_add(acc, _rows(rows)[:, None], tf.cast(values, acc.dtype))

    @staticmethod
    def put(acc, rows, values) -> tf.Tensor:
        return tf.tensor_scatter_nd_update(acc, _rows(rows)[:, None], tf.cast(values, acc.dtype))

    @staticmethod
    def take_along_rows(tensor, columns) -> tf.Tensor:
        """``tensor[r, columns[r]]`` for every row ``r``."""
        return tf.gather(tensor, tf.cast(_rows(columns), tf.int32), axis=1, batch_dims=1)

    @staticmethod
    def per_row(values, like) -> tf.Tensor:
        return tf.reshape(values, (-1,) + (1,) * (len(like.shape) - 1))

    @staticmethod
    def row_sum(tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.reshape(tensor, (tf.shape(tensor)[0], -1)), axis=1)

    def finite_rows(self, tensors) -> tf.Tensor:
        """Whether each row of every tensor is finite, one bool per row (a NaN or inf makes the rows'
        summed values non-finite)."""
        total = None
        for tensor in tensors:
            summed = tf.reduce_sum(tensor, axis=list(range(1, len(tensor.shape)))) if len(tensor.shape) > 1 else tensor
            summed = tf.cast(summed, self.dtype)
            total = summed if total is None else total + summed
        return tf.math.is_finite(total)

    @staticmethod
    def row_min(tensor) -> tf.Tensor:
        return tf.reduce_min(tf.reshape(tensor, (tf.shape(tensor)[0], -1)), axis=1)

    @staticmethod
    def row_max(tensor) -> tf.Tensor:
        return tf.reduce_max(tf.reshape(tensor, (tf.shape(tensor)[0], -1)), axis=1)

    @staticmethod
    def row_abs_max(tensor) -> tf.Tensor:
        """Each row's largest magnitude."""
        return tf.reduce_max(tf.abs(tf.reshape(tensor, (tf.shape(tensor)[0], -1))), axis=1)

    @staticmethod
    def concat(tensors, axis: int = 0) -> tf.Tensor:
        return tensors[0] if len(tensors) == 1 else tf.concat(list(tensors), axis=axis)

    @staticmethod
    def stack(tensors, axis: int = 0) -> tf.Tensor:
        return tf.stack(list(tensors), axis=axis)

    @staticmethod
    def reshape(tensor, shape) -> tf.Tensor:
        return tf.reshape(tensor, tuple(shape))

    @staticmethod
    def transpose(tensor, axes) -> tf.Tensor:
        return tf.transpose(tensor, axes)

    @staticmethod
    def sum(tensor, axis=None, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_sum(tensor, axis=axis, keepdims=keepdims)

    @staticmethod
    def mean(tensor, axis=None, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_mean(tensor, axis=axis, keepdims=keepdims)

    @staticmethod
    def max(tensor, axis=None, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_max(tensor, axis=axis, keepdims=keepdims)

    @staticmethod
    def min(tensor, axis=None, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_min(tensor, axis=axis, keepdims=keepdims)

    square = staticmethod(tf.square)
    sqrt = staticmethod(tf.sqrt)
    abs = staticmethod(tf.abs)
    exp = staticmethod(tf.exp)
    log = staticmethod(tf.math.log)
    relu = staticmethod(tf.nn.relu)
    sigmoid = staticmethod(tf.sigmoid)
    where = staticmethod(tf.where)
    maximum = staticmethod(tf.maximum)
    minimum = staticmethod(tf.minimum)

    @staticmethod
    def clip(tensor, low=None, high=None) -> tf.Tensor:
        if low is not None:
            tensor = tf.maximum(tensor, low)
        if high is not None:
            tensor = tf.minimum(tensor, high)
        return tensor

    @staticmethod
    def softmax(tensor, axis: int = -1) -> tf.Tensor:
        return tf.nn.softmax(tensor, axis=axis)

    @staticmethod
    def argmax(tensor, axis: int = -1) -> tf.Tensor:
        return tf.argmax(tensor, axis=axis, output_type=tf.int64)

    @staticmethod
    def argsort(tensor, axis: int = -1, descending: bool = False) -> tf.Tensor:
        return tf.argsort(tensor, axis=axis, direction="DESCENDING" if descending else "ASCENDING", stable=True)

    @staticmethod
    def _seed(key: int) -> tf.Tensor:
        key = int(key)
        return tf.constant([key & 0x7FFFFFFF, (key >> 31) & 0x7FFFFFFF], tf.int64)

    def normal(self, shape, key: int) -> tf.Tensor:
        """Standard normal numbers from TensorFlow's stateless (counter-based) generator."""
        return tf.random.stateless_normal(tuple(shape), seed=self._seed(key), dtype=self.dtype)

    def uniform(self, shape, key: int) -> tf.Tensor:
        """Uniform numbers in [0, 1) from TensorFlow's stateless generator."""
        return tf.random.stateless_uniform(tuple(shape), seed=self._seed(key), dtype=self.dtype)

    @staticmethod
    def resize(maps, size) -> tf.Tensor:
        """Bilinear resize of (B, h, w) maps to (B, *size) (half-pixel centres, as torch)."""
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        return tf.image.resize(maps[..., None], tuple(size), method="bilinear", antialias=False)[..., 0]

    def blur(self, images, sigma, channels_last: bool, mode: str = "reflect") -> tf.Tensor:
        """Gaussian blur over the spatial axes, as ``scipy.ndimage.gaussian_filter``
        with border ``mode`` ``'reflect'`` or ``'constant'`` (zeros outside)."""
        x = images if channels_last else tf.transpose(images, (0, 2, 3, 1))
        sigmas = np.broadcast_to(np.asarray(sigma, np.float64), (int(x.shape[0]),))
        parts, order = [], []
        for value in np.unique(sigmas):
            rows = np.nonzero(sigmas == value)[0]
            part = tf.gather(x, rows)
            parts.append(self._blur_same_sigma(part, float(value), mode) if value > 0 else part)
            order.append(rows)
        out = tf.gather(tf.concat(parts, 0), np.argsort(np.concatenate(order), kind="stable"))
        return out if channels_last else tf.transpose(out, (0, 3, 1, 2))

    def _blur_same_sigma(self, x, sigma: float, mode: str = "reflect") -> tf.Tensor:
        from .blur import gaussian_taps, symmetric_indices

        taps = tf.constant(gaussian_taps(sigma), self.dtype)
        radius = (int(taps.shape[0]) - 1) // 2
        b, h, w, c = (int(d) for d in x.shape)
        flat = tf.reshape(tf.transpose(x, (0, 3, 1, 2)), (b * c, h, w, 1))
        if mode == "constant":
            flat = tf.pad(flat, [[0, 0], [radius, radius], [radius, radius], [0, 0]])
            flat = tf.nn.conv2d(flat, tf.reshape(taps, (1, -1, 1, 1)), 1, "VALID")
            flat = tf.nn.conv2d(flat, tf.reshape(taps, (-1, 1, 1, 1)), 1, "VALID")
            return tf.transpose(tf.reshape(flat, (b, c, h, w)), (0, 2, 3, 1))
        flat = tf.gather(flat, symmetric_indices(w, radius), axis=2)
        flat = tf.nn.conv2d(flat, tf.reshape(taps, (1, -1, 1, 1)), 1, "VALID")
        flat = tf.gather(flat, symmetric_indices(h, radius), axis=1)
        flat = tf.nn.conv2d(flat, tf.reshape(taps, (-1, 1, 1, 1)), 1, "VALID")
        return tf.transpose(tf.reshape(flat, (b, c, h, w)), (0, 2, 3, 1))


class TensorFlowBackend:
    """Runs a Keras model, a ``tf.Module`` or a TF callable where TensorFlow places it."""

    framework = "tensorflow"
    default_channels_last = True

    @property
    def model(self):
        """The user's model (held weakly: the backend cache never keeps a model alive)."""
        return self._model()

    def __init__(self, model):
        self._model = _reference(model)
        self._keras = _is_keras(model)
        gpus = tf.config.list_logical_devices("GPU")
        self.device = gpus[0].name if gpus else "CPU"
        self._gpu = "GPU:0" if gpus else None  # where TensorFlow places the passes by default
        self.ops = TFOps(_compute_dtype(model))
        self._functions = BoundedCache(32)  # randomised clones come and go: keep the newest
        self._tapped: dict[str, Any] = {}
        self._local = threading.local()

    @contextmanager
    def session(self, *, randomize: Sequence[str] = (), seed: int = 0, variant: Any = None):
        """Open a computation. ``randomize`` runs it on a clone whose layers
        ``randomize`` are freshly initialised; ``variant`` (see
        :class:`~salwidget.backends.base.ModelVariant`) on the model its
        ``keras(model)`` builds. The user's model is not touched."""
        previous = getattr(self._local, "model", None)
        working = self.model
        if randomize:
            working = randomized_clone(working, randomize, seed)
        if variant is not None:
            working = variant.keras(working)
        self._local.model = working  # per thread: the panel's worker never changes what another thread runs
        try:
            yield
        finally:
            self._local.model = previous

    def identity(self) -> tuple:
        """The model, its variables and a checksum of their values (TensorFlow has no write counter).

        The checksum (each variable's sum and position-weighted sum, in float64) is one compiled call on
        the variables' device and one small copy to the host: a training step or ``assign`` changes it,
        and it costs about a millisecond where hashing every weight's bytes cost tens (a model of
        EfficientNet's size) on every settings change.
        """
        model = self.model
        variables = list(getattr(model, "weights", None) or getattr(model, "variables", ()))
        if not variables:
            return (id(model), ())
        sums = _checksums(tuple(variables))
        return (id(model), tuple(id(v) for v in variables), sums.tobytes())

    def fit_chunk(self, run, rows: int) -> int | None:
        """Run a first chunk; on a GPU, measure its peak memory and return the
        passes per chunk that fill half of the memory TensorFlow does not use
        (None on a CPU, where bigger chunks lose cache locality, or when the
        device's memory cannot be read: chunk sizes then stay as
        ``batch_size='auto'`` first chose them)."""
        device = self._gpu
        if device is None:
            run()
            return None
        memory = tf.config.experimental
        try:
            memory.reset_memory_stats(device)
            base = memory.get_memory_info(device)["current"]
        except (ValueError, RuntimeError, tf.errors.OpError):
            run()
            return None
        run()
        self.synchronize()
        info = memory.get_memory_info(device)
        total = device_memory_bytes(device)
        if total is None:
            return None
        per_pass = max(1.0, (info["peak"] - base) / rows)
        free = max(0, total - info["current"])
        return int(max(1, min(_MAX_GPU_CHUNK, _GPU_MEMORY_SHARE * free / per_pass)))

    def synchronize(self) -> None:
        """Wait for the work queued on the GPU (timings then cover it); nothing on a CPU."""
        if self._gpu is not None:
            tf.test.experimental.sync_devices()

    # ----------------------------------------------------------------- passes
    def _call(self, tensors, model=None):
        model = self._active if model is None else model
        try:
            if self._keras:
                inputs = tensors[0] if len(tensors) == 1 else list(tensors)
                returned = model(inputs, training=False)
            else:
                returned = model(*tensors)
            outputs, names = _as_list(returned)
            if model is self._active:  # not a tapped model (whose first output is a layer's)
                if isinstance(returned, (list, tuple)) and all(n is None for n in names):
                    declared = list(getattr(model, "output_names", None) or ())  # a functional model's output layers
                    if len(declared) == len(outputs) and len(set(declared)) == len(declared):
                        names = declared
                self._local.output_names = names
            return outputs
        except SaliencyError:
            raise
        except Exception as exc:
            raise model_call_error(exc, [tuple(t.shape) for t in tensors], _LAYOUT_HINT) from exc

    @property
    def _active(self):
        """The model this thread's session runs (the user's, a clone or a variant)."""
        active = getattr(self._local, "model", None)
        return self.model if active is None else active

    def _function(self, key: tuple, build):
        """The traced step for ``key`` and the model in use (traced once, reused across calls)."""
        key = (id(self._active), *key)
        return self._functions.get_or_make(key, lambda: tf.function(build(), reduce_retracing=True))

    def _prepare(self, points) -> list[tf.Tensor]:
        tensors = [tf.convert_to_tensor(p) for p in points]
        dtype = self.ops.dtype
        return [t if t.dtype == dtype else tf.cast(t, dtype) for t in tensors]

    def outputs(self, points) -> list[tf.Tensor]:
        return self._call(self._prepare(points))

    @property
    def output_names(self) -> list | None:
        """The names of the outputs of this thread's last model call (None for positions)."""
        return getattr(self._local, "output_names", None)

    def _score(self, outputs, indices, targets, which=None, predicted=(), scorers=None):
        """Sum of each row's target score; outputs in ``predicted`` use each row's own argmax;
        outputs in ``scorers`` are scored by that :class:`~salwidget.targets.RowScore`'s function
        (``targets`` then holds its data)."""
        dtype = self.ops.dtype
        score = tf.constant(0.0, dtype)
        scorers = scorers or {}
        for index, target in zip(indices, targets):
            if which is not None and index not in which:
                continue
            if index in scorers:
                values = scorers[index](self.ops, outputs[index], *target)
                score = score + tf.reduce_sum(tf.cast(values, dtype))
                continue
            check_output(outputs[index], index, None)
            if index in predicted:
                target = tf.argmax(outputs[index], axis=1, output_type=tf.int64)
            else:  # clamped: a fused pass checks the range after it (a GPU gather out of range gives zeros)
                target = tf.clip_by_value(target, 0, tf.cast(tf.shape(outputs[index])[1] - 1, target.dtype))
            picked = tf.gather(outputs[index], target, axis=1, batch_dims=1)
            score = score + tf.reduce_sum(tf.cast(picked, dtype))
        return score

    @staticmethod
    def _target_rows(targets, indices) -> tuple[list, tuple, tuple]:
        """Target tensors for a traced step, which outputs take their argmax (target None) instead, and
        the scoring functions' signatures (part of the step's key: a step never runs another's function)."""
        predicted = tuple(i for i in indices if targets[i] is None)
        rows, signatures = [], []
        for i in indices:
            target = targets[i]
            if isinstance(target, RowScore):
                rows.append(tuple(target.data))
                signatures.append(target.signature)
            else:
                rows.append(_NO_TARGET if target is None else target)
                signatures.append(None)
        return rows, predicted, tuple(signatures)

    @staticmethod
    def _scorers(targets, indices) -> dict:
        return {i: targets[i].score for i in indices if isinstance(targets[i], RowScore)}

    def input_gradients(self, points, targets, pairing=None):
        indices = tuple(targets)
        pairs = None if pairing is None else tuple(tuple(p) for p in pairing)
        target_rows, predicted, signatures = self._target_rows(targets, indices)
        scorers = self._scorers(targets, indices)

        def build():
            def step(tensors, target_rows):
                with tf.GradientTape(persistent=pairs is not None, watch_accessed_variables=False) as tape:
                    for t in tensors:
                        tape.watch(t)
                    outputs = self._call(list(tensors))
                    if pairs is None:
                        scores = [self._score(outputs, indices, target_rows, predicted=predicted, scorers=scorers)]
                    else:
                        scores = [self._score(outputs, indices, target_rows, set(p), predicted, scorers)
                                  for p in pairs]
                if pairs is None:
                    grads = tape.gradient(scores[0], list(tensors))
                else:
                    grads = [tape.gradient(s, t) for s, t in zip(scores, tensors)]
                return grads, outputs

            return step

        step = self._function(("grad", indices, pairs, predicted, signatures), build)
        grads, outputs = step(self._prepare(points), target_rows)
        missing = [i for i, g in enumerate(grads) if g is None]
        if missing:
            raise _unreachable(targets, f"input {missing[0]} does not reach the class score")
        return list(grads), list(outputs)

    # ----------------------------------------------------------------- layers
    def _layers(self) -> list:
        if not self._keras or not hasattr(self.model, "layers"):
            raise SaliencyError(
                "Layer methods need a Keras model with layers (functional or Sequential); this "
                f"{type(self.model).__name__} has none. Build it with keras.Model(inputs, outputs) or keras.Sequential."
            )
        return list(self.model.layers)

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self._layers()]

    def layer_name(self, layer: Any) -> str:
        if isinstance(layer, str):
            names = self.layer_names()
            if layer not in names:
                raise unknown_layer(layer, names)
            return layer
        for candidate in self._layers():
            if candidate is layer:
                return candidate.name
        raise SaliencyError(f"The layer {getattr(layer, 'name', layer)!r} is not one of this model's layers.")

    def _tapped_model(self, layer: str):
        """A functional model over the same layers returning (layer output, model outputs)."""
        key = (id(self._active), layer)
        if key not in self._tapped:
            import keras

            model = self._active
            try:
                inner = model.get_layer(layer).output
                outputs = _output_structure(model)
                inputs = model.inputs
            except (AttributeError, ValueError) as exc:
                raise _untappable(model, f"tap layer {layer!r}") from exc
            inputs = inputs[0] if len(inputs) == 1 else inputs  # as _call passes them (no structure warning)
            self._tapped[key] = keras.Model(inputs, [inner, outputs])
        return self._tapped[key]

    def layer_activations(self, points, layer: str):
        values = self._call(self._prepare(points), model=self._tapped_model(layer))
        return values[0], values[1:]

    def outputs_with_layer(self, points, layer: str, replace):
        """Every model output with ``layer``'s output replaced by ``replace(output)`` (AblationCAM; eager)."""
        return outputs_with_replaced_layer(self._active, layer, replace, lambda m: self._call(self._prepare(points), m))

    def layer_gradients(self, points, targets, layer: str):
        tapped = self._tapped_model(layer)
        indices = tuple(targets)
        target_rows, predicted, signatures = self._target_rows(targets, indices)
        scorers = self._scorers(targets, indices)

        def build():
            def step(tensors, target_rows):
                # Watching the inputs records the whole forward pass, so the
                # gradient with respect to the inner activation can be read.
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    for t in tensors:
                        tape.watch(t)
                    values = self._call(list(tensors), model=tapped)
                    activation, outputs = values[0], values[1:]
                    score = self._score(outputs, indices, target_rows, predicted=predicted, scorers=scorers)
                return activation, tape.gradient(score, activation), outputs

            return step

        step = self._function(("layer", id(tapped), indices, predicted, signatures), build)
        activation, grad, outputs = step(self._prepare(points), target_rows)
        if grad is None:
            raise _unreachable(targets, f"the class score does not depend on layer {layer!r}")
        return activation, grad, list(outputs)

    def layer_shapes(self, points) -> list[tuple[str, tuple[int, ...]]]:
        """(name, output shape) of each top-level layer, in the model's order."""
        shapes = []
        batch = int(points[0].shape[0])
        layers = self._layers()
        if not hasattr(self._active, "outputs"):  # subclassed: its layers have no recorded outputs
            raise _untappable(self._active, "read the layers' output shapes")
        for layer in layers:
            try:
                shape = tuple(layer.output.shape)
            except (AttributeError, ValueError):
                continue
            shapes.append((layer.name, (batch, *shape[1:])))
        return shapes

    def weighted_layers(self) -> list[str]:
        return [layer.name for layer in self._layers() if layer.weights][::-1]


def _output_structure(model):
    """The model's outputs as it returns them (a dict keeps its keys: flattened in the order of its plain
    calls, which ``model.outputs`` does not keep); a Sequential has only ``outputs``."""
    try:
        return model.output
    except (AttributeError, ValueError):
        return model.outputs


def _unreachable(targets: dict, detail: str) -> Exception:
    if names_function(targets):
        detail += "; the target function's score may not depend differentiably on the output"
    return not_differentiable(detail)
_TOTALS: dict[str, int | None] = {}


def device_memory_bytes(device: str) -> int | None:
    """The memory TensorFlow may use on ``device`` ('GPU:n'): its configured limit if one was set
    (``tf.config.set_logical_device_configuration``), else the card's total as NVML or
    ``nvidia-smi`` reports it; None when nothing says. Read once per process."""
    if device not in _TOTALS:
        _TOTALS[device] = _configured_limit(device) or _card_total(device)
    return _TOTALS[device]


def _configured_limit(device: str) -> int | None:
    index = int(device.split(":")[-1])
    try:
        physical = tf.config.list_physical_devices("GPU")[index]
        limits = [c.memory_limit for c in tf.config.get_logical_device_configuration(physical) or () if c.memory_limit]
    except (IndexError, ValueError, RuntimeError):
        return None
    return int(limits[0]) * 2**20 if limits else None


def _card_total(device: str) -> int | None:
    """The total memory of the card behind TensorFlow's ``device`` (CUDA_VISIBLE_DEVICES maps it)."""
    import os

    index = int(device.split(":")[-1])
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    card = visible[index] if index < len(visible) else str(index)
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(card)) if card.isdigit()
                  else pynvml.nvmlDeviceGetHandleByUUID(card))
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    except Exception:  # no NVML: ask nvidia-smi
        pass
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", f"--id={card}"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return int(float(out.split()[0]) * 2**20)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _untappable(model, doing: str) -> SaliencyError:
    """The error for a subclassed Keras model, whose inner outputs cannot be read."""
    return SaliencyError(
        f"Cannot {doing} in this {type(model).__name__}: a subclassed Keras model has no graph of layers to "
        "read an inner output from. Rebuild it as a functional model (keras.Model(inputs, outputs)) or "
        "keras.Sequential, or use a gradient method."
    )


_CHECKSUM_FUNCTIONS = BoundedCache(16)  # models come and go: keep the newest few


def _checksums(variables: tuple) -> np.ndarray:
    """(2 x len(variables)) float64: each variable's sum and a position-weighted sum, in one compiled call
    per set of variables (the function is kept per tuple of variable ids)."""
    import tensorflow as tf

    key = tuple(id(v) for v in variables)
    function = _CHECKSUM_FUNCTIONS.get(key)
    if function is None:
        @tf.function(autograph=False)
        def function():
            out = []
            for variable in variables:
                flat = tf.reshape(tf.cast(variable, tf.float64), [-1])
                weights = tf.cast(tf.range(tf.size(flat)) % 7 + 1, tf.float64)
                out += [tf.reduce_sum(flat), tf.reduce_sum(flat * weights)]
            return tf.stack(out)

        _CHECKSUM_FUNCTIONS.put(key, function)
    return function().numpy()
