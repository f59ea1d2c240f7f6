"""Checking and normalising what users pass in: images, targets, baselines, outputs.

Everything becomes float32 numpy here, once, so the rest of the core works on
one kind of array and every error message is written in one place.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import SaliencyError

_CHANNEL_SIZES = (1, 3, 4)


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device), a TF tensor or an array-like as numpy."""
    if hasattr(value, "detach"):  # torch
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # tf eager tensor
        return value.numpy()
    return np.asarray(value)


def _check_one_input(x: np.ndarray, name: str, channels_last: bool, layout_given: bool,
                     default_channels_last: bool = False, check_finite: bool = True) -> np.ndarray:
    if x.dtype.kind in "iub":
        raise SaliencyError(
            f"{name} has integer dtype {x.dtype}; models take float input and gradients need it. "
            f"Convert it first, e.g. x.astype('float32') / 255 for 8-bit images, then apply "
            "the model's own normalisation."
        )
    if x.dtype.kind != "f":
        raise SaliencyError(f"{name} has dtype {x.dtype}; pass real floating-point images.")
    x = x.astype(np.float32, copy=False)
    if x.ndim == 3:
        raise SaliencyError(
            f"{name} has shape {x.shape} (rank 3). For one image add a batch axis: x[None]. "
            "For a batch of greyscale images add a channel axis: x[:, None] (channels first) "
            "or x[..., None] (channels last)."
        )
    if x.ndim not in (2, 4):
        hint = " Add a batch axis: x[None]." if x.ndim == 1 else ""
        raise SaliencyError(
            f"{name} has shape {x.shape} (rank {x.ndim}); expected a batch of images of rank 4 "
            f"(B, C, H, W) or (B, H, W, C), or a batch of vectors (B, N).{hint}"
        )
    if len(x) == 0:
        raise SaliencyError(f"{name} is an empty batch; pass at least one image.")
    if x.ndim == 4:
        channel, other = (x.shape[3], x.shape[1]) if channels_last else (x.shape[1], x.shape[3])
        if channel not in _CHANNEL_SIZES and other in _CHANNEL_SIZES:
            # The shape contradicts the layout: maps would come back at the wrong size.
            want, got = ("(B, H, W, C)", "(B, C, H, W)") if channels_last else ("(B, C, H, W)", "(B, H, W, C)")
            move = "x.transpose(0, 2, 3, 1)" if channels_last else "x.transpose(0, 3, 1, 2)"
            if layout_given:
                raise SaliencyError(
                    f"{name} has shape {x.shape}, which looks like {got}, but channels_last={channels_last} says "
                    f"{want}. Pass channels_last={not channels_last}"
                    f"{' (or leave it out)' if default_channels_last != channels_last else ''} if the model takes "
                    f"the batch as it is, or transpose it ({move})."
                )
            raise SaliencyError(
                f"{name} has shape {x.shape}, which looks like {got}, but this model takes {want} "
                f"by default. Transpose it ({move}), or pass channels_last={not channels_last} "
                "if the model really takes this layout."
            )
    # One cheap pass first: a NaN or infinity anywhere makes the sum non-finite (so can a huge finite sum:
    # then the exact check below decides). Most inputs are clean and pay only this.
    if not check_finite or np.isfinite(x.sum(dtype=np.float32)):
        return x
    bad = ~np.isfinite(x)
    if bad.any():
        raise SaliencyError(
            f"{name} contains {int(bad.sum())} NaN or infinite value(s) (first in image "
            f"{int(np.argwhere(bad)[0][0])}); fix or drop those images."
        )
    return x


