"""Maps and faithfulness over a whole dataset: :func:`attribute_dataset`, block by block, locally or on Ray.

One job is one method with its options, target, seed and metrics over a scan's
images. Its rows are computed in blocks of the scan's 256-row grid by one
function, :func:`run_block`, which both engines call (so they cannot drift):
``"local"`` loops over the blocks in this process; ``"ray"``
(:mod:`salwidget.dataset.ray_engine`) runs the same function in Ray Data actors,
each writing its own rows. A block writes its maps into the job's zarr array
first, then its table part (``index`` and the job's columns) under a temporary
name that it renames: what is missing after any interruption is exactly what
a re-run computes. Random draws are keyed by dataset index
(``sw.attribute(image_ids=...)``), so which block or worker computes a row does
not change its map.

Store layout, under the scan (see :mod:`salwidget.dataset.store`)::

    <store>/scans/<scan>/jobs/<job>/meta.json          method, options, target, seed, metrics, steps, label
    <store>/scans/<scan>/jobs/<job>/maps.zarr          (N, *map shape), float32 by default, chunks of 16 rows
    <store>/scans/<scan>/jobs/<job>/scales.zarr        (N,) each map's scale (dtype='float16' only)
    <store>/scans/<scan>/jobs/<job>/table/part-*.parquet  index, <label>_deletion_auc, <label>_insertion_auc,
                                                         <label>_completeness_gap (path methods)
    <store>/scans/<scan>/jobs/pairs/table/part-*.parquet  index, <a>_vs_<b>_spearman
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import AttributionCancelled, SaliencyError
from .keys import digest
from .progress import as_progress, start as start_progress
from . import stored_maps
from .blocks import JobSpec, done_rows, run_block
from .store import (CHUNK_ROWS, THUMBNAIL_CHUNK_ROWS, one_writer, read_json, read_parts, set_aside, write_json,
                    write_parquet, writing)

ENGINES = ("local", "ray")
METRICS = ("deletion", "insertion")


class DatasetMaps:
    """What :func:`attribute_dataset` stored: each job's maps and the per-image columns.

    Attributes
    ----------
    scan : Scan
    labels : list of str
        The jobs' labels (a method's name; with ``_<key>`` when one method is stored with other options too).
    calls : int
        Blocks computed by this call (0: everything was stored already).
    """

    def __init__(self, scan: Any, jobs: dict[str, JobSpec], blocks: int):
        self.scan, self.jobs, self.calls = scan, jobs, blocks
        self.labels = list(jobs)

    @property
    def table(self):
        """The scan's table with every stored job's columns (and the pairs' Spearman columns)."""
        self.scan.refresh()
        return self.scan.table

    def maps(self, method: str, rows: Sequence[int]) -> np.ndarray:
        """The stored raw maps of ``rows`` (as ``Attribution.raw`` per image), float32."""
        spec = self._spec(method)
        rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, np.int64).reshape(-1)
        frame = read_parts(Path(spec.folder) / "table", columns=["index"])
        done = set() if frame is None else set(frame["index"].tolist())
        if not set(rows.tolist()) <= done:
            missing = sorted(set(rows.tolist()) - done)[:5]
            raise SaliencyError(f"Rows {missing} of {method!r} are not computed yet: run attribute_dataset again.")
        maps, lost = stored_maps.read(Path(spec.folder), rows)
        if lost.any():
            raise SaliencyError(f"Rows {rows[lost][:5].tolist()} of {method!r} were in a damaged part of the store "
                                f"{spec.folder} (set aside): run attribute_dataset again to compute them.")
        return maps

    def _spec(self, method: str) -> JobSpec:
        if method in self.jobs:
            return self.jobs[method]
        matches = [s for s in self.jobs.values() if s.method == method]
        if len(matches) == 1:
            return matches[0]
        raise SaliencyError(f"No stored job {method!r}; the jobs are {', '.join(self.jobs)}.")

    def __repr__(self) -> str:
        return f"DatasetMaps({', '.join(self.labels)} over {len(self.scan)} images; store {self.scan.store!r})"


