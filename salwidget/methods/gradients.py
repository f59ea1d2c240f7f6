"""One gradient per image: the plain input gradient and gradient x input."""

from __future__ import annotations

import numpy as np

from .base import register
from .sampling import SampledGradients, Sampling

_ONE = Sampling(groups=1, steps=1, alphas=np.ones(1), weights=np.ones(1))


class Vanilla(SampledGradients):
    name = "vanilla"
    order = 10
    label = "Gradient"
    summary = "The gradient of the class score with respect to the input (Simonyan et al. 2014)."

    def sampling(self, options: dict) -> Sampling:
        return _ONE


class GradientXInput(SampledGradients):
    name = "gradient_x_input"
    order = 50
    label = "Gradient x Input"
    summary = "The gradient times the input (signed); on a linear model it equals IG from a zero baseline."
    signed = True

    def sampling(self, options: dict) -> Sampling:
        return _ONE

    def group_map(self, ctx, m, summed, start, baseline):
        return start * summed


VANILLA = register(Vanilla())
GRADIENT_X_INPUT = register(GradientXInput())
