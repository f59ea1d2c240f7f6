"""From attributions to the maps the grid shows, and what their colours mean.

Three scalings: each image alone (exactly :func:`salwidget.to_grayscale` /
:func:`salwidget.to_diverging`), each method across its images, or one scale
shared by every map. Magnitude maps go to [0, 1] (0 = the smallest value,
1 = the clip percentile); signed maps to [-1, 1] (0 = zero, +-1 = the clip
percentile of the absolute values), for a diverging colour map centred at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..attribution import Attribution
from .masks import plane_maps, to_diverging, to_grayscale

DIVERGING_CMAP = "RdBu_r"  # red positive, blue negative, white at zero


@dataclass
class Scale:
    """The colour scale of one column: mask range, caption and colour-bar ticks."""

    signed: bool
    caption: str
    ticks: list  # (mask value, label)

    @property
    def vmin(self) -> float:
        return -1.0 if self.signed else 0.0


def is_signed_view(result: Attribution, view: str) -> bool:
    return view == "signed" and bool(result.signed)


def shown_maps(results: dict[str, Attribution], percentile: float, scaling: str, view: str
               ) -> tuple[dict[str, np.ndarray], dict[str, Scale]]:
    """(masks, scales) per method: (B, H, W) float32 in [0, 1], or [-1, 1] for signed views."""
    masks, scales = {}, {}
    clip = f"p{percentile:g}"
    if scaling == "image":
        for method, result in results.items():
            signed = is_signed_view(result, view)
            if signed:
                masks[method] = to_diverging(result, percentile)
                scales[method] = Scale(True, f"signed, per image: +-1 = {clip} of |value|",
                                       [(-1, f"-{clip}"), (0, "0"), (1, f"+{clip}")])
            else:
                masks[method] = to_grayscale(result, percentile)
                scales[method] = Scale(False, f"per image: 0 = min, 1 = {clip} (clipped)", [(0, "min"), (1, clip)])
        return masks, scales
    raw = {m: plane_maps(a, a.channels_last, is_signed_view(a, view)) for m, a in results.items()}
    groups = [[m] for m in raw] if scaling == "method" else [
        [m for m in raw if is_signed_view(results[m], view) == signed] for signed in (False, True)
    ]
    where = "all images" if scaling == "method" else "shared by all maps"
    for group in groups:
        if not group:
            continue
        signed = is_signed_view(results[group[0]], view)
        pooled = np.concatenate([raw[m].ravel() for m in group])
        if signed:
            bound = _bound(np.abs(pooled), percentile)
            for m in group:
                masks[m] = _divide(raw[m], bound, -1.0)
                scales[m] = Scale(True, f"signed, {where}: +-1 = {clip} = {bound:.3g}",
                                  [(-1, f"{-bound:.2g}"), (0, "0"), (1, f"{bound:.2g}")])
        else:
            low = float(pooled.min())
            high = _bound(pooled, percentile, low)
            for m in group:
                masks[m] = _divide(raw[m] - low, high - low, 0.0)
                scales[m] = Scale(False, f"{where}: 1 = {clip} = {high:.3g} (clipped)",
                                  [(0, f"{low:.2g}"), (1, f"{high:.2g}")])
    return masks, scales


def _bound(values: np.ndarray, percentile: float, low: float = 0.0) -> float:
    """The clip value: the percentile ('lower', a value of the data), or the maximum when that is the minimum."""
    high = float(np.percentile(values, percentile, method="lower"))
    return high if high > low else float(values.max())


def _divide(values: np.ndarray, span: float, floor: float) -> np.ndarray:
    if not span > 0:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip(values / span, floor, 1.0).astype(np.float32)
