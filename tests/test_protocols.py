"""Every backend provides what the Backend and Ops protocols declare (the methods call only those)."""

from __future__ import annotations

import pytest

from salwidget.backends.base import Backend, Ops

OPTIONAL_OPS = {"finite_rows", "paste_squares"}  # looked up with getattr by their callers


def _declared(protocol) -> set[str]:
    names = {n for n, v in vars(protocol).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    return names | {n for n in protocol.__annotations__ if not n.startswith("_")}


def _classes(framework: str):
    if framework == "torch":
        from salwidget.backends.torch_backend import TorchBackend, TorchOps
        return TorchBackend, TorchOps
    if framework == "tensorflow":
        from salwidget.backends.tf_backend import TensorFlowBackend, TFOps
        return TensorFlowBackend, TFOps
    from salwidget.backends.numpy_backend import NumpyBackend, NumpyOps
    return NumpyBackend, NumpyOps


@pytest.mark.parametrize("framework", ["torch", "tensorflow", "numpy"])
def test_each_backend_has_what_the_protocols_declare(framework):
    backend, ops = _classes(framework)
    assert len(_declared(Ops)) > 40 and len(_declared(Backend)) > 15  # the protocols list what callers use
    instance_attributes = {"framework", "device", "default_channels_last", "ops", "host_indices"}
    missing_ops = sorted(n for n in _declared(Ops) if not hasattr(ops, n) and n not in instance_attributes)
    missing_backend = sorted(n for n in _declared(Backend) if not hasattr(backend, n) and n not in instance_attributes)
    assert not missing_ops and not missing_backend, (missing_ops, missing_backend)


def test_the_methods_call_no_ops_the_protocol_leaves_out():
    """Every ``ops.NAME`` a module of the package calls is declared (or one of the optional two)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "salwidget"
    called = set()
    for path in root.rglob("*.py"):
        if path.parent.name == "backends":
            continue
        called |= set(re.findall(r"(?<!keras\.)\bops\.([a-z_]+)\b", path.read_text()))  # not keras.ops
    undeclared = sorted(called - _declared(Ops) - OPTIONAL_OPS - {"device", "dtype"})
    assert not undeclared, undeclared
