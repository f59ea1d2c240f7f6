"""The dataset store: Parquet table parts and zarr arrays in a folder, committed block by block.

Layout (every file opens without salwidget: pyarrow / pandas for the tables, zarr for the arrays)::

    <store>/salwidget-store.json            {"format": 1, "written_by": "salwidget 0.3.0"}
    <store>/scans/<key>/meta.json           what the rows belong to: model and data fingerprints, length,
                                             classes, output, layout; how scores are read
    <store>/scans/<key>/table/part-*.parquet one part per committed block: `index` (the dataset index) and
                                             the scan's columns
    <store>/scans/<key>/errors/part-*.parquet rows that could not be read: `index`, `message`
    <store>/scans/<key>/thumbnails.zarr     (N, 64, 64, 3) uint8, chunks of 16 rows
    <store>/scans/<key>/jobs/<job>/...       maps and per-image columns of dataset jobs (attribute_dataset)

A block writes its arrays first, then its table part under a temporary name
and renames it (atomic on one file system): the table is the union of the
parts, so after any interruption (Stop, a kernel restart, SIGKILL) the rows
without a part are exactly the rows to compute again, and nothing half written
is ever read. A key is a digest of the model's weights, the data and the scan's
settings: rows of other weights or other data live under other keys and never mix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import SaliencyError

FORMAT = 1
CHUNK_ROWS = 256  # rows per committed block (blocks start at multiples of it, so they align with the chunks below)
THUMBNAIL_CHUNK_ROWS = 16  # thumbnails per zarr chunk: a page of scattered rows (sorted by loss) reads little


@contextlib.contextmanager
def writing(path: Path):
    """Turns an OS error while writing under ``path`` into a :class:`SaliencyError` that names the path,
    the cause and the way out (a full disk, a read-only folder, a file where a folder should be)."""
    try:
        yield
    except OSError as exc:
        raise store_error(path, exc) from exc


def store_error(path: Path, exc: OSError) -> SaliencyError:
    fixes = {
        errno.ENOSPC: "the disk is full: free space there, or pass store= a folder on another disk",
        errno.EDQUOT: "the disk quota is used up: free space there, or pass store= a folder on another disk",
        errno.EROFS: "the file system is read-only: pass store= a writable folder",
        errno.EACCES: "this process may not write there: pass store= a folder you can write to",
        errno.EPERM: "this process may not write there: pass store= a folder you can write to",
        errno.ENOTDIR: "a file stands where the store needs a folder: pass store= a folder (new or a store)",
        errno.EEXIST: "a file stands where the store needs a folder: pass store= a folder (new or a store)",
    }
    fix = fixes.get(exc.errno, "check the folder, or pass store= another one")
    where = exc.filename or path
    return SaliencyError(f"The store at {path} cannot be written ({where}: {exc.strerror or exc}); {fix}.")


def write_json(path: Path, value: dict) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(temporary, path)


def _run(rows: np.ndarray) -> slice | None:
    """``rows`` as a slice when they are consecutive (zarr's slice path is about 3x its index-array path)."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and (np.diff(rows) == 1).all():
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return None


def write_rows(array: Any, rows: np.ndarray, values: np.ndarray) -> None:
    """``array[rows] = values`` along the first axis of a zarr array."""
    run = _run(np.asarray(rows))
    if run is not None:
        array[run] = values
    else:
        array.set_orthogonal_selection((np.asarray(rows),), values)


def read_rows(array: Any, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` along the first axis of a zarr array."""
    run = _run(np.asarray(rows))
    return array[run] if run is not None else array.get_orthogonal_selection((np.asarray(rows),))


def write_parquet(path_dir: Path, table: Any, first: int) -> Path:
    """Write a pyarrow ``table`` as a new part in ``path_dir``, atomically (temporary name, then rename)."""
    import pyarrow.parquet as pq

    path_dir.mkdir(parents=True, exist_ok=True)
    name = f"part-{first:010d}-{uuid.uuid4().hex[:12]}.parquet"
    temporary = path_dir / f".{name}.tmp"
    pq.write_table(table, temporary)
    os.replace(temporary, path_dir / name)
    return path_dir / name


class DamagedStoreWarning(UserWarning):
    """A file of a store could not be read: it is set aside (renamed ``.damaged-*``) and its rows are
    computed again by the next scan or job."""


def set_aside(path: Path, why: Exception | str) -> None:
    """Rename a damaged file or folder out of the store's way (kept for inspection) and say so."""
    aside = path.with_name(f".damaged-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        os.replace(path, aside)
        kept = f"; it is kept as {aside.name}"
    except OSError:  # gone already (another reader set it aside), or a read-only store
        kept = ""
    said = (f"is damaged ({type(why).__name__}: {str(why)[:200]})" if isinstance(why, Exception)
            else f"is set aside ({why})")
    warnings.warn(f"The store file {path} {said}{kept}. Its rows are computed again by the next run.",
                  DamagedStoreWarning, stacklevel=3)


def read_part(path: Path, columns: list[str] | None = None):
    """One Parquet part as a pyarrow table, or None when it is damaged (it is then set aside)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        return None
    except Exception as exc:  # ArrowInvalid (truncated, empty), OSError: the part is unusable
        set_aside(path, exc)
        return None


def read_parts(path_dir: Path, columns: list[str] | None = None):
    """Every committed part of ``path_dir`` as one pandas DataFrame (None if none), rows in index order,
    each index once. A damaged part is set aside and its rows left out (the next run computes them)."""
    import pandas as pd

    parts = sorted(path_dir.glob("part-*.parquet")) if path_dir.exists() else []
    tables = [t for t in (read_part(p, columns) for p in parts) if t is not None]
    if not tables:
        return None
    frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    return frame.drop_duplicates("index", keep="first").sort_values("index", kind="stable")


def forget_rows(path_dir: Path, rows: np.ndarray) -> None:
    """Set aside every part of ``path_dir`` that holds any of ``rows``: they are computed again."""
    rows = np.asarray(rows, np.int64)
    for part in sorted(path_dir.glob("part-*.parquet")) if path_dir.exists() else []:
        table = read_part(part, ["index"])
        if table is not None and np.isin(table.column("index").to_numpy(), rows).any():
            set_aside(part, "it covers rows of a damaged array chunk")


def read_json(path: Path, repair: bool = True) -> dict | None:
    """A JSON file of the store, or None when it is missing or damaged (then set aside, when ``repair``)."""
    try:
        value = json.loads(path.read_text())
        if not isinstance(value, dict):
            raise ValueError(f"a {type(value).__name__}, not an object")
        return value
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        if repair:
            set_aside(path, exc)
        return None


def read_checked(array: Any, rows: np.ndarray, path: Path, on_damage) -> tuple[np.ndarray, np.ndarray]:
    """``array[rows]`` and a mask of the rows whose chunk is damaged (filled with the array's fill value):
    such a chunk is removed and ``on_damage(rows of that chunk)`` is told, so that its rows are computed
    again by the next run."""
    rows = np.asarray(rows, np.int64)
    try:
        return read_rows(array, rows), np.zeros(len(rows), bool)
    except Exception:  # a chunk that does not decode; find which
        pass
    chunk = array.chunks[0]
    out = np.full((len(rows), *array.shape[1:]), array.fill_value, array.dtype)
    damaged = np.zeros(len(rows), bool)
    for number in np.unique(rows // chunk):
        picked = rows // chunk == number
        try:
            out[picked] = read_rows(array, rows[picked])
        except Exception as exc:
            key = array.metadata.encode_chunk_key((int(number),) + (0,) * (array.ndim - 1))
            set_aside(path / key, exc)
            damaged |= picked
            on_damage(np.arange(number * chunk, min((number + 1) * chunk, array.shape[0])))
    return out, damaged


@contextlib.contextmanager
def one_writer(folder: Path, cancel=None, waiting=None):
    """Hold the writer's lock of ``folder``: one process (or thread) at a time computes and commits its
    rows; another waits here (checking ``cancel``), then finds them committed. The lock is the operating
    system's (``flock``): a killed writer releases it. Where there is no ``flock`` (Windows), no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".writer.lock", "a+")
    try:
        told = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if cancel is not None and cancel():
                    from ..errors import AttributionCancelled

                    raise AttributionCancelled("Cancelled while another scan or job wrote these rows.")
                if waiting is not None and not told:
                    waiting()
                    told = True
                time.sleep(0.05)
        yield
    finally:
        handle.close()  # releases the lock


class Store:
    """A store folder (see the module docstring); ``Store(path)`` creates it or checks its format."""

    def __init__(self, root: str | os.PathLike):
        from .. import __version__

        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise SaliencyError(f"store={str(root)!r} is a file, not a folder: pass store= a folder (new, or one "
                                "that holds a store).")
        with writing(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / "salwidget-store.json"
        info = read_json(manifest)
        if info is not None:
            if int(info.get("format", 0)) > FORMAT:
                raise SaliencyError(
                    f"The store {self.root} was written by {info.get('written_by', 'a newer salwidget')} in format "
                    f"{info.get('format')}; this salwidget ({__version__}) reads format {FORMAT}. Upgrade salwidget "
                    "or use another folder."
                )
        else:
            with writing(self.root):
                write_json(manifest, {"format": FORMAT, "written_by": f"salwidget {__version__}"})

    def scans(self) -> dict[str, dict]:
        """key -> meta of every scan in the store."""
        out = {}
        for meta in sorted((self.root / "scans").glob("*/meta.json")):
            info = read_json(meta, repair=False)  # a damaged one is repaired when its scan is opened
            if info is not None:
                out[meta.parent.name] = info
        return out

    def scan(self, key: str, meta: dict) -> "ScanStore":
        return ScanStore(self.root / "scans" / key, meta)


class ScanStore:
    """One scan's rows: its table parts, its errors and its thumbnails."""

    def __init__(self, folder: Path, meta: dict):
        self.folder = Path(folder)
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "meta.json"
        existed = path.exists()
        stored = read_json(path)
        if existed and stored is None:  # damaged (set aside): the settings its rows were read with are lost
            for sub in ("table", "errors"):
                for part in sorted((self.folder / sub).glob("part-*.parquet")):
                    set_aside(part, "the scan's meta.json was damaged")
        if stored is not None:
            mismatch = {k for k in ("model", "data", "length") if k in meta and stored.get(k) != meta[k]}
            if mismatch:
                raise SaliencyError(f"The scan in {self.folder} belongs to other {', '.join(sorted(mismatch))}; "
                                    "it is not reused.")
            self.meta = stored
        else:
            self.meta = dict(meta)
            with writing(self.folder):
                write_json(path, self.meta)
        self.length = int(self.meta["length"])
        self._thumbnails = None

    # ----------------------------------------------------------------- settings
    def setting(self, name: str, value: Any) -> Any:
        """The stored value of a setting decided by the first block (e.g. how scores are read); stores
        ``value`` if there is none yet."""
        if name not in self.meta:
            self.meta[name] = value
            with writing(self.folder):
                write_json(self.folder / "meta.json", self.meta)
        return self.meta[name]

    # ------------------------------------------------------------------- rows
    def committed(self) -> np.ndarray:
        """Dataset indices with a committed row (a table row or an error), sorted."""
        rows = []
        for sub in ("table", "errors"):
            for part in sorted((self.folder / sub).glob("part-*.parquet")):
                table = read_part(part, ["index"])
                if table is not None:
                    rows.append(table.column("index").to_numpy())
        return np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)

    def commit(self, rows: np.ndarray, columns: dict[str, Any], thumbnails: np.ndarray | None,
               failed: dict[int, str]) -> None:
        """Write one block: thumbnails of ``rows`` first, then the table part of ``rows`` and the errors."""
        with writing(self.folder):
            self._commit(rows, columns, thumbnails, failed)

    def _commit(self, rows, columns, thumbnails, failed) -> None:
        import pyarrow as pa

        rows = np.asarray(rows, np.int64)
        if thumbnails is not None and len(rows):
            write_rows(self._thumbnail_array(), rows, thumbnails)
        if failed:
            write_parquet(self.folder / "errors", pa.table({
                "index": np.asarray(sorted(failed), np.int64),
                "message": [failed[r] for r in sorted(failed)],
            }), min(failed))
        if len(rows):
            table = {"index": rows}
            for name, values in columns.items():
                values = np.asarray(values) if not isinstance(values, list) else values
                if getattr(values, "ndim", 1) == 2:  # a list per row (top-5), built without Python objects
                    width = values.shape[1]
                    values = pa.ListArray.from_arrays(pa.array(np.arange(len(values) + 1, dtype=np.int32) * width),
                                                      pa.array(np.ascontiguousarray(values).reshape(-1)))
                table[name] = values
            write_parquet(self.folder / "table", pa.table(table), int(rows[0]))

    def table(self):
        return read_parts(self.folder / "table")

    def has_jobs(self) -> bool:
        return (self.folder / "jobs").exists()

    def job_columns(self):
        """The per-image columns of every dataset job (and of the pairs of jobs), indexed by dataset index."""
        import pandas as pd

        frames = []
        for folder in sorted((self.folder / "jobs").glob("*/table")):
            tables = [t for t in (read_part(p) for p in sorted(folder.glob("part-*.parquet"))) if t is not None]
            if tables:
                frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
                frames.append(frame.groupby("index").first())  # parts may hold different columns (pairs)
        return pd.concat(frames, axis=1) if frames else pd.DataFrame(index=pd.Index([], name="index"))

    def errors(self) -> list[tuple[int, str]]:
        frame = read_parts(self.folder / "errors")
        return [] if frame is None else list(zip(frame["index"].tolist(), frame["message"].tolist()))

    # ------------------------------------------------------------ thumbnails
    def _thumbnail_array(self):
        import zarr

        from .pictures import THUMBNAIL_PX

        if self._thumbnails is None:
            path = self.folder / "thumbnails.zarr"
            shape = (self.length, THUMBNAIL_PX, THUMBNAIL_PX, 3)
            chunks = (THUMBNAIL_CHUNK_ROWS, THUMBNAIL_PX, THUMBNAIL_PX, 3)
            if path.exists() or not hasattr(zarr, "create_array"):
                self._thumbnails = zarr.open_array(str(path), mode="a", shape=shape, chunks=chunks, dtype="uint8",
                                                   fill_value=255)
            else:  # zarr 3: chunk files side by side ("0.0.0.0"), not a folder tree per chunk (faster to remove)
                self._thumbnails = zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype="uint8",
                                                     fill_value=255, chunk_key_encoding={"name": "v2",
                                                                                         "separator": "."})
        return self._thumbnails

    def thumbnails(self, rows: Iterable[int]) -> np.ndarray:
        rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, np.int64).reshape(-1)
        if not len(rows):
            from .pictures import THUMBNAIL_PX

            return np.zeros((0, THUMBNAIL_PX, THUMBNAIL_PX, 3), np.uint8)
        values, _ = read_checked(self._thumbnail_array(), rows, self.folder / "thumbnails.zarr",
                                 lambda lost: forget_rows(self.folder / "table", lost))
        return values

    def writer(self, cancel=None, waiting=None):
        """The scan's writer lock (see :func:`one_writer`)."""
        return one_writer(self.folder, cancel, waiting)
