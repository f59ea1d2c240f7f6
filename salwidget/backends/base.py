"""The protocol every framework backend implements, and the errors they share.

A backend speaks its framework's tensors on the model's own device. The engine
and the methods never import a framework: they call the backend for passes
through the model and its :class:`Ops` for the arithmetic around them (noise,
path points, sums), so those numbers stay on the device too. numpy appears at
the edges only: the user's inputs come in as numpy, finished maps go out as numpy.
"""

from __future__ import annotations

import re
import sys
import weakref
from contextlib import AbstractContextManager
from typing import Any, Protocol, Sequence

import numpy as np

from ..errors import NotDifferentiableError, SaliencyError

Tensor = Any  # a torch.Tensor or a tf.Tensor, on the model's device


class Ops(Protocol):
    """The framework arithmetic the methods need, on the model's device.

    Operators (``+ - * /``, comparisons) work on tensors directly; these
    functions cover what differs between frameworks. Row-wise functions act on
    the first (batch) axis. Every backend's ops (torch, TensorFlow, numpy)
    provide all of them; ``finite_rows``, ``paste_squares``, ``fresh`` and
    ``multiply_into`` are optional (callers look them up with ``getattr`` and
    fall back; the last three exist where arrays can be written: torch, numpy).
    """

    host_indices: bool  # whether small index arrays are best made on the host and copied

    # --- making and reading tensors
    def asarray(self, value: np.ndarray, dtype: str = "float") -> Tensor: ...
    def numpy(self, tensor: Tensor) -> np.ndarray: ...
    def zeros(self, shape: Sequence[int]) -> Tensor: ...
    def full(self, shape: Sequence[int], value: float) -> Tensor: ...
    def accumulator(self, shape: Sequence[int]) -> Tensor: ...
    def arange(self, start: int, stop: int) -> Tensor: ...
    def normal(self, shape: Sequence[int], key: int) -> Tensor: ...
    def uniform(self, shape: Sequence[int], key: int) -> Tensor: ...

    # --- dtypes
    def wide(self, tensor: Tensor) -> Tensor: ...
    def narrow(self, tensor: Tensor) -> Tensor: ...
    def cast_like(self, tensor: Tensor, like: Tensor) -> Tensor: ...

    # --- rows
    def take(self, tensor: Tensor, rows: np.ndarray) -> Tensor: ...
    def take_along_rows(self, tensor: Tensor, columns: Any) -> Tensor: ...
    def index_add(self, acc: Tensor, rows: np.ndarray, values: Tensor) -> Tensor: ...
    def put(self, acc: Tensor, rows: np.ndarray, values: Tensor) -> Tensor: ...
    def add(self, acc: Tensor, values: Tensor) -> Tensor: ...
    def per_row(self, values: Tensor, like: Tensor) -> Tensor: ...
    def row_sum(self, tensor: Tensor) -> Tensor: ...
    def row_max(self, tensor: Tensor) -> Tensor: ...
    def row_min(self, tensor: Tensor) -> Tensor: ...
    def row_abs_max(self, tensor: Tensor) -> Tensor: ...

    # --- shapes
    def concat(self, tensors: Sequence[Tensor], axis: int = 0) -> Tensor: ...
    def stack(self, tensors: Sequence[Tensor], axis: int = 0) -> Tensor: ...
    def reshape(self, tensor: Tensor, shape: Sequence[int]) -> Tensor: ...
    def transpose(self, tensor: Tensor, axes: Sequence[int]) -> Tensor: ...

    # --- reductions and elementwise functions
    def sum(self, tensor: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor: ...
    def mean(self, tensor: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor: ...
    def max(self, tensor: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor: ...
    def min(self, tensor: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor: ...
    def argmax(self, tensor: Tensor, axis: int = -1) -> Tensor: ...
    def argsort(self, tensor: Tensor, axis: int = -1, descending: bool = False) -> Tensor: ...
    def softmax(self, tensor: Tensor, axis: int = -1) -> Tensor: ...
    def clip(self, tensor: Tensor, low: Any = None, high: Any = None) -> Tensor: ...
    def lerp(self, start: Tensor, end: Tensor, weight: Any) -> Tensor: ...
    def where(self, condition: Tensor, x: Any, y: Any) -> Tensor: ...
    def maximum(self, a: Any, b: Any) -> Tensor: ...
    def minimum(self, a: Any, b: Any) -> Tensor: ...
    def abs(self, tensor: Tensor) -> Tensor: ...
    def exp(self, tensor: Tensor) -> Tensor: ...
    def log(self, tensor: Tensor) -> Tensor: ...
    def sqrt(self, tensor: Tensor) -> Tensor: ...
    def square(self, tensor: Tensor) -> Tensor: ...
    def relu(self, tensor: Tensor) -> Tensor: ...
    def sigmoid(self, tensor: Tensor) -> Tensor: ...

    # --- images
    def blur(self, images: Tensor, sigma: Any, channels_last: bool, mode: str = "reflect") -> Tensor: ...
    def resize(self, maps: Tensor, size: Sequence[int]) -> Tensor: ...


class ModelVariant(Protocol):
    """A changed model for one computation (Guided Backprop's ReLUs, for example).

    ``torch(shadow)`` may replace modules of the torch shadow copy (its tensors
    are the user's: never write into them) and returns the model to run;
    ``torch_context``, if present, is a callable returning a context manager
    entered around every model call (a thread-local ``TorchFunctionMode``
    reaches functional calls). ``keras(model)`` returns a model to run instead
    of the user's Keras model (a clone or a rebuilt functional model). A
    variant whose ``torch`` changes nothing in the shadow says so with
    ``keeps_shadow = True``: it then runs on the shadow the backend reuses
    between calls; otherwise on a private one.
    """

    def torch(self, shadow: Any) -> Any: ...

    def keras(self, model: Any) -> Any: ...


class Backend(Protocol):
    """What the engine needs from a framework.

    ``session()`` opens a computation: device and dtype are read then (a model
    moved or cast after an earlier call works), and the model the passes run
    through is prepared without changing anything the user's code can see.
    """

    framework: str
    device: str
    default_channels_last: bool
    ops: Ops

    def session(self, *, randomize: Sequence[str] = (), seed: int = 0, variant: Any = None) -> AbstractContextManager: ...

    def outputs(self, points: Sequence[Tensor]) -> list[Tensor]:
        """Every model output for ``points``, without gradients."""

    def input_gradients(
        self, points: Sequence[Tensor], targets: dict[int, Tensor], pairing: Sequence[Sequence[int]] | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Gradients of target scores with respect to each input, and every output.

        The score is ``sum_o sum_r out_o[r, targets[o][r]]``; with ``pairing``,
        input ``m`` gets the gradient of the scores of outputs ``pairing[m]`` only.
        """

    def layer_gradients(
        self, points: Sequence[Tensor], targets: dict[int, Tensor], layer: str
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """A layer's activations, their gradients for the target score, and every output."""

    def layer_activations(self, points: Sequence[Tensor], layer: str) -> tuple[Tensor, list[Tensor]]:
        """A layer's activations and every output, without gradients."""

    def outputs_with_layer(self, points: Sequence[Tensor], layer: str, replace: Any) -> list[Tensor]:
        """Every output for ``points`` with ``layer``'s output replaced by ``replace(output)``."""

    @property
    def model(self) -> Any:
        """The user's model (held weakly)."""

    @property
    def output_names(self) -> list | None:
        """The names of the outputs of this thread's last model call (None for positions)."""

    def identity(self) -> tuple:
        """What identifies the model's current weights and structure (cache and store keys)."""

    def layer_names(self) -> list[str]:
        """Every layer a CAM or a sanity check can name, in definition order."""

    def layer_name(self, layer: Any) -> str:
        """The name of ``layer`` (a name, or a layer object of this model)."""

    def layer_shapes(self, points: Sequence[Tensor]) -> list[tuple[str, tuple[int, ...]]]:
        """(name, output shape) of every layer the model calls, in call order."""

    def weighted_layers(self) -> list[str]:
        """The layers that hold weights, in definition order (the sanity check randomises them)."""

    def fit_chunk(self, run: Any, rows: int) -> int | None:
        """How many passes a chunk can hold on this device, measured on ``run`` (None: no limit known)."""

    def synchronize(self) -> None:
        """Wait for the device's queued work (timings)."""


def reference(model: Any) -> Any:
    """A callable returning ``model``: a weak reference where the model allows one."""
    try:
        return weakref.ref(model)
    except TypeError:
        return lambda: model


def not_differentiable(detail: str) -> NotDifferentiableError:
    """The error for a model whose output has no gradient with respect to its input."""
    return NotDifferentiableError(
        "The model's output is not differentiable with respect to its input "
        f"({detail}). Remove .detach(), .numpy(), torch.no_grad()/stop_gradient, argmax or "
        "integer casts between the input and the class scores."
    )


# Messages of shape and layout mistakes, as torch and TensorFlow word them.
_SHAPE_WORDS = re.compile(
    r"shape|size|dimension|channels|mat1|incompatible|expected input|expected .*input|rank", re.IGNORECASE
)
_MEMORY_WORDS = re.compile(r"(?i:out of memory|resource ?exhausted|failed to allocate)|\bOOM\b")


def model_call_error(exc: Exception, shapes: Sequence[tuple], layout_hint: str) -> Exception:
    """The model's own exception, restated with what salwidget knows.

    Out-of-memory errors say so and suggest a smaller ``batch_size``; shape
    errors get the shapes the model was given and a layout hint; anything else
    is the model's own error with the shapes added, and no guess.
    """
    shown = ", ".join(str(tuple(shape)) for shape in shapes)
    message = f"{type(exc).__name__}: {exc}"
    if _MEMORY_WORDS.search(message) or "OutOfMemory" in type(exc).__name__:
        rows = shapes[0][0] if shapes and len(shapes[0]) else "?"
        return MemoryError(
            f"The device ran out of memory on a chunk of {rows} passes ({message}). "
            "Pass a smaller batch_size (passes per chunk), e.g. batch_size=4."
        )
    if _SHAPE_WORDS.search(str(exc)):
        return SaliencyError(
            f"The model raised {type(exc).__name__} on input of shape {shown}: {exc}. "
            f"Check the layout ({layout_hint}) and the input size."
        )
    return SaliencyError(f"The model raised {type(exc).__name__} on input of shape {shown}: {exc}.")


def unknown_layer(name: str, candidates: Sequence[str]) -> SaliencyError:
    """An error for a layer name the model does not have, listing the closest names."""
    import difflib

    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.3)
    listed = ", ".join(repr(c) for c in (close or list(candidates)[-5:]))
    return SaliencyError(f"The model has no layer {name!r}. Closest names: {listed}.")


def paste_squares(images, fill, rows, tops, lefts, size: int, channels_last: bool):
    """``images`` (n, ...) with copy ``i``'s ``size`` x ``size`` square at ``(tops[i], lefts[i])`` replaced,
    in place, by the same square of ``fill[rows[i]]`` (a fill whose spatial axes are 1 long is broadcast).

    For the frameworks whose arrays can be written (torch, numpy): occlusion's copies, a few small writes
    each. A square past the image (a top of H) is cut to nothing.
    """
    spatial = (1, 2) if channels_last else (2, 3)
    whole = int(fill.shape[spatial[0]]) == 1 and int(fill.shape[spatial[1]]) == 1
    for i, (row, top, left) in enumerate(zip(np.asarray(rows).tolist(), np.asarray(tops).tolist(),
                                             np.asarray(lefts).tolist())):
        square = (slice(top, top + size), slice(left, left + size))
        where = (i, *square) if channels_last else (i, slice(None), *square)
        source = fill[row] if whole else fill[(row, *square) if channels_last else (row, slice(None), *square)]
        images[where] = source
    return images


POOLED_BLOCKS = 4  # host blocks a run keeps for its chunks' batches (two sizes: full chunks and the last)


def fresh_block(pool: list, shape: tuple, dtype) -> np.ndarray:
    """An uninitialised host array of ``shape`` that nothing else references: a block of ``pool`` (a list the
    caller keeps for one run) whose only references are the pool's, else a new one (kept if there is room).

    Why: a new large array per chunk costs a page fault per 4 KiB on a CPU (glibc hands big blocks back to the
    system between chunks), more than a cheap model's passes over it. Reuse is only of memory no live object
    holds: a tensor made by ``torch.from_numpy`` (and every view of it) keeps one reference to its array, and
    a numpy view keeps its base, so a batch a model kept (a hook, a cache, an aliasing output) is never
    rewritten; the block is as fresh as a new allocation.
    """
    dtype = np.dtype(dtype)
    for block in pool:
        # References: the pool's list, this loop's name and getrefcount's argument; any more are holders.
        if block.shape == shape and block.dtype == dtype and sys.getrefcount(block) <= 3:
            return block
    block = np.empty(shape, dtype)
    if len(pool) < POOLED_BLOCKS:
        pool.append(block)
    return block
