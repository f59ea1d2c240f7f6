"""What a map explains: one score per image, read from the explained model output.

Every method differentiates (or, forward-only, records) the sum over a chunk's
rows of each row's score. A target says what that score is:

===============================  ====================================================
``None``                         each image's predicted class (its top label), raw
``k`` or one int per image       class ``k``'s raw score (logit), as before
``Class(k, score=...)``          class ``k``'s logit, softmax probability or sigmoid
``Region(k, mask)``              class ``k``'s score summed over a pixel mask of a dense
                                 output ``(B, K, H, W)`` (Keras ``(B, H, W, K)``), as
                                 pytorch-grad-cam's ``SemanticSegmentationTarget``
``Output(i)`` / ``Output()``     value ``i`` of a ``(B, n)`` regression or multi-output
                                 head; the value of a ``(B,)`` or ``(B, 1)`` scalar head
``Similarity(reference)``        cosine similarity of an embedding output to a
                                 reference embedding (one, or one per image)
any callable ``f(output)``       ``(B,)`` scores written in the model's framework
===============================  ====================================================

A target is checked against the clean output's shape before any pass (a mask
of the wrong size, a class beyond K, ``Output(i)`` beyond n, a reference of
the wrong length, each with the fix). Its score is a function of the output and
of per-image data (class indices, masks, references) gathered for each chunk's
rows, so the same function serves every method, both frameworks, and traced
TensorFlow steps (a step is traced once per kind of target: see
:attr:`Bound.signature`). Targets compare by value (masks and references by
their bytes) and are part of every result key; a callable target makes a
result uncacheable (its behaviour cannot be keyed), so it is never served
from a cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

from .errors import NotDifferentiableError, SaliencyError
from .inputs import check_output, check_target_range, class_indices, prepare_target, to_numpy
from .outputs import class_axis

SCORES = ("logit", "softmax", "sigmoid")
NO_LABEL = -1  # Attribution.target of images whose target is not a class or an index
_EPSILON = 1e-8  # cosine similarity: norms below this count as this (torch.nn.CosineSimilarity's eps)


# ----------------------------------------------------------------- the pieces a pass uses
@dataclass(frozen=True)
class RowScore:
    """A chunk's target: ``score(ops, output, *data)`` gives each row's score, ``(n,)``.

    ``data`` are device tensors whose rows are the chunk's rows. ``signature``
    identifies ``score`` (targets with equal signatures share one function),
    so a traced step keyed by it never runs another target's function.
    """

    signature: Hashable
    score: Callable
    data: tuple = ()

    def __call__(self, ops, output):
        return self.score(ops, output, *self.data)


@dataclass(frozen=True)
class DeviceTarget:
    """A bound target's per-image data on the model's device; ``rows(ops, images)`` picks a chunk's."""

    signature: Hashable
    score: Callable
    data: tuple

    def rows(self, ops, images) -> RowScore:
        return RowScore(self.signature, self.score, tuple(ops.take(d, images) for d in self.data))

    def everyone(self) -> RowScore:
        """The target of the whole batch in order (the clean outputs)."""
        return RowScore(self.signature, self.score, self.data)


@dataclass(eq=False)
class Bound:
    """A target for one batch: what is explained per image, its checks and its score.

    Attributes
    ----------
    target : Target
        Concrete: a prediction is resolved into the classes predicted.
    labels : numpy.ndarray of shape (B,)
        The class (or output index) explained per image; -1 where that means
        nothing (a similarity, a function).
    plain : bool
        A raw class score: the backends gather it directly (the fast path that
        a single-pass method may fuse with its clean forward).
    """

    target: "Target"
    labels: np.ndarray
    plain: bool = False
    data: tuple = ()  # per-image host arrays (first axis: images)
    signature: Hashable = None
    score: Callable | None = None
    checks: Callable[[tuple, int, int | None], None] | None = None
    key: bytes | None = field(default=b"")

    def check(self, shape: tuple, index: int = 0, batch: int | None = None) -> None:
        """Raise, naming the fix, unless output ``index`` of this ``shape`` can be scored."""
        if self.checks is not None:
            self.checks(tuple(int(d) if d is not None else None for d in shape), index, batch)

    def on_device(self, ops) -> Any:
        """An int tensor of classes (plain) or a :class:`DeviceTarget`."""
        if self.plain:
            return ops.asarray(self.labels, "int")
        data = tuple(ops.asarray(d, "int" if d.dtype.kind in "iu" else "float") for d in self.data)
        return DeviceTarget(self.signature, self.score, data)


