"""Scanning a dataset: every image's prediction, confidence and loss, streamed through the model.

:func:`scan` runs forward passes only, in chunks on the model's device, and
commits its rows block by block to a store (a temporary one unless ``store=``
names a folder), so memory follows the chunk, never the number of images, and
an interrupted scan resumes where it stopped.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import AttributionCancelled, SaliencyError
from .keys import digest, model_fingerprint
from .predictions import COLUMNS, are_probabilities, columns_in_framework
from .progress import as_progress, start as start_progress
from .sources import DataSource, as_source
from .store import CHUNK_ROWS, ScanStore, Store

ProgressFn = Callable[[int, int], None]


class Scan:
    """The result of :func:`scan`: a table of every image's prediction, and the way back to the images.

    Attributes
    ----------
    table : pandas.DataFrame
        Indexed by dataset index (``index``), with the columns ``label``, ``label_name``, ``predicted``,
        ``predicted_name``, ``probability`` (of the prediction; a single logit's sigmoid), ``top5_classes``,
        ``top5_probabilities``, ``correct`` (False where the label is unknown, -1, or the output not finite),
        ``finite`` (False where the model's scores hold NaN or infinity: then ``predicted`` is -1 and the
        probabilities NaN), ``loss`` (cross-entropy; NaN without a label), ``margin`` (top-1 minus top-2
        probability) and ``entropy``. Rows that could not
        be read are not in it: they are in :attr:`errors`.
    errors : list of (int, str)
        The rows that could not be read (an unreadable file) and why; ``len(table) + len(errors)`` is the
        number of images.
    class_names : list of str or None
    store : str
        The folder of the scan's rows (a temporary one when none was given).
    key : str
        The scan's key in its store (model weights, data and settings).
    calls : int
        Model calls this scan made (0 when every row was in the store already).
    """

    def __init__(self, source: DataSource, rows: ScanStore, class_names: list[str] | None, num_classes: int,
                 channels_last: bool, key: str, store_path: str, calls: int, keep: Any = None):
        self.source, self._rows = source, rows
        self.class_names = class_names
        self.num_classes = num_classes
        self.channels_last = channels_last
        self.key, self.store, self.calls = key, store_path, calls
        self._keep = keep  # a temporary store lives as long as its scan
        self._table = None
        self._runner = None  # (backend, output index) of the model that computes missing rows

    def complete(self, batch_size: int | str = "auto", progress: ProgressFn | None = None,
                 cancel: Callable[[], bool] | None = None) -> "Scan":
        """Compute the rows the store does not hold yet (see :func:`scan` for the arguments); returns the scan.

        ``calls`` counts the model calls made. Cancelled, it keeps what was committed: call it again to go on.
        """
        if self._runner is None:
            raise SaliencyError("This scan was read back without its model: open it with sw.scan(model, data, ...).")
        return _complete(self, batch_size, progress, cancel)

    @property
    def missing(self) -> int:
        """How many rows the store does not hold yet."""
        return len(self) - len(self._rows.committed())

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        known = self.table["label"] >= 0
        accuracy = f", accuracy {self.accuracy:.1%} on {int(known.sum())} labelled" if known.any() else ""
        odd = f", {self.non_finite} with non-finite scores" if self.non_finite else ""
        return (f"Scan({len(self)} images of {self.source.describe()}{accuracy}{odd}, {len(self.errors)} unreadable; "
                f"store {self.store!r})")

    @property
    def table(self):
        if self._table is None:
            frame = self._rows.table()
            if frame is None:
                import pandas as pd

                frame = pd.DataFrame({"index": np.zeros(0, np.int64), **{c: [] for c in COLUMNS}})
            frame = frame.set_index("index")
            if "finite" not in frame:  # a store written before the column existed
                frame["finite"] = np.isfinite(frame["probability"].to_numpy(np.float64))
                frame["correct"] = frame["correct"] & frame["finite"]
            frame = frame[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]
            self._table = frame.join(self._rows.job_columns(), how="left") if self._rows.has_jobs() else frame
        return self._table

    def refresh(self) -> None:
        """Read the table again (columns added to the store by a dataset job appear)."""
        self._table = None

    @property
    def model_key(self) -> str | None:
        """The fingerprint of the weights that scanned these rows (:func:`~salwidget.dataset.keys.model_fingerprint`)."""
        return self._rows.meta.get("model")

    @property
    def errors(self) -> list[tuple[int, str]]:
        return self._rows.errors()

    @property
    def non_finite(self) -> int:
        """How many images the model gave NaN or infinite scores (``finite`` False; never correct)."""
        return int((~self.table["finite"].astype(bool)).sum())

    @property
    def accuracy(self) -> float:
        """Share of correct predictions among the images whose label is known (NaN if none is); an image with
        non-finite scores counts as a wrong prediction."""
        known = self.table["label"] >= 0
        return float(self.table.loc[known, "correct"].mean()) if known.any() else float("nan")

    def confusion(self) -> np.ndarray:
        """(classes, classes) counts of images by true label (rows) and prediction (columns); unlabelled
        images and images with non-finite scores (see :attr:`non_finite`) are left out."""
        known = self.table[(self.table["label"] >= 0) & self.table["finite"].astype(bool)]
        size = max(self.num_classes, 2)
        counts = np.zeros((size, size), np.int64)
        np.add.at(counts, (known["label"].to_numpy(), known["predicted"].to_numpy()), 1)
        return counts

    def images(self, rows: Sequence[int]) -> np.ndarray:
        """The model inputs of ``rows`` (dataset indices), read back from the source (the scan keeps none)."""
        rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, np.int64).reshape(-1)
        batch = self.source.read(rows)
        if batch.failed:
            first = next(iter(batch.failed.items()))
            raise SaliencyError(f"Row {first[0]} cannot be read: {first[1]}")
        return batch.inputs

    def labels(self, rows: Sequence[int]) -> np.ndarray:
        return self.table.loc[list(rows), "label"].to_numpy()

    def thumbnails(self, rows: Sequence[int]) -> np.ndarray:
        """(n, 64, 64, 3) uint8 thumbnails of ``rows`` (white where a row could not be read)."""
        return self._rows.thumbnails(rows)

    def display_images(self, rows: Sequence[int]) -> np.ndarray:
        """``rows`` as a person sees them, (n, H, W, 3) in [0, 1]: the pictures for files, else the inputs scaled."""
        from ..arrays import to_display_image

        rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, np.int64).reshape(-1)
        batch = self.source.read(rows)
        if batch.pictures is not None and len({p.shape for p in batch.pictures}) == 1:
            return to_display_image(np.stack(batch.pictures), channels_last=True)
        return to_display_image(batch.inputs, channels_last=self.channels_last)


def scan(
    model: Any,
    data: Any,
    labels: Any = None,
    *,
    class_names: Sequence[str] | None = None,
    preprocess: Callable | None = None,
    batch_size: int | str = "auto",
    store: Any = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    channels_last: bool | None = None,
    output_index: int | None = None,
    framework: str | None = None,
) -> Scan:
    """Predict every image of a dataset and record what a person needs to pick images to explain.

    Parameters
    ----------
    model : torch.nn.Module, Keras model, ONNX Runtime session or numpy callable (``framework='numpy'``)
    data : array (N, ...), torch Dataset or DataLoader, tf.data.Dataset, folder or list of image files
        See :mod:`salwidget.dataset.sources`. A folder with class subfolders gives the labels.
    labels : sequence of int, optional
        One true class per image (-1 unknown), for sources that carry none.
    class_names : sequence of str, optional
        Names of the model's classes (a folder's subfolder names by default).
    preprocess : callable, optional
        For files: a picture (H, W, 3) uint8 -> one model-ready image (or (image, picture to show)).
        By default RGB in [0, 1] in the model's layout; files of other sizes need one.
    batch_size : 'auto' or int
        Images per model call.
    store : str or path, optional
        A folder to keep the rows in (Parquet and zarr; see :mod:`salwidget.dataset.store`). A scan of
        the same weights and data resumes there, or reads it without a model call once complete.
        None keeps them in a temporary folder that lives as long as the :class:`Scan`.
    progress : callable(done, total) or True, optional
        Called after each committed block with rows done so far; True draws a bar (tqdm: a widget in a
        notebook, text in a terminal).
    cancel : callable() -> bool, optional
        Checked between model calls; True stops with :class:`salwidget.AttributionCancelled` (what was
        committed stays in the store).
    channels_last, output_index, framework
        As for :func:`salwidget.attribute`.

    Returns
    -------
    Scan
    """
    opened = open_scan(model, data, labels, class_names=class_names, preprocess=preprocess, store=store,
                       channels_last=channels_last, output_index=output_index, framework=framework)
    opened.complete(batch_size=batch_size, progress=as_progress(progress, "scan"), cancel=cancel)
    return opened


def open_scan(model: Any, data: Any, labels: Any = None, *, class_names: Sequence[str] | None = None,
              preprocess: Callable | None = None, store: Any = None, channels_last: bool | None = None,
              output_index: int | None = None, framework: str | None = None) -> Scan:
    """The :class:`Scan` of ``model`` over ``data`` in ``store`` as it stands, without computing anything:
    its table holds the committed rows; :meth:`Scan.complete` computes the rest. :func:`scan` is both.
    (The panel opens a scan on the main thread and completes it in its worker.)"""
    from ..backends import get_backend

    backend = get_backend(model, framework)
    layout = backend.default_channels_last if channels_last is None else bool(channels_last)
    source = as_source(data, labels, preprocess=preprocess, channels_last=layout, class_names=class_names)
    if len(source) == 0:
        raise SaliencyError("The dataset is empty: nothing to scan.")
    keep = None
    if store is None:
        keep = tempfile.TemporaryDirectory(prefix="salwidget-scan-")
        store = keep.name
    model_key = model_fingerprint(model, framework)
    # A temporary store is new and dies with its Scan: no other run can share its rows, so the data's
    # digest (a pass over every byte of an array) would key nothing
    data_key = source.fingerprint() if keep is None else f"temporary:{Path(keep.name).name}"
    settings = dict(output_index=output_index, channels_last=layout, preprocess=_callable_id(preprocess))
    key = digest(model_key, data_key, sorted(settings.items()))
    folder = Store(store)
    if keep is None:
        _say_when_other_weights(folder, data_key, model_key, key)
    rows = folder.scan(key, dict(model=model_key, data=data_key, length=len(source), kind=source.kind, **settings))
    names = list(class_names) if class_names is not None else source.class_names
    opened = Scan(source, rows, names, int(rows.meta.get("num_classes") or 0), layout, key, str(store), 0, keep)
    opened._runner = (backend, output_index)
    _check_names(names, rows.meta.get("num_classes"))
    return opened


def _complete(self: Scan, batch_size: int | str, progress: ProgressFn | None,
              cancel: Callable[[], bool] | None) -> Scan:
    with self._rows.writer(cancel):  # one writer per store key: a second scan waits, then finds the rows
        return _complete_locked(self, batch_size, progress, cancel)


def _complete_locked(self: Scan, batch_size: int | str, progress: ProgressFn | None,
                     cancel: Callable[[], bool] | None) -> Scan:
    backend, output_index = self._runner
    rows = self._rows
    missing = np.setdiff1d(np.arange(len(self.source)), rows.committed())
    done, total = len(self.source) - len(missing), len(self.source)
    if not len(missing):
        self.refresh()
    if len(missing):
        start_progress(progress, done, total)  # a bar: the rows already stored are not counted in its rate
        state = dict(chunk=None, num_classes=rows.meta.get("num_classes"), probabilities=None, calls=0,
                     names=self.class_names)
        try:
            with backend.session(), Committer() as committer:
                # Reading (files, decoding, preprocess) runs a block ahead and writing (thumbnails, Parquet)
                # a block behind, in their own threads: the model's device is kept busy.
                for block in read_ahead(self.source.blocks(missing, CHUNK_ROWS)):
                    found = _predict_block(block, backend, self.channels_last, batch_size, output_index, cancel,
                                           rows, state)
                    # Thumbnails are made in the writer's thread too: the model does not wait for them.
                    committer.submit(_commit_block, rows, block, _named(found, self.class_names), self.channels_last,
                                     state.pop("small", None))
                    done += len(block.rows)
                    if progress is not None:
                        committer.flush()  # progress counts committed rows
                        progress(done, total)
        finally:
            self.calls += state["calls"]
            self.num_classes = int(state["num_classes"] or 0)
            self.refresh()
        _check_names(self.class_names, self.num_classes)
    return self


def _check_names(names, num_classes) -> None:
    if names is not None and num_classes and len(names) != num_classes and not (num_classes == 1 and len(names) == 2):
        raise SaliencyError(f"class_names has {len(names)} names but the model has {num_classes} classes: give one "
                            "name per class, in the order of the model's outputs.")


def _predict_block(block, backend, layout, batch_size, output_index, cancel, rows: ScanStore, state: dict):
    """The columns and thumbnails of one block's readable rows (model calls in chunks, cancel between them)."""
    from ..engine import auto_batch_size
    from ..inputs import check_output, prepare_inputs
    from ..outputs import choose_output

    if block.inputs is None or not len(block.inputs):
        return {}
    # Thumbnails made from the inputs average every value of every image: their check for NaN stands for
    # the inputs' (a pass over the block fewer); pictures' thumbnails do not see the inputs.
    from_inputs = block.pictures is None
    try:
        inputs, _, _ = prepare_inputs(block.inputs, layout, backend.default_channels_last, check_finite=not from_inputs)
    except SaliencyError:
        _check_finite_images(block)  # NaN images: named by their dataset index
        raise
    if state["chunk"] is None:
        state["chunk"] = _chunk(batch_size, backend, inputs, auto_batch_size)
    from .pictures import shrink

    chunk, parts, small = state["chunk"], [], []
    for start in range(0, len(inputs[0]), chunk):
        if cancel is not None and cancel():
            raise AttributionCancelled("Scan cancelled by the caller; the committed rows stay.")
        batch = backend.ops.asarray(inputs[0][start : start + chunk])
        outputs = backend.outputs([batch])
        if from_inputs:  # thumbnails of model inputs: shrunk where the batch is, before the transfer
            small.append(shrink(batch, layout))
        index = choose_output(outputs, output_index)
        check_output(outputs[index], index, len(outputs[index]))
        parts.append(outputs[index])
        state["calls"] += 1
    state["small"] = np.concatenate(small) if small else None
    if from_inputs and not np.isfinite(state["small"].sum(dtype=np.float32)):
        _check_finite_images(block)  # NaN or infinity in an image (or a huge finite sum): the exact check names it
    # The scores stay where the model made them: the columns are computed there (torch) in a few operations
    on_device = _concatenate(parts)
    scores = on_device if isinstance(on_device, np.ndarray) else np.asarray(backend.ops.numpy(on_device), np.float32)
    # Names of the wrong length are refused at the first model call, before the scan runs.
    _check_names(state.get("names"), int(scores.shape[1]))
    state["num_classes"] = num_classes = rows.setting("num_classes", int(scores.shape[1]))
    if scores.shape[1] != num_classes:
        raise SaliencyError(f"The model returned {scores.shape[1]} scores per image; the rows scanned before have "
                            f"{num_classes}.")
    if state["probabilities"] is None:
        state["probabilities"] = rows.setting("scores_are_probabilities", are_probabilities(scores))
    labels = block.labels[block.ok]
    _check_labels(labels, num_classes, block.rows[block.ok])
    return columns_in_framework(on_device, labels, state["probabilities"])


