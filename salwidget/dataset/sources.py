"""Where a dataset's images come from: one small class per kind of source, one reading protocol.

A :class:`DataSource` has a length, reads any rows back as model inputs
(:meth:`~DataSource.read`), streams blocks of rows in order
(:meth:`~DataSource.blocks`, which a sequential source such as a
``tf.data.Dataset`` or a ``DataLoader`` can serve without random access) and
has a fingerprint: what a store uses to tell whether it holds this data.

Kinds (:func:`as_source` picks one): a numpy array or tensor ``(N, ...)`` with
``labels=``; a torch ``Dataset`` whose items are an image or ``(image,
label)``; a torch ``DataLoader`` (its dataset, read item by item, so any row
can be read back); a ``tf.data.Dataset`` of images or ``(image, label)``,
batched or not; a folder of image files (class subfolders give the labels, as
torchvision's ``ImageFolder`` lays them out; a flat folder has none); a list
of file paths. Files are read with Pillow and turned into model inputs by
``preprocess`` (by default: RGB in [0, 1], in the model's layout).
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import SaliencyError
from ..digests import bytes_digest
from ..inputs import to_numpy

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
UNKNOWN = -1  # the label of an image whose true class is not known


@dataclass
class Batch:
    """Rows read from a source: model inputs, labels (-1 unknown), pictures for thumbnails, failures.

    ``inputs`` holds the rows that could be read (``rows[ok]``), ``failed``
    maps each row that could not to its message (a file Pillow cannot open).
    """

    rows: np.ndarray
    inputs: np.ndarray | None
    labels: np.ndarray
    pictures: list | None = None  # RGB uint8 (h, w, 3) as a person sees them, where the source has them
    failed: dict = field(default_factory=dict)

    @property
    def ok(self) -> np.ndarray:
        """Which of ``rows`` were read (a boolean mask)."""
        return np.array([int(r) not in self.failed for r in self.rows], bool)


class DataSource:
    """The protocol every kind of source follows (see the module docstring)."""

    kind = "source"
    class_names: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, rows: Sequence[int]) -> Batch:
        """The model inputs of ``rows`` (any order, any rows)."""
        raise NotImplementedError

    def blocks(self, rows: Sequence[int], size: int) -> Iterator[Batch]:
        """``rows`` (sorted) in batches of at most ``size``; random-access sources just read them."""
        rows = np.asarray(rows, np.int64)
        for start in range(0, len(rows), size):
            yield self.read(rows[start : start + size])

    def fingerprint(self) -> str:
        """A digest that changes when the data does (documented per kind)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind} of {len(self)} images"

    def _check_rows(self, rows: Sequence[int]) -> np.ndarray:
        rows = np.asarray(rows, np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            bad = rows[(rows < 0) | (rows >= len(self))][0]
            raise SaliencyError(f"Row {int(bad)} is outside the dataset of {len(self)} images (0 to {len(self) - 1}).")
        return rows


# ------------------------------------------------------------------ arrays
class ArraySource(DataSource):
    """A numpy array or tensor (N, ...), labels given separately. Fingerprint: shape, dtype and bytes."""

    kind = "array"

    def __init__(self, images: Any, labels: Any = None):
        self.images = np.asarray(to_numpy(images))
        if self.images.ndim < 2:
            raise SaliencyError(f"An array of images needs a batch axis first, (N, ...); got shape {self.images.shape}.")
        self.labels = check_labels(labels, len(self.images))
        self._digest = None

    def __len__(self) -> int:
        return len(self.images)

    def read(self, rows) -> Batch:
        rows = self._check_rows(rows)
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and (np.diff(rows) == 1).all():
            images = self.images[int(rows[0]) : int(rows[-1]) + 1]  # a block of the scan: a view, no copy
        else:
            images = self.images[rows]
        return Batch(rows, np.asarray(images, np.float32), self.labels[rows])

    def fingerprint(self) -> str:
        if self._digest is None:
            self._digest = bytes_digest(repr((self.images.shape, str(self.images.dtype))).encode(),
                                       np.ascontiguousarray(self.images), np.ascontiguousarray(self.labels))
        return self._digest


def check_labels(labels: Any, count: int) -> np.ndarray:
    """Labels as int64, one per image (-1 unknown); None gives all unknown."""
    if labels is None:
        return np.full(count, UNKNOWN, np.int64)
    values = np.asarray(to_numpy(labels)).reshape(-1)
    if len(values) != count:
        raise SaliencyError(f"labels has {len(values)} entries for {count} images: give one per image "
                            f"(-1 where the class is unknown).")
    if values.dtype.kind not in "iu" and not (values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0)):
        raise SaliencyError(f"labels must be integer class indices; got {values[:3].tolist()}...")
    return values.astype(np.int64)


