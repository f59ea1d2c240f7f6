"""The panel's words: method labels with their sample counts, what a computation did, what one will cost."""

from __future__ import annotations

from typing import Sequence

from ..attribution import Attribution
from ..methods import get_method


def describe(result: Attribution) -> str:
    """'SmoothGrad (n=16)', 'SmoothGrad + IG (n=8 x 10 steps)', 'Integrated Gradients (16 steps)',
    'Grad-CAM @ layer4', 'Gradient'."""
    method = get_method(result.method)
    text = method.label
    if result.nsamples > 1 and method.resumable:
        steps = f" x {result.nintegration} steps" if result.nintegration else ""
        text += f" (n={result.nsamples}{steps})"
    elif result.nsamples > 1:  # a path method: its count is path steps
        text += f" ({result.nsamples} steps)"
    if result.layer:
        text += f" @ {result.layer}"
    return text


def done_status(outcomes: Sequence, seconds: float, device: str) -> str:
    """What really happened: which maps came from the cache, which were computed or resumed."""
    if outcomes and all(o.how == "cached" for o in outcomes):
        return f"Done: {', '.join(describe(o.result) for o in outcomes)}, all from the cache."
    parts = []
    for o in outcomes:
        label = describe(o.result)
        if o.how == "cached":
            label += " from the cache"
        elif o.how == "resumed":
            label += f" resumed from n={o.resumed_from}"
        parts.append(label)
    return f"Done in {seconds:.1f} s on {device}: {', '.join(parts)}."


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
