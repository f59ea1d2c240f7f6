"""A forward-only backend: any callable on numpy batches, or an ONNX Runtime session.

``f(batch) -> scores`` takes a numpy batch (in the layout the caller declares
with ``channels_last``; channels first by default) and returns a numpy array,
or a tuple/list/dict of them. An ``onnxruntime.InferenceSession`` is called
with its inputs by name, in the dtype its first input declares. There are no
gradients and no layers: only the forward-only methods
(:func:`salwidget.methods.forward_only.forward_only_methods`) run, and any
other is refused with their names. The arithmetic around the passes is numpy
on the host (:class:`NumpyOps`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import SaliencyError
from .base import fresh_block, model_call_error, paste_squares, reference
from .blur import gaussian_taps, symmetric_indices

_LAYOUT_HINT = "a numpy callable gets the batch in the layout of x: pass channels_last= to declare it"
_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def is_onnx_session(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "onnxruntime" and hasattr(model, "get_inputs")


class NumpyOps:
    """:class:`~salwidget.backends.base.Ops` for numpy arrays of one float dtype."""

    host_indices = True

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)

    def asarray(self, value, dtype: str = "float") -> np.ndarray:
        kind = {"float": self.dtype, "int": np.int64, "wide": np.float64}[dtype]
        return np.asarray(value).astype(kind, copy=False)

    @staticmethod
    def numpy(tensor) -> np.ndarray:
        tensor = np.asarray(tensor)
        return tensor.astype(np.float32) if tensor.dtype == np.float16 else tensor

    def zeros(self, shape) -> np.ndarray:
        return np.zeros(tuple(shape), self.dtype)

    def accumulator(self, shape) -> np.ndarray:
        return np.zeros(tuple(shape), self.dtype)

    @staticmethod
    def wide(tensor):
        return tensor

    def narrow(self, tensor):
        return np.asarray(tensor, self.dtype)

    def full(self, shape, value: float) -> np.ndarray:
        return np.full(tuple(shape), float(value), self.dtype)

    @staticmethod
    def add(acc, values):
        acc += values
        return acc

    @staticmethod
    def arange(start: int, stop: int) -> np.ndarray:
        return np.arange(start, stop)

    @staticmethod
    def lerp(start, end, weight):
        return start + weight * (end - start)

    @staticmethod
    def cast_like(tensor, like):
        return np.asarray(tensor).astype(np.asarray(like).dtype, copy=False)

    paste_squares = staticmethod(paste_squares)  # occlusion writes its squares into the copies

    def fresh(self, shape, pool: list) -> np.ndarray:
        """An uninitialised array nothing else references, for a chunk's copies (``base.fresh_block``)."""
        return fresh_block(pool, tuple(shape), self.dtype)

    @staticmethod
    def multiply_into(a, b, out):
        """``a * b`` (broadcast) written into ``out``."""
        return np.multiply(a, b, out=out)

    @staticmethod
    def take(tensor, rows):
        return tensor[np.asarray(rows, np.int64)]

    @staticmethod
    def index_add(acc, rows, values):
        np.add.at(acc, np.asarray(rows, np.int64), values)
        return acc

    @staticmethod
    def put(acc, rows, values):
        acc[np.asarray(rows, np.int64)] = values
        return acc

    @staticmethod
    def take_along_rows(tensor, columns):
        return np.take_along_axis(tensor, np.asarray(columns, np.int64).reshape(-1, 1), axis=1).reshape(-1)

    @staticmethod
    def per_row(values, like):
        return np.reshape(values, (-1,) + (1,) * (np.ndim(like) - 1))

    @staticmethod
    def row_sum(tensor):
        return tensor.reshape(len(tensor), -1).sum(axis=1)

    @staticmethod
    def row_min(tensor):
        return tensor.reshape(len(tensor), -1).min(axis=1)

    @staticmethod
    def row_max(tensor):
        return tensor.reshape(len(tensor), -1).max(axis=1)

    @staticmethod
    def row_abs_max(tensor):
        """Each row's largest magnitude."""
        return np.abs(tensor.reshape(len(tensor), -1)).max(axis=1)

    @staticmethod
    def concat(tensors, axis: int = 0):
        return tensors[0] if len(tensors) == 1 else np.concatenate(list(tensors), axis=axis)

    @staticmethod
    def stack(tensors, axis: int = 0):
        return np.stack(list(tensors), axis=axis)

    @staticmethod
    def reshape(tensor, shape):
        return np.reshape(tensor, tuple(shape))

    @staticmethod
    def transpose(tensor, axes):
        return np.transpose(tensor, axes)

    @staticmethod
    def sum(tensor, axis=None, keepdims: bool = False):
        return np.sum(tensor, axis=axis, keepdims=keepdims)

    @staticmethod
    def mean(tensor, axis=None, keepdims: bool = False):
        return np.mean(tensor, axis=axis, keepdims=keepdims)

    @staticmethod
    def max(tensor, axis=None, keepdims: bool = False):
        return np.max(tensor, axis=axis, keepdims=keepdims)

    @staticmethod
    def min(tensor, axis=None, keepdims: bool = False):
        return np.min(tensor, axis=axis, keepdims=keepdims)

    square = staticmethod(np.square)
    sqrt = staticmethod(np.sqrt)
    abs = staticmethod(np.abs)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    where = staticmethod(np.where)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)

    @staticmethod
    def relu(tensor):
        return np.maximum(tensor, 0)

    @staticmethod
    def sigmoid(tensor):
        return 1 / (1 + np.exp(-tensor))

    @staticmethod
    def clip(tensor, low=None, high=None):
        return np.clip(tensor, low, high)

    @staticmethod
    def softmax(tensor, axis: int = -1):
        shifted = np.exp(tensor - np.max(tensor, axis=axis, keepdims=True))
        return shifted / shifted.sum(axis=axis, keepdims=True)

    @staticmethod
    def argmax(tensor, axis: int = -1):
        return np.argmax(tensor, axis=axis)

    @staticmethod
    def argsort(tensor, axis: int = -1, descending: bool = False):
        return np.argsort(-tensor if descending else tensor, axis=axis, kind="stable")

    def normal(self, shape, key: int):
        return np.random.default_rng(int(key)).standard_normal(tuple(shape)).astype(self.dtype)

    def uniform(self, shape, key: int):
        return np.random.default_rng(int(key)).random(tuple(shape)).astype(self.dtype)

    def resize(self, maps, size):
        """Bilinear resize of (B, h, w) maps, half-pixel centres and clamped edges (as torch and TensorFlow)."""
        height, width = maps.shape[1:]
        if (height, width) == tuple(size):
            return maps

        def axis(n_in: int, n_out: int):
            position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
            low = np.floor(position).astype(np.int64)
            return low, np.minimum(low + 1, n_in - 1), (position - low).astype(self.dtype)

        r0, r1, fr = axis(height, size[0])
        c0, c1, fc = axis(width, size[1])
        rows = maps[:, r0] * (1 - fr)[None, :, None] + maps[:, r1] * fr[None, :, None]
        return rows[:, :, c0] * (1 - fc)[None, None, :] + rows[:, :, c1] * fc[None, None, :]

    def blur(self, images, sigma, channels_last: bool, mode: str = "reflect"):
        """Gaussian blur over the spatial axes, as ``scipy.ndimage.gaussian_filter`` (see the other backends)."""
        x = images if channels_last else np.moveaxis(images, 1, -1)
        sigmas = np.broadcast_to(np.asarray(sigma, np.float64), (len(x),))
        out = np.array(x, copy=True)
        for row, value in enumerate(sigmas):
            if value > 0:
                out[row] = self._blur_one(x[row], float(value), mode)
        return out if channels_last else np.moveaxis(out, -1, 1)

    def _blur_one(self, image, sigma: float, mode: str):
        taps = gaussian_taps(sigma).astype(self.dtype)
        radius = (len(taps) - 1) // 2
        for axis in (1, 0):  # columns, then rows, as the torch backend
            length = image.shape[axis]
            if mode == "constant":
                pad = [(0, 0)] * image.ndim
                pad[axis] = (radius, radius)
                padded = np.pad(image, pad)
            else:
                padded = np.take(image, symmetric_indices(length, radius), axis=axis)
            moved = np.moveaxis(padded, axis, -1)
            windows = np.lib.stride_tricks.sliding_window_view(moved, len(taps), axis=-1)
            image = np.moveaxis(windows @ taps, -1, axis)
        return image


