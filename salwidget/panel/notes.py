"""Warnings under the grid: a method that fails the sanity check, a large completeness gap, changed weights."""

from __future__ import annotations

import html
from typing import Iterable

import numpy as np

from ..attribution import Attribution
from ..methods import get_method

GAP_WARNING = 0.1  # completeness gap, as a share of f(x) - f(baseline), above which the panel warns
NEGLIGIBLE = 0.01  # f(x) - f(baseline) below this share of an image's score range: no gap is meaningful there
SANITY_NOTE = ("fails the model-randomisation sanity check (Adebayo et al. 2018): its map barely changes when "
               "the model's weights are randomised, so it shows the image's edges more than the model's reasons.")


def completeness_gap(result: Attribution) -> tuple[float, int] | None:
    """(largest |delta| / |f(x) - f(baseline)|, its image), or None without a gap to judge.

    ``f(x) - f(baseline)`` is ``sum(raw) - delta``. Images where it is
    negligible next to their score range are left out: a gap relative to
    almost nothing says nothing about the number of steps.
    """
    if result.delta is None:
        return None
    delta = np.asarray(result.delta, np.float64).reshape(-1)
    raws = result.raw if isinstance(result.raw, tuple) else (result.raw,)
    total = sum(np.asarray(r, np.float64).reshape(len(delta), -1).sum(axis=1) for r in raws)
    change = np.abs(total - delta)
    scores = np.asarray(result.scores, np.float64)
    meaningful = change > NEGLIGIBLE * (scores.max(axis=1) - scores.min(axis=1))
    if not meaningful.any():
        return None
    share = np.where(meaningful, np.abs(delta) / np.maximum(change, 1e-12), 0.0)
    worst = int(np.argmax(share))
    return float(share[worst]), worst


def notes_html(methods: Iterable[str], results: dict[str, Attribution], first_image: int,
               weights_changed: bool) -> str:
    """The warnings as HTML lines (empty when there is nothing to say)."""
    notes = [f"{get_method(m).label} {SANITY_NOTE}" for m in methods if get_method(m).fails_sanity_check]
    for result in results.values():
        gap = completeness_gap(result)
        if gap is not None and gap[0] > GAP_WARNING:
            notes.append(f"{get_method(result.method).label}: the completeness gap reaches {gap[0]:.0%} of "
                         f"f(x) - f(baseline) (image {first_image + gap[1] + 1}); more path steps make the map "
                         "more faithful.")
    if weights_changed:
        notes.append("The model's weights changed since its predictions were read: call w.refresh() to update the "
                     "titles and the target list (maps are always computed with the current weights).")
    return "".join(f"<div style='color:#8a5300'>&#9888; {html.escape(n, quote=False)}</div>" for n in notes)