def _concatenate(parts: list):
    """One block's outputs as one array of their framework (torch tensors stay on their device)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat([p.detach().float() for p in parts])
    return np.concatenate([np.asarray(p, np.float32) for p in parts])


def _check_finite_images(block) -> None:
    """NaN or infinity in an image is named by its dataset index (and file), not its place in the block."""
    images = np.asarray(block.inputs)
    if images.dtype.kind != "f" or np.isfinite(images.sum(dtype=np.float32)):
        return  # one cheap pass: clean blocks pay only this
    bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    if bad.any():
        readable = block.rows[block.ok]
        first = int(readable[int(np.argmax(bad))])
        raise SaliencyError(f"Image {first} of the dataset contains NaN or infinite values "
                            f"({int(bad.sum())} such image(s) among rows {int(readable[0])} to {int(readable[-1])}); "
                            "fix the data or its preprocess, or scan the dataset without those images.")


def _commit_block(rows: ScanStore, block, found: dict, layout: bool, small=None) -> None:
    """The writer thread's part of a block: its thumbnails (from the pictures, or the inputs shrunk on the
    model's device), then its rows."""
    from .pictures import thumbnails

    thumbs = None
    if found:
        shown = block.pictures if block.pictures is not None else (small if small is not None else block.inputs)
        thumbs = thumbnails(shown, layout)
    rows.commit(block.rows[block.ok], found, thumbs, block.failed)