def attribute_dataset(
    model: Any,
    data: Any,
    methods: str | Sequence[str],
    *,
    rows: Sequence[int] | None = None,
    options: dict | None = None,
    target: Any = "predicted",
    metrics: Sequence[str] = METRICS,
    store: Any = None,
    engine: str = "local",
    batch_size: int | str = "auto",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    dtype: str = stored_maps.DEFAULT_DTYPE,
    curve_steps: int = 16,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    preprocess: Callable | None = None,
    channels_last: bool | None = None,
    output_index: int | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
    framework: str | None = None,
) -> DatasetMaps:
    """Maps, deletion/insertion AUCs and completeness gaps of every image of a dataset, stored.

    Parameters
    ----------
    model : torch.nn.Module, Keras model, ONNX Runtime session or numpy callable
        A numpy callable (``framework='numpy'``) or an ONNX session runs the forward-only methods.
    data : anything :func:`salwidget.scan` accepts, or a :class:`~salwidget.dataset.Scan`
        A dataset is scanned first (into ``store``); a Scan's own store is the default.
    methods : str or sequence of str
        Registered methods (``salwidget.METHODS``); each is one job.
    rows : sequence of int, optional
        Dataset indices to compute (e.g. ``scan.table.query("not correct").index``); all by default.
    options : dict, optional
        ``{method: {option: value}}``, as :func:`salwidget.attribute` takes them (``layer`` for CAMs too).
    target : 'predicted', 'label', int or one per dataset image
        The class explained: each image's prediction, its true label, one class, or a class per image.
    metrics : subset of ('deletion', 'insertion')
        Per-image AUCs (:func:`salwidget.deletion_insertion`, ``curve_steps`` steps); () for none.
    store : str or path
        The folder for the scan and the maps (required unless ``data`` is a Scan).
    engine : {'local', 'ray'}
        This process, or Ray Data actors (``ray_address=`` or the Ray you started with ``ray.init``, else a
        local cluster; ``workers`` actors, one GPU each where the cluster has GPUs).
    batch_size, seed
        As for :func:`salwidget.attribute`; draws are keyed by dataset index (``image_ids``).
    progress : callable(done, total) or True, optional
        Rows committed so far, over every job; True draws a bar (tqdm: a widget in a notebook, text in a
        terminal).
    cancel : callable() -> bool, optional
        Checked between blocks and chunks; True stops with :class:`salwidget.AttributionCancelled`; what
        was committed stays and a re-run computes only the rest.
    dtype : {'float32', 'float16', 'float64'}
        How maps are stored: float32 (the default) keeps every bit; float16 halves the space, each map
        divided by its own largest magnitude with that scale stored (about 3 significant digits of the
        map's range, whatever its magnitude). See :mod:`salwidget.dataset.stored_maps`.

    Returns
    -------
    DatasetMaps
        ``.table`` (the scan's table with the new columns), ``.maps(method, rows)``.
    """
    from ..methods import get_method
    from .scan import Scan, scan as scan_dataset

    if engine not in ENGINES:
        raise SaliencyError(f"Unknown engine {engine!r}: use 'local' or 'ray'.")
    dtype = stored_maps.check_dtype(dtype)
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise SaliencyError("Give at least one method.")
    chosen = [get_method(m) for m in methods]  # unknown methods are refused here, as attribute says
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise SaliencyError(f"Unknown metric {unknown[0]!r}; choose from {METRICS}.")
    options = dict(options or {})
    stray = [m for m in options if m not in methods]
    if stray:
        raise SaliencyError(f"options names {stray[0]!r}, which is not among the methods {methods}.")
    if isinstance(data, Scan):
        scanned = data
        if store is not None and str(Path(store)) != str(Path(scanned.store)):
            raise SaliencyError("A Scan keeps its maps in its own store; leave store= out (or scan into that store).")
    else:
        if store is None:
            raise SaliencyError("attribute_dataset needs store=: the folder for the scan and the maps.")
        scanned = scan_dataset(model, data, labels, class_names=class_names, preprocess=preprocess, store=store,
                               batch_size=batch_size, cancel=cancel, channels_last=channels_last,
                               output_index=output_index, framework=framework)
    if scanned._runner is not None and scanned._runner[0].model is not model:
        from .keys import model_fingerprint

        if model_fingerprint(model, framework) != scanned._rows.meta.get("model"):
            raise SaliencyError("The Scan was made with another model or other weights; scan again with this one.")
    wanted = _rows(rows, len(scanned), scanned)
    _check_target(target, len(scanned), scanned.num_classes)
    folder = Path(scanned.store) / "scans" / scanned.key / "jobs"
    # One writer per store key: a second call on these jobs waits, then finds their rows committed.
    with one_writer(folder, cancel):
        specs, blocks = _run_jobs(model, scanned, folder, methods, chosen, options, target, seed, metrics,
                                  curve_steps, dtype, batch_size, output_index, wanted, progress, cancel, engine,
                                  ray_address, workers, framework)
    scanned.refresh()
    return DatasetMaps(scanned, specs, blocks)


