"""How a dataset job keeps its maps: the storage dtype, and each map's scale where the dtype needs one.

Saliency maps span many orders of magnitude between models and methods (SmoothGrad's mean squared
gradients of a small CNN are near 1e-8), so a plain float16 copy underflows to zeros. The stored
forms (measured in benchmarks/stored_maps.py, see the README):

- ``float32`` (the default): every bit of ``Attribution.raw``; Spearman and AUC columns computed from
  stored maps equal those of the maps in memory.
- ``float16``: half the space; each map is divided by its own largest magnitude before the cast and
  that scale is kept (``scales.zarr``, float32), so the error is at most about 2**-11 of the map's own
  range whatever its magnitude.
- ``float64``: for maps computed in float64.

Only these float dtypes are accepted: integers would round maps to zeros.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SaliencyError

DTYPES = ("float32", "float16", "float64")
DEFAULT_DTYPE = "float32"
SCALED = ("float16",)  # stored divided by each map's largest magnitude; the scale stored beside


def check_dtype(dtype: Any) -> str:
    """The storage dtype's name, or a :class:`SaliencyError` that lists the accepted ones."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise SaliencyError(f"dtype={dtype!r} cannot store saliency maps: choose one of {', '.join(DTYPES)} "
                            f"(float32, the default, keeps every bit; float16 halves the space, each map scaled by "
                            "its own largest magnitude, about 3 significant digits).")
    return name


def encode(maps: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(stored values, per-map scales or None)`` of a block of maps (n, ...)."""
    maps = np.asarray(maps)
    if dtype not in SCALED:
        return maps.astype(dtype), None
    flat = np.abs(maps.reshape(len(maps), -1).astype(np.float32))
    scales = flat.max(axis=1) if flat.size else np.zeros(len(maps), np.float32)
    scales = np.where(np.isfinite(scales) & (scales > 0), scales, 1.0).astype(np.float32)
    shape = (len(maps),) + (1,) * (maps.ndim - 1)
    return (maps / scales.reshape(shape)).astype(dtype), scales


def decode(stored: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """float32 maps back from their stored values (and scales)."""
    values = np.asarray(stored, np.float32)
    if scales is None:
        return values
    return values * np.asarray(scales, np.float32).reshape((len(values),) + (1,) * (values.ndim - 1))


def create(folder: Path, shape: tuple, dtype: str, chunk_rows: int) -> None:
    """The job's maps array (and its scales where the dtype needs them): chunks of ``chunk_rows`` rows, not
    compressed (saliency maps are noise to a compressor: it would cost more time than it saves space)."""
    _create(folder / "maps.zarr", shape, (chunk_rows, *shape[1:]), dtype)
    if dtype in SCALED:
        _create(folder / "scales.zarr", shape[:1], (chunk_rows,), "float32")


def _create(path: Path, shape: tuple, chunks: tuple, dtype: str) -> None:
    import zarr

    if hasattr(zarr, "create_array"):  # zarr 3
        zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0, compressors=None,
                          overwrite=True)
    else:  # zarr 2
        zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0, compressor=None)


def write(folder: Path, rows: np.ndarray, maps: np.ndarray, dtype: str) -> None:
    """Store ``maps`` of ``rows`` (their scales first: a map is never read with another map's scale)."""
    import zarr

    from .store import write_rows

    values, scales = encode(maps, dtype)
    if scales is not None:
        write_rows(zarr.open_array(str(folder / "scales.zarr"), mode="r+"), rows, scales)
    write_rows(zarr.open_array(str(folder / "maps.zarr"), mode="r+"), rows, values)


def read(folder: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 maps of ``rows`` (rescaled where they were stored scaled), and a mask of the rows lost to a
    damaged chunk (set aside, and their table rows too: the next run computes them again)."""
    import zarr

    from .store import forget_rows, read_checked

    rows = np.asarray(rows, np.int64)
    forget = lambda lost: forget_rows(folder / "table", lost)
    stored, lost = read_checked(zarr.open_array(str(folder / "maps.zarr"), mode="r"), rows, folder / "maps.zarr",
                                forget)
    scales = None
    if (folder / "scales.zarr").exists():
        scales, lost_scales = read_checked(zarr.open_array(str(folder / "scales.zarr"), mode="r"), rows,
                                           folder / "scales.zarr", forget)
        lost = lost | lost_scales
    return decode(stored, scales), lost