class Committer:
    """Runs commits in one background thread, in order, at most two behind; errors surface at the next
    submit or at the end. Leaving the context waits for every commit (rows computed are never lost)."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salwidget-commit")
        self._pending: list = []

    def submit(self, function, *args) -> None:
        while len(self._pending) >= 2:
            self._pending.pop(0).result()
        self._pending.append(self._executor.submit(function, *args))

    def flush(self) -> None:
        while self._pending:
            self._pending.pop(0).result()

    def __enter__(self) -> "Committer":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.flush()
        finally:
            self._executor.shutdown(wait=True)


def read_ahead(blocks, depth: int = 2):
    """Iterate ``blocks`` with the next ``depth`` read in a background thread (reading files and decoding
    overlap the model's work); an error in the reader is raised here, in order."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def reader():
        try:
            for block in blocks:
                while not stop.is_set():
                    try:
                        items.put((block, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            items.put((None, exc))
            return
        items.put((end, None))

    thread = threading.Thread(target=reader, name="salwidget-read", daemon=True)
    thread.start()
    try:
        while True:
            block, error = items.get()
            if error is not None:
                raise error
            if block is end:
                return
            yield block
    finally:
        stop.set()


def _chunk(batch_size, backend, inputs, auto_batch_size) -> int:
    if batch_size == "auto":
        # Forward passes only: about three fit where one forward+backward pass does.
        return max(1, 3 * auto_batch_size(backend.device, inputs))
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise SaliencyError(f"batch_size must be 'auto' or an integer >= 1; got {batch_size!r}.")
    return int(batch_size)


def _named(found: dict, names: list[str] | None) -> dict:
    """Add the name columns next to the class columns."""
    if not found:
        return {}
    name = (lambda c: names[c] if 0 <= c < len(names) else f"class {c}") if names else (lambda c: f"class {c}")
    label_names = [name(int(c)) if c >= 0 else "" for c in found["label"]]
    predicted_names = [name(int(c)) if c >= 0 else "non-finite output" for c in found["predicted"]]
    out = {}
    for column in COLUMNS:
        if column == "label_name":
            out[column] = label_names
        elif column == "predicted_name":
            out[column] = predicted_names
        else:
            out[column] = found[column]
    return out


def _check_labels(labels, num_classes, rows) -> None:
    if labels is None or num_classes is None:
        return
    bad = (labels < -1) | (labels >= max(num_classes, 2))
    if bad.any():
        where = int(np.nonzero(bad)[0][0])
        raise SaliencyError(f"The label of row {int(rows[where])} is {int(labels[where])}, outside the model's "
                            f"{num_classes} classes (0 to {max(num_classes, 2) - 1}, or -1 for unknown).")


def _callable_id(function) -> str | None:
    """What a store remembers of ``preprocess``: its name and code (another function means other inputs)."""
    if function is None:
        return None
    code = getattr(function, "__code__", None)
    body = digest(code.co_code, code.co_consts) if code is not None else type(function).__qualname__
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', type(function).__name__)}:{body}"


def _say_when_other_weights(store: Store, data_key: str, model_key: str, key: str) -> None:
    others = [k for k, meta in store.scans().items() if meta.get("data") == data_key and meta.get("model") != model_key]
    if others and key not in store.scans():
        warnings.warn(f"The store {store.root} holds scans of this data by other model weights ({', '.join(others)}); "
                      f"their rows are not used. This scan writes under a new key, {key}.", stacklevel=3)

