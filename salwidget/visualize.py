"""Kept for imports of earlier versions: masks are in :mod:`salwidget.drawing.masks`, array helpers (resizing,
display-ready pictures) in :mod:`salwidget.arrays`."""

from .arrays import resize_bilinear, to_display_image
from .drawing.masks import to_diverging, to_grayscale

__all__ = ["resize_bilinear", "to_display_image", "to_diverging", "to_grayscale"]