# --------------------------------------------------------------- item sources
def _split_item(item: Any, index: int) -> tuple[Any, int]:
    """An item of a Dataset: an image, or (image, label)."""
    if isinstance(item, dict):
        raise SaliencyError(f"Item {index} of the dataset is a dict with keys {sorted(item)}; salwidget reads items "
                            "that are an image or (image, label). Wrap the dataset to return those.")
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            image, label = item
            label = to_numpy(label)
            if np.ndim(label) != 0:
                raise SaliencyError(f"Item {index} of the dataset has a label of shape {np.shape(label)}; salwidget "
                                    "reads (image, label) with one class index per image.")
            return image, int(label)
        if len(item) == 1:
            return item[0], UNKNOWN
        raise SaliencyError(f"Item {index} of the dataset is a {type(item).__name__} of {len(item)} values; "
                            "salwidget reads items that are an image or (image, label).")
    return item, UNKNOWN


def _image_array(image: Any, index: int) -> np.ndarray:
    try:
        array = np.asarray(to_numpy(image), np.float32)
    except Exception as exc:
        raise SaliencyError(f"Item {index} of the dataset is not an image: a {type(image).__name__} ({exc}). "
                            "Items must be an image (array or tensor) or (image, label).") from exc
    if array.ndim < 2:
        raise SaliencyError(f"Item {index} of the dataset has shape {array.shape}: not an image. Items must be an "
                            "image or (image, label).")
    return array


def stack_images(images: list[np.ndarray], rows: Sequence[int], where: str) -> np.ndarray:
    """One batch from images that must share a shape (else: which differ, and what to do)."""
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd = next(int(r) for r, im in zip(rows, images) if im.shape != first)
        raise SaliencyError(f"The images of {where} have different shapes: row {int(rows[0])} is {first}, row {odd} "
                            f"is {next(im.shape for im in images if im.shape != first)}. Pass preprocess= to bring "
                            "every image to the model's input size.")
    return np.stack(images)


class TorchDatasetSource(DataSource):
    """A map-style torch ``Dataset`` (or a ``DataLoader``'s dataset), read item by item.

    Fingerprint: the dataset's type, its length and the bytes of up to 8 items spread over it (a
    full hash would read every image; a dataset that changes other items keeps its fingerprint).
    """

    kind = "torch Dataset"

    def __init__(self, dataset: Any, labels: Any = None):
        self.dataset = dataset
        try:
            self._length = len(dataset)
        except TypeError as exc:
            raise SaliencyError("The torch dataset has no length (an IterableDataset?): salwidget needs a map-style "
                                "Dataset it can index, or a numpy array.") from exc
        self.given = None if labels is None else check_labels(labels, self._length)
        self.class_names = list(getattr(dataset, "classes", []) or []) or None
        self._digest = None

    def __len__(self) -> int:
        return self._length

    def read(self, rows) -> Batch:
        rows = self._check_rows(rows)
        images, labels = [], []
        for r in rows:
            try:
                item = self.dataset[int(r)]
            except Exception as exc:
                raise SaliencyError(f"Reading item {int(r)} of the dataset raised {type(exc).__name__}: {exc}. Fix "
                                    f"the dataset's __getitem__ for that item (dataset[{int(r)}] repeats it), or scan "
                                    "a subset without it (torch.utils.data.Subset).") from exc
            image, label = _split_item(item, int(r))
            images.append(_image_array(image, int(r)))
            labels.append(label)
        labels = np.asarray(labels, np.int64) if self.given is None else self.given[rows]
        return Batch(rows, stack_images(images, rows, "the dataset") if images else None, labels)

    def fingerprint(self) -> str:
        if self._digest is None:
            digest = hashlib.blake2b(digest_size=16)
            digest.update(f"{type(self.dataset).__module__}.{type(self.dataset).__qualname__}:{self._length}".encode())
            picks = np.unique(np.linspace(0, self._length - 1, min(8, self._length)).round().astype(np.int64))
            batch = self.read(picks)
            if batch.inputs is not None:
                digest.update(memoryview(np.ascontiguousarray(batch.inputs)).cast("B"))
            digest.update(memoryview(np.ascontiguousarray(batch.labels)).cast("B"))
            self._digest = digest.hexdigest()
        return self._digest


