"""Files in and out of the panel, without custom JavaScript.

Downloads are ``<a download href="data:...">`` links in HTML widgets: the
grid's PNG is rebuilt with every grid, the maps' .npz (megabytes) only when
asked for; uploads come from a ``FileUpload`` as bytes and are decoded with
Pillow.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from ..attribution import Attribution

RAW_LIMIT_BYTES = 32 * 2**20  # larger raw maps stay out of the .npz link (the grid's masks still go in)


def maps_npz(results: dict[str, Attribution], masks: dict[str, np.ndarray], images: np.ndarray) -> tuple[bytes, bool]:
    """(.npz bytes, whether the raw maps are in): per method ``raw_<m>``, ``mask_<m>``, ``target_<m>``."""
    arrays: dict[str, Any] = {"images": images}
    raw_bytes = sum(sum(np.asarray(r).nbytes for r in _raws(a)) for a in results.values())
    with_raw = raw_bytes <= RAW_LIMIT_BYTES
    for method, result in results.items():
        if with_raw:
            raws = _raws(result)
            for i, raw in enumerate(raws):
                arrays[f"raw_{method}" if len(raws) == 1 else f"raw_{method}_{i}"] = np.asarray(raw)
        arrays[f"mask_{method}"] = masks[method]
        arrays[f"target_{method}"] = np.asarray(result.target)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue(), with_raw


def _raws(result: Attribution) -> tuple:
    return result.raw if isinstance(result.raw, tuple) else (result.raw,)


def png_link(png: bytes) -> str:
    """HTML with a link that saves the grid as PNG."""
    return "Download: " + _link("saliency_grid.png", "image/png", png, "Grid (PNG)", "The grid as shown, as a PNG file.")


def evaluation_link(png: bytes) -> str:
    """HTML with a link that saves the Evaluate view's picture as PNG."""
    return _link("saliency_evaluation.png", "image/png", png, "Evaluation (PNG)",
                 "The curves and sanity checks as shown, as a PNG file.")


def npz_link(npz: bytes, with_raw: bool = True) -> str:
    """HTML with a link that saves the maps as .npz."""
    what = "raw maps, shown masks and targets" if with_raw else "shown masks and targets (raw maps too large)"
    return _link("saliency_maps.npz", "application/octet-stream", npz, "Maps (.npz)",
                 f"NumPy archive of the {what}, per method; load with numpy.load.") + f" ({len(npz) / 2**20:.1f} MB)"


LINK_STYLE = ("display:inline-block; padding:2px 8px; border:1px solid #1976d2; border-radius:3px; "
              "color:#1976d2; text-decoration:none")


def _link(name: str, mime: str, data: bytes, text: str, title: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    # Styled as a button (border, padding, the link colour): plain text would not look like something to click.
    return (f"<a download='{name}' href='data:{mime};base64,{encoded}' title='{html.escape(title)}' "
            f"class='salwidget-download-{name.rsplit('.', 1)[1]}' style='{LINK_STYLE}'>&#11015; {text}</a>")


def decode_picture(content: Any) -> np.ndarray:
    """An uploaded file's bytes as an RGB picture (H, W, 3) uint8."""
    from PIL import Image

    with Image.open(io.BytesIO(bytes(content))) as picture:
        return np.asarray(picture.convert("RGB"))