# ----------------------------------------------------------------- targets
class Target:
    """Base class of targets: a value that :func:`salwidget.attribute` (``target=``) and the
    evaluation take. Compare by value; see the module docstring."""

    def bind(self, batch: int, *, output: np.ndarray | None = None, channels_last: bool = False,
             index: int = 0) -> Bound:
        """The target for a batch of ``batch`` images; with the clean ``output`` (numpy) it is checked
        against it (and a prediction resolved)."""
        raise NotImplementedError

    def _key(self) -> tuple | None:
        """What identifies this target's scores (None: nothing can, the result is not cached)."""
        raise NotImplementedError

    @property
    def cacheable(self) -> bool:
        """Whether results explaining this target may be cached (a function's may not)."""
        return self._key() is not None

    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        mine = self._key()
        return self is other if mine is None else mine == other._key()

    def __hash__(self) -> int:
        mine = self._key()
        return id(self) if mine is None else hash(mine)

    def _finish(self, bound: Bound, output: np.ndarray | None, index: int) -> Bound:
        key = self._key()
        bound.key = None if key is None else repr(key).encode() + bound.labels.tobytes()
        if output is not None:
            bound.check(output.shape, index, len(bound.labels))
        return bound


def _check_score_kind(score: Any) -> str:
    if score not in SCORES:
        raise SaliencyError(f"score must be one of {', '.join(map(repr, SCORES))}; got {score!r}.")
    return score


def _digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


def _per_image(values: np.ndarray, batch: int, what: str) -> np.ndarray:
    """One value (or array) for every image, or one per image, as a (batch, ...) array."""
    if len(values) == 1:
        return np.repeat(values, batch, axis=0)
    if len(values) != batch:
        raise SaliencyError(f"Got {len(values)} {what} for {batch} images: pass one for all images or one per image.")
    return values


class Class(Target):
    """Class ``k``'s score: its raw logit, its softmax probability or its sigmoid.

    Parameters
    ----------
    k : int, sequence of int (one per image), or None
        None: each image's predicted class (its top label).
    score : {'logit', 'softmax', 'sigmoid'}, default 'logit'
        'softmax' explains the class's probability against the others (as
        pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``); 'sigmoid' a
        multi-label head's independent probability of the label.
    """

    def __init__(self, k: Any = None, score: str = "logit"):
        self.k = None if k is None else class_indices(k)
        self.score = _check_score_kind(score)

    def __repr__(self) -> str:
        shown = None if self.k is None else (int(self.k[0]) if len(self.k) == 1 else self.k.tolist())
        return f"Class({shown!r}, score={self.score!r})"

    def _key(self) -> tuple:
        return ("class", None if self.k is None else tuple(self.k.tolist()), self.score)

    def bind(self, batch, *, output=None, channels_last=False, index=0) -> Bound:
        if self.k is None:
            if output is None:
                raise ValueError("Class(None) needs the clean output to read the prediction from")
            check_output(output, index, batch)
            labels = np.asarray(output).argmax(axis=1).astype(np.int64)
        else:
            labels = prepare_target(self.k, batch)
        concrete = self if self.k is not None else Class(labels, self.score)
        plain = self.score == "logit"

        def checks(shape, index, rows):
            check_output(_Shape(shape), index, rows)
            check_target_range(labels, shape[1])

        bound = Bound(concrete, labels, plain, (labels,), ("class", self.score), _class_score(self.score), checks)
        return concrete._finish(bound, output, index)


class _Shape:
    """Something with a ``shape`` (what :func:`check_output` reads)."""

    def __init__(self, shape: tuple):
        self.shape = shape


def _class_score(kind: str) -> Callable:
    def score(ops, output, classes):
        if kind == "softmax":
            return ops.take_along_rows(ops.softmax(output, axis=1), classes)
        picked = ops.take_along_rows(output, classes)
        return ops.sigmoid(picked) if kind == "sigmoid" else picked

    return score


