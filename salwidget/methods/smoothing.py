"""Gradients averaged over noisy copies of the input: SmoothGrad and VarGrad."""

from __future__ import annotations

import numpy as np

from .base import register
from .sampling import SampledGradients, Sampling
from .sampling_options import MAGNITUDE, STDEV_SPREAD, nsamples_option

_NSAMPLES = nsamples_option("Noise samples per image (the first is the clean image); cost grows linearly.")


class SmoothGrad(SampledGradients):
    name = "smoothgrad"
    order = 20
    label = "SmoothGrad"
    summary = "The mean gradient over noisy copies of the image (Smilkov et al. 2017)."
    options = (_NSAMPLES, STDEV_SPREAD, MAGNITUDE)
    resumable = "nsamples"

    def is_signed(self, options: dict) -> bool:
        return not options["magnitude"]

    def sampling(self, options: dict) -> Sampling:
        reduction = "mean_square" if options["magnitude"] else "mean"
        return Sampling(options["nsamples"], 1, np.ones(1), np.ones(1), reduction, noisy=True)


class VarGrad(SampledGradients):
    name = "vargrad"
    order = 60
    label = "VarGrad"
    summary = "The variance of the gradients over the noisy copies SmoothGrad draws (Adebayo et al. 2018)."
    options = (nsamples_option("Noise samples per image (the first is the clean image); cost grows linearly.",
                               minimum=2), STDEV_SPREAD)
    resumable = "nsamples"

    def sampling(self, options: dict) -> Sampling:
        return Sampling(options["nsamples"], 1, np.ones(1), np.ones(1), "variance", noisy=True)


SMOOTHGRAD = register(SmoothGrad())
VARGRAD = register(VarGrad())
