"""Reading a layer's output as a grid of image positions, for the class activation maps.

Three layouts are read without help:

- a feature map, (B, C, h, w) in torch or (B, h, w, C) in Keras; a 4-D output
  in the other framework's layout (a Swin or ConvNeXt block in torch keeps
  (B, h, w, C)) is read that way when only that reading has the input's
  aspect ratio;
- transformer tokens (B, N, C): ``prefix`` leading class/distillation
  tokens are dropped (by default the fewest of 0, 1 or 2 that leave a grid
  with the input's aspect ratio) and the rest is folded row-major into (h, w):
  a ViT's (B, 1 + h*w, C), a Swin stage's (B, h*w, C).

Anything else (a pooled or flattened output, attention windows or heads on the
first axis instead of the images) is not a grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import SaliencyError

AUTO_PREFIXES = (0, 1, 2)  # no prefix token, a class token, class + distillation tokens


@dataclass(frozen=True)
class Grid:
    """How a layer's output is read: ``'channels_first'``, ``'channels_last'`` or ``'tokens'``
    (after ``prefix`` tokens), as an (h, w) grid."""

    layout: str
    height: int
    width: int
    prefix: int = 0

    @property
    def positions(self) -> int:
        return self.height * self.width


def fold(n: int, height: int, width: int) -> tuple[int, int] | None:
    """(h, w) with ``h * w == n`` and ``h / w == height / width``, if there is one."""
    h = int(round(math.sqrt(n * height / width))) if n > 0 else 0
    if h >= 1 and n % h == 0 and h * width == (n // h) * height:
        return h, n // h
    return None


def _same_aspect(h: int, w: int, size: tuple[int, int]) -> bool:
    return h * size[1] == w * size[0]


def read_grid(shape: tuple, size: tuple[int, int], channels_last: bool, prefix: int | None = None) -> Grid | None:
    """The grid a layer output of ``shape`` holds for an input of spatial ``size``, or None.

    ``channels_last`` is the framework's own layout of feature maps (Keras:
    True); it wins when both readings of a 4-D output have the input's aspect
    ratio, and when neither has.
    """
    if len(shape) == 4:
        first, last = (shape[2], shape[3]), (shape[1], shape[2])
        own, other = (last, first) if channels_last else (first, last)
        use_other = not _same_aspect(*own, size) and _same_aspect(*other, size)
        layout_last = channels_last != use_other
        h, w = last if layout_last else first
        return Grid("channels_last" if layout_last else "channels_first", h, w)
    if len(shape) == 3:
        for dropped in AUTO_PREFIXES if prefix is None else (prefix,):
            grid = fold(shape[1] - dropped, *size)
            if grid is not None:
                return Grid("tokens", grid[0], grid[1], dropped)
    return None


def token_grid(tokens: int, size: tuple[int, int], prefix: int | None, layer: str, shape: tuple) -> tuple[int, int, int]:
    """(prefix, h, w) such that ``tokens - prefix == h * w`` with ``h / w`` the input's aspect ratio;
    an error naming a prefix count that would work, if none does."""
    grid = read_grid((shape[0], tokens, shape[-1]), size, False, prefix)
    if grid is not None:
        return grid.prefix, grid.height, grid.width
    height, width = size
    dropping = "dropping 0, 1 or 2 leading class/prefix tokens" if prefix is None else f"dropping {prefix} prefix token(s)"
    wanted = "a perfect square" if height == width else f"an h x w grid with h / w = {height} / {width}"
    hint = ""
    for extra in range(min(tokens, 16) if shape[-1] > 1 else 0):  # (B, C, 1) is pooled, not tokens  # name a small prefix count that would work, if one does
        folded = fold(tokens - extra, height, width)
        if folded is not None:
            hint = (f" Dropping {extra} token(s) would leave {folded[0]} x {folded[1]}: pass prefix_tokens={extra} "
                    "if the model has that many.")
            break
    raise SaliencyError(
        f"Layer {layer!r} outputs {tokens} tokens (shape {shape}); after {dropping} the rest is not {wanted}, "
        f"so it cannot be folded into the image's grid.{hint} For other layouts pass reshape=f, "
        "a function from the layer's output to (B, C, h, w) in torch or (B, h, w, C) in Keras."
    )


def to_channels_first(ops, tensor: Any, grid: Grid) -> Any:
    """A layer output read as ``grid``, as (B, C, h, w) on the device."""
    if grid.layout == "channels_first":
        return tensor
    if grid.layout == "channels_last":
        return ops.transpose(tensor, (0, 3, 1, 2))
    rows, channels = int(tensor.shape[0]), int(tensor.shape[2])
    folded = ops.reshape(tensor[:, grid.prefix:], (rows, grid.height, grid.width, channels))
    return ops.transpose(folded, (0, 3, 1, 2))


def grid_layers(shapes: list[tuple[str, tuple]], size: tuple[int, int], channels_last: bool,
                batch: int | None = None) -> list[tuple[str, Grid]]:
    """(name, grid) of the layers (in call order) whose output reads as a grid of more than one position.

    ``batch``: the rows the shapes were recorded with; an output with another
    first axis (attention windows, heads, a shared bias) is not the images'.
    A token output needs more than one channel (a pooled (B, C, 1) is not tokens).
    """
    picked = []
    for name, shape in shapes:
        if not shape or (batch is not None and shape[0] != batch) or any(d is None for d in shape[1:]):
            continue
        grid = read_grid(shape, size, channels_last)
        if grid is None or grid.positions <= 1 or (grid.layout == "tokens" and shape[2] <= 1):
            continue
        picked.append((name, grid))
    return picked


__all__ = ["AUTO_PREFIXES", "Grid", "fold", "grid_layers", "read_grid", "to_channels_first", "token_grid"]