class Region(Target):
    """Class ``k``'s score summed over the pixels of a mask, for a dense output.

    The output is a map of class scores, (B, K, H, W) in torch's layout or
    (B, H, W, K) in Keras' (the layout of the input), or (B, H, W) for a
    single class. As pytorch-grad-cam's ``SemanticSegmentationTarget``: the
    score is ``sum(output[k] * mask)``, of the logits by default.

    Parameters
    ----------
    k : int or sequence of int (one per image)
    mask : bool array (H, W), or (B, H, W) one per image
        At the output's resolution. 0/1 numbers are taken as booleans.
    score : {'logit', 'softmax', 'sigmoid'}, default 'logit'
        What is summed: the raw scores, each pixel's softmax over the classes,
        or each pixel's sigmoid.
    """

    def __init__(self, k: Any, mask: Any, score: str = "logit"):
        self.k = class_indices(k)
        self.score = _check_score_kind(score)
        self.mask = _boolean_mask(mask)
        self.mask.setflags(write=False)

    def __repr__(self) -> str:
        shown = int(self.k[0]) if len(self.k) == 1 else self.k.tolist()
        return f"Region({shown!r}, mask of shape {self.mask.shape}, {int(self.mask.sum())} pixels, score={self.score!r})"

    def _key(self) -> tuple:
        return ("region", tuple(self.k.tolist()), self.mask.shape, _digest(self.mask), self.score)

    def bind(self, batch, *, output=None, channels_last=False, index=0) -> Bound:
        labels = _per_image(self.k, batch, "classes")
        masks = self.mask[None] if self.mask.ndim == 2 else self.mask
        masks = _per_image(masks, batch, "masks").astype(np.float32)
        size = masks.shape[1:]
        kind = self.score

        def checks(shape, index, rows):
            wanted = "(B, H, W, K)" if channels_last else "(B, K, H, W)"
            if len(shape) not in (3, 4):
                raise SaliencyError(
                    f"Region explains a dense output {wanted} (or (B, H, W)); model output {index} has shape "
                    f"{shape}. For class scores (B, K) pass a class (target=k); pick another output with output=."
                )
            if rows is not None and shape[0] != rows:
                raise SaliencyError(f"Model output {index} has {shape[0]} rows for {rows} images.")
            if len(shape) == 3:
                spatial, classes = shape[1:], 1
            else:
                axis = class_axis(channels_last)
                classes = shape[axis]
                spatial = shape[1:3] if channels_last else shape[2:4]
            if tuple(spatial) != tuple(size):
                raise SaliencyError(
                    f"The Region mask is {size[0]} x {size[1]} but model output {index} {shape} is a "
                    f"{spatial[0]} x {spatial[1]} map ({wanted}): pass a mask at the output's resolution."
                )
            check_target_range(labels, classes)
            if kind == "softmax" and classes == 1:
                raise SaliencyError("score='softmax' over a single class is constant 1; use 'sigmoid' or 'logit'.")

        bound = Bound(self, labels, False, (labels, masks), ("region", kind, bool(channels_last)),
                      _region_score(kind, bool(channels_last)), checks)
        return self._finish(bound, output, index)


def _boolean_mask(mask: Any) -> np.ndarray:
    values = to_numpy(mask)
    if values.dtype.kind not in "biuf":
        raise SaliencyError(f"The Region mask must be a boolean array; got dtype {values.dtype}.")
    if values.dtype.kind != "b":
        if not np.isin(values, (0, 1)).all():
            raise SaliencyError("The Region mask must be boolean (or 0/1); it holds other values.")
        values = values != 0
    if values.ndim not in (2, 3):
        raise SaliencyError(
            f"The Region mask has shape {values.shape}; pass one (H, W) mask for every image or (B, H, W), "
            "one per image."
        )
    empty = [i for i, m in enumerate(values.reshape(-1, *values.shape[-2:])) if not m.any()]
    if empty:
        which = "is" if values.ndim == 2 else f"of image {empty[0]} is"
        raise SaliencyError(f"The Region mask {which} all False: mark the pixels whose score to explain.")
    return np.array(values, dtype=bool)


def _region_score(kind: str, channels_last: bool) -> Callable:
    def score(ops, output, classes, masks):
        if len(output.shape) == 3:  # one class: the map itself
            maps = ops.sigmoid(output) if kind == "sigmoid" else output
        else:
            axis = 3 if channels_last else 1
            if kind == "softmax":
                output = ops.softmax(output, axis=axis)
            elif kind == "sigmoid":
                output = ops.sigmoid(output)
            count = int(output.shape[axis])
            one_hot = ops.cast_like(ops.arange(0, count)[None, :] == classes[:, None], output)
            one_hot = ops.reshape(one_hot, (-1, 1, 1, count) if channels_last else (-1, count, 1, 1))
            maps = ops.sum(output * one_hot, axis=axis)
        return ops.row_sum(maps * ops.cast_like(masks, maps))

    return score


