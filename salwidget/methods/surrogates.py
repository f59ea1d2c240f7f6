"""Segment methods: feature ablation, LIME and KernelSHAP over superpixels.

Each pass shows the image with some segments kept and the others replaced by
``fill``: a coalition ``z`` (1 keeps a segment). Coalitions are drawn on the
host, seeded by ``(seed, image id)`` (the same for any chunk size, block or
worker), and a chunk's copies are built on the device with one gather of the
coalitions by each pixel's segment and one ``where``.

================  ===========================================================
feature_ablation  ``f(x) - f(x without segment s)`` for each segment (Captum's
                  ``FeatureAblation`` with ``feature_mask=segments``).
lime              ``nsamples`` coalitions, the first all ones, the others
                  uniform; weights ``sqrt(exp(-d^2 / w^2))`` with ``d`` the
                  cosine distance of ``z`` to all ones and ``w =
                  kernel_width`` (0.25); a weighted ridge fit (alpha 1, with
                  intercept): ``lime_image``'s ``LimeBase`` with its defaults.
kernel_shap       ``nsamples`` coalitions: all off, all on, then sizes ``k``
                  drawn with probability ``(M-1) / (k (M-k))`` and a uniform
                  subset of that size (the Shapley kernel, as Captum's
                  ``KernelShap`` samples it); weights 1, and 1e6 for the two
                  ends (which pins the sum of the values to ``f(x) -
                  f(fill)``); a weighted linear fit with intercept.
================  ===========================================================

Maps are (B, H, W): each pixel gets its segment's value. The coalitions of
``n`` samples are the first ``n`` of any larger count, so LIME and KernelSHAP
resume (``resume_from=``): the earlier passes' scores are kept and the fit is
made again over all of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Option, RunContext, register
from .forward_only import FILL, FILL_SIGMA, ForwardOnlyMethod, PassState
from .segments import SEGMENTS, check_segments, image_segments

COALITIONS = 11  # random stream of coalition draws
END_WEIGHT = 1e6  # KernelSHAP's weight of the empty and full coalitions (Captum's)

NSAMPLES = Option(
    "nsamples", 500, "Coalitions of segments, one forward pass each: more give a steadier fit.",
    kind="int", minimum=2, label="samples", slider_max=2000,
)
KERNEL_WIDTH = Option(
    "kernel_width", 0.25, "Width of LIME's exponential kernel on the cosine distance (lime_image's 0.25).",
    kind="float", minimum=1e-6, label="kernel width", slider_max=2.0,
)


def lime_coalitions(segments: int, nsamples: int, rng: np.random.Generator) -> np.ndarray:
    """(nsamples, segments) 0/1: the first row all ones, the others uniform (lime_image's draw)."""
    z = rng.integers(0, 2, (nsamples, segments)).astype(np.uint8)
    z[0] = 1
    return z


def shapley_coalitions(segments: int, nsamples: int, rng: np.random.Generator) -> np.ndarray:
    """(nsamples, segments) 0/1: all off, all on, then Shapley-kernel sizes with uniform subsets."""
    z = np.zeros((max(nsamples, 2), segments), np.uint8)
    z[1] = 1
    if segments > 1 and nsamples > 2:
        sizes = np.arange(1, segments)
        probabilities = (segments - 1) / (sizes * (segments - sizes))
        sizing, ordering = rng.spawn(2)  # two streams: fewer samples are a prefix of more (a resume)
        drawn = sizing.choice(sizes, size=nsamples - 2, p=probabilities / probabilities.sum())
        order = np.argsort(ordering.random((nsamples - 2, segments)), axis=1)
        z[2:] = np.argsort(order, axis=1) < drawn[:, None]  # each row: a uniform subset of its size
    return z


def ablation_coalitions(segments: int) -> np.ndarray:
    """(segments + 1, segments): all on, then each segment off alone."""
    return np.vstack([np.ones((1, segments), np.uint8), 1 - np.eye(segments, dtype=np.uint8)])


def weighted_linear_fit(z: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    """Coefficients of ``y ~ b + z @ c`` minimising ``sum w (y - b - z c)^2 + alpha |c|^2`` (sklearn's
    ``Ridge``/``LinearRegression`` with ``sample_weight``: centred by weighted means, then least squares)."""
    z, y, w = z.astype(np.float64), y.astype(np.float64), weights.astype(np.float64)
    zc = z - (w @ z) / w.sum()
    yc = y - (w @ y) / w.sum()
    root = np.sqrt(w)[:, None]
    a, b = zc * root, yc * root[:, 0]
    if alpha > 0:
        return np.linalg.solve(a.T @ a + alpha * np.eye(z.shape[1]), a.T @ b)
    return np.linalg.lstsq(a, b, rcond=None)[0]


def lime_weights(z: np.ndarray, kernel_width: float) -> np.ndarray:
    """``sqrt(exp(-d^2 / w^2))`` with ``d`` the cosine distance of each row to all ones (0 rows: d = 1)."""
    on = z.sum(axis=1).astype(np.float64)
    cosine = np.divide(on, np.sqrt(on) * np.sqrt(z.shape[1]), out=np.zeros_like(on), where=on > 0)
    distance = 1.0 - cosine
    return np.sqrt(np.exp(-(distance ** 2) / kernel_width ** 2))


def shapley_weights(z: np.ndarray) -> np.ndarray:
    on = z.sum(axis=1)
    return np.where((on == 0) | (on == z.shape[1]), END_WEIGHT, 1.0)


class SegmentMethod(ForwardOnlyMethod):
    """What the three share: segments, coalitions per image, one gather per chunk."""

    def resolve(self, given: dict) -> dict:
        options = super().resolve(given)
        options["segments"] = check_segments(options["segments"], self.name)
        return options

    def coalitions(self, segments: int, options: dict, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def passes(self, options: dict, batch: int) -> int:
        return batch * options["nsamples"]

    def values(self, z: np.ndarray, scores: np.ndarray, options: dict) -> np.ndarray:
        """Each segment's value from the coalitions and their scores (host float64)."""
        raise NotImplementedError

    def plan(self, ctx: RunContext):
        x = ctx.host_inputs[0]
        labels = image_segments(ctx.options["segments"], x, ctx.channels_last)
        ids = ctx.draws.image_ids or list(range(ctx.batch))
        counts = labels.reshape(ctx.batch, -1).max(axis=1) + 1
        width = int(counts.max())
        blocks = []
        for image, count in enumerate(counts):
            rng = np.random.default_rng([ctx.seed, COALITIONS, int(ids[image])])
            z = self.coalitions(int(count), ctx.options, rng)
            blocks.append(np.pad(z, ((0, 0), (0, width - count)), constant_values=1))
        images = np.concatenate([np.full(len(z), b) for b, z in enumerate(blocks)])
        ops = ctx.ops
        plan = {
            "counts": counts, "width": width, "coalitions": np.concatenate(blocks),
            "segments": ops.asarray(labels, "int"),
            "device_coalitions": ops.asarray(np.concatenate(blocks).reshape(-1), "float"),
            "extras": {"segments": labels},
        }
        return images, plan

    def masks(self, ctx: RunContext, state: PassState, picks: np.ndarray):
        ops, plan = ctx.ops, state.plan
        offsets = ops.asarray(picks * plan["width"], "int")
        index = ops.take(plan["segments"], state.images[picks]) + ops.reshape(offsets, (len(picks), 1, 1))
        return ops.take(plan["device_coalitions"], index) > 0.5

    def combine(self, ctx: RunContext, state: PassState, scores: np.ndarray) -> np.ndarray:
        plan = state.plan
        labels = ctx.ops.numpy(plan["segments"])
        maps = np.zeros(labels.shape, np.float64)
        for image, count in enumerate(plan["counts"]):
            rows = state.images == image
            if not state.ran[rows].all():
                continue  # a preview shows images whose passes are all done
            z = plan["coalitions"][rows][:, :count]
            maps[image] = self.values(z, scores[rows], ctx.options)[labels[image]]
        return maps


class FeatureAblation(SegmentMethod):
    name = "feature_ablation"
    order = 81
    label = "Feature ablation"
    summary = "The score lost when each segment alone is replaced by the fill (Captum's FeatureAblation)."
    options = (SEGMENTS, FILL, FILL_SIGMA)

    def coalitions(self, segments: int, options: dict, rng: np.random.Generator) -> np.ndarray:
        return ablation_coalitions(segments)

    def passes(self, options: dict, batch: int) -> int:
        return batch * 51  # about SLIC's 50 segments and the clean pass (the count is known once segmented)

    def values(self, z: np.ndarray, scores: np.ndarray, options: dict) -> np.ndarray:
        return scores[0] - scores[1:]


class Lime(SegmentMethod):
    name = "lime"
    resumable = "nsamples"
    order = 82
    label = "LIME"
    summary = ("A weighted ridge fit of the score on which segments are shown, near the image "
               "(Ribeiro et al. 2016; lime_image's kernel and fit).")
    options = (SEGMENTS, NSAMPLES, KERNEL_WIDTH, FILL, FILL_SIGMA)

    def coalitions(self, segments: int, options: dict, rng: np.random.Generator) -> np.ndarray:
        return lime_coalitions(segments, options["nsamples"], rng)

    def values(self, z: np.ndarray, scores: np.ndarray, options: dict) -> np.ndarray:
        return weighted_linear_fit(z, scores, lime_weights(z, options["kernel_width"]), alpha=1.0)


class KernelShap(SegmentMethod):
    name = "kernel_shap"
    resumable = "nsamples"
    order = 83
    label = "KernelSHAP"
    summary = ("Shapley values of the segments from a linear fit with the Shapley kernel "
               "(Lundberg & Lee 2017; Captum's KernelShap sampling and weights).")
    options = (SEGMENTS, NSAMPLES, FILL, FILL_SIGMA)

    def coalitions(self, segments: int, options: dict, rng: np.random.Generator) -> np.ndarray:
        return shapley_coalitions(segments, options["nsamples"], rng)

    def values(self, z: np.ndarray, scores: np.ndarray, options: dict) -> np.ndarray:
        return weighted_linear_fit(z, scores, shapley_weights(z), alpha=0.0)


FEATURE_ABLATION = register(FeatureAblation())
LIME = register(Lime())
KERNEL_SHAP = register(KernelShap())


def coalitions_of(method: Any, segments: int, options: dict, seed: int, image_id: int) -> np.ndarray:
    """The coalitions ``method`` draws for an image of ``segments`` segments (for references and tests)."""
    from .base import get_method

    chosen = get_method(method)
    return chosen.coalitions(segments, chosen.resolve(options), np.random.default_rng([seed, COALITIONS, image_id]))
