"""Pictures: files read with Pillow, the default preprocessing, and the small thumbnails a scan keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

THUMBNAIL_PX = 64  # thumbnails are THUMBNAIL_PX square, RGB uint8 (a 10,000-image scan keeps 123 MB on disk)


def read_picture(path: Path) -> np.ndarray:
    """An image file as RGB ``uint8`` (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def default_preprocess(channels_last: bool) -> Callable[[np.ndarray], np.ndarray]:
    """A picture (H, W, 3) uint8 -> float32 RGB in [0, 1], channels first for torch (channels last for Keras).

    Pass your own ``preprocess`` for the model's input size and normalisation: files of different sizes
    cannot share a batch.
    """

    def preprocess(picture: np.ndarray) -> np.ndarray:
        image = np.asarray(picture, np.float32) / 255.0
        return image if channels_last else image.transpose(2, 0, 1)

    return preprocess


def thumbnails(images: np.ndarray | list, channels_last: bool) -> np.ndarray:
    """(n, THUMBNAIL_PX, THUMBNAIL_PX, 3) uint8: each picture or model input fitted into the square, on white.

    ``images`` are pictures as a person sees them (RGB ``uint8`` (h, w, 3), a list: their sizes may
    differ) or a batch of model inputs (scaled for display as the panel does: per image when not
    already in [0, 1]). A batch of one size is resized in one vectorised step: an area average down
    to an integer factor, then nearest neighbours (small pictures, 8 x 8 digits, are enlarged without
    blurring).
    """
    from ..arrays import to_display_image

    if isinstance(images, np.ndarray) and images.dtype != np.uint8:
        # Reduce first (area average in float32), then scale the small pictures for display: a tenth of the
        # work of scaling 224 x 224 inputs first.
        batch = np.asarray(images, np.float32)
        if batch.ndim == 4:  # reduced in the input's own layout: strided views of contiguous rows
            batch = _reduce(batch, (1, 2) if channels_last else (2, 3))
        return _fit_batch((to_display_image(batch, channels_last=channels_last) * 255).round().astype(np.uint8))
    pictures = [np.asarray(p) for p in images]
    pictures = [np.repeat(p[..., None], 3, axis=-1) if p.ndim == 2 else p[..., :3] for p in pictures]
    if len({p.shape for p in pictures}) == 1:
        return _fit_batch(np.stack(pictures).astype(np.uint8))
    return np.concatenate([_fit_batch(p[None].astype(np.uint8)) for p in pictures])


def shrink(batch, channels_last: bool):
    """A batch of model inputs brought down to the thumbnail's size where it is (an area average, aspect
    kept, in the framework, on the model's device): 64 x 64 pictures cross to the host, not
    full images. A torch tensor larger than the thumbnail is shrunk; anything else comes back as numpy
    for :func:`thumbnails` to fit."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        return np.asarray(batch.detach().cpu() if hasattr(batch, "detach") else batch)
    images = batch.permute(0, 3, 1, 2) if channels_last else batch
    h, w = images.shape[2:]
    if max(h, w) <= THUMBNAIL_PX:
        return batch.detach().cpu().numpy()
    size = (max(1, round(h * THUMBNAIL_PX / max(h, w))), max(1, round(w * THUMBNAIL_PX / max(h, w))))
    with torch.no_grad():
        # An area average (each output pixel the mean of its window; the windows cover every pixel):
        # antialiased, one pass over the batch. One adaptive pool is faster than a fixed-window pool then
        # an adaptive one (224 -> 64: 0.13 s against 0.20 s for 1,024 images on two CPU threads).
        small = torch.nn.functional.adaptive_avg_pool2d(images.detach().float(), size)
    small = small.permute(0, 2, 3, 1) if channels_last else small
    return small.cpu().numpy()


def _reduce(batch: np.ndarray, axes: tuple[int, int] = (1, 2)) -> np.ndarray:
    """The area average over the largest integer factor that keeps the spatial ``axes`` at least
    THUMBNAIL_PX: the mean of the factor x factor strided views (several times faster than a mean over
    the axes of a reshaped, non-contiguous view)."""
    h, w = batch.shape[axes[0]], batch.shape[axes[1]]
    factor = max(h, w) // THUMBNAIL_PX
    if factor < 2:
        return batch
    h2, w2 = h // factor, w // factor
    shape = list(batch.shape)
    shape[axes[0]], shape[axes[1]] = h2, w2
    total = np.zeros(shape, np.float32)
    for i in range(factor):
        for j in range(factor):
            view = [slice(None)] * batch.ndim
            view[axes[0]] = slice(i, h2 * factor, factor)
            view[axes[1]] = slice(j, w2 * factor, factor)
            total += batch[tuple(view)]
    return total / (factor * factor)


def _fit_batch(batch: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) uint8 -> (n, THUMBNAIL_PX, THUMBNAIL_PX, 3), aspect kept, centred on white."""
    n = len(batch)
    if max(batch.shape[1:3]) >= 2 * THUMBNAIL_PX:  # area average over integer blocks; the rest is resampled below
        batch = _reduce(batch).round().astype(np.uint8)
    h, w = batch.shape[1:3]
    if h == w == THUMBNAIL_PX:  # already the thumbnail's size: no resampling (a copy, as the other paths give)
        return np.array(batch, np.uint8)
    size_h, size_w = max(1, round(h * THUMBNAIL_PX / max(h, w))), max(1, round(w * THUMBNAIL_PX / max(h, w)))
    rows = np.minimum((np.arange(size_h) + 0.5) * h / size_h, h - 1).astype(np.intp)
    cols = np.minimum((np.arange(size_w) + 0.5) * w / size_w, w - 1).astype(np.intp)
    out = np.full((n, THUMBNAIL_PX, THUMBNAIL_PX, 3), 255, np.uint8)
    top, left = (THUMBNAIL_PX - size_h) // 2, (THUMBNAIL_PX - size_w) // 2
    out[:, top : top + size_h, left : left + size_w] = batch[:, rows][:, :, cols]
    return out
