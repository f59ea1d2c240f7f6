"""Expected Gradients: Integrated Gradients averaged over references and path positions.

Erion et al. (2021) replace IG's one baseline by a distribution of reference
images and its path integral by sampling: each sample takes a reference
``r`` and a position ``alpha ~ U(0, 1)`` and contributes
``(x - r) * grad f(r + alpha (x - r))``; the map is the mean over samples.
On a linear model it is the mean over references of ``w * (x - r)``.

References come from ``references=`` (a batch of images shaped like the
input's images) or, by default, from the other images of the batch. They are
drawn without replacement within each round of ``len(references)`` samples
(a seeded random order per image): every reference is used equally often when
``nsamples`` is a multiple of their number, which lowers the variance and
keeps the estimate unbiased. More samples resume from an earlier result.
"""

from __future__ import annotations

import numpy as np

from ..errors import SaliencyError
from ..inputs import to_numpy
from ..randomness import POSITION, REFERENCE
from .base import Option, register
from .sampling import Ends, SampledGradients, Sampling
from .sampling_options import nsamples_option


def check_references(value, method: str):
    """None, or float32 arrays (R, ...) of references (a tuple of them for several inputs)."""
    if value is None:
        return None
    if isinstance(value, tuple):  # one batch of references per input
        return tuple(check_references(v, method) for v in value)
    array = to_numpy(value).astype(np.float32)
    if array.ndim < 2 or len(array) == 0:
        raise SaliencyError(
            f"references must be a batch of reference images (R, ...) shaped like the input's images; "
            f"got shape {array.shape} (method {method!r})."
        )
    if not np.isfinite(array).all():
        raise SaliencyError("The references contain NaN or infinite values.")
    return array


REFERENCES = Option(
    "references", None,
    "Reference images (R, ...) in the input's layout (a tuple of batches for several inputs); None uses the "
    "other images of the batch. More references need more samples to cover them.",
    allow_none=True, label="references", check=check_references,
)


class ExpectedGradients(SampledGradients):
    name = "expected_gradients"
    order = 64
    label = "Expected Gradients"
    summary = ("IG with random references and random path positions (Erion et al. 2021): the mean over samples of "
               "(x - r) * gradient at r + alpha (x - r); signed.")
    signed = True
    options = (
        nsamples_option("Samples per image (a reference and a path position each); cost grows linearly."),
        REFERENCES,
    )
    resumable = "nsamples"

    def sampling(self, options: dict) -> Sampling:
        return Sampling(options["nsamples"], 1, np.zeros(1), np.ones(1), "mean")

    def start(self, ctx, resume=None):
        ctx.cache["references"] = self._device_references(ctx)
        return super().start(ctx, resume)

    def _device_references(self, ctx) -> list | None:
        given = ctx.options["references"]
        if given is None:
            if ctx.batch < 2:
                raise SaliencyError(
                    "expected_gradients draws its references from the other images of the batch, and this batch has "
                    "one image: pass references= (a batch of reference images shaped like the input's images)."
                )
            return None
        given = given if isinstance(given, tuple) else (given,)
        if len(given) != len(ctx.inputs):
            raise SaliencyError(f"Got references for {len(given)} inputs; the model takes {len(ctx.inputs)}.")
        counts = {len(r) for r in given}
        if len(counts) != 1:
            raise SaliencyError(f"Every input needs the same number of references; got {sorted(counts)}.")
        for m, (r, x) in enumerate(zip(given, ctx.host_inputs)):
            if r.shape[1:] != x.shape[1:]:
                raise SaliencyError(
                    f"The references of input {m} have shape {r.shape}; each must be shaped like one image "
                    f"{x.shape[1:]} (the input's layout)."
                )
        return [ctx.ops.asarray(r) for r in given]

    def _choices(self, ctx, group: int) -> np.ndarray:
        """Each image's reference (row of ``references``, or of the batch) for sample ``group``."""
        references = ctx.cache["references"]
        batch = ctx.batch
        count = batch - 1 if references is None else len(references[0])
        round_, position = divmod(group, count)
        # A seeded random order of the references per image and round: without replacement within a round.
        keys = ctx.draws.vector(REFERENCE, round_, batch * count).reshape(batch, count)
        picked = np.argsort(keys, axis=1, kind="stable")[:, position]
        if references is None:  # skip the image itself among the batch
            picked = picked + (picked >= np.arange(batch))
        return picked

    def group_ends(self, ctx, group: int, plan: Sampling) -> Ends:
        ops = ctx.ops
        picked = self._choices(ctx, group)
        sources = ctx.inputs if ctx.cache["references"] is None else ctx.cache["references"]
        ctx.cache[("position", group)] = ops.asarray(ctx.draws.vector(POSITION, group, ctx.batch).astype(np.float32))
        return Ends(list(ctx.inputs), [ops.take(source, picked) for source in sources])

    def point(self, ctx, block, start, baseline):
        """``r + alpha (x - r)`` with the group's own position per image."""
        alpha = ctx.ops.take(ctx.cache[("position", block.group)], block.images_on_device)
        return baseline + ctx.ops.per_row(alpha, start) * (start - baseline)


EXPECTED_GRADIENTS = register(ExpectedGradients())
