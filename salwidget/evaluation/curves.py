"""Deletion and insertion curves (Petsiuk et al., RISE, 2018): does the map rank pixels the model needs?

Deletion replaces the pixels a map ranks highest, a growing share at a time,
and records the target's score: a faithful map makes it fall fast (a small
area under the curve). Insertion starts from an uninformative image (by
default a strong blur) and reveals the image's pixels in the same order: a
faithful map makes the score rise fast (a large area). A random pixel order
(``saliency='random'``) gives the areas to beat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..attribution import Attribution
from ..backends import get_backend
from ..engine import Request, run
from ..errors import SaliencyError
from ..inputs import prepare_baselines, prepare_inputs, to_numpy
from ..outputs import choose_output, output_selector
from ..arrays import resize_bilinear
from .perturbation import DELETION, FORWARD_COST, INSERTION, Fill, PerturbationCurves, pixels_replaced

SCORES = ("probability", "logit")
# The insertion curve's starting image: a Gaussian blur with sigma = this share of
# the image's longer side (11.2 pixels at 224 x 224). RISE's own blur (an 11 x 11
# kernel, about a 3-pixel Gaussian) leaves EfficientNet-Lite0 recognising the demo
# cat as well as the clean picture does; at this sigma the target's probability
# starts near 0 while the image keeps its colours and overall brightness.
BLUR_SIGMA_SHARE = 0.05

CurvesProgress = Callable[[int, int, "Curves"], None]


def blur_sigma(height: int, width: int) -> float:
    """The sigma (pixels) of ``insertion_start='blur'`` for an image of this size."""
    return BLUR_SIGMA_SHARE * max(height, width)


@dataclass(eq=False)
class Curves:
    """Deletion and insertion curves of a batch, as returned by :func:`deletion_insertion`.

    Attributes
    ----------
    fractions : numpy.ndarray of shape (steps + 1,)
        Share of the pixels replaced at each step, from 0 to 1
        (``floor(k * H * W / steps) / (H * W)``).
    deletion, insertion : numpy.ndarray of shape (B, steps + 1)
        The target's score at each step. In a progress preview, steps not yet
        computed are NaN.
    auc_deletion, auc_insertion : numpy.ndarray of shape (B,)
        Trapezoid areas under the curves over ``fractions`` (lower deletion and
        higher insertion areas mean a more faithful map). A preview integrates
        the points computed so far.
    target : numpy.ndarray of shape (B,)
        The class whose score is recorded (-1 for a similarity or function target).
    score : {'probability', 'logit'}
    saliency : str
        Where the ranking came from: the Attribution's method, ``'array'`` or ``'random'``.
    seed : int or None
        The seed of a random ranking.
    blur_sigma : float or None
        Sigma (pixels) of a ``'blur'`` deletion value or insertion start.
    complete : bool
        False for a progress preview.
    passes_done, passes_total : int
        Forward passes run and planned (the clean pass is not counted).
    seconds : float
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    target: np.ndarray
    score: str = "probability"
    saliency: str = ""
    seed: int | None = None
    blur_sigma: float | None = None
    complete: bool = True
    passes_done: int = 0
    passes_total: int = 0
    seconds: float = 0.0
    auc_deletion: np.ndarray = field(init=False)
    auc_insertion: np.ndarray = field(init=False)

    def __post_init__(self):
        self.auc_deletion = area_under(self.fractions, self.deletion)
        self.auc_insertion = area_under(self.fractions, self.insertion)


