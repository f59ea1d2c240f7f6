"""Raw attributions as masks: greyscale and diverging, one plane per image; pure numpy, no framework, no
matplotlib (the seed's visualisation, :func:`to_grayscale`)."""

from __future__ import annotations

import numpy as np

from ..arrays import resize_bilinear
from ..errors import SaliencyError

_CHANNEL_SIZES = (1, 3, 4)


def plane_maps(raw, channels_last: bool, signed: bool, input_index: int = 0) -> np.ndarray:
    """(B, H, W) maps from an :class:`~salwidget.Attribution` (which knows its layout and kind) or a raw array
    (summed over channels, in absolute value unless ``signed``)."""
    if hasattr(raw, "raw_of") and hasattr(raw, "kind"):  # an Attribution (not imported: it imports this module)
        values = np.asarray(raw.raw_of(input_index), np.float32)
        if raw.kind == "input":
            return channel_free(values, raw.channels_last, signed)
        values = values if signed else np.abs(values)
        if raw.kind == "layer" and raw.input_size is not None:
            values = resize_bilinear(values, raw.input_size)
        return values
    return channel_free(raw, channels_last, signed)


def channel_free(raw, channels_last: bool, signed: bool) -> np.ndarray:
    """Sum (B, C, H, W) or (B, H, W, C) over channels, with sign or in absolute value."""
    if isinstance(raw, (tuple, list)):
        raise SaliencyError(
            "Got several raw maps (a multi-input model): visualise one input at a time, "
            "e.g. to_grayscale(a.raw[0]) or to_grayscale(a, input_index=0)."
        )
    raw = np.asarray(raw, dtype=np.float32)
    values = raw if signed else np.abs(raw)
    if raw.ndim == 3:
        return values
    if raw.ndim != 4:
        raise SaliencyError(
            f"Expected a batch of maps (B, C, H, W), (B, H, W, C) or (B, H, W); got shape {raw.shape}."
        )
    if not channels_last and raw.shape[1] not in _CHANNEL_SIZES and raw.shape[3] in _CHANNEL_SIZES:
        raise SaliencyError(
            f"The maps have shape {raw.shape}, which looks channels-last (B, H, W, C), but channels_last=False. "
            "Pass the Attribution itself, e.g. sw.to_grayscale(a), which knows its layout, or channels_last=True."
        )
    return values.sum(axis=-1 if channels_last else 1)


def per_image_percentile(maps: np.ndarray, percentile: float) -> np.ndarray:
    if not 0 < percentile <= 100:
        raise SaliencyError(f"percentile must be in (0, 100]; got {percentile}.")
    flat = maps.reshape(len(maps), -1)
    return np.percentile(flat, percentile, axis=1, method="lower")


def to_grayscale(raw, percentile: float = 99, channels_last: bool = False, *, input_index: int = 0) -> np.ndarray:
    """The seed's greyscale visualisation of a batch of raw attributions.

    ``|raw|`` is summed over channels; each image is then clipped at its own
    ``percentile`` (numpy's ``'lower'`` interpolation, so the bound is a value of
    the map) and min-normalised into [0, 1].

    Parameters
    ----------
    raw : Attribution, or array of shape (B, C, H, W), (B, H, W, C) or (B, H, W)
        An :class:`~salwidget.Attribution` (which knows its layout; a CAM's
        layer-resolution map is upsampled bilinearly to the input's size) or
        raw maps such as ``Attribution.raw``.
    percentile : float, default 99
        Values above this per-image percentile saturate at 1.
    channels_last : bool, default False
        Whether the channel axis of a 4-D raw array is last (ignored for an Attribution).
    input_index : int, default 0
        Which input's map, for an Attribution of a multi-input model.

    Returns
    -------
    numpy.ndarray of shape (B, H, W), float32, in [0, 1]
        A constant map gives zeros, never NaN. When the percentile equals the
        minimum (a map that is zero almost everywhere) the maximum is used as
        the upper bound instead, so the few salient pixels still show.
    """
    maps = plane_maps(raw, channels_last, signed=False, input_index=input_index)
    vmax = per_image_percentile(maps, percentile)
    vmin = maps.reshape(len(maps), -1).min(axis=1)
    vmax = np.where(vmax > vmin, vmax, maps.reshape(len(maps), -1).max(axis=1))
    span = (vmax - vmin)[:, None, None]
    scaled = np.divide(maps - vmin[:, None, None], span, out=np.zeros_like(maps), where=span > 0)
    return np.clip(scaled, 0, 1).astype(np.float32)


def to_diverging(raw, percentile: float = 99, channels_last: bool = False, *, input_index: int = 0) -> np.ndarray:
    """Signed maps in [-1, 1]: channels summed with sign, scaled by the per-image
    ``percentile`` of the absolute value. Positive evidence is > 0.

    Parameters
    ----------
    raw : Attribution, or array of shape (B, C, H, W), (B, H, W, C) or (B, H, W)
    percentile : float, default 99
    channels_last : bool, default False
    input_index : int, default 0

    Returns
    -------
    numpy.ndarray of shape (B, H, W), float32, in [-1, 1]; zeros for an all-zero map.
    """
    maps = plane_maps(raw, channels_last, signed=True, input_index=input_index)
    bound = per_image_percentile(np.abs(maps), percentile)
    bound = np.where(bound > 0, bound, np.abs(maps).reshape(len(maps), -1).max(axis=1))
    scale = bound[:, None, None]
    scaled = np.divide(maps, scale, out=np.zeros_like(maps), where=scale > 0)
    return np.clip(scaled, -1, 1).astype(np.float32)
