"""Reading a model's outputs: which one to explain, and what kind of output it is.

A model may return one tensor of any shape, a tuple or list, a dict, or an
object with ``.logits`` (a Hugging Face ``ModelOutput``, which is a dict). They
are flattened into a list, each entry with the name it can be chosen by
(``output='logits'``) or its position (``output=1``); nested tuples and dicts
get dotted names (``'hidden_states.3'``); ``None`` entries are left out.

What kind of output the chosen one is decides what can be explained: class
scores ``(B, K)`` (and whether they are independent sigmoids: multi-label), a
dense map ``(B, K, H, W)`` (Keras ``(B, H, W, K)``: a segmentation net), a
scalar or regression head ``(B,)`` or ``(B, n)``, an embedding. The helpers
here answer those questions on numpy arrays, for :func:`salwidget.predict`'s
output and for a panel.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Sequence

import numpy as np

from .errors import SaliencyError

# A softmax head's rows sum to 1 within this (float32 outputs, a thousand classes).
_SUMS_TO_ONE = 1e-3


def flatten_outputs(output: Any, is_tensor: Callable[[Any], bool]) -> tuple[list, list]:
    """(tensors, names) of whatever a model returned; a name is None for a top-level position.

    Raises
    ------
    SaliencyError
        When the model returned nothing that is a tensor.
    """
    tensors, names = [], []

    def visit(value: Any, path: str | None, positional: bool) -> None:
        if value is None:
            return
        if is_tensor(value):
            tensors.append(value)
            names.append(None if positional else path)  # a top-level position is chosen by its index
        elif isinstance(value, dict):  # dicts and Hugging Face ModelOutput (an OrderedDict)
            for key, item in value.items():
                visit(item, _join(path, key), False)
        elif isinstance(value, (tuple, list)):
            for position, item in enumerate(value):
                visit(item, _join(path, position), path is None)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                visit(getattr(value, field.name), _join(path, field.name), False)
        elif hasattr(value, "logits"):  # an output object that is neither a dict nor a dataclass
            for key, item in vars(value).items():
                if not key.startswith("_"):
                    visit(item, _join(path, key), False)

    visit(output, None, True)
    if not tensors:
        raise SaliencyError(
            f"The model returned a {type(output).__name__} with no tensor in it; salwidget needs a tensor, a "
            "tuple/list/dict of tensors or an object with .logits (a Hugging Face ModelOutput)."
        )
    return tensors, names


def _join(path: str | None, key: Any) -> str:
    return str(key) if path is None else f"{path}.{key}"


def describe_outputs(shapes: Sequence[tuple], names: Sequence[str | None] | None = None) -> str:
    """``0: 'logits' (4, 10), 1: 'aux' (4, 3)``: each output's position, name and shape."""
    names = list(names) if names is not None else [None] * len(shapes)
    parts = []
    for position, (shape, name) in enumerate(zip(shapes, names)):
        label = f"{position}" if name is None else f"{position}: {name!r}"
        parts.append(f"{label} {tuple(shape)}")
    return ", ".join(parts)


def output_selector(output: int | str | None, output_index: int | None) -> int | str | None:
    """One selector from ``output=`` (index or name) and the older ``output_index=``."""
    if output is not None and output_index is not None and output != output_index:
        raise SaliencyError(
            f"output={output!r} and output_index={output_index!r} disagree; pass only output=."
        )
    return output if output is not None else output_index


def choose_output(outputs: Sequence[Any], output_index: int | str | None = None,
                  names: Sequence[str | None] | None = None) -> int:
    """The position of the output to explain, chosen by position or name (None: the only one)."""
    shapes = [tuple(o.shape) for o in outputs]
    listed = describe_outputs(shapes, names)
    keyed = [n for n in (names or ()) if n is not None]
    if output_index is None:
        if len(outputs) > 1:
            by_name = f" or by name with output={keyed[0]!r}" if keyed else ""
            raise SaliencyError(
                f"The model returns {len(outputs)} outputs; choose the one to explain with "
                f"output_index=0, 1, ... (or output=){by_name}. Its outputs: {listed}."
            )
        return 0
    if isinstance(output_index, str):
        if names is not None and output_index in names:
            return list(names).index(output_index)
        close = difflib.get_close_matches(output_index, keyed, n=1, cutoff=0.5)
        hint = f" Did you mean output={close[0]!r}?" if close else ""
        raise SaliencyError(f"The model has no output named {output_index!r}.{hint} Its outputs: {listed}.")
    if isinstance(output_index, bool) or not isinstance(output_index, (int, np.integer)):
        raise SaliencyError(f"output must be an output's position (int) or name (str); got {output_index!r}.")
    if not 0 <= output_index < len(outputs):
        raise SaliencyError(
            f"output_index={output_index} but the model returns {len(outputs)} output(s): {listed}."
        )
    return int(output_index)


