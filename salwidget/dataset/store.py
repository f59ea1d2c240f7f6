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

import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import SaliencyError

FORMAT = 1
CHUNK_ROWS = 256  # rows per committed block (blocks start at multiples of it, so they align with the chunks below)
THUMBNAIL_CHUNK_ROWS = 16  # thumbnails per zarr chunk: a page of scattered rows (sorted by loss) reads little


def write_json(path: Path, value: dict) -> None:
    """Write ``value`` to ``path`` as JSON atomically (a temporary file renamed)."""
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


def read_parts(path_dir: Path, columns: list[str] | None = None):
    """Every committed part of ``path_dir`` as one pandas DataFrame (empty if none), rows in index order,
    each index once."""
    import pandas as pd
    import pyarrow.parquet as pq

    parts = sorted(path_dir.glob("part-*.parquet")) if path_dir.exists() else []
    if not parts:
        return None
    frame = pd.concat([pq.read_table(p, columns=columns).to_pandas() for p in parts], ignore_index=True)
    return frame.drop_duplicates("index", keep="first").sort_values("index", kind="stable")


class Store:
    """A store folder (see the module docstring); ``Store(path)`` creates it or checks its format."""

    def __init__(self, root: str | os.PathLike):
        from .. import __version__

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / "salwidget-store.json"
        if manifest.exists():
            info = json.loads(manifest.read_text())
            if int(info.get("format", 0)) > FORMAT:
                raise SaliencyError(
                    f"The store {self.root} was written by {info.get('written_by', 'a newer salwidget')} in format "
                    f"{info.get('format')}; this salwidget ({__version__}) reads format {FORMAT}. Upgrade salwidget "
                    "or use another folder."
                )
        else:
            write_json(manifest, {"format": FORMAT, "written_by": f"salwidget {__version__}"})

    def scans(self) -> dict[str, dict]:
        """key -> meta of every scan in the store."""
        out = {}
        for meta in sorted((self.root / "scans").glob("*/meta.json")):
            out[meta.parent.name] = json.loads(meta.read_text())
        return out

    def scan(self, key: str, meta: dict) -> "ScanStore":
        return ScanStore(self.root / "scans" / key, meta)


class ScanStore:
    """One scan's rows: its table parts, its errors and its thumbnails."""

    def __init__(self, folder: Path, meta: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "meta.json"
        if path.exists():
            stored = json.loads(path.read_text())
            mismatch = {k for k in ("model", "data", "length") if k in meta and stored.get(k) != meta[k]}
            if mismatch:
                raise SaliencyError(f"The scan in {self.folder} belongs to other {', '.join(sorted(mismatch))}; "
                                    "it is not reused.")
            self.meta = stored
        else:
            self.meta = dict(meta)
            write_json(path, self.meta)
        self.length = int(self.meta["length"])
        self._thumbnails = None

    # ----------------------------------------------------------------- settings
    def setting(self, name: str, value: Any) -> Any:
        """The stored value of a setting decided by the first block (e.g. how scores are read); stores
        ``value`` if there is none yet."""
        if name not in self.meta:
            self.meta[name] = value
            write_json(self.folder / "meta.json", self.meta)
        return self.meta[name]

    # ------------------------------------------------------------------- rows
    def committed(self) -> np.ndarray:
        """Dataset indices with a committed row (a table row or an error), sorted."""
        import pyarrow.parquet as pq

        rows = []
        for sub in ("table", "errors"):
            for part in sorted((self.folder / sub).glob("part-*.parquet")):
                rows.append(pq.read_table(part, columns=["index"]).column("index").to_numpy())
        return np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)

    def commit(self, rows: np.ndarray, columns: dict[str, Any], thumbnails: np.ndarray | None,
               failed: dict[int, str]) -> None:
        """Write one block: thumbnails of ``rows`` first, then the table part of ``rows`` and the errors."""
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
                table[name] = list(values) if getattr(values, "ndim", 1) > 1 else values
            write_parquet(self.folder / "table", pa.table(table), int(rows[0]))

    def table(self):
        return read_parts(self.folder / "table")

    def has_jobs(self) -> bool:
        return (self.folder / "jobs").exists()

    def job_columns(self):
        """The per-image columns of every dataset job (and of the pairs of jobs), indexed by dataset index."""
        import pandas as pd
        import pyarrow.parquet as pq

        frames = []
        for folder in sorted((self.folder / "jobs").glob("*/table")):
            parts = sorted(folder.glob("part-*.parquet"))
            if parts:
                frame = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
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
            self._thumbnails = zarr.open_array(
                str(self.folder / "thumbnails.zarr"), mode="a", shape=(self.length, THUMBNAIL_PX, THUMBNAIL_PX, 3),
                chunks=(THUMBNAIL_CHUNK_ROWS, THUMBNAIL_PX, THUMBNAIL_PX, 3), dtype="uint8", fill_value=255)
        return self._thumbnails

    def thumbnails(self, rows: Iterable[int]) -> np.ndarray:
        rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, np.int64).reshape(-1)
        if not len(rows):
            from .pictures import THUMBNAIL_PX

            return np.zeros((0, THUMBNAIL_PX, THUMBNAIL_PX, 3), np.uint8)
        return read_rows(self._thumbnail_array(), rows)