class NumpyBackend:
    """Runs a numpy callable or an ONNX Runtime session, forward passes only."""

    framework = "numpy"
    device = "cpu"
    default_channels_last = False
    differentiable = False

    def __init__(self, model: Any):
        if not callable(model) and not is_onnx_session(model):
            raise SaliencyError(f"framework='numpy' needs a callable f(batch) -> scores or an "
                                f"onnxruntime.InferenceSession; got {type(model).__name__}.")
        self._model = reference(model)
        self._onnx = is_onnx_session(model)
        dtype = np.float32
        if self._onnx:
            dtype = _ONNX_TYPES.get(model.get_inputs()[0].type, np.float32)
        self._ops = NumpyOps(dtype)
        self._names: list | None = None

    @property
    def model(self) -> Any:
        return self._model()

    @property
    def ops(self) -> NumpyOps:
        return self._ops

    @contextmanager
    def session(self, *, randomize: Sequence[str] = (), seed: int = 0, variant: Any = None) -> Iterator[None]:
        if randomize:
            raise SaliencyError("A numpy callable or ONNX session has no layers to re-initialise (randomize=).")
        if variant is not None:
            raise SaliencyError("This method changes the model's layers; a numpy callable or ONNX session has none.")
        yield

    def identity(self) -> tuple:
        """The model object: a callable's weights cannot be read, so only a new object is a new model."""
        return (id(self.model), "numpy")

    def fit_chunk(self, run, rows: int) -> int | None:
        run()
        return None

    def synchronize(self) -> None:
        pass

    @property
    def output_names(self) -> list | None:
        return self._names

    def outputs(self, points) -> list[np.ndarray]:
        model = self.model
        arrays = [np.ascontiguousarray(p, dtype=self._ops.dtype) for p in points]
        try:
            if self._onnx:
                names = [i.name for i in model.get_inputs()]
                returned = model.run(None, dict(zip(names, arrays)))
                self._names = [o.name for o in model.get_outputs()]
            else:
                returned = model(*arrays)
        except SaliencyError:
            raise
        except Exception as exc:
            raise model_call_error(exc, [a.shape for a in arrays], _LAYOUT_HINT) from exc
        if isinstance(returned, dict):
            self._names = list(returned)
            returned = list(returned.values())
        elif not self._onnx:
            self._names = None
        if not isinstance(returned, (list, tuple)):
            returned = [returned]
        outputs = [np.asarray(o) for o in returned]
        if not all(np.issubdtype(o.dtype, np.number) for o in outputs):
            raise SaliencyError(f"The model returned {[o.dtype for o in outputs]}; it must return numeric arrays.")
        return outputs

    def _refuse(self, *_, **__):
        raise forward_only_refusal("this")

    input_gradients = layer_gradients = layer_activations = layer_shapes = outputs_with_layer = _refuse

    def layer_names(self) -> list[str]:
        return []

    def layer_name(self, layer: Any) -> str:
        raise SaliencyError("A numpy callable or ONNX session has no layers; CAM methods need a torch or Keras model.")

    def weighted_layers(self) -> list[str]:
        return []


def forward_only_refusal(method: str) -> SaliencyError:
    """The error a gradient or layer method gets on a forward-only model, naming the methods it can use."""
    from ..methods.forward_only import forward_only_methods

    return SaliencyError(
        f"Method {method!r} needs gradients or a layer's activations, and this model (a numpy callable or an "
        f"ONNX Runtime session) gives forward passes only. Use a forward-only method: "
        f"{', '.join(forward_only_methods())}."
    )


__all__ = ["NumpyBackend", "NumpyOps", "forward_only_refusal", "is_onnx_session"]
