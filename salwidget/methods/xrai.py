"""XRAI: image regions ranked by the attribution they hold.

Kapishnikov et al. (2019) over-segment the image at several scales
(Felzenszwalb's graph segmentation), then grow a saliency map region by
region: at each step the region (minus what is already covered) with the
highest mean attribution is added, and its pixels get that mean. The output is
one value per pixel, (B, H, W); higher is more important.

This follows PAIR saliency's ``saliency/core/xrai.py`` (its ``'full'``
algorithm): the image scaled to [-1, 1] and resized to 224 x 224 for
segmentation at scales 50, 100, 150, 250, 500 and 1200 (sigma 0.8, segments of
at least 150 pixels), each segment dilated by a disk of radius 5, regions that
add fewer than 50 new pixels skipped. The attribution is Integrated Gradients
averaged over a black and a white baseline (each image's own min and max), the
per-pixel maximum over channels, or ``base_attribution=`` (an existing
:class:`~salwidget.Attribution` such as the panel's cached IG, or an array).

The IG passes run on the device through the engine (with progress and
cancel); segmentation and ranking are host numpy/scikit-image work at the
end (about 1.5 s per 224 x 224 image on one CPU core, a third of it
Felzenszwalb's algorithm).
The ranking is PAIR's greedy choice, updated incrementally (each added region
subtracts only its new pixels from every other region's sums), and the
dilation works on label images, not one mask at a time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SaliencyError
from ..targets import is_plain
from .base import Method, MethodOutput, Option, hashable, register
from .sampling import Ends, SampledGradients, Sampling
from .sampling_options import nsamples_option, path_weights

SCALES = (50, 100, 150, 250, 500, 1200)
SIGMA = 0.8
MIN_SEGMENT = 150
SEGMENTATION_SIZE = (224, 224)
DILATION_RADIUS = 5
MIN_PIXEL_DIFF = 50


# ------------------------------------------------------------- segmentation
def _skimage():
    try:
        from skimage import segmentation, transform
        from skimage.morphology import disk
    except ImportError as exc:
        raise ImportError(
            "XRAI segments images with scikit-image, which is not installed: pip install scikit-image "
            "(or the 'demo' extra: pip install 'salwidget[demo]')."
        ) from exc
    return segmentation, transform, disk


def segment_labels(image: np.ndarray) -> list[np.ndarray]:
    """Felzenszwalb label images (H, W) of an (H, W, C) image at PAIR's scales."""
    segmentation, transform, _ = _skimage()
    low, high = float(np.min(image)), float(np.max(image))
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    scaled = scaled * 2.0 - 1.0
    scaled = transform.resize(scaled, SEGMENTATION_SIZE, order=3, mode="constant", preserve_range=True,
                              anti_aliasing=True)
    labels = []
    for scale in SCALES:
        seg = segmentation.felzenszwalb(scaled, scale=scale, sigma=SIGMA, min_size=MIN_SEGMENT)
        seg = transform.resize(seg, image.shape[:2], order=0, preserve_range=True, mode="constant",
                               anti_aliasing=False).astype(int)
        labels.append(seg)
    return labels


def _reflected(length: int, shift: int) -> np.ndarray:
    """Indices of ``range(length)`` shifted by ``shift``, folded back as scipy's 'reflect' border does."""
    positions = (np.arange(length) + shift) % (2 * length)
    return np.where(positions < length, positions, 2 * length - 1 - positions)


def dilated_masks(labels: list[np.ndarray], radius: int = DILATION_RADIUS) -> np.ndarray:
    """(K, H*W) boolean masks: every label of every label image, dilated by a disk.

    Row order is PAIR's (label images in turn, labels ascending from each
    image's minimum, empty labels included); equal to
    ``skimage.morphology.dilation(labels == l, disk(radius))`` per label,
    computed per label image: a pixel belongs to every label found within the
    disk around it.
    """
    _, _, disk = _skimage()
    offsets = np.argwhere(disk(radius)) - radius
    blocks = []
    for seg in labels:
        height, width = seg.shape
        pixels = np.arange(height * width)
        ids = (seg - seg.min()).ravel()
        block = np.zeros((int(ids.max()) + 1, height * width), bool)
        block[ids, pixels] = True
        for dy, dx in offsets:
            if dy == 0 and dx == 0:
                continue
            shifted = seg[_reflected(height, dy)][:, _reflected(width, dx)].ravel() - seg.min()
            differs = np.nonzero(shifted != ids)[0]
            block[shifted[differs], differs] = True
        blocks.append(block)
    return np.concatenate(blocks)


# ---------------------------------------------------------------- ranking
def _sums(masks: np.ndarray, columns: np.ndarray, values: np.ndarray, width: int = 4096) -> np.ndarray:
    """``masks[:, columns] @ values[columns]`` in float64, a slice of columns at a time (bounded memory)."""
    total = np.zeros(len(masks))
    for start in range(0, len(columns), width):
        part = columns[start: start + width]
        total += masks[:, part].astype(np.float64) @ values[part]
    return total


