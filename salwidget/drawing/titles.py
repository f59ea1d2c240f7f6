"""The words above a column of maps: a method's label and the settings that made the map."""

from __future__ import annotations

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