def _run_jobs(model, scanned, folder, methods, chosen, options, target, seed, metrics, curve_steps, dtype,
              batch_size, output_index, wanted, progress, cancel, engine, ray_address, workers, framework=None):
    specs = {}
    for name, method in zip(methods, chosen):
        given = dict(options.get(name, {}))
        layer = given.pop("layer", None)  # CAMs: which layer (not one of the method's options)
        resolved = method.resolve(given)
        spec = _job(folder, scanned, model, method, resolved, layer, target, seed, metrics, curve_steps, dtype,
                    batch_size, output_index, framework)
        specs[spec.label] = spec
    progress = as_progress(progress, "maps")
    todo = [(spec, block) for spec in specs.values() for block in _blocks(_missing(spec, wanted))]
    total = sum(len(b) for _, b in todo)
    if total:
        start_progress(progress, 0, total)  # a bar shows from the start and advances per block
    if engine == "ray":
        from .ray_engine import run_on_ray

        run_on_ray(model, scanned.source, todo, progress, cancel, ray_address, workers)
    else:
        done = 0
        for spec, block in todo:
            if cancel is not None and cancel():
                raise AttributionCancelled("Dataset job cancelled; the committed rows stay.")
            done += len(block)
            run_block(spec, scanned.source, model, block, cancel)
            if progress is not None:
                progress(done, total)
    _pair_columns(folder, specs, wanted)
    return specs, len(todo)


TARGET_WORDS = ("predicted", "label")


def _check_target(target, length: int, num_classes: int) -> None:
    """Refuse a target the blocks could not use, before any block runs (a typo, one class per image of the
    wrong length, a class the model does not have)."""
    if isinstance(target, str):
        if target not in TARGET_WORDS:
            raise SaliencyError(f"target={target!r} is not understood: use 'predicted' (each image's prediction), "
                                "'label' (its true class), a class index, or one class index per dataset image.")
        return
    if callable(target):
        return
    values = np.asarray(target)
    if values.dtype.kind not in "iu" or values.ndim > 1:
        raise SaliencyError(f"target must be 'predicted', 'label', a class index or one class index per dataset "
                            f"image; got {values.reshape(-1)[:3].tolist()} (dtype {values.dtype}).")
    if values.ndim == 1 and len(values) != length:
        raise SaliencyError(f"target has {len(values)} classes for a dataset of {length} images: give one class per "
                            "dataset image (in dataset order; rows= picks which are computed), or a single class.")
    classes = max(int(num_classes or 0), 2)
    bad = values[(values < 0) | (values >= classes)] if num_classes else values[values < 0]
    if bad.size:
        raise SaliencyError(f"target holds class {int(bad.reshape(-1)[0])}, outside the model's {classes} classes "
                            f"(0 to {classes - 1}).")


def _rows(rows, length: int, scanned) -> np.ndarray:
    if rows is None:
        unreadable = {r for r, _ in scanned.errors}
        return np.asarray([r for r in range(length) if r not in unreadable], np.int64)
    values = np.unique(np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows).reshape(-1))
    if values.dtype.kind not in "iu":
        raise SaliencyError(f"rows must be dataset indices (integers); got {values[:3].tolist()}.")
    bad = values[(values < 0) | (values >= length)]
    if bad.size:
        raise SaliencyError(f"rows holds {int(bad[0])}, outside the dataset of {length} images (0 to {length - 1}).")
    return values.astype(np.int64)


def _blocks(missing: np.ndarray) -> list[np.ndarray]:
    """``missing`` rows split along the store's 256-row grid (a block never shares a zarr chunk with another)."""
    if not len(missing):
        return []
    grid = missing // CHUNK_ROWS
    cuts = np.nonzero(np.diff(grid))[0] + 1
    return np.split(missing, cuts)


