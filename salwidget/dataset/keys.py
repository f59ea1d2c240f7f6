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


def concurrent_digest(*parts: Any) -> str:
    """:func:`salwidget.digests.bytes_digest` of ``parts`` (the same value), its CRC-32 and Adler-32 computed
    at once in two threads (zlib releases the GIL on large buffers): an array of gigabytes is fingerprinted
    in the time of the slower of the two passes."""
    import threading
    import zlib

    views = [memoryview(p).cast("B") if not isinstance(p, bytes) else p for p in parts]
    found = {}

    def adler():
        value = 1
        for view in views:
            value = zlib.adler32(view, value)
        found["adler"] = value

    thread = threading.Thread(target=adler, name="salwidget-digest")
    thread.start()
    crc = 0
    for view in views:
        crc = zlib.crc32(view, crc)
    thread.join()
    return f"{crc:08x}{found['adler']:08x}"
