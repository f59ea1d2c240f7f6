"""PyTorch backend: passes, gradients and arithmetic on the model's own device.

The user's module is never changed, not even for a moment: each computation
runs through a *shadow*, a structural copy made in a few milliseconds whose
modules are new objects (their own training flag, in eval mode, their own hook
tables) while every parameter and buffer is the user's own storage, detached.
So another thread training the model sees no eval mode, no frozen
``requires_grad`` and no hooks, and in-place weight updates are seen at the
next computation. The shadow of the last call is reused while nothing it
copied changed (:mod:`~salwidget.backends.torch_shadow`). Input gradients come
from ``torch.autograd.grad(score, inputs)``: no weight gradient is computed or stored.
"""

from __future__ import annotations

import copy
import threading
import weakref
import zlib
from contextlib import ExitStack, contextmanager, nullcontext as _no_context
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import SaliencyError
from ..inputs import check_output
from ..outputs import flatten_outputs
from ..targets import RowScore, names_function
from .base import reference as _reference
from .base import fresh_block, model_call_error, not_differentiable, paste_squares, unknown_layer
from .torch_shadow import shadow_copy, watch_for

_GPU_MEMORY_SHARE, _MAX_GPU_CHUNK = 0.5, 1024
_RANDOMIZE_STREAM = 5
_LAYOUT_HINT = "torch models usually take (B, C, H, W); pass channels_last=True if yours takes (B, H, W, C)"


def _as_list(output) -> tuple[list[torch.Tensor], list]:
    """(tensors, names) of what the model returned (see :func:`salwidget.outputs.flatten_outputs`)."""
    return flatten_outputs(output, lambda value: isinstance(value, torch.Tensor))


def model_device_and_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's floating-point weights live, read now (not cached)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    for tensor in model.buffers():
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def _is_keras(model) -> bool:
    return any(cls.__module__.split(".")[0] == "keras" for cls in type(model).__mro__)