class Output(Target):
    """Value ``i`` of a regression or multi-output head (B, n); ``Output()``: a scalar head (B,) or (B, 1).

    Its raw value is explained (no softmax, no sigmoid).
    """

    def __init__(self, i: int | None = None):
        if i is not None and (isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0):
            raise SaliencyError(f"Output(i) takes a value's position, an int >= 0 (or none for a scalar); got {i!r}.")
        self.i = None if i is None else int(i)

    def __repr__(self) -> str:
        return "Output()" if self.i is None else f"Output({self.i})"

    def _key(self) -> tuple:
        return ("output", self.i)

    def bind(self, batch, *, output=None, channels_last=False, index=0) -> Bound:
        position = self.i

        def checks(shape, index, rows):
            if rows is not None and shape[0] != rows:
                raise SaliencyError(f"Model output {index} has {shape[0]} rows for {rows} images.")
            if len(shape) == 1:
                count = 1
            elif len(shape) == 2:
                count = shape[1]
            else:
                raise SaliencyError(
                    f"{self!r} reads a (B,) or (B, n) head; model output {index} has shape {shape}. For a dense "
                    "map use sw.targets.Region, for an embedding sw.targets.Similarity, or pass a function."
                )
            if position is None and count != 1:
                raise SaliencyError(
                    f"Model output {index} has {count} values per image {shape}; choose one with Output(i), "
                    f"i from 0 to {count - 1}."
                )
            if position is not None and position >= count:
                raise SaliencyError(
                    f"{self!r} is out of range: model output {index} {shape} has {count} value(s) per image "
                    f"(0 to {count - 1})."
                )

        labels = np.full(batch, 0 if position is None else position, np.int64)
        bound = Bound(self, labels, False, (), ("output", position), _output_score(position), checks)
        return self._finish(bound, output, index)


def _output_score(position: int | None) -> Callable:
    def score(ops, output):
        return output if len(output.shape) == 1 else output[:, position or 0]

    return score


class Similarity(Target):
    """Cosine similarity of an embedding output to a reference embedding.

    Parameters
    ----------
    reference : array (D,) or shaped like one image's output, or (B, ...) one per image
        Flattened per image; a leading axis of the batch's length holds one
        reference per image. Cosine as ``torch.nn.CosineSimilarity``: norms
        below 1e-8 count as 1e-8.
    """

    def __init__(self, reference: Any):
        values = to_numpy(reference)
        if values.dtype.kind not in "iuf" or values.ndim == 0:
            raise SaliencyError(f"The Similarity reference must be a numeric array (an embedding); got {reference!r}.")
        values = np.array(values, dtype=np.float32)
        if not np.isfinite(values).all():
            raise SaliencyError("The Similarity reference contains NaN or infinite values.")
        self.reference = values
        self.reference.setflags(write=False)

    def __repr__(self) -> str:
        return f"Similarity(reference of shape {self.reference.shape})"

    def _key(self) -> tuple:
        return ("similarity", self.reference.shape, _digest(self.reference))

    def bind(self, batch, *, output=None, channels_last=False, index=0) -> Bound:
        reference = self.reference
        per_image = reference.ndim >= 2 and reference.shape[0] == batch
        rows = reference.reshape(batch, -1) if per_image else reference.reshape(1, -1).repeat(batch, axis=0)
        norms = np.linalg.norm(rows.astype(np.float64), axis=1)
        if (norms == 0).any():
            raise SaliencyError("The Similarity reference is all zeros: its cosine similarity is undefined.")
        units = (rows / np.maximum(norms, _EPSILON)[:, None]).astype(np.float32)
        length = units.shape[1]

        def checks(shape, index, count):
            if count is not None and shape[0] != count:
                raise SaliencyError(f"Model output {index} has {shape[0]} rows for {count} images.")
            values = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            if values != length:
                raise SaliencyError(
                    f"The Similarity reference has {length} values per image but model output {index} {shape} has "
                    f"{values}: pass an embedding of the same length (shape {shape[1:]}, or {(batch, *shape[1:])} "
                    "for one per image)."
                )

        labels = np.full(batch, NO_LABEL, np.int64)
        bound = Bound(self, labels, False, (units,), ("similarity", length), _similarity_score(length), checks)
        return self._finish(bound, output, index)


def _similarity_score(length: int) -> Callable:
    def score(ops, output, units):
        flat = ops.reshape(output, (-1, length))
        norms = ops.clip(ops.sqrt(ops.row_sum(ops.square(flat))), low=_EPSILON)
        return ops.row_sum(flat * units) / norms

    return score


