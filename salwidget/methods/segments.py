"""Superpixels for the segment methods (LIME, KernelSHAP, feature ablation): computed once per image.

``segments`` is ``"slic"``, ``"quickshift"`` or ``"felzenszwalb"`` (scikit-image,
run on each image scaled to [0, 1] in channels-last order, with LIME's and
scikit-image's usual settings) or an integer array, (H, W) for every image or
(B, H, W). Labels are renumbered 0..S-1 per image in order of first value.
Segmentations of an image are kept (keyed by the algorithm and the image's
bytes) so a panel that changes ``nsamples`` does not segment again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..caches import BoundedCache
from ..digests import bytes_digest
from ..errors import SaliencyError
from .base import Option

ALGORITHMS = ("slic", "quickshift", "felzenszwalb")
_KEPT = 64  # segmentations remembered

SEGMENTS = Option(
    "segments", "slic",
    "Superpixels the method switches on and off: 'slic' (about 50 compact ones), 'quickshift' (colour modes, "
    "the slowest to compute) or 'felzenszwalb' (graph-based, uneven sizes), from scikit-image, or an integer "
    "array (H, W) or (B, H, W) of labels (options={method: {'segments': labels}}). Segmenting is once per "
    "image; feature ablation's passes grow with the number of segments, LIME's and KernelSHAP's do not.",
    kind="any", label="segments",
    presets=(("SLIC", "slic"), ("quickshift", "quickshift"), ("Felzenszwalb", "felzenszwalb")),
)

_MEMO = BoundedCache(_KEPT)


def check_segments(value: Any, method: str) -> Any:
    """``segments`` checked: an algorithm's name, or an integer array of 2 or 3 dimensions."""
    if isinstance(value, str):
        if value not in ALGORITHMS:
            raise SaliencyError(f"segments must be one of {ALGORITHMS} or an integer array (method {method!r}); "
                                f"got {value!r}.")
        return value
    array = np.asarray(value)
    if array.ndim not in (2, 3) or not np.issubdtype(array.dtype, np.integer):
        raise SaliencyError(
            f"segments must be 'slic', 'quickshift', 'felzenszwalb' or an integer array (H, W) or (B, H, W) "
            f"(method {method!r}); got {'an array of ' + str(array.dtype) + ' ' + str(array.shape) if array.ndim else repr(value)}."
        )
    return array


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..S-1 (int64)."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int64)


def segment(image: np.ndarray, algorithm: str) -> np.ndarray:
    """(H, W) labels 0..S-1 of one channels-last image (any range; scaled to [0, 1] first)."""
    key = (algorithm, image.shape, bytes_digest(np.ascontiguousarray(image)))
    held = _MEMO.get(key)
    if held is not None:
        return held
    from skimage import segmentation

    low, high = float(image.min()), float(image.max())
    scaled = ((image - low) / (high - low) if high > low else np.zeros_like(image)).astype(np.float64)
    if algorithm == "quickshift" and scaled.shape[-1] != 3:
        raise SaliencyError(f"segments='quickshift' needs 3-channel images; got {scaled.shape[-1]} channels. "
                            "Use 'slic' or 'felzenszwalb'.")
    if algorithm == "slic":
        labels = segmentation.slic(scaled, n_segments=50, compactness=10, start_label=0, channel_axis=-1)
    elif algorithm == "quickshift":
        labels = segmentation.quickshift(scaled, kernel_size=4, max_dist=200, ratio=0.2)
    else:
        labels = segmentation.felzenszwalb(scaled, scale=100, sigma=0.5, min_size=50, channel_axis=-1)
    labels = relabel(labels)
    _MEMO.put(key, labels)
    return labels


def image_segments(value: Any, images: np.ndarray, channels_last: bool) -> np.ndarray:
    """(B, H, W) int64 labels, 0..S_b-1 in each image, for ``images`` (B, C, H, W) or (B, H, W, C)."""
    batch = len(images)
    size = images.shape[1:3] if channels_last else images.shape[2:4]
    if isinstance(value, str):
        moved = images if channels_last else np.moveaxis(images, 1, -1)
        return np.stack([segment(image, value) for image in moved])
    labels = np.asarray(value)
    if labels.ndim == 2:
        labels = np.broadcast_to(labels, (batch, *labels.shape))
    if tuple(labels.shape) != (batch, *size):
        raise SaliencyError(f"segments has shape {tuple(np.shape(value))}; it must be (H, W) = {tuple(size)} or "
                            f"(B, H, W) = {(batch, *size)}.")
    return np.stack([relabel(one) for one in labels])


__all__ = ["ALGORITHMS", "SEGMENTS", "check_segments", "image_segments", "relabel", "segment"]