class TorchOps:
    """:class:`~salwidget.backends.base.Ops` for torch tensors on one device and dtype."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        # Sums stay in the model's dtype: float64 sums cost a conversion and twice the memory
        # traffic per chunk, and float32 sums of a few hundred maps are exact to ~1e-6.
        self._wide = dtype
        self._generator = torch.Generator(device=device)

    def asarray(self, value, dtype: str = "float") -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.to(self.device)
        kind = {"float": self.dtype, "int": torch.long, "wide": self._wide}[dtype]
        tensor = self._from_host(np.asarray(value))
        return tensor if tensor.dtype == kind else tensor.to(kind)  # a no-op cast is still an operation

    def _from_host(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device; on a CPU a writable array is wrapped without dispatching any
        operation (``as_tensor`` costs two per call: a chunk makes several of these)."""
        if self.device.type == "cpu" and array.flags.writeable and array.flags.c_contiguous and array.dtype.isnative \
                and array.ndim:
            return torch.from_numpy(array)
        return torch.as_tensor(array, device=self.device)

    def numpy(self, tensor: torch.Tensor) -> np.ndarray:
        """A host copy; float16/bfloat16 become float32, float64 stays (saved sums)."""
        if tensor.requires_grad:  # a detach is an operation of its own
            tensor = tensor.detach()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()
        return (tensor if tensor.device.type == "cpu" else tensor.cpu()).numpy()

    def zeros(self, shape) -> torch.Tensor:
        return torch.zeros(tuple(shape), device=self.device, dtype=self.dtype)

    def accumulator(self, shape) -> torch.Tensor:
        """Zeros for running sums (in the model's dtype; see ``__init__``)."""
        return torch.zeros(tuple(shape), device=self.device, dtype=self._wide)

    def wide(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.dtype == self._wide else tensor.to(self._wide)

    def narrow(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.dtype == self.dtype else tensor.to(self.dtype)

    def full(self, shape, value: float) -> torch.Tensor:
        return torch.full(tuple(shape), float(value), device=self.device, dtype=self.dtype)

    @property
    def host_indices(self) -> bool:
        """Whether small index arrays are best made on the host and copied (a CPU: no copy at
        all); on a GPU a copy from pageable memory would wait for queued work, so indices
        are computed on the device instead."""
        return self.device.type == "cpu"

    @staticmethod
    def add(acc: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``acc + values``, in place."""
        return acc.add_(values if values.dtype == acc.dtype else values.to(acc.dtype))

    def arange(self, start: int, stop: int) -> torch.Tensor:
        """Integers start..stop-1 made on the device (no copy from the host)."""
        return torch.arange(start, stop, device=self.device)

    @staticmethod
    def lerp(start: torch.Tensor, end: torch.Tensor, weight) -> torch.Tensor:
        """``start + weight (end - start)`` in one pass."""
        return torch.lerp(start, end, weight)

    @staticmethod
    def cast_like(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.dtype == like.dtype else tensor.to(like.dtype)

    paste_squares = staticmethod(paste_squares)  # occlusion writes its squares into the copies

    def fresh(self, shape, pool: list) -> torch.Tensor:
        """An uninitialised tensor no live tensor shares, for a chunk's copies (see ``base.fresh_block``: on a
        CPU a run's pooled host blocks spare a page fault per 4 KiB; elsewhere ``torch.empty``)."""
        host = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}.get(self.dtype)
        if self.device.type != "cpu" or host is None:
            return torch.empty(tuple(shape), device=self.device, dtype=self.dtype)
        return torch.from_numpy(fresh_block(pool, tuple(shape), host))

    @staticmethod
    def multiply_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``a * b`` (broadcast) written into ``out``: one pass, no allocation."""
        return torch.mul(a, b, out=out)

    def take(self, tensor: torch.Tensor, rows) -> torch.Tensor:
        return tensor[self._rows(rows)]

    def index_add(self, acc: torch.Tensor, rows, values: torch.Tensor) -> torch.Tensor:
        return acc.index_add_(0, self._rows(rows), values if values.dtype == acc.dtype else values.to(acc.dtype))

    def put(self, acc: torch.Tensor, rows, values: torch.Tensor) -> torch.Tensor:
        return acc.index_copy_(0, self._rows(rows), values if values.dtype == acc.dtype else values.to(acc.dtype))

    def _rows(self, rows) -> torch.Tensor:
        if isinstance(rows, torch.Tensor):
            return rows if rows.device == self.device else rows.to(self.device)
        return self._from_host(np.asarray(rows, np.int64))

    def take_along_rows(self, tensor: torch.Tensor, columns) -> torch.Tensor:
        """``tensor[r, columns[r]]`` for every row ``r``."""
        return tensor.gather(1, self._rows(columns).reshape(-1, 1)).reshape(-1)

    @staticmethod
    def per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.reshape((-1,) + (1,) * (like.dim() - 1))

    @staticmethod
    def row_sum(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(len(tensor), -1).sum(dim=1)

    @staticmethod
    def finite_rows(tensors) -> torch.Tensor:
        """Whether each row of every tensor (one per pass: (n, ...) each) is finite, as one bool per row:
        a NaN or inf makes the rows' summed values non-finite, and ``s - s == 0`` only for a finite ``s``
        (a few operations per chunk, not isfinite's four per tensor)."""
        total = None
        for tensor in tensors:
            summed = tensor.sum(dim=tuple(range(1, tensor.dim()))) if tensor.dim() > 1 else tensor
            total = summed if total is None else total + summed
        gap = total - total  # 0 for a finite sum, NaN otherwise; NaN is the one value not equal to itself
        return gap == gap

    @staticmethod
    def row_min(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(len(tensor), -1).amin(dim=1)

    @staticmethod
    def row_max(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(len(tensor), -1).amax(dim=1)

    @staticmethod
    def row_abs_max(tensor: torch.Tensor) -> torch.Tensor:
        """Each row's largest magnitude (one fused reduction, not abs then max)."""
        return torch.linalg.vector_norm(tensor.reshape(len(tensor), -1), float("inf"), dim=1)

    @staticmethod
    def concat(tensors, axis: int = 0) -> torch.Tensor:
        return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim=axis)

    @staticmethod
    def stack(tensors, axis: int = 0) -> torch.Tensor:
        return torch.stack(list(tensors), dim=axis)

    @staticmethod
    def reshape(tensor: torch.Tensor, shape) -> torch.Tensor:
        return tensor.reshape(tuple(shape))

    @staticmethod
    def transpose(tensor: torch.Tensor, axes) -> torch.Tensor:
        return tensor.permute(*axes)

    @staticmethod
    def sum(tensor: torch.Tensor, axis=None, keepdims: bool = False) -> torch.Tensor:
        return tensor.sum() if axis is None else tensor.sum(dim=axis, keepdim=keepdims)

    @staticmethod
    def mean(tensor: torch.Tensor, axis=None, keepdims: bool = False) -> torch.Tensor:
        return tensor.mean() if axis is None else tensor.mean(dim=axis, keepdim=keepdims)

    @staticmethod
    def max(tensor: torch.Tensor, axis=None, keepdims: bool = False) -> torch.Tensor:
        return tensor.max() if axis is None else tensor.amax(dim=axis, keepdim=keepdims)

    @staticmethod
    def min(tensor: torch.Tensor, axis=None, keepdims: bool = False) -> torch.Tensor:
        return tensor.min() if axis is None else tensor.amin(dim=axis, keepdim=keepdims)

    square = staticmethod(torch.square)
    sqrt = staticmethod(torch.sqrt)
    abs = staticmethod(torch.abs)
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    relu = staticmethod(torch.relu)
    sigmoid = staticmethod(torch.sigmoid)
    where = staticmethod(torch.where)
    maximum = staticmethod(torch.maximum)
    minimum = staticmethod(torch.minimum)

    @staticmethod
    def clip(tensor: torch.Tensor, low=None, high=None) -> torch.Tensor:
        return tensor.clamp(low, high)

    @staticmethod
    def softmax(tensor: torch.Tensor, axis: int = -1) -> torch.Tensor:
        return torch.softmax(tensor, dim=axis)

    @staticmethod
    def argmax(tensor: torch.Tensor, axis: int = -1) -> torch.Tensor:
        return tensor.argmax(dim=axis)

    @staticmethod
    def argsort(tensor: torch.Tensor, axis: int = -1, descending: bool = False) -> torch.Tensor:
        return torch.argsort(tensor, dim=axis, descending=descending, stable=True)

    def normal(self, shape, key: int) -> torch.Tensor:
        """Standard normal numbers drawn from the device's generator seeded with ``key``."""
        self._generator.manual_seed(int(key))
        return torch.randn(tuple(shape), generator=self._generator, device=self.device, dtype=self.dtype)

    def uniform(self, shape, key: int) -> torch.Tensor:
        """Uniform numbers in [0, 1) drawn from the device's generator seeded with ``key``."""
        self._generator.manual_seed(int(key))
        return torch.rand(tuple(shape), generator=self._generator, device=self.device, dtype=self.dtype)

    def resize(self, maps: torch.Tensor, size) -> torch.Tensor:
        """Bilinear resize of (B, h, w) maps to (B, *size) (corners not aligned, as images)."""
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        import torch.nn.functional as F

        return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]

    def blur(self, images: torch.Tensor, sigma, channels_last: bool, mode: str = "reflect") -> torch.Tensor:
        """Gaussian blur of (B, C, H, W) or (B, H, W, C) images over the spatial
        axes, as ``scipy.ndimage.gaussian_filter``; ``sigma`` is one number or
        one per image (0 leaves an image as it is); ``mode`` is scipy's border,
        ``'reflect'`` or ``'constant'`` (zeros outside, as PAIR's Blur IG)."""
        x = images.permute(0, 3, 1, 2) if channels_last else images
        sigmas = np.broadcast_to(np.asarray(sigma, np.float64), (len(x),))
        parts, order = [], []
        # One separable convolution per distinct sigma (one for a batch blurred alike).
        for value in np.unique(sigmas):
            rows = np.nonzero(sigmas == value)[0]
            part = x[self._rows(rows)]
            parts.append(self._blur_same_sigma(part, float(value), mode) if value > 0 else part)
            order.append(rows)
        out = torch.cat(parts)[self._rows(np.argsort(np.concatenate(order), kind="stable"))]
        return out.permute(0, 2, 3, 1) if channels_last else out

    def _blur_same_sigma(self, x: torch.Tensor, sigma: float, mode: str = "reflect") -> torch.Tensor:
        import torch.nn.functional as F

        from .blur import gaussian_taps, symmetric_indices

        taps = torch.as_tensor(gaussian_taps(sigma), device=x.device, dtype=x.dtype)
        radius = (len(taps) - 1) // 2
        b, c, h, w = x.shape
        flat = x.reshape(b * c, 1, h, w)
        if mode == "constant":
            flat = F.conv2d(F.pad(flat, (radius, radius, radius, radius)), taps.reshape(1, 1, 1, -1))
            flat = F.conv2d(flat, taps.reshape(1, 1, -1, 1))
            return flat.reshape(b, c, h, w)
        flat = flat.index_select(3, self._rows(symmetric_indices(w, radius)))
        flat = F.conv2d(flat, taps.reshape(1, 1, 1, -1))
        flat = flat.index_select(2, self._rows(symmetric_indices(h, radius)))
        flat = F.conv2d(flat, taps.reshape(1, 1, -1, 1))
        return flat.reshape(b, c, h, w)


class _Capture:
    """Forward hook that keeps a layer's output (the first tensor of a tuple).

    With ``start_graph`` (for layer gradients) an output that does not require
    grad (the shadow's weights are detached and the input needs none) is
    replaced by a copy that does: autograd then records from this layer on
    only. The copy is not a leaf, so in-place operations after it still work.
    """

    def __init__(self, start_graph: bool = False):
        self.value = None
        self.start_graph = start_graph

    def __call__(self, module, inputs, output):
        first = output[0] if isinstance(output, (tuple, list)) else output
        if self.start_graph and isinstance(first, torch.Tensor) and torch.is_grad_enabled() \
                and first.is_floating_point() and not first.requires_grad:
            first = first.detach().requires_grad_().clone()
            if isinstance(output, (tuple, list)):
                output = type(output)([first, *output[1:]]) if isinstance(output, list) else (first, *output[1:])
            else:
                output = first
            self.value = first
            return output
        self.value = first
        return None


class TorchBackend:
    """Runs a ``torch.nn.Module`` on its own device (CUDA, MPS or CPU) through a shadow copy."""

    framework = "torch"

    @property
    def model(self) -> torch.nn.Module:
        """The user's model (held weakly: the backend cache never keeps a model alive)."""
        return self._model()

    def __init__(self, model: torch.nn.Module):
        self._model = _reference(model)
        # Keras 3 on the torch backend is a torch Module with Keras' channels-last habit.
        self._keras = _is_keras(model)
        self.default_channels_last = self._keras
        self._local = threading.local()
        self._refresh_device()

    # ------------------------------------------------------------------ state
    def _refresh_device(self, token: int | None = None) -> None:
        """Read the model's device and dtype (with ``token``, the structure's: they change only with it)."""
        if token is None or token != getattr(self, "_device_token", None):
            self._device, self._dtype = model_device_and_dtype(self.model)
            self._device_token = token
        self.device = str(self._device)
        ops = getattr(self, "_ops", None)
        if ops is None or ops.device != self._device or ops.dtype != self._dtype:
            self._ops = TorchOps(self._device, self._dtype)

    @property
    def ops(self) -> TorchOps:
        return self._ops

    @property
    def _active(self) -> torch.nn.Module:
        active = getattr(self._local, "model", None)
        if active is None:
            raise RuntimeError("TorchBackend used outside session(): open one with `with backend.session():`")
        return active

    @contextmanager
    def session(self, *, randomize: Sequence[str] = (), seed: int = 0, variant: Any = None) -> Iterator[None]:
        """Open a computation on a shadow of the model (see the module docstring).

        The shadow of the last call is reused while the model's structure is
        unchanged (:mod:`~salwidget.backends.torch_shadow`); another thread, or
        a nested session, gets a private one. ``randomize`` names layers whose
        weights are re-initialised in this session only (fresh tensors; the
        user's are never written), seeded by ``seed``: the model-randomisation
        sanity check. ``variant`` (see :class:`~salwidget.backends.base.ModelVariant`)
        may change the shadow's modules (never its tensors) and wrap every model
        call in a context.
        """
        local = self._local
        previous = getattr(local, "model", None), getattr(local, "context", None), getattr(local, "checked", None)
        with ExitStack() as stack:
            checked = None
            if self._keras:  # Keras layers keep their own state: call the model itself with training=False
                self._refresh_device()
                working = self.model
            else:
                model = self.model
                watch = watch_for(self)
                checked = watch.check(model)
                self._refresh_device(checked[0])  # .to() and casts give a new structure token
                if randomize or (variant is not None and not getattr(variant, "keeps_shadow", False)):
                    working = shadow_copy(model)  # changed in this session only: never the cached one
                    if randomize:
                        _randomize(working, model, randomize, seed)
                else:
                    working = stack.enter_context(watch.shadow(model, checked[1]))
                if variant is not None:
                    working = variant.torch(working)
            local.model, local.context, local.checked = working, getattr(variant, "torch_context", None), checked
            try:
                with torch.inference_mode(False):
                    yield
            finally:
                local.model, local.context, local.checked = previous

    def identity(self) -> tuple:
        """The model and its weights' version: changes when weights are replaced,
        moved, cast or updated in place (torch counts in-place writes), and when
        the modules or their attributes change; hooks aside (see
        :mod:`~salwidget.backends.torch_shadow`). Inside a session, the
        structure read when it opened."""
        model = self.model
        checked = getattr(self._local, "checked", None)
        if checked is None:
            checked = watch_for(self).check(model)
        token, _, structure = checked
        return (id(model), token, structure.versions())

    def synchronize(self) -> None:
        """Wait for the work queued on the model's device (timings then cover it)."""
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        elif self._device.type == "mps":
            torch.mps.synchronize()

    def fit_chunk(self, run, rows: int) -> int | None:
        """Run a first chunk; on CUDA, measure its peak memory and return the
        passes per chunk that fill half of the free memory (None elsewhere: on a
        CPU bigger chunks lose cache locality, even for a cheap model, so the
        size chosen from the input stays)."""
        if self._device.type != "cuda":
            run()
            return None
        device = self._device
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        per_pass = max(1.0, (torch.cuda.max_memory_allocated(device) - base) / rows)
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(max(1, min(_MAX_GPU_CHUNK, _GPU_MEMORY_SHARE * free / per_pass)))

    # ----------------------------------------------------------------- passes
    def _call(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        context = getattr(self._local, "context", None)
        try:
            with context() if context is not None else _no_context():
                if self._keras:
                    returned = self._active(*tensors, training=False)
                else:
                    returned = self._active(*tensors)
            outputs, self._local.output_names = _as_list(returned)
            return outputs
        except SaliencyError:
            raise
        except Exception as exc:  # the model's own error, with what salwidget knows
            raise model_call_error(exc, [tuple(t.shape) for t in tensors], _LAYOUT_HINT) from exc

    def _prepare(self, points: Sequence[torch.Tensor], grad: bool) -> list[torch.Tensor]:
        prepared = []
        for p in points:
            p = p if p.device == self._device and p.dtype == self._dtype else p.to(self._device, self._dtype)
            if grad or p.requires_grad:  # with grad: a new leaf, so the caller's tensor keeps its flag
                p = p.detach()
            prepared.append(p.requires_grad_(grad) if grad else p)
        return prepared

    def outputs(self, points) -> list[torch.Tensor]:
        tensors = self._prepare(points, grad=False)
        versions = [t._version for t in tensors]  # in-place writes count up a tensor's version
        with torch.no_grad():
            outputs = [o.detach() for o in self._call(tensors)]
        if any(t._version != v for t, v in zip(tensors, versions)):
            # Batches and the images they are made from share memory (and a CPU image the caller's array):
            # the next chunk would be built from what the model wrote, so every later score would be wrong.
            raise SaliencyError(
                "The model wrote into its input batch (an in-place operation on the input in its forward, such as "
                "x.mul_(2) or x[:, 0] = 0). The batches salwidget passes share memory with the images being explained "
                "(on a CPU, with the array you gave, which may now hold what the model wrote), so the maps would be "
                "wrong. Write that step out of place (x = x * 2), or start the forward with x = x.clone().")
        return outputs

    @property
    def output_names(self) -> list | None:
        """The names of the outputs of this thread's last model call (None for positions)."""
        return getattr(self._local, "output_names", None)

    def _score(self, outputs: list[torch.Tensor], targets: dict, which=None) -> torch.Tensor:
        """Sum of each row's target score: a class (None: the row's own argmax, taken in this pass)
        or a :class:`~salwidget.targets.RowScore`."""
        score = None  # the first term starts the sum (adding to a Python 0 is an operation of its own)
        for index, rows in targets.items():
            if which is not None and index not in which:
                continue
            out = outputs[index]
            if isinstance(rows, RowScore):
                term = rows(self.ops, out).sum()
                score = term if score is None else score + term
                continue
            check_output(out, index, None)
            # Given targets are clamped: a fused pass checks their range after it (an index out of range
            # would be a device-side assert on CUDA).
            if rows is None:
                rows = out.detach().argmax(1)
            else:
                rows = rows if rows.dim() == 1 else rows.reshape(-1)
                rows = (rows if rows.device == out.device else rows.to(out.device)).clamp(0, out.shape[1] - 1)
            term = out.gather(1, rows.reshape(-1, 1)).sum()
            score = term if score is None else score + term
        return 0 if score is None else score

    @staticmethod
    def _unreachable(targets: dict, detail: str) -> Exception:
        if names_function(targets):
            detail += "; the target function's score may not depend differentiably on the output"
        return not_differentiable(detail)

    def input_gradients(self, points, targets, pairing=None):
        tensors = self._prepare(points, grad=True)
        with torch.enable_grad():
            outputs = self._call(tensors)
            if pairing is None:
                score = self._score(outputs, targets)
                if not isinstance(score, torch.Tensor) or not score.requires_grad:
                    raise self._unreachable(targets, "the class score does not require grad")
                grads = list(torch.autograd.grad(score, tensors, allow_unused=True))
            else:
                grads = []
                for m, (tensor, which) in enumerate(zip(tensors, pairing)):
                    score = self._score(outputs, targets, set(which))
                    if not isinstance(score, torch.Tensor) or not score.requires_grad:
                        raise not_differentiable(f"output(s) {list(which)} paired with input {m} do not require grad")
                    last = m == len(tensors) - 1
                    grads.append(torch.autograd.grad(score, tensor, allow_unused=True, retain_graph=not last)[0])
        missing = [i for i, g in enumerate(grads) if g is None]
        if missing:
            raise self._unreachable(targets, f"input {missing[0]} does not reach the class score")
        return grads, [o.detach() for o in outputs]

    # ----------------------------------------------------------------- layers
    def layer_names(self) -> list[str]:
        """Every named submodule, in definition order (inside a session: read once per structure)."""
        checked = getattr(self._local, "checked", None)
        known = getattr(self, "_names", None)
        if checked is not None and known is not None and known[0] == checked[0]:
            return list(known[1])
        names = [name for name, _ in self.model.named_modules() if name]
        if checked is not None:
            self._names = (checked[0], names)
        return list(names)

    def layer_name(self, layer: Any) -> str:
        """The ``named_modules`` name of ``layer`` (a name or a module of this model)."""
        if isinstance(layer, torch.nn.Module):
            for name, module in self.model.named_modules():
                if module is layer and name:
                    return name
            raise SaliencyError(f"The module {type(layer).__name__} given as layer is not part of this model.")
        names = self.layer_names()
        if layer not in names:
            raise unknown_layer(str(layer), names)
        return str(layer)

    @contextmanager
    def _tap(self, names: Sequence[str], start_graph: bool = False) -> Iterator[list[_Capture]]:
        modules = _named_modules(self._active, cache=not self._keras)
        captures, handles = [], []
        for name in names:
            capture = _Capture(start_graph)
            captures.append(capture)
            handles.append(modules[name].register_forward_hook(capture))
        try:
            yield captures
        finally:
            for handle in handles:
                handle.remove()

    def layer_activations(self, points, layer: str):
        with self._tap([layer]) as (capture,):
            outputs = self.outputs(points)
        if capture.value is None:
            raise SaliencyError(f"The layer {layer!r} was not called by the model's forward pass; pick another layer.")
        return capture.value.detach(), outputs

    def outputs_with_layer(self, points, layer: str, replace):
        """Every model output for ``points`` (no gradients) with ``layer``'s output replaced by
        ``replace(output)`` (AblationCAM's ablated channels)."""
        module = _named_modules(self._active, cache=not self._keras)[layer]
        handle = module.register_forward_hook(lambda m, inputs, output: replace(output))
        try:
            return self.outputs(points)
        finally:
            handle.remove()

    def layer_gradients(self, points, targets, layer: str):
        tensors = self._prepare(points, grad=False)
        with self._tap([layer], start_graph=True) as (capture,), torch.enable_grad():
            outputs = self._call(tensors)
            activation = capture.value
            if activation is None:
                raise SaliencyError(f"The layer {layer!r} was not called by the model's forward pass; pick another layer.")
            if not activation.requires_grad:
                raise not_differentiable(f"the output of layer {layer!r} does not require grad")
            score = self._score(outputs, targets)
            if not isinstance(score, torch.Tensor) or not score.requires_grad:
                raise self._unreachable(targets, f"the class score does not depend on layer {layer!r}")
            (grad,) = torch.autograd.grad(score, activation, allow_unused=True)
        if grad is None:
            raise self._unreachable(targets, f"the class score does not depend on layer {layer!r}")
        return activation.detach(), grad, [o.detach() for o in outputs]  # grad(): no graph of its own

    def layer_shapes(self, points) -> list[tuple[str, tuple[int, ...]]]:
        """(name, output shape) of every leaf-or-container module, in call order."""
        order: list[tuple[str, tuple[int, ...]]] = []
        handles = []
        for name, module in self._active.named_modules():
            if not name:
                continue

            def record(module, inputs, output, name=name):
                out = output[0] if isinstance(output, (tuple, list)) and output else output
                if isinstance(out, torch.Tensor):
                    order.append((name, tuple(out.shape)))

            handles.append(module.register_forward_hook(record))
        try:
            self.outputs(points)
        finally:
            for handle in handles:
                handle.remove()
        return order

    def weighted_layers(self) -> list[str]:
        """Names of modules that own parameters directly, from the output end down."""
        names = [name for name, module in self.model.named_modules()
                 if name and any(p is not None for p in module._parameters.values())]
        return names[::-1]


_NAMED: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _named_modules(model: torch.nn.Module, cache: bool) -> dict:
    """``dict(model.named_modules())``; remembered for a shadow (whose modules never change after it is
    made: a cached shadow is tapped on every CAM call)."""
    if not cache:
        return dict(model.named_modules())
    modules = _NAMED.get(model)
    if modules is None:  # the root left out: a value holding its own key would never be dropped
        modules = _NAMED[model] = {name: module for name, module in model.named_modules() if name}
    return modules


def _randomize(shadow: torch.nn.Module, original: torch.nn.Module, names: Sequence[str], seed: int) -> None:
    """Give the shadow's modules ``names`` freshly initialised weights of their own.

    Each module's initialiser (``reset_parameters``) runs on a deep copy, so
    the user's tensors are never written, under a seed derived from ``seed``
    and the module's name (not ``seed`` itself: a model built after
    ``torch.manual_seed(seed)`` would get its own weights back); the global
    random state of the CPU and the model's GPU is restored afterwards.
    """
    from ..randomness import derive_key

    shadow_modules = dict(shadow.named_modules())
    original_modules = dict(original.named_modules())
    device, _ = model_device_and_dtype(original)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for name in names:
            torch.manual_seed(derive_key(seed, _RANDOMIZE_STREAM, zlib.crc32(name.encode()), 0))
            fresh = copy.deepcopy(original_modules[name])  # new tensors: the user's stay untouched
            for module in fresh.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            target = shadow_modules[name]
            for key, value in fresh._parameters.items():
                target._parameters[key] = None if value is None else value.detach()
