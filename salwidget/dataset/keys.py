"""Content fingerprints: which model weights and which data a store's rows belong to.

Unlike the engine's weights identity (object ids and in-place version counters, valid for one process),
these survive a kernel restart: they hash the weights' bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def model_fingerprint(model: Any) -> str:
    """A digest of the model's class and every weight's name, shape, dtype and bytes (torch or Keras)."""
    from ..backends import detect_framework

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    if detect_framework(model) == "torch":
        for name, tensor in model.state_dict().items():
            if hasattr(tensor, "detach"):
                array = tensor.detach().cpu().contiguous()
                digest.update(f"{name}{tuple(array.shape)}{array.dtype}".encode())
                digest.update(memoryview(array.view(-1).view(dtype=_byte_dtype()).numpy()))
    else:
        for variable in getattr(model, "weights", getattr(model, "variables", [])):
            value = np.ascontiguousarray(np.asarray(variable))
            digest.update(f"{getattr(variable, 'path', getattr(variable, 'name', ''))}{value.shape}{value.dtype}".encode())
            digest.update(memoryview(value).cast("B"))
    return digest.hexdigest()


def _byte_dtype():
    import torch

    return torch.uint8


def digest(*parts: Any) -> str:
    """A short digest of ``parts`` (their reprs)."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()