# ----------------------------------------------------------------- kinds of output
def is_dense(output: Any) -> bool:
    """Whether an output is a dense map of class scores, (B, K, H, W) or Keras' (B, H, W, K)."""
    return len(np.shape(output)) == 4


def class_axis(channels_last: bool) -> int:
    """The class axis of a dense output: Keras' layout puts it last, torch's second."""
    return -1 if channels_last else 1


def predicted_masks(output: Any, channels_last: bool = False) -> np.ndarray:
    """The predicted class of every pixel of a dense output, (B, H, W) ints.

    With several classes, the argmax over the class axis. With one (a binary
    map of logits or probabilities), 1 where the map says yes (a logit above 0,
    or a probability above 0.5) and 0 elsewhere: channel 0 is then the only
    class, and ``Region(0, mask == 1)`` explains its yes-region.
    """
    values = np.asarray(output)
    if values.ndim != 4:
        raise SaliencyError(
            f"The output has shape {values.shape}; a predicted mask needs a dense output "
            f"{'(B, H, W, K)' if channels_last else '(B, K, H, W)'}."
        )
    axis = class_axis(channels_last)
    if values.shape[axis] == 1:
        single = np.take(values, 0, axis=axis)
        cut = 0.5 if single.min() >= 0 and single.max() <= 1 else 0.0
        return (single > cut).astype(np.int64)
    return values.argmax(axis=axis).astype(np.int64)


def region_at(output: Any, image: int, row: int, column: int, box: Sequence[int] | None = None,
              channels_last: bool = False) -> tuple[int, np.ndarray]:
    """(class, mask) of the predicted region under a pixel of one image of a dense output.

    The class is the prediction at (row, column); the mask is every pixel of
    that image predicted as that class, inside ``box = (top, left, bottom,
    right)`` (end-exclusive) when one is given. ``sw.targets.Region(k, mask)``
    then explains it.
    """
    masks = predicted_masks(output, channels_last)
    if not 0 <= image < len(masks):
        raise SaliencyError(f"image {image} is out of range: the output has {len(masks)} image(s).")
    height, width = masks.shape[1:]
    if not (0 <= row < height and 0 <= column < width):
        raise SaliencyError(f"Pixel ({row}, {column}) is outside the output's {height} x {width} map.")
    predicted = masks[image]
    label = int(predicted[row, column])
    mask = predicted == label
    if box is not None:
        top, left, bottom, right = (int(v) for v in box)
        inside = np.zeros_like(mask)
        inside[max(top, 0):bottom, max(left, 0):right] = True
        mask &= inside
    if not mask.any():
        raise SaliencyError(f"The box {tuple(box)} holds no pixel predicted as class {label}.")
    channels = np.shape(output)[class_axis(channels_last)]
    return (0 if channels == 1 else label), mask


# ----------------------------------------------------------------- multi-label
def is_multilabel(scores: Any) -> bool:
    """Whether (B, K) scores come from independent sigmoids, where that is unambiguous.

    True for a single logit (a binary head) and for scores that are already
    probabilities (all in [0, 1]) whose rows do not all sum to 1. Logits of
    several classes cannot tell a softmax head from independent sigmoids:
    False (pass ``multilabel=True`` for such a head).
    """
    values = np.asarray(scores, np.float64)
    if values.ndim != 2 or values.size == 0:
        return False
    if values.shape[1] == 1:
        return True
    if values.min() < 0 or values.max() > 1:
        return False
    return not np.allclose(values.sum(axis=1), 1, atol=_SUMS_TO_ONE)


def probabilities(scores: Any, multilabel: bool | None = None) -> np.ndarray:
    """Class probabilities of (B, K) scores: sigmoids for a multi-label head, else a softmax.

    Scores that already are probabilities pass through (values in [0, 1]; for
    a softmax head, rows summing to 1). ``multilabel=None`` detects it (see
    :func:`is_multilabel`).
    """
    values = np.asarray(scores, np.float64)
    multilabel = is_multilabel(values) if multilabel is None else bool(multilabel)
    in_unit = values.min() >= 0 and values.max() <= 1
    if multilabel:
        return values if in_unit else 1 / (1 + np.exp(-values))
    if in_unit and np.allclose(values.sum(axis=1), 1, atol=_SUMS_TO_ONE):
        return values
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def labels_above(scores: Any, threshold: float = 0.5, multilabel: bool | None = None) -> list[np.ndarray]:
    """Per image, the labels whose probability is above ``threshold``, most probable first.

    What a panel lists for a multi-label head (each label a possible target).
    """
    probs = probabilities(scores, multilabel)
    picked = []
    for row in probs:
        labels = np.nonzero(row > threshold)[0]
        picked.append(labels[np.argsort(-row[labels], kind="stable")].astype(np.int64))
    return picked


__all__ = [
    "choose_output", "class_axis", "describe_outputs", "flatten_outputs", "is_dense", "is_multilabel",
    "labels_above", "output_selector", "predicted_masks", "probabilities", "region_at",
]