class Function(Target):
    """Any ``f(output) -> (B,) scores``, written in the model's framework (torch or TensorFlow).

    ``output`` is the explained output (``output=`` picks it), rows of a chunk:
    noisy or interpolated copies of the images, so each row's score must come
    from its own row. The scores must be differentiable in the output (no
    argmax, integer casts or numpy). Results explaining a function are not
    cached (what it computes cannot be keyed).
    """

    def __init__(self, function: Callable):
        if not callable(function):
            raise SaliencyError(f"A function target must be callable; got {function!r}.")
        self.function = function

    def __repr__(self) -> str:
        return f"Function({getattr(self.function, '__name__', type(self.function).__name__)})"

    def _key(self) -> None:
        return None

    def __eq__(self, other: Any) -> bool:  # the same function, though never cached
        return isinstance(other, Function) and other.function is self.function

    def __hash__(self) -> int:
        return id(self.function)

    def bind(self, batch, *, output=None, channels_last=False, index=0) -> Bound:
        labels = np.full(batch, NO_LABEL, np.int64)

        def checks(shape, index, rows):
            return None  # its result is checked where it is computed (see _function_score)

        bound = Bound(self, labels, False, (), ("function", _Identity(self.function)),
                      _function_score(self.function, repr(self)), checks)
        return self._finish(bound, None, index)


class _Identity:
    """Hashes and compares an object by identity, and holds it (its id is never reused meanwhile)."""

    def __init__(self, value: Any):
        self.value = value

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


def _function_score(function: Callable, name: str) -> Callable:
    def score(ops, output):
        value = function(output)
        check_function_result(value, output, name)
        return value

    return score


def check_function_result(value: Any, output: Any, name: str) -> None:
    """Raise unless a target function returned one differentiable float score per row."""
    rows = output.shape[0]
    if isinstance(value, np.ndarray) or not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise SaliencyError(
            f"The target function {name} returned a {type(value).__name__}; it must return a tensor of the "
            f"model's framework, one score per row ({rows},), computed from the output with its operations."
        )
    shape = tuple(value.shape)
    if len(shape) != 1 or (rows is not None and shape[0] is not None and shape[0] != rows):
        raise SaliencyError(
            f"The target function {name} returned shape {shape} for an output of shape {tuple(output.shape)}; "
            f"it must return one score per row, shape ({rows},) (do not sum over the rows)."
        )
    floating = getattr(value, "is_floating_point", None)
    is_float = floating() if callable(floating) else bool(getattr(value.dtype, "is_floating", False))
    if not is_float:
        raise NotDifferentiableError(
            f"The target function {name} returned {value.dtype} scores, which have no gradient: return float "
            "scores computed from the output (no argmax or integer casts)."
        )
    if getattr(output, "requires_grad", False) and not getattr(value, "requires_grad", True):
        raise NotDifferentiableError(
            f"The target function {name} returned scores that do not depend differentiably on the output "
            "(requires_grad is False): remove .detach(), .item(), numpy calls or torch.no_grad() from it."
        )


def as_target(value: Any) -> Target:
    """A :class:`Target` from what ``target=`` takes: None, a class or one per image, a Target, a callable."""
    if isinstance(value, Target):
        return value
    if value is None:
        return Class(None)
    if callable(value) and not hasattr(value, "shape"):
        return Function(value)
    return Class(value)


def is_plain(value: Any) -> bool:
    """Whether ``target=value`` explains raw class scores given up front or predicted (the fused road)."""
    target = as_target(value)
    return type(target) is Class and target.score == "logit"


def bind(value: Any, batch: int, *, output: np.ndarray | None = None, channels_last: bool = False,
         index: int = 0) -> Bound:
    """``as_target(value).bind(...)``: the target for a batch, checked against the clean output."""
    return as_target(value).bind(batch, output=output, channels_last=channels_last, index=index)


def names_function(row_targets: dict) -> bool:
    """Whether a chunk's targets include a function (for the not-differentiable message)."""
    return any(isinstance(t, RowScore) and t.signature[0] == "function" for t in row_targets.values())


__all__ = [
    "Bound", "Class", "DeviceTarget", "Function", "NO_LABEL", "Output", "Region", "RowScore", "SCORES",
    "Similarity", "Target", "as_target", "bind", "check_function_result", "is_plain",
]