def check_seed(seed: Any) -> int:
    """A seed as an int: a non-negative integer (what numpy's and the frameworks' generators take)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SaliencyError(f"seed must be a non-negative integer, e.g. seed=0; got {seed!r}. "
                            "Leave it out (None) to draw one, which is recorded in Attribution.seed.")
    return int(seed)


def prepare_inputs(x: Any, channels_last: bool | None, default_channels_last: bool,
                   check_finite: bool = True) -> tuple[list[np.ndarray], bool, bool]:
    """Validate a batch (or a tuple/list of batches for a multi-input model).

    ``check_finite=False`` leaves the NaN and infinity check to a caller that makes its own pass over
    every value anyway (the scan's thumbnails).

    Returns
    -------
    (inputs, channels_last, several)
        The inputs as float32 numpy, the layout in use, and whether several
        inputs were given.
    """
    several = isinstance(x, (tuple, list))
    raw_inputs = list(x) if several else [x]
    if not raw_inputs:
        raise SaliencyError("Got an empty list of inputs; pass a batch of images.")
    layout_given = channels_last is not None
    cl = default_channels_last if channels_last is None else bool(channels_last)
    inputs = []
    for index, value in enumerate(raw_inputs):
        name = f"input {index}" if several else "x"
        inputs.append(_check_one_input(to_numpy(value), name, cl, layout_given, default_channels_last, check_finite))
    sizes = {len(a) for a in inputs}
    if len(sizes) > 1:
        raise SaliencyError(f"The inputs have different batch sizes {sorted(sizes)}; they must match.")
    return inputs, cl, several


def class_indices(target: Any) -> np.ndarray:
    """A class index or one per image as a flat int64 array (not yet matched to a batch)."""
    values = to_numpy(target)
    if values.dtype.kind not in "iu" and not (
        values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0)
    ):
        raise SaliencyError(f"target must be an int or one int per image; got {target!r}.")
    values = values.astype(np.int64).reshape(-1)
    if values.size and values.min() < 0:
        raise SaliencyError(f"Target class {int(values.min())} is out of range: classes are numbered from 0.")
    return values


def prepare_target(target: Any, batch: int) -> np.ndarray:
    """An int -> every image; a sequence -> one per image (the upper bound is left to
    :func:`check_target_range`, once the number of classes is known)."""
    values = class_indices(target)
    if values.size == 1:
        values = np.full(batch, values[0], dtype=np.int64)
    if values.size != batch:
        raise SaliencyError(
            f"Got {values.size} targets for {batch} images: pass one int for all images or one per image."
        )
    return values


def check_target_range(values: np.ndarray, num_classes: int) -> None:
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        raise SaliencyError(
            f"Target class {int(values[bad][0])} is out of range: the model has {num_classes} "
            f"classes (0 to {num_classes - 1})."
        )


def check_output(output: Any, index: int, batch: int | None) -> None:
    """Raise unless a model output is (batch, num_classes) scores (any batch when None)."""
    if len(output.shape) != 2 or (batch is not None and output.shape[0] != batch):
        shown = tuple(output.shape)
        rank = len(shown)
        if rank == 4 or rank == 3:
            hint = ("For a dense (segmentation) output explain a region: target=sw.targets.Region(k, mask).")
        elif rank == 1:
            hint = "For a scalar head pass target=sw.targets.Output()."
        elif rank == 2:
            hint = f"It has {shown[0]} rows for {batch} images."
        else:
            hint = "Pass a target that reads it (sw.targets.Similarity, or a function of the output)."
        raise SaliencyError(
            f"Model output {index} has shape {shown}; salwidget needs "
            f"(batch, num_classes) = ({batch if batch is not None else 'B'}, C) class scores (logits) to explain "
            f"a class. {hint} Or wrap the model so it returns one score per class."
        )


def prepare_baselines(baseline: Any, inputs: list[np.ndarray], channels_last: bool) -> list:
    """Resolve the IG baseline of each input.

    Returns, per input, the string ``"uniform"`` (drawn per image and sample
    on the device), ``"blur"`` (blurred on the device) or a float32 array of
    the input's shape.
    """
    if isinstance(baseline, (tuple, list)) and len(inputs) > 1:
        if len(baseline) != len(inputs):
            raise SaliencyError(f"Got {len(baseline)} baselines for {len(inputs)} inputs.")
        return [prepare_baselines(b, [x], channels_last)[0] for b, x in zip(baseline, inputs)]
    resolved = []
    for x in inputs:
        if isinstance(baseline, str):
            if baseline == "uniform":
                resolved.append("uniform")
            elif baseline == "blur":
                if x.ndim != 4:
                    raise SaliencyError("baseline='blur' needs image inputs (rank 4).")
                resolved.append("blur")
            else:
                raise SaliencyError(
                    f"Unknown baseline {baseline!r}: use 'uniform', 'blur', a number "
                    "(0.0 = black in the model's input space) or an array shaped like x."
                )
        elif np.isscalar(baseline):
            resolved.append(np.full_like(x, float(baseline)))
        else:
            value = to_numpy(baseline).astype(np.float32)
            if value.shape == x.shape[1:]:
                value = np.broadcast_to(value, x.shape).copy()
            if value.shape != x.shape:
                raise SaliencyError(
                    f"The baseline has shape {value.shape}; it must match x {x.shape} or one image {x.shape[1:]}."
                )
            if not np.isfinite(value).all():
                raise SaliencyError("The baseline contains NaN or infinite values.")
            resolved.append(value)
    return resolved