def _job(folder: Path, scanned, model, method, resolved: dict, layer, target, seed: int, metrics: tuple,
         curve_steps: int, dtype: str, batch_size, output_index, framework: str | None = None) -> JobSpec:
    """The job's spec and folder: created (meta, an empty maps array) or found with the same settings."""
    target_key = target if isinstance(target, (str, int, np.integer)) else digest(np.asarray(target).tobytes())
    key = digest(method.name, method.key(resolved), str(layer), target_key, seed, metrics, curve_steps, dtype)
    job_folder = folder / key
    meta_path = job_folder / "meta.json"
    existed = meta_path.exists()
    info = read_json(meta_path)
    if existed and info is None:  # damaged (and set aside): the job's rows are computed again
        set_aside(job_folder, "its meta.json was damaged")
    if info is not None:
        label = info["label"]
    else:
        taken = {m["label"] for m in (read_json(p) for p in sorted(folder.glob("*/meta.json"))) if m is not None}
        label = method.name if method.name not in taken else f"{method.name}_{key[:6]}"
    spec = JobSpec(str(job_folder), method.name, resolved, target, int(seed), metrics, int(curve_steps), dtype, label,
                   batch_size, layer, output_index, scanned.channels_last,
                   scanned.table["label"].reindex(range(len(scanned))).fillna(-1).astype(np.int64).to_numpy()
                   if isinstance(target, str) and target == "label" else None, framework=framework)
    if info is None:
        with writing(job_folder):
            job_folder.mkdir(parents=True, exist_ok=True)
        probe = scanned.source.read([_first_readable(scanned)])
        from .. import attribute

        shape = attribute(model, probe.inputs, method.name, target=_targets(spec, np.asarray([0]))
                          if not isinstance(target, str) else None, seed=seed, channels_last=scanned.channels_last,
                          output_index=output_index, framework=framework,
                          **({"layer": layer} if layer is not None else {}),
                          **resolved).raw
        shape = (shape[0] if isinstance(shape, tuple) else shape).shape[1:]
        stored_maps.create(job_folder, (len(scanned), *shape), dtype, THUMBNAIL_CHUNK_ROWS)
        with writing(job_folder):
            write_json(meta_path, dict(method=method.name, options=jsonable(resolved), layer=str(layer),
                                        target=str(target_key), seed=int(seed), metrics=list(metrics),
                                        curve_steps=int(curve_steps), dtype=dtype, label=label,
                                        map_shape=list(shape), channels_last=bool(scanned.channels_last),
                                        kind=method.output))
        info = read_json(meta_path)
    spec.map_shape = tuple(info["map_shape"])
    return spec


def _first_readable(scanned) -> int:
    unreadable = {r for r, _ in scanned.errors}
    return next(r for r in range(len(scanned)) if r not in unreadable)


def jsonable(options: dict) -> dict:
    """Options as stored in a job's meta.json (values JSON cannot hold become their type's name)."""
    out = {}
    for name, value in options.items():
        out[name] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(type(value).__name__)
    return out




def _missing(spec: JobSpec, wanted: np.ndarray) -> np.ndarray:
    return wanted[~np.isin(wanted, done_rows(spec))].astype(np.int64)


def _pair_columns(folder: Path, specs: dict[str, JobSpec], wanted: np.ndarray) -> None:
    """``<a>_vs_<b>_spearman`` for every pair of stored jobs, on rows both have and the pair does not yet."""
    import pyarrow as pa

    from ..evaluation.similarity import spearman

    stored = {}
    for meta in sorted(folder.glob("*/meta.json")):
        info = read_json(meta)
        if info is None:
            continue
        frame = read_parts(meta.parent / "table", columns=["index"])
        stored[info["label"]] = (meta.parent, set() if frame is None else set(frame["index"].tolist()), info)
    labels = sorted(stored)
    pairs_folder = folder / "pairs" / "table"
    have = read_parts(pairs_folder)
    current = set(specs)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            # Two methods (not one method under two settings), one of them a job of this call: the pairs
            # grow with the jobs asked for, not with everything stored.
            if stored[a][2]["method"] == stored[b][2]["method"] or not {a, b} & current:
                continue
            column = f"{a}_vs_{b}_spearman"
            done = set() if have is None or column not in have else set(have.dropna(subset=[column])["index"])
            rows = np.asarray(sorted((stored[a][1] & stored[b][1]) - done), np.int64)
            for block in _blocks(rows):
                first, lost_a = stored_maps.read(stored[a][0], block)
                second, lost_b = stored_maps.read(stored[b][0], block)
                kept = ~(lost_a | lost_b)  # rows of a damaged chunk: computed again by the next run
                if not kept.any():
                    continue
                block = block[kept]
                first, second = _as_masks(first[kept], stored[a][2]), _as_masks(second[kept], stored[b][2])
                size = (min(first.shape[1], second.shape[1]), min(first.shape[2], second.shape[2]))
                values = spearman(_resize(first, size), _resize(second, size))
                write_parquet(pairs_folder, pa.table({"index": block, column: values.astype(np.float32)}), int(block[0]))


def _as_masks(maps: np.ndarray, info: dict) -> np.ndarray:
    """(n, H, W) magnitudes of stored maps: channels summed for input maps (|.|), as the grayscale view does."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim == 4:  # input-shaped, in the input's layout
        return np.abs(maps).sum(axis=-1 if info.get("channels_last") else 1)
    return np.abs(maps) if maps.ndim == 3 else maps.reshape(len(maps), 1, -1)


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from ..arrays import resize_bilinear

    return maps if maps.shape[1:] == size else resize_bilinear(maps, size)