def xrai_ranking(attr: np.ndarray, masks: np.ndarray, area_threshold: float = 1.0,
                 min_pixel_diff: int = MIN_PIXEL_DIFF) -> tuple[np.ndarray, np.ndarray]:
    """PAIR's full XRAI on one (H, W) attribution and (K, H*W) masks.

    Returns the map (H, W) (each pixel holds the mean attribution of the
    region that first covered it; the rest holds the mean of the rest) and
    ranks (H, W) int (1 = the region added first, by gain).
    """
    shape = attr.shape
    flat = attr.reshape(-1)
    values = flat.astype(np.float64)
    counts = masks.sum(axis=1).astype(np.int64)
    sums = _sums(masks, np.arange(flat.size), values)
    alive = np.ones(len(masks), bool)
    covered = np.zeros(flat.size, bool)
    output = np.full(flat.size, -np.inf)
    trace = []  # (new pixels, gain) in the order added
    while covered.mean() <= area_threshold:
        alive &= counts >= min_pixel_diff  # regions adding too few new pixels are dropped for good
        if not alive.any():
            break
        with np.errstate(invalid="ignore", divide="ignore"):
            gains = np.where(alive, sums / np.maximum(counts, 1), -np.inf)
        gains[np.isnan(gains)] = -np.inf
        best = int(np.argmax(gains))  # the first best, as PAIR's strict '>' keeps
        if gains[best] == -np.inf:
            break
        new = np.nonzero(masks[best] & ~covered)[0]
        gain = flat[new].mean()  # PAIR's value: the mean in the attribution's own dtype
        trace.append((new, gain))
        output[new] = gain
        covered[new] = True
        alive[best] = False
        counts -= masks[:, new].sum(axis=1)
        sums -= _sums(masks, new, values)
    rest = output == -np.inf
    if rest.any():
        output[rest] = flat[rest].mean()
    ranks = np.zeros(flat.size, np.int64)
    order = sorted(range(len(trace)), key=lambda i: -trace[i][1])
    for rank, i in enumerate(order, start=1):
        ranks[trace[i][0]] = rank
    if rest.any():
        ranks[rest] = len(trace) + 1
    return output.reshape(shape), ranks.reshape(shape)


# ------------------------------------------------------------ the base IG
class BlackWhiteIG(SampledGradients):
    """Integrated Gradients averaged over a black and a white baseline (each image's own min and max).

    Not registered: XRAI runs it (``options['nsamples']`` path steps per
    baseline, equal weights as PAIR's IG).
    """

    name = "xrai_base_ig"
    signed = True

    def sampling(self, options: dict) -> Sampling:
        alphas, weights = path_weights(options["nsamples"], "riemann")
        return Sampling(2, len(alphas), alphas, weights, "mean", path=True)

    def group_ends(self, ctx, group: int, plan: Sampling) -> Ends:
        bounds = ctx.low if group == 0 else ctx.high
        baselines = [ctx.ops.zeros(x.shape) + ctx.ops.per_row(bounds[m], x) for m, x in enumerate(ctx.inputs)]
        return Ends(list(ctx.inputs), baselines)


BASE_IG = BlackWhiteIG()


def check_base_attribution(value, method):
    """XRAI's ``base_attribution``: None, a complete Attribution or a finite array."""
    if value is None:
        return None
    from ..attribution import Attribution

    if isinstance(value, Attribution):
        if not value.complete:
            raise SaliencyError("base_attribution is an unfinished Attribution: pass a complete one.")
        return value
    from ..inputs import to_numpy

    array = to_numpy(value).astype(np.float32)
    if not np.isfinite(array).all():
        raise SaliencyError("base_attribution contains NaN or infinite values.")
    return array


@dataclass
class XRAIState:
    base: Any = None  # host (B, H, W) attribution when given
    context: Any = None  # the base IG's run context and state
    state: Any = None


