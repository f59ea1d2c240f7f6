"""What the panel's traits accept: each check returns the value, normalised, or raises TraitError.

The checks run in traitlets validators, so a value the panel cannot honour is
refused at assignment, before any state changes, with a message that says
what would be accepted.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np
from traitlets import TraitError

from ..errors import SaliencyError
from ..methods import Method, all_methods, get_method

BASELINE_WORDS = ("uniform", "blur")
SCALINGS = ("image", "method", "shared")
VIEWS = ("magnitude", "signed")
PANES = ("maps", "evaluate", "dataset")
CORRECTNESS = ("all", "correct", "wrong", "non-finite")


def is_number(value: Any) -> bool:
    """A real number that is not a bool (numpy scalars included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_cmap(value: Any) -> str:
    """Any registered matplotlib colour map name (reversed ``_r`` forms included)."""
    from matplotlib import colormaps

    if not isinstance(value, str) or value not in colormaps:
        raise TraitError(f"cmap must be a matplotlib colour map name such as 'inferno' or 'viridis'; got {value!r}.")
    return value


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """A finite real number in [low, high] (``(low, high]`` when ``low_open``)."""
    if not is_number(value) or not np.isfinite(value):
        raise TraitError(f"{name} must be a finite number; got {value!r}.")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        if high is None:  # a lower bound only
            raise TraitError(f"{name} must be {'>' if low_open else '>='} {low:g}; got {value!r}.")
        bracket = "(" if low_open else "["
        raise TraitError(f"{name} must be in {bracket}{low:g}, {high:g}]; got {value!r}.")
    return value


def check_int(name: str, value: Any, low: int, high: int | None = None, unit: str = "") -> int:
    """An integer >= ``low`` and, given ``high``, <= ``high`` (integral floats are not guessed: ints only)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < low:
        raise TraitError(f"{name} must be an integer >= {low}; got {value!r}.")
    if high is not None and value > high:
        raise TraitError(f"{name} must be at most {high}{unit}; got {value}.")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise TraitError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


def check_target(value: Any, num_classes: int, num_images: int) -> Any:
    """'predicted', one class index for every image, or one per image (list, tuple or array)."""
    if isinstance(value, str):
        if value == "predicted":
            return value
        raise TraitError(f"target must be 'predicted', a class index or one class index per image; got {value!r}.")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(np.asarray(value, dtype=object).reshape(-1)) if isinstance(value, np.ndarray) else list(value)
        if len(items) != num_images:
            raise TraitError(f"target has {len(items)} classes for {num_images} images: give one per image "
                             "or a single class index for all.")
        return tuple(_class_index(v, num_classes) for v in items)
    return _class_index(value, num_classes)


def _class_index(value: Any, num_classes: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TraitError(f"A target class must be an integer index; got {value!r}.")
    if not 0 <= value < num_classes:
        raise TraitError(f"Target class {int(value)} is out of range: the model has {num_classes} classes "
                         f"(0 to {num_classes - 1}).")
    return int(value)


def check_baseline(value: Any) -> Any:
    """'uniform', 'blur' or a finite number; arrays belong to :func:`salwidget.attribute` (pages differ)."""
    if isinstance(value, str) and value in BASELINE_WORDS:
        return value
    if is_number(value) and np.isfinite(value):
        return float(value)
    raise TraitError(f"baseline must be 'uniform', 'blur' or a finite number (0.0 = black); got {value!r}. "
                     "For an array baseline call salwidget.attribute directly.")


def check_methods(value: Any) -> tuple[str, ...]:
    """A sequence of registered method names, without repeats; a single name is one method."""
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(get_method(m).name for m in value)
    except SaliencyError as exc:
        raise TraitError(str(exc)) from None
    except TypeError:
        raise TraitError(f"methods must be a sequence of method names; got {value!r}.") from None
    if len(set(names)) != len(names):
        raise TraitError(f"methods lists a method twice: {names}.")
    if not names:
        raise TraitError("methods must name at least one method, e.g. ('vanilla',); choose from "
                         f"{', '.join(m.name for m in all_methods())}.")
    return names


def check_method_options(method: Method, values: dict, selected: bool) -> dict:
    """``values`` (all of ``method``'s options) checked one by one, then together when ``selected``."""
    checked = {}
    for name, value in values.items():
        try:
            option = method.option(name)
        except KeyError:
            known = ", ".join(method.option_names) or "none"
            raise TraitError(f"{method.label} has no option {name!r}; its options are {known}.") from None
        if name == "baseline":
            value = check_baseline(value)
        try:
            checked[name] = option.validate(value, method.name)
        except SaliencyError as exc:
            raise TraitError(f"{method.label}: {exc}") from None
    if selected:
        try:
            method.resolve(checked)
        except SaliencyError as exc:
            raise TraitError(f"{method.label}: {exc}") from None
    return checked


def check_options(proposed: Any, current: dict, selected: Sequence[str]) -> dict:
    """Per-method options merged onto ``current``: {method: {option: value}}."""
    if not isinstance(proposed, dict):
        raise TraitError(f"options must be a dict {{method: {{option: value}}}}; got {proposed!r}.")
    merged = {name: dict(values) for name, values in current.items()}
    for key, values in proposed.items():
        try:
            method = get_method(key)
        except SaliencyError as exc:
            raise TraitError(str(exc)) from None
        if not isinstance(values, dict):
            raise TraitError(f"options[{key!r}] must be a dict of option values; got {values!r}.")
        merged[method.name] = {**merged.get(method.name, {}), **values}
    return {m.name: check_method_options(m, merged.get(m.name, {}), m.name in selected) for m in all_methods()}


def check_grid_layer(name: str, explorer: Any) -> None:
    """Refuse a layer whose output is no grid of image positions (a linear layer, a pooled output): a CAM
    could not read it. A layer the probe pass does not record is left to the CAM's own check."""
    if explorer.images.ndim != 4:
        return
    shape = dict(explorer.layer_shapes()).get(name)
    grids = explorer.grid_layers()
    if shape is None or name in grids:
        return
    usable = ", ".join(map(repr, grids[-3:])) or "none found"
    raise TraitError(f"Layer {name!r} outputs {tuple(shape)}, which is no grid of image positions, so a CAM cannot "
                     f"read it. Pick a layer before the pooling or flattening (the last ones that are: {usable}), "
                     "or None to pick one automatically.")
