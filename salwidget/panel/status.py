"""The panel's words: method labels with their sample counts, what a computation did, what one will cost."""

from __future__ import annotations

from typing import Any, Sequence

from ..attribution import Attribution
from ..drawing.titles import describe
from ..methods import get_method


def device_label(device: Any) -> str:
    """One name for a device whatever the framework calls it: torch's 'cpu' and Keras' 'CPU' are 'CPU';
    'cuda:1' and '/physical_device:GPU:1' are 'GPU 1'."""
    name = str(device).rsplit("device:", 1)[-1]
    kind, _, number = name.partition(":")
    kind = {"CUDA": "GPU"}.get(kind.upper(), kind.upper())
    return f"{kind} {number}" if number and kind != "CPU" else kind


def done_status(outcomes: Sequence, seconds: float, device: str) -> str:
    """What really happened: which maps came from the cache, which were computed or resumed."""
    if outcomes and all(o.how == "cached" for o in outcomes):
        return f"Done: {', '.join(describe(o.result) for o in outcomes)}, all from the cache."
    parts = []
    for o in outcomes:
        label = describe(o.result)
        if o.how == "cached":
            label += " from the cache"
        elif o.how == "stored":
            label += " from the dataset store"
        elif o.how == "resumed":
            label += f" resumed from n={o.resumed_from}"
        parts.append(label)
    return f"Done in {seconds:.1f} s on {device_label(device)}: {', '.join(parts)}."


def progress_status(method: str, partial: Attribution, done: int, total: int, elapsed: float) -> str:
    label = get_method(method).label
    so_far = f", n={partial.nsamples} so far" if partial is not None and partial.nsamples > 1 else ""
    left = f", about {elapsed / done * (total - done):.0f} s left" if done else ""
    return f"Computing {label}: {done:,}/{total:,} passes{so_far} ({elapsed:.1f} s{left})"


def estimate_status(costs: Sequence[tuple[str, int]], seconds: float) -> str:
    """Before a long run: its passes per method and the seconds they should take."""
    passes = sum(p for _, p in costs)
    each = ", ".join(f"{get_method(m).label} {p:,}" for m, p in costs if p)
    return (f"This needs {passes:,} passes ({each}), about {seconds:.0f} s: press Compute to start, "
            "or lower the sample counts.")


def _unit_label(unit) -> str:
    if unit.method == "random":
        return "the random order"
    return get_method(unit.method).label


def evaluation_progress_status(unit, done: int, total: int, elapsed: float) -> str:
    """While evaluating: which curves or sanity check, passes done, time left."""
    what = "curves" if unit.kind == "curves" else "sanity check"
    left = f", about {elapsed / done * (total - done):.0f} s left" if done else ""
    return f"Evaluating: {what} of {_unit_label(unit)}, {done:,}/{total:,} passes ({elapsed:.1f} s{left})"


def evaluation_done_status(outcomes: Sequence, seconds: float, steps: int) -> str:
    """What an evaluation did: curves and sanity checks, computed or from the cache."""
    curves = [o for o in outcomes if o.unit.kind == "curves"]
    sanity = [o for o in outcomes if o.unit.kind == "sanity"]
    parts = []
    if curves:
        parts.append(f"curves ({steps} steps) of " + ", ".join(_unit_label(o.unit) for o in curves))
    if sanity:
        parts.append("sanity check of " + ", ".join(_unit_label(o.unit) for o in sanity))
    if all(o.how == "cached" for o in outcomes):
        return f"Evaluated: {'; '.join(parts)}, all from the cache."
    return f"Evaluated in {seconds:.1f} s: {'; '.join(parts)}."


def evaluation_estimate_status(forward: int, gradient: int, seconds: float) -> str:
    """Before a long evaluation: its passes and the seconds they should take."""
    passes = f"{forward:,} forward passes" + (f" and {gradient:,} gradient passes" if gradient else "")
    return (f"The evaluation needs {passes}, about {seconds:.0f} s: press Compute to start, or lower the "
            "curve steps.")