class TensorFlowSource(DataSource):
    """A ``tf.data.Dataset`` of images or (image, label), batched or not, read in order.

    It has no random access: :meth:`read` of scattered rows iterates from the start (the scan streams
    it once, in order). Fingerprint: its element spec, its length and the bytes of its first element.
    """

    kind = "tf.data.Dataset"

    def __init__(self, dataset: Any, labels: Any = None):
        import tensorflow as tf

        spec = dataset.element_spec
        image_spec = spec[0] if isinstance(spec, tuple) else spec
        if isinstance(spec, dict) or not hasattr(image_spec, "shape"):
            raise SaliencyError(f"The tf.data.Dataset yields {spec}; salwidget reads images or (image, label).")
        self.with_labels = isinstance(spec, tuple) and len(spec) == 2
        # Batched when the image spec has one axis more than an image: (None, H, W, C).
        self.batched = image_spec.shape.rank is not None and image_spec.shape.rank == 4 and image_spec.shape[0] is None
        self.dataset = dataset.unbatch() if self.batched else dataset
        count = int(self.dataset.cardinality())
        if count < 0:  # unknown (after unbatch or a filter) or infinite: count it once
            if count == tf.data.INFINITE_CARDINALITY:
                raise SaliencyError("The tf.data.Dataset is infinite (.repeat()?): salwidget needs a finite one.")
            count = int(self.dataset.reduce(np.int64(0), lambda n, _: n + 1))
        self._length = count
        self.given = None if labels is None else check_labels(labels, count)
        self._digest = None

    def __len__(self) -> int:
        return self._length

    def _items(self, start: int = 0):
        for offset, element in enumerate(self.dataset.skip(start).as_numpy_iterator()):
            index = start + offset
            if self.with_labels:
                image, label = element
                yield index, np.asarray(image, np.float32), int(np.asarray(label).reshape(-1)[0])
            else:
                yield index, np.asarray(element, np.float32), UNKNOWN

    def _batch(self, rows: np.ndarray, items: list) -> Batch:
        images = [image for _, image, _ in items]
        labels = np.asarray([label for _, _, label in items], np.int64) if self.given is None else self.given[rows]
        return Batch(rows, stack_images(images, rows, "the tf.data.Dataset") if images else None, labels)

    def read(self, rows) -> Batch:
        rows = self._check_rows(rows)
        if not rows.size:
            return Batch(rows, None, np.zeros(0, np.int64))
        wanted, found = set(rows.tolist()), {}
        for index, image, label in self._items(int(rows.min())):
            if index in wanted:
                found[index] = (index, image, label)
            if index >= rows.max():
                break
        return self._batch(rows, [found[int(r)] for r in rows])

    def blocks(self, rows, size: int) -> Iterator[Batch]:
        rows = np.asarray(rows, np.int64)
        if not rows.size:
            return
        wanted, pending = set(rows.tolist()), []
        for item in self._items(int(rows.min())):
            if item[0] in wanted:
                pending.append(item)
            if len(pending) == size:
                yield self._batch(np.asarray([i for i, _, _ in pending]), pending)
                pending = []
            if item[0] >= rows.max():
                break
        if pending:
            yield self._batch(np.asarray([i for i, _, _ in pending]), pending)

    def fingerprint(self) -> str:
        if self._digest is None:
            digest = hashlib.blake2b(digest_size=16)
            digest.update(f"{self.dataset.element_spec}:{self._length}".encode())
            first = self.read([0])
            digest.update(memoryview(np.ascontiguousarray(first.inputs)).cast("B"))
            self._digest = digest.hexdigest()
        return self._digest


