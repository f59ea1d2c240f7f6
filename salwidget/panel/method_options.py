"""Each method's option values in the panel, built from the registry (no method names here).

Every method keeps its own values (SmoothGrad's samples are not Blur IG's
steps). The classic keywords (``nsamples``, ``nintegration``,
``stdev_spread``, ``magnitude``, ``baseline``) set one value for every method
that has that option.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import SaliencyError
from ..methods import Method, Option, all_methods, get_method

CONTROL_KINDS = ("int", "float", "bool", "choice")


def default_options(given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{method: {option: value}} for every registered method: its defaults, then the ``given`` classic values."""
    options = {}
    for method in all_methods():
        values = {o.name: o.default for o in method.options}
        for name, value in given.items():
            if name in values and value is not None and _accepts(method.option(name), value, method):
                values[name] = value
        options[method.name] = values
    return options


def _accepts(option: Option, value: Any, method: Method) -> bool:
    try:
        option.validate(value, method.name)
    except SaliencyError:
        return False
    return True


def broadcast(options: dict, name: str, value: Any, selected: Sequence[str]) -> dict:
    """``options`` with ``name`` set to ``value`` for every method that has it.

    A method that cannot take the value keeps its own when it is not selected
    (VarGrad needs two samples, SmoothGrad one); a selected one gets the value
    anyway, so that validation refuses the assignment with its reason.
    """
    updated = {m: dict(v) for m, v in options.items()}
    for method in all_methods():
        if name in method.option_names and (method.name in selected or _accepts(method.option(name), value, method)):
            updated[method.name][name] = value
    return updated


def first_value(options: dict, name: str, selected: Sequence[str]) -> Any:
    """The value of ``name`` for the first selected method that has it (else the first method that has it)."""
    order = [get_method(m) for m in selected] + all_methods()
    for method in order:
        if name in method.option_names:
            return options[method.name][name]
    raise AttributeError(f"No registered method has an option {name!r}.")


def has_control(option: Option, value: Any) -> bool:
    """Whether the panel draws a control for ``option`` (holding ``value``)."""
    if option.presets:  # a dropdown of words and numbers: an array value (labels, a fill image) has none
        return isinstance(value, (str, int, float))
    return option.name == "baseline" or (option.kind in CONTROL_KINDS and value is not None)


def shown_options(method: Method, values: dict) -> list[Option]:
    """The options of ``method`` the panel shows: those with a control that change its result now.

    An option that another one overrides (Integrated Gradients' ``nsamples``
    once ``nintegration`` is set) changes nothing and is left out: found by
    changing it and comparing the method's result key.
    """
    shown = []
    base = _result_key(method, values)
    for option in method.options:
        value = values.get(option.name, option.default)
        if not has_control(option, value):
            continue
        other = _another_value(option, value)
        if (not option.affects_result or option.name == method.resumable or other is None
                or _result_key(method, {**values, option.name: other}) != base):
            shown.append(option)
    return shown


def _result_key(method: Method, values: dict) -> Any:
    try:
        return method.key(method.resolve(values))
    except SaliencyError as exc:
        return ("invalid", str(exc))


def _another_value(option: Option, value: Any) -> Any:
    if option.kind == "bool":
        return not value
    if option.kind == "choice":
        return next((c for c in option.choices if c != value), None)
    if option.kind in ("int", "float"):
        step = option.step or 1
        up = value + step
        return up if option.maximum is None or up <= option.maximum else value - step
    return None
