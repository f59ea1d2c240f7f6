"""What each saliency method computes, written once for every framework.

Every method is the same shape of computation. For each image it draws
``groups`` outer samples; each group evaluates the gradient at ``steps`` points
and combines them with quadrature ``weights`` that sum to 1:

===================  ======  ================  =====  =========
method               groups  steps             noise  path
===================  ======  ================  =====  =========
vanilla              1       1                 no     no
smoothgrad           N       1                 yes    no
integrated           1       N (steps)         no     yes
smooth_integrated    N       nintegration      yes    yes
===================  ======  ================  =====  =========

Group ``g`` of image ``i`` starts from ``x_g = x_i + noise`` (no noise for
``g = 0``: the first SmoothGrad sample is the clean gradient, as in the seed).
With a path, the points are ``b + alpha_k (x_g - b)`` and the group's map is
``(x_g - b) * sum_k w_k grad_k``; without one it is the gradient at ``x_g``.
With ``magnitude`` a group's map is squared. The method's map is the mean of
its groups' maps.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from .errors import SaliencyError

METHODS = ("vanilla", "smoothgrad", "integrated", "smooth_integrated")
QUADRATURES = ("riemann", "trapezoid")
DEFAULT_NINTEGRATION = 10


@dataclass(frozen=True)
class Plan:
    """The sampling plan of one method call (see the module docstring)."""

    method: str
    groups: int
    steps: int
    noisy: bool
    integrate: bool
    magnitude: bool
    alphas: np.ndarray
    weights: np.ndarray
    order: np.ndarray  # the order in which a group's steps are evaluated


def check_method(method: str) -> str:
    """Return ``method`` if known; else raise naming the close matches."""
    if method in METHODS:
        return method
    close = difflib.get_close_matches(str(method), METHODS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise SaliencyError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.{hint}")


def coarse_to_fine(n: int) -> np.ndarray:
    """Indices 0..n-1 ordered ends first, then midpoints of ever finer halves.

    Evaluating path steps in this order makes every prefix a rough quadrature
    of the whole path, so a progress preview of IG looks like the final map.
    """
    if n <= 2:
        return np.arange(n)
    order, seen = [0, n - 1], {0, n - 1}
    intervals = [(0, n - 1)]
    while intervals:
        next_intervals = []
        for lo, hi in intervals:
            mid = (lo + hi) // 2
            if mid not in seen:
                seen.add(mid)
                order.append(mid)
            if mid - lo > 1:
                next_intervals.append((lo, mid))
            if hi - mid > 1:
                next_intervals.append((mid, hi))
        intervals = next_intervals
    return np.array(order)


def path_weights(steps: int, quadrature: str) -> tuple[np.ndarray, np.ndarray]:
    """Alphas ``linspace(0, 1, steps)`` and weights summing to 1.

    ``'riemann'`` weights every step equally (the seed's mean of the path
    gradients); ``'trapezoid'`` halves the two ends (exact for linear paths of
    the gradient and Captum's ``riemann_trapezoid``).
    """
    alphas = np.linspace(0.0, 1.0, steps)
    if quadrature == "riemann":
        weights = np.full(steps, 1.0 / steps)
    elif quadrature == "trapezoid":
        weights = np.ones(steps)
        weights[[0, -1]] = 0.5
        weights /= weights.sum()
    else:
        raise SaliencyError(f"Unknown quadrature {quadrature!r}; use one of {QUADRATURES}.")
    return alphas, weights


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SaliencyError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def make_plan(
    method: str,
    nsamples: int,
    nintegration: int | None,
    magnitude: bool,
    quadrature: str = "riemann",
) -> Plan:
    """The plan for ``method``; checks the counts it needs.

    For ``'integrated'`` the path steps are ``nintegration`` when given, else
    ``nsamples`` (the seed's ``get_integrated_masks(nsamples)``).
    """
    method = check_method(method)
    nsamples = _check_count("nsamples", nsamples, 1)
    one = np.ones(1)
    if method == "vanilla":
        return Plan(method, 1, 1, False, False, False, np.ones(1), one, np.arange(1))
    if method == "smoothgrad":
        return Plan(method, nsamples, 1, True, False, bool(magnitude), np.ones(1), one, np.arange(1))
    if method == "integrated":
        steps = nsamples if nintegration is None else nintegration
        groups, noisy, squared = 1, False, False
    else:
        steps = DEFAULT_NINTEGRATION if nintegration is None else nintegration
        groups, noisy, squared = nsamples, True, bool(magnitude)
    steps = _check_count("The number of path steps (nintegration)", steps, 2)
    alphas, weights = path_weights(steps, quadrature)
    return Plan(method, groups, steps, noisy, True, squared, alphas, weights, coarse_to_fine(steps))