def area_under(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Trapezoid area of each row of ``curves`` over ``fractions``, skipping NaN points
    (NaN when fewer than two points are known)."""
    areas = np.full(len(curves), np.nan)
    for row, curve in enumerate(curves):
        known = np.isfinite(curve)
        if known.sum() >= 2:
            areas[row] = np.trapezoid(curve[known], fractions[known])
    return areas


def deletion_insertion(
    model: Any,
    x: Any,
    saliency: Any,
    *,
    target: Any = None,
    steps: int = 32,
    deletion_value: Any = 0.0,
    insertion_start: Any = "blur",
    score: str = "probability",
    batch_size: int | str = "auto",
    progress: CurvesProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    seed: int = 0,
    channels_last: bool | None = None,
    output_index: int | None = None,
    framework: str | None = None,
    output: int | str | None = None,
    multilabel: bool | None = None,
) -> Curves:
    """Deletion and insertion curves of a saliency map's pixel ranking.

    Pixels are ranked from the most salient down (ties in row-major order: a
    stable sort). At step ``k`` of ``steps`` the first ``floor(k * H * W / steps)``
    pixels, all channels, are replaced: by ``deletion_value`` on the deletion
    curve; on the insertion curve the image's own pixels replace those of
    ``insertion_start``. Forward passes only, chunked by the engine's scheduler.

    Parameters
    ----------
    model : torch.nn.Module, Keras model or TF callable
    x : array or tensor (B, C, H, W) or (B, H, W, C)
        One batch of images (a single-input model), as for :func:`salwidget.attribute`.
    saliency : Attribution, array of shape (B, H, W) or 'random'
        What ranks the pixels. An Attribution of a gradient method is ranked by
        the channel sum of ``|raw|``; a CAM (``kind == 'layer'``) by its map
        upsampled bilinearly to the image; a ``kind == 'pixel'`` map and an
        array as they are (highest first). ``'random'``: a random order per
        image, drawn from ``seed``, the chance level to compare a map against.
    target : None, int, sequence of int, a ``sw.targets`` target or a callable
        What is scored. None: what the Attribution explained (its
        ``explained``: a Region target's curves read the region's score), else
        the clean prediction (as :func:`salwidget.attribute`).
    steps : int, default 32
        Points per curve after the first (``steps + 1`` in all); at most H * W.
    deletion_value : float, array or 'blur', default 0.0
        What deleted pixels become: a number (0.0 is black for a model taking
        [0, 1] images; pass the value your model reads as neutral), an array
        shaped like ``x`` or one image, or ``'blur'``.
    insertion_start : 'blur', float or array, default 'blur'
        The image pixels are revealed on. ``'blur'``: a Gaussian blur of each
        image with sigma = 0.05 x its longer side (11.2 pixels at 224 x 224;
        see :func:`blur_sigma`), computed on the model's device. For another
        blur pass the blurred array.
    score : {'probability', 'logit'}, default 'probability'
        For a class target: its softmax probability (a single-logit or
        multi-label head: its sigmoid; a head that already outputs independent
        probabilities: that output), or its raw output. Every other target
        (``Class(k, score=...)``, ``Region``, ``Output``, ``Similarity``, a
        function) records its own score.
    batch_size : 'auto' or int
        'auto' sizes chunks for forward passes (three times the passes of a
        gradient method); an int is the number of images per model call.
    progress : callable(done, total, partial Curves), optional
        Called after each chunk; ``partial`` has NaN where a step is not yet computed.
    cancel : callable() -> bool, optional
        Checked between chunks; True raises :class:`~salwidget.AttributionCancelled`.
    seed : int, default 0
        Seed of ``saliency='random'``.
    channels_last, output_index, output, framework
        As for :func:`salwidget.attribute`; ``channels_last`` defaults to an Attribution's own layout.
    multilabel : bool, optional
        Whether the class scores are independent sigmoids (None: the
        Attribution's, else detected; see :func:`salwidget.outputs.is_multilabel`).

    Returns
    -------
    Curves
    """
    started = time.perf_counter()
    backend = get_backend(model, framework)
    if channels_last is None and isinstance(saliency, Attribution):
        channels_last = saliency.channels_last  # the layout the map was computed in (a numpy callable declares it)
    inputs, layout, several = prepare_inputs(x, channels_last, backend.default_channels_last)
    if several or inputs[0].ndim != 4:
        raise SaliencyError("deletion_insertion needs a single batch of images (B, C, H, W) or (B, H, W, C).")
    steps = check_steps(steps, inputs[0], layout)
    if score not in SCORES:
        raise SaliencyError(f"Unknown score {score!r}: use 'probability' (softmax of the target) or 'logit'.")
    height, width = image_size(inputs[0], layout)
    maps, source = saliency_maps(saliency, len(inputs[0]), (height, width), seed)
    sigma = blur_sigma(height, width)
    deletion = check_fill(deletion_value, "deletion_value", inputs, layout, sigma)
    insertion = check_fill(insertion_start, "insertion_start", inputs, layout, sigma)
    selected = output_selector(output, output_index)
    if isinstance(saliency, Attribution):
        if target is None:
            target = saliency.explained if saliency.explained is not None else saliency.target
        selected = saliency.output_index if selected is None else selected
        multilabel = saliency.multilabel if multilabel is None else multilabel
    # 'auto' lets the scheduler fit more forward passes in a chunk; an int is images per model call.
    cost = FORWARD_COST if batch_size == "auto" else 1.0
    method = PerturbationCurves(ranking(maps), steps, deletion, insertion, score, cost, multilabel)
    fractions = pixels_replaced(steps, height * width) / (height * width)
    blurred = sigma if "blur" in (_text(deletion_value), _text(insertion_start)) else None

    def curves_of(result: Attribution) -> Curves:
        values = np.asarray(result.raw, np.float64)
        seen = result.extras["seen"]
        values = np.where(seen, values, np.nan).transpose(0, 2, 1)  # (curve, B, step)
        return Curves(fractions, values[DELETION], values[INSERTION], result.target, score, source,
                      seed if source == "random" else None, blurred, result.complete, result.passes_done,
                      result.passes_total, time.perf_counter() - started)

    report = None if progress is None else (lambda done, total, partial: progress(done, total, curves_of(partial)))
    request = Request(method, {}, batch_size=batch_size, seed=0, progress=report, cancel=cancel)

    def pick_targets(clean: list[np.ndarray], names: list | None = None) -> dict[int, Any]:
        return {choose_output(clean, selected, names): target}

    return curves_of(run(backend, inputs, layout, several, request, pick_targets, started))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def image_size(x: np.ndarray, channels_last: bool) -> tuple[int, int]:
    return (x.shape[1], x.shape[2]) if channels_last else (x.shape[2], x.shape[3])


def check_steps(steps: Any, x: np.ndarray, channels_last: bool) -> int:
    pixels = int(np.prod(image_size(x, channels_last)))
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= pixels:
        raise SaliencyError(f"steps must be an integer from 1 to the number of pixels ({pixels}); got {steps!r}.")
    return int(steps)


def saliency_maps(saliency: Any, batch: int, size: tuple[int, int], seed: int) -> tuple[np.ndarray, str]:
    """(B, H, W) maps whose order ranks the pixels, and where they came from."""
    if isinstance(saliency, str):
        if saliency != "random":
            raise SaliencyError(f"saliency must be an Attribution, an array (B, H, W) or 'random'; got {saliency!r}.")
        maps = np.stack([np.random.default_rng([int(seed), image]).random(size) for image in range(batch)])
        return maps, "random"
    if isinstance(saliency, Attribution):
        maps, source = _attribution_maps(saliency, size), saliency.method or "attribution"
    else:
        maps, source = to_numpy(saliency), "array"
        if maps.ndim != 3:
            raise SaliencyError(
                f"The saliency map has shape {maps.shape}; pass one (B, H, W) map per image, or the "
                "Attribution itself (e.g. sw.attribute(...)), which knows its layout."
            )
        maps = maps.astype(np.float64)
    if maps.shape != (batch, *size):
        raise SaliencyError(
            f"The saliency maps have shape {maps.shape} but the images need {(batch, *size)} (B, H, W): "
            "pass the maps of these images."
        )
    if not np.isfinite(maps).all():
        raise SaliencyError("The saliency map contains NaN or infinite values; a ranking needs finite scores.")
    return maps, source


def _attribution_maps(a: Attribution, size: tuple[int, int]) -> np.ndarray:
    if not a.complete:
        raise SaliencyError("The Attribution is a progress preview; pass the finished result.")
    if isinstance(a.raw, tuple):
        raise SaliencyError("The Attribution is of a multi-input model; deletion_insertion ranks one image input.")
    raw = np.asarray(a.raw, np.float64)
    if a.kind == "input":
        if raw.ndim != 4:
            raise SaliencyError(f"The Attribution's map has shape {raw.shape}; deletion_insertion needs images.")
        return np.abs(raw).sum(axis=-1 if a.channels_last else 1)
    if a.kind == "layer":
        return resize_bilinear(raw, a.input_size or size).astype(np.float64)
    return raw


def ranking(maps: np.ndarray) -> np.ndarray:
    """Position of each pixel in the order (0 = replaced first): highest first, ties in row-major order."""
    batch = len(maps)
    flat = maps.reshape(batch, -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.arange(flat.shape[1])[None].repeat(batch, 0), axis=1)
    return positions.reshape(maps.shape)


def check_fill(value: Any, name: str, inputs: list[np.ndarray], channels_last: bool, sigma: float) -> Fill:
    """A number, 'blur' or an array like the images (or one image)."""
    if isinstance(value, str):
        if value != "blur":
            raise SaliencyError(f"Unknown {name} {value!r}: use 'blur', a number or an array shaped like x.")
        return Fill("blur", sigma)
    if isinstance(value, (bool, np.bool_)):
        raise SaliencyError(f"{name} must be 'blur', a number or an array; got {value!r}.")
    if np.isscalar(value):
        if not np.isfinite(float(value)):
            raise SaliencyError(f"{name} must be finite; got {value!r}.")
        return Fill(float(value))
    try:
        (array,) = prepare_baselines(value, inputs, channels_last)
    except SaliencyError as exc:
        raise SaliencyError(str(exc).replace("The baseline", f"{name}")) from exc
    return Fill(array)


__all__ = ["BLUR_SIGMA_SHARE", "Curves", "area_under", "blur_sigma", "deletion_insertion", "ranking"]