class XRAI(Method):
    name = "xrai"
    order = 90
    label = "XRAI"
    summary = ("Image regions (Felzenszwalb segments at six scales) ranked by the mean IG attribution they add "
               "(Kapishnikov et al. 2019), as PAIR saliency computes it; one value per pixel. Segmentation and "
               "ranking are host numpy work.")
    signed = True
    output = "pixel"
    options = (
        nsamples_option("IG path steps per baseline (black and white; PAIR uses 100); cost grows linearly. "
                        "Unused with base_attribution.", default=50, minimum=2, label="IG steps"),
        Option(
            "base_attribution", None,
            "An Attribution (e.g. a cached IG) or array (B, ...) of the same images to rank regions by, instead "
            "of computing IG; its targets must be this call's.", allow_none=True, label="base attribution",
            check=check_base_attribution,
        ),
        Option("area_threshold", 1.0, "Stop ranking once this share of the image is covered (the rest is one "
               "region); smaller is faster.", kind="float", minimum=0.0, maximum=1.0, label="area",
               slider_max=1.0, step=0.05),
    )

    def key(self, options: dict) -> tuple:
        base = options["base_attribution"]
        if base is None:
            source = ("steps", options["nsamples"])
        else:
            raw = base.raw if hasattr(base, "raw") else base
            source = ("base", hashable(raw if not isinstance(raw, tuple) else raw[0]))
        return (self.name, source, ("area_threshold", options["area_threshold"]))

    def passes(self, options: dict, batch: int) -> int:
        return 0 if options["base_attribution"] is not None else 2 * options["nsamples"] * batch

    def passes_left(self, ctx, state: XRAIState) -> int:
        return 0 if state.state is None else BASE_IG.passes_left(state.context, state.state)

    # --------------------------------------------------------------- running
    def start(self, ctx, resume=None) -> XRAIState:
        if ctx.spatial_size is None:
            raise SaliencyError("XRAI segments images: the (first) input must be a batch of images (rank 4).")
        _skimage()  # fail before any pass when scikit-image is missing
        base = ctx.options["base_attribution"]
        if base is not None:
            return XRAIState(base=self._host_base(ctx, base))
        context = dataclasses.replace(ctx, options={"nsamples": ctx.options["nsamples"]}, cache={}, plan=None)
        return XRAIState(context=context, state=BASE_IG.start(context))

    def stages(self, ctx, state: XRAIState):
        if state.state is not None:
            yield from BASE_IG.stages(state.context, state.state)

    def _host_base(self, ctx, base) -> np.ndarray:
        """A given base attribution as (B, H, W) float32: the maximum over channels, as PAIR's XRAI."""
        from ..attribution import Attribution
        from ..arrays import resize_bilinear

        height, width = ctx.spatial_size
        if isinstance(base, Attribution):
            if base.target is not None and not np.array_equal(np.asarray(base.target), ctx.targets_np[ctx.output_index]):
                raise SaliencyError(
                    f"base_attribution explains classes {np.asarray(base.target).tolist()} but this call explains "
                    f"{ctx.targets_np[ctx.output_index].tolist()}: pass target=base_attribution.target."
                )
            mine = ctx.explained[ctx.output_index].target
            if base.explained is not None and not (is_plain(mine) and is_plain(base.explained)) \
                    and base.explained != mine:
                raise SaliencyError(
                    f"base_attribution explains {base.explained!r} but this call explains {mine!r}: pass "
                    "target=base_attribution.explained."
                )
            raw = np.asarray(base.raw_of(0), np.float32)
            if base.kind == "layer":
                raw = resize_bilinear(raw, (height, width))
            elif base.kind == "input" and raw.ndim == 4:
                raw = raw.max(axis=-1 if base.channels_last else 1)
        else:
            raw = base[0] if isinstance(base, tuple) else base
            if raw.ndim == 4:
                raw = raw.max(axis=-1 if ctx.channels_last else 1)
        if raw.shape != (ctx.batch, height, width):
            raise SaliencyError(
                f"base_attribution has maps of shape {raw.shape}; XRAI needs one per image of this batch, "
                f"{(ctx.batch, height, width)} (or the input's own shape)."
            )
        return np.ascontiguousarray(raw, np.float32)

    def _channel_max(self, ctx, maps):
        return ctx.ops.max(maps, axis=-1 if ctx.channels_last else 1)

    def preview(self, ctx, state: XRAIState) -> MethodOutput:
        """While IG runs: its running map (maximum over channels); no regions yet."""
        if state.state is None:
            return self.finish(ctx, state)
        output = BASE_IG.preview(state.context, state.state)
        return MethodOutput(self._channel_max(ctx, output.raw[0]), output.samples)

    def finish(self, ctx, state: XRAIState) -> MethodOutput:
        extras = {}
        samples = 0
        if state.state is not None:
            output = BASE_IG.finish(state.context, state.state)
            base = ctx.ops.numpy(self._channel_max(ctx, output.raw[0])).astype(np.float32)
            samples = ctx.options["nsamples"]
            if "delta" in output.extras:
                extras["base_delta"] = output.extras["delta"]
        else:
            base = state.base
        images = ctx.host_inputs[0]
        if not ctx.channels_last:
            images = images.transpose(0, 2, 3, 1)
        maps, ranks = [], []
        for image, attr in zip(images, base):
            masks = dilated_masks(segment_labels(image))
            heat, rank = xrai_ranking(attr, masks, ctx.options["area_threshold"])
            maps.append(heat.astype(np.float32))
            ranks.append(rank)
        extras["region_ranks"] = np.stack(ranks)
        return MethodOutput(ctx.ops.asarray(np.stack(maps)), samples, extras)


XRAI_METHOD = register(XRAI())
