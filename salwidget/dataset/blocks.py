"""One block of a dataset job: :func:`run_block`, the function both engines call (the local loop in
:mod:`salwidget.dataset.jobs` and the Ray actors of :mod:`salwidget.dataset.ray_engine`), and the
:class:`JobSpec` it reads. Neither engine imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import stored_maps
from .store import read_parts, write_parquet, writing


@dataclass
class JobSpec:
    """Everything a worker needs to compute rows of one job (picklable: it travels to Ray actors)."""

    folder: str  # the job's folder
    method: str
    options: dict
    target: Any  # 'predicted', 'label', an int, or one per dataset image (an array)
    seed: int
    metrics: tuple
    curve_steps: int
    dtype: str
    label: str
    batch_size: Any = "auto"
    layer: Any = None
    output_index: Any = None
    channels_last: bool = False
    labels: Any = None  # the scan's labels (for target='label')
    map_shape: tuple = ()
    framework: str | None = None  # as attribute's framework= (a numpy callable is not detected)


def run_block(spec: JobSpec, source: Any, model: Any, rows: np.ndarray, cancel: Callable[[], bool] | None = None
              ) -> int:
    """Compute ``rows`` of one job and commit them (maps, then the table part); the rows written.

    Rows that cannot be read are left out (the scan lists them). Called by the local loop and, unchanged,
    by each Ray actor.
    """
    from .. import attribute
    from ..evaluation import deletion_insertion

    rows = np.asarray(rows, np.int64)
    rows = rows[~np.isin(rows, done_rows(spec))]  # a block run again (its worker died after committing) adds nothing
    if not len(rows):
        return 0
    batch = source.read(rows)
    rows = rows[batch.ok]
    if not len(rows):
        return 0
    target = _targets(spec, rows)
    result = attribute(model, batch.inputs, spec.method, target=target, seed=spec.seed, batch_size=spec.batch_size,
                       channels_last=spec.channels_last, output_index=spec.output_index, image_ids=rows,
                       framework=spec.framework,
                       cancel=cancel, **({"layer": spec.layer} if spec.layer is not None else {}), **spec.options)
    raw = result.raw if not isinstance(result.raw, tuple) else result.raw[0]
    columns = {}
    if spec.metrics:
        curves = deletion_insertion(model, batch.inputs, result, steps=spec.curve_steps, batch_size=spec.batch_size,
                                    channels_last=spec.channels_last, output_index=spec.output_index, cancel=cancel,
                                    framework=spec.framework)
        if "deletion" in spec.metrics:
            columns[f"{spec.label}_deletion_auc"] = np.asarray(curves.auc_deletion, np.float32)
        if "insertion" in spec.metrics:
            columns[f"{spec.label}_insertion_auc"] = np.asarray(curves.auc_insertion, np.float32)
    if result.delta is not None:
        columns[f"{spec.label}_completeness_gap"] = np.asarray(result.delta, np.float32)
    import pyarrow as pa

    with writing(Path(spec.folder)):
        stored_maps.write(Path(spec.folder), rows, raw, spec.dtype)
        write_parquet(Path(spec.folder) / "table", pa.table({"index": rows, **columns}), int(rows[0]))
    return len(rows)


def _targets(spec: JobSpec, rows: np.ndarray):
    if isinstance(spec.target, str):
        if spec.target == "predicted":
            return None
        return np.asarray(spec.labels)[rows]  # 'label'
    if np.ndim(spec.target) == 0 or callable(spec.target) or not hasattr(spec.target, "__len__"):
        return spec.target
    return np.asarray(spec.target)[rows]


def done_rows(spec: JobSpec) -> np.ndarray:
    frame = read_parts(Path(spec.folder) / "table", columns=["index"])
    return np.zeros(0, np.int64) if frame is None else frame["index"].to_numpy(np.int64)