# ------------------------------------------------------------------- files
class FileSource(DataSource):
    """Image files read with Pillow and turned into model inputs by ``preprocess``.

    A folder with class subfolders (``root/<class>/<file>``, as torchvision's ``ImageFolder``) labels each
    file by its folder, classes in sorted order; a flat folder or a list of paths has no labels (unless
    ``labels=`` gives them). Files that cannot be read are reported per row, never silently dropped.
    Fingerprint: every file's path, size and modification time.
    """

    kind = "image files"

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, preprocess: Callable | None,
                 channels_last: bool, class_names: list[str] | None = None):
        from .pictures import default_preprocess

        self.paths = [Path(p) for p in paths]
        self.labels = labels
        self.preprocess = preprocess or default_preprocess(channels_last)
        self.class_names = class_names
        self._digest = None

    @classmethod
    def from_folder(cls, root: Path, labels: Any, preprocess, channels_last: bool,
                    class_names: Sequence[str] | None = None) -> "FileSource":
        root = Path(root)
        subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if subfolders:  # ImageFolder: one folder per class
            by_name = class_names is not None and all(p.name in class_names for p in subfolders)
            paths, found = [], []
            for index, folder in enumerate(subfolders):
                files = _image_files(folder)
                paths += files
                found += [list(class_names).index(folder.name) if by_name else index] * len(files)
            names = list(class_names) if by_name else [p.name for p in subfolders]
            inferred = np.asarray(found, np.int64)
        else:
            paths, names = _image_files(root), None
            inferred = np.full(len(paths), UNKNOWN, np.int64)
        if not paths:
            raise SaliencyError(f"The folder {root} holds no image files ({', '.join(IMAGE_SUFFIXES)}), directly or "
                                "in class subfolders.")
        given = inferred if labels is None else check_labels(labels, len(paths))
        return cls(paths, given, preprocess, channels_last, names)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, rows) -> Batch:
        from .pictures import read_picture

        rows = self._check_rows(rows)
        images, pictures, failed, kept = [], [], {}, []
        for r in rows:
            path = self.paths[int(r)]
            try:
                picture = read_picture(path)
            except Exception as exc:  # unreadable: listed in Scan.errors, counted, not fatal
                failed[int(r)] = f"{path}: {type(exc).__name__}: {exc}"
                continue
            try:
                made = self.preprocess(picture)
            except Exception as exc:
                raise SaliencyError(f"preprocess raised {type(exc).__name__} on row {int(r)}, the file {path}: {exc}. "
                                    f"Fix preprocess for that picture ({picture.shape[1]} x {picture.shape[0]} "
                                    "pixels, RGB uint8), or leave the file out.") from exc
            image, shown = made if isinstance(made, tuple) else (made, picture)
            images.append(np.asarray(to_numpy(image), np.float32))
            pictures.append(np.asarray(shown))
            kept.append(int(r))
        inputs = stack_images(images, kept, "the files") if images else None
        return Batch(rows, inputs, self.labels[rows], pictures, failed)

    def fingerprint(self) -> str:
        if self._digest is None:
            digest = hashlib.blake2b(digest_size=16)
            for path, label in zip(self.paths, self.labels):
                try:
                    stat = path.stat()
                    digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
                except OSError:
                    digest.update(f"{path}|missing|{label}\n".encode())
            self._digest = digest.hexdigest()
        return self._digest


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# ---------------------------------------------------------------- choosing
def is_dataset(data: Any) -> bool:
    """Whether ``data`` is a dataset rather than a batch of images: a folder, a list of paths, a torch
    Dataset or DataLoader, a tf.data.Dataset or a DataSource (arrays and tensors are batches)."""
    if isinstance(data, (DataSource, str, os.PathLike)):
        return True
    if isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(data, (torch.utils.data.Dataset, torch.utils.data.DataLoader)):
        return True
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def as_source(data: Any, labels: Any = None, *, preprocess: Callable | None = None,
              channels_last: bool = False, class_names: Sequence[str] | None = None) -> DataSource:
    """The :class:`DataSource` for anything :func:`salwidget.scan` accepts (see the module docstring).

    A folder's class subfolders label their files; when ``class_names`` (the model's) holds every
    subfolder's name, a file's label is its folder's index in ``class_names`` (a folder "tiger cat" of an
    ImageNet model is class 282), else the folder's rank in sorted order (torchvision's ImageFolder).
    """
    if isinstance(data, DataSource):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise SaliencyError(f"The folder {path} does not exist.")
        if path.is_dir():
            return FileSource.from_folder(path, labels, preprocess, channels_last, class_names)
        data = [path]
    if isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data):
        return FileSource([Path(p) for p in data], check_labels(labels, len(data)), preprocess, channels_last)
    # A framework's classes can only be in play if it is imported already: never import one to look.
    torch = sys.modules.get("torch")
    if torch is not None:
        if isinstance(data, torch.utils.data.DataLoader):
            return TorchDatasetSource(data.dataset, labels)
        if isinstance(data, torch.utils.data.Dataset):
            return TorchDatasetSource(data, labels)
        if isinstance(data, torch.Tensor):
            return ArraySource(data, labels)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        if isinstance(data, tf.data.Dataset):
            return TensorFlowSource(data, labels)
        if isinstance(data, tf.Tensor):
            return ArraySource(data, labels)
    if isinstance(data, np.ndarray):
        return ArraySource(data, labels)
    raise SaliencyError(
        f"salwidget cannot read a {type(data).__name__} as a dataset. Pass a numpy array (with labels=), a torch "
        "Dataset or DataLoader, a tf.data.Dataset, a folder of images or a list of image paths."
    )
