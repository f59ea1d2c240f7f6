"""Array helpers the methods, the evaluation and the datasets share: resizing maps, display-ready pictures.

Pure numpy: importing this module pulls in no drawing (Pillow, matplotlib) and no framework.
"""

from __future__ import annotations

import numpy as np

from .errors import SaliencyError


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (B, h, w) maps to (B, *size), pixel centres aligned as in
    ``torch.nn.functional.interpolate(align_corners=False)`` and ``tf.image.resize``."""
    maps = np.asarray(maps, np.float32)
    height, width = maps.shape[1:]
    if (height, width) == tuple(size):
        return maps

    def axis(n_in: int, n_out: int):
        position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (position - low).astype(np.float32)

    r0, r1, fr = axis(height, size[0])
    c0, c1, fc = axis(width, size[1])
    rows = maps[:, r0] * (1 - fr)[None, :, None] + maps[:, r1] * fr[None, :, None]
    return rows[:, :, c0] * (1 - fc)[None, None, :] + rows[:, :, c1] * fc[None, None, :]


def to_display_image(images, channels_last: bool = False) -> np.ndarray:
    """Make a batch of images displayable: (B, H, W, 3) float32 in [0, 1].

    uint8 images are divided by 255; float images already in [0, 1] are kept;
    anything else (normalised inputs) is min-max scaled per image. Greyscale
    and 4-channel images become RGB.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    elif images.ndim == 4 and not channels_last:
        images = np.moveaxis(images, 1, -1)
    if images.ndim != 4:
        raise SaliencyError(f"Expected a batch of images; got shape {images.shape}.")
    if images.dtype == np.uint8:
        out = images.astype(np.float32) / 255.0
    else:
        out = images.astype(np.float32)
        if out.min() < 0 or out.max() > 1:
            lo = out.reshape(len(out), -1).min(axis=1)[:, None, None, None]
            hi = out.reshape(len(out), -1).max(axis=1)[:, None, None, None]
            out = np.divide(out - lo, hi - lo, out=np.zeros_like(out), where=hi > lo)
    channels = out.shape[-1]
    if channels == 1:
        out = np.repeat(out, 3, axis=-1)
    elif channels == 4:
        out = out[..., :3]
    elif channels != 3:
        out = np.repeat(out.mean(axis=-1, keepdims=True), 3, axis=-1)
    return np.clip(out, 0, 1)
