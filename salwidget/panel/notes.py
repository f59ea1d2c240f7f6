"""Warnings under the grid: a method that fails the sanity check, a large completeness gap, changed weights."""

from __future__ import annotations

import html
from typing import Iterable

import numpy as np

from ..attribution import Attribution
from ..methods import get_method

GAP_WARNING = 0.1  # completeness gap, as a share of the image's score scale (below), above which the panel warns
SANITY_NOTE = ("fails the model-randomisation sanity check (Adebayo et al. 2018): its map barely changes when "
               "the model's weights are randomised, so it shows the image's edges more than the model's reasons.")


def completeness_gap(result: Attribution) -> tuple[float, int] | None:
    """(largest |delta| / scale, its image), or None without a gap to judge.

    An image's scale is the larger of ``|f(x) - f(baseline)|`` (which is
    ``sum(raw) - delta``) and the range of its scores (logits) over the
    classes. Against ``f(x) - f(baseline)`` alone, a class the image does not
    show (its score barely moves along the path) would turn a small gap into
    hundreds of per cent of almost nothing; against the range of the scores a
    gap says how far the map's total is from what the model's outputs mean.
    """
    if result.delta is None:
        return None
    delta = np.asarray(result.delta, np.float64).reshape(-1)
    raws = result.raw if isinstance(result.raw, tuple) else (result.raw,)
    total = sum(np.asarray(r, np.float64).reshape(len(delta), -1).sum(axis=1) for r in raws)
    scores = np.asarray(result.scores, np.float64)
    # The range of each image's class scores; a dense output (a region's score) has only f(x) - f(b).
    spread = scores.max(axis=1) - scores.min(axis=1) if scores.ndim == 2 else 0.0
    scale = np.maximum(np.abs(total - delta), spread)
    if not (scale > 0).any():
        return None
    share = np.where(scale > 0, np.abs(delta) / np.where(scale > 0, scale, 1.0), 0.0)
    worst = int(np.argmax(share))
    return float(share[worst]), worst


def notes_html(methods: Iterable[str], results: dict[str, Attribution], first_image: int,
               weights_changed: bool) -> str:
    """The warnings as HTML lines (empty when there is nothing to say)."""
    notes = [f"{get_method(m).label} {SANITY_NOTE}" for m in methods if get_method(m).fails_sanity_check]
    for result in results.values():
        gap = completeness_gap(result)
        if gap is not None and gap[0] > GAP_WARNING:
            image = gap[1]
            change = float(np.sum([np.sum(r[image]) for r in (result.raw if isinstance(result.raw, tuple)
                                                              else (result.raw,))]) - result.delta[image])
            notes.append(f"{get_method(result.method).label}: the completeness gap reaches {gap[0]:.0%} of the "
                         f"scores' scale (image {first_image + image + 1}: sum(map) misses f(x) - f(baseline) = "
                         f"{change:.3g} by {abs(float(result.delta[image])):.3g}); more path steps make the map "
                         "more faithful.")
    if weights_changed:
        notes.append("The model's weights changed since its predictions were read: call w.refresh() to update the "
                     "titles and the target list (maps are always computed with the current weights).")
    return "".join(f"<div style='color:#8a5300'>&#9888; {html.escape(n, quote=False)}</div>" for n in notes)
