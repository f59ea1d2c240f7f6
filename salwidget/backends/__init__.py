"""Framework backends behind one small protocol, chosen by looking at the model.

Detection never imports a framework: a model can only be a torch module if
torch is already imported, and the same for TensorFlow/Keras.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

from ..errors import SaliencyError
from .base import Backend

FRAMEWORKS = ("torch", "tensorflow", "numpy")


def detect_framework(model: Any) -> str:
    """Return ``"torch"`` or ``"tensorflow"`` for ``model`` without importing either.

    A Keras 3 model on the torch backend is a ``torch.nn.Module`` and takes the torch path.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    if type(model).__module__.split(".")[0] == "onnxruntime":
        return "numpy"  # an ONNX Runtime session: forward passes on numpy arrays
    roots = {cls.__module__.split(".")[0] for cls in type(model).__mro__}
    if roots & {"tensorflow", "keras", "tf_keras"}:
        return "tensorflow"
    if callable(model) and getattr(model, "__module__", "") and model.__module__.split(".")[0] in {
        "tensorflow",
        "keras",
    }:
        return "tensorflow"
    raise SaliencyError(
        f"Cannot tell which framework the model of type {type(model).__name__} belongs to. "
        "Pass a torch.nn.Module, a Keras model or a tf.Module; for a plain function that "
        "calls TensorFlow or torch, pass framework='tensorflow' or framework='torch'; for any function "
        "of numpy batches (forward-only methods), framework='numpy'."
    )


def make_backend(model: Any, framework: str | None = None) -> Backend:
    """Build the backend for ``model``, importing its framework now."""
    framework = framework or detect_framework(model)
    if framework == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model)
    if framework in ("tensorflow", "tf", "keras"):
        from .tf_backend import TensorFlowBackend

        return TensorFlowBackend(model)
    if framework in ("numpy", "onnx"):
        from .numpy_backend import NumpyBackend

        return NumpyBackend(model)
    raise SaliencyError(f"Unknown framework {framework!r}: use one of {FRAMEWORKS}.")


__all__ = ["Backend", "FRAMEWORKS", "detect_framework", "get_backend", "make_backend"]


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_backend(model: Any, framework: str | None = None) -> Backend:
    """The backend for ``model``, reused across calls.

    Reuse matters for TensorFlow, whose traced gradient function would
    otherwise be rebuilt on every call. The cache holds the model weakly (so
    does the backend), so it never keeps a model alive.
    """
    try:
        backend = _CACHE.get(model)
    except TypeError:  # not weak-referenceable or not hashable: no reuse
        return make_backend(model, framework)
    if backend is None or (framework and backend.framework != _canonical(framework)):
        backend = make_backend(model, framework)
        _CACHE[model] = backend
    return backend


def _canonical(framework: str) -> str:
    return {"tf": "tensorflow", "keras": "tensorflow", "onnx": "numpy"}.get(framework, framework)
