"""The options the sampled-gradient methods share (samples, noise, squaring, quadrature) and the path
positions and weights of a quadrature."""

from __future__ import annotations

import numpy as np

from .base import Option


def nsamples_option(help: str, default: int = 25, minimum: int = 1, label: str = "samples") -> Option:
    return Option("nsamples", default, help, kind="int", minimum=minimum, label=label, slider_max=200)


STDEV_SPREAD = Option(
    "stdev_spread", 0.15, "Noise sigma as a fraction of each image's own max - min.",
    kind="float", minimum=0.0, label="noise", slider_max=0.5, step=0.01,
)
MAGNITUDE = Option(
    "magnitude", True, "Average squared maps (as FastEstimator's SaliencyNet does) instead of signed ones.",
    kind="bool", label="squared",
)
QUADRATURE = Option(
    "quadrature", "riemann",
    "Path points and weights: 'riemann' weighs steps from alpha = 0 to 1 equally (the seed's mean), 'trapezoid' "
    "halves the two ends, 'gauss_legendre' (Captum's default 'gausslegendre') takes Gauss-Legendre points, "
    "which never touch the path's ends (no completeness gap is then reported).",
    kind="choice", choices=("riemann", "trapezoid", "gauss_legendre"), label="quadrature",
)
QUADRATURE_ALIASES = {"gausslegendre": "gauss_legendre", "gauss-legendre": "gauss_legendre"}


def path_weights(steps: int, quadrature: str) -> tuple[np.ndarray, np.ndarray]:
    """Alphas and weights summing to 1 (see ``QUADRATURE``): ``linspace(0, 1, steps)`` for 'riemann' and
    'trapezoid'; for 'gauss_legendre' Captum's ``gausslegendre``: the Legendre nodes mapped from [-1, 1]
    to [0, 1], their weights halved."""
    if QUADRATURE_ALIASES.get(quadrature, quadrature) == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1.0) / 2.0, weights / weights.sum()
    alphas = np.linspace(0.0, 1.0, steps)
    weights = np.ones(steps)
    if quadrature == "trapezoid":
        weights[[0, -1]] = 0.5
    return alphas, weights / weights.sum()
