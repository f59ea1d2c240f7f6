"""The model-randomisation sanity check (Adebayo et al. 2018): does a map depend on the weights?

The map of the trained model is compared with maps of copies whose weights
are re-drawn from their initialisers, layer by layer from the output end:
cumulatively (``'cascading'``) or one layer at a time (``'independent'``). A
method whose maps stay alike while the model forgets everything it learned
explains the image, not the model.

Each randomised map is one computation of the engine (``Request.randomize``):
the backend re-draws the named layers' weights on a copy (torch: fresh tensors
on the shadow; Keras: a clone), so the user's model is never changed. The
method's own random draws (noise, baselines) use the same seed in every
computation, and the target stays the one explained on the trained model, so
only the weights differ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..attribution import Attribution
from ..backends import get_backend
from ..engine import Request, run
from ..errors import AttributionCancelled, SaliencyError
from ..inputs import prepare_inputs
from ..outputs import choose_output, output_selector
from ..methods import get_method
from ..randomness import derive_key
from ..drawing.masks import to_diverging, to_grayscale
from .similarity import spearman, ssim

ORDERS = ("cascading", "independent")
SIMILARITIES = ("spearman", "spearman_abs", "ssim")
# A stream of our own for the seed of the re-drawn weights (randomness.py's are < 10).
_WEIGHTS_STREAM = 10

SanityProgress = Callable[[int, int, "SanityCheck"], None]


@dataclass(eq=False)
class SanityCheck:
    """The result of :func:`sanity_check`.

    Attributes
    ----------
    layers : tuple of str
        The layers with weights, from the output layer down: entry ``l`` of
        ``similarity`` and ``maps`` randomised down to (``'cascading'``) or only
        (``'independent'``) this layer.
    similarity : numpy.ndarray of shape (B, L)
        Similarity of each image's map on the trained model and on the
        randomised one (NaN where a map is constant, and for layers not yet
        computed in a progress preview).
    maps : numpy.ndarray of shape (L, B, H, W)
        Greyscale masks (:func:`salwidget.to_grayscale`) of the randomised models' maps.
    original : Attribution
        The map of the trained model (a preview of it while it is computed).
    original_mask : numpy.ndarray of shape (B, H, W)
        Its greyscale mask (None until it is complete).
    order, measure, method : str
        The randomisation order, the similarity measure and the method checked.
    target : numpy.ndarray of shape (B,)
        The classes explained, in every computation.
    seed : int
    complete : bool
        False for a progress preview.
    layers_done : int
    seconds : float
    """

    layers: tuple
    similarity: np.ndarray
    maps: np.ndarray
    original: Attribution
    original_mask: np.ndarray
    order: str
    measure: str
    method: str
    target: np.ndarray
    seed: int
    complete: bool = True
    layers_done: int = 0
    seconds: float = 0.0


def compare(measure: str, original: Attribution, randomised: Attribution) -> np.ndarray:
    """Per-image similarity of two Attributions' maps under ``measure``.

    ``'spearman'``: rank correlation of the maps as they are shown, the greyscale
    masks (for a signed method, the signed maps of :func:`salwidget.to_diverging`,
    Adebayo et al.'s "no absolute value" variant); ``'spearman_abs'``: rank
    correlation of the greyscale masks (absolute values) always; ``'ssim'``:
    structural similarity of the greyscale masks.
    """
    if measure == "spearman" and original.signed:
        return spearman(to_diverging(original), to_diverging(randomised))
    if measure in ("spearman", "spearman_abs"):
        return spearman(to_grayscale(original), to_grayscale(randomised))
    return ssim(to_grayscale(original), to_grayscale(randomised))


def sanity_check(
    model: Any,
    x: Any,
    method: str,
    *,
    target: Any = None,
    order: str = "cascading",
    similarity: str = "spearman",
    seed: int = 0,
    layers: Sequence[str] | None = None,
    batch_size: int | str = "auto",
    progress: SanityProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    channels_last: bool | None = None,
    output_index: int | None = None,
    framework: str | None = None,
    rng: str = "device",
    layer: Any = None,
    output: int | str | None = None,
    **method_options: Any,
) -> SanityCheck:
    """How much a method's maps change as the model's weights are randomised.

    Parameters
    ----------
    model : torch.nn.Module or Keras model (functional or Sequential)
        Never changed: randomised weights live on a copy.
    x : array or tensor
        A batch of images, as for :func:`salwidget.attribute`.
    method : str
        A registered method, e.g. ``'vanilla'``.
    target : None, int, sequence of int, a ``sw.targets`` target or a callable
        What is explained (None: the trained model's prediction), held fixed
        for every randomised model (see :func:`salwidget.attribute`).
    order : {'cascading', 'independent'}, default 'cascading'
        Randomise from the output layer down, cumulatively; or one layer at a time.
    similarity : {'spearman', 'spearman_abs', 'ssim'}, default 'spearman'
        ``'spearman'``: rank correlation of the greyscale masks (of the signed
        maps for a signed method such as ``'gradient_x_input'``);
        ``'spearman_abs'``: of the greyscale masks always; ``'ssim'``: SSIM of
        the greyscale masks (7x7 window, as scikit-image's default, in numpy).
    seed : int, default 0
        Seeds the re-drawn weights and the method's own random draws (the same
        draws on every model, so only the weights differ). Both use a number
        derived from it, so a model initialised under ``torch.manual_seed(seed)``
        does not get its own weights back.
    layers : sequence of str, optional
        Report only these layers (names from the model's layers with weights);
        ``'cascading'`` still randomises every weighted layer above each.
        Default: every layer with weights.
    batch_size, progress, cancel
        ``progress(done, total, partial)`` is called after each chunk with
        passes done over all computations (the trained model's map and one per
        layer) and a partial :class:`SanityCheck`; ``cancel()`` is checked
        between chunks and raises :class:`~salwidget.AttributionCancelled`.
    channels_last, output_index, output, framework, rng, layer, **method_options
        As for :func:`salwidget.attribute` (e.g. ``nsamples=``).

    Returns
    -------
    SanityCheck
    """
    started = time.perf_counter()
    if order not in ORDERS:
        raise SaliencyError(f"Unknown order {order!r}: use 'cascading' (top down, cumulative) or 'independent'.")
    if similarity not in SIMILARITIES:
        raise SaliencyError(f"Unknown similarity {similarity!r}: use one of {', '.join(map(repr, SIMILARITIES))}.")
    backend = get_backend(model, framework)
    chosen = get_method(method)
    options = chosen.resolve(method_options)
    selected = output_selector(output, output_index)
    inputs, layout, several = prepare_inputs(x, channels_last, backend.default_channels_last)
    if several or inputs[0].ndim != 4:
        raise SaliencyError("sanity_check needs a single batch of images (B, C, H, W) or (B, H, W, C).")
    batch, (height, width) = len(inputs[0]), (inputs[0].shape[1:3] if layout else inputs[0].shape[2:])
    if similarity == "ssim" and min(height, width) < 7:
        raise SaliencyError("similarity='ssim' needs images of at least 7x7 pixels; use 'spearman'.")
    weighted = list(backend.weighted_layers())
    reported = _reported_layers(weighted, layers)
    per_map = chosen.passes(options, batch)
    total = per_map * (1 + len(reported))
    # The backend seeds the framework's generator with this number: derived from the
    # user's seed, so that a model built under torch.manual_seed(seed) does not get
    # its own weights back as the "random" ones.
    drawn = derive_key(int(seed), _WEIGHTS_STREAM, 0, 0) % 2**31
    result = SanityCheck(
        tuple(reported), np.full((batch, len(reported)), np.nan),
        np.full((len(reported), batch, height, width), np.nan, np.float32),
        None, None, order, similarity, chosen.name, None, int(seed), complete=False,
    )

    def compute(randomize: tuple, targets: Any, offset: int) -> Attribution:
        def report(done: int, _total: int, partial: Attribution) -> None:
            if result.original is None or not result.original.complete:  # still the trained model's map
                result.original, result.target = partial, partial.target
            result.seconds = time.perf_counter() - started
            # Rows of maps already filled never change again: the preview shares them.
            progress(offset + done, total, replace(result, similarity=result.similarity.copy()))

        request = Request(chosen, options, batch_size, drawn, rng, layer, None, randomize,
                          None if progress is None else report, cancel)
        return run(backend, inputs, layout, several, request,
                   lambda clean, names=None: {choose_output(clean, selected, names): targets})

    result.original = compute((), target, 0)
    result.original_mask, result.target = to_grayscale(result.original), result.original.target
    explained = result.original.explained  # concrete: the prediction of the trained model, held fixed
    for index, name in enumerate(reported):
        if cancel is not None and cancel():
            raise AttributionCancelled("Sanity check cancelled by the caller.")
        depth = weighted.index(name)
        randomize = tuple(weighted[: depth + 1]) if order == "cascading" else (name,)
        randomised = compute(randomize, explained, per_map * (1 + index))
        result.maps[index] = to_grayscale(randomised)
        result.similarity[:, index] = compare(similarity, result.original, randomised)
        result.layers_done = index + 1
    result.complete = True
    result.seconds = time.perf_counter() - started
    return result


def _reported_layers(weighted: list[str], layers: Sequence[str] | None) -> list[str]:
    if not weighted:
        raise SaliencyError("The model has no layers with weights to randomise.")
    if layers is None:
        return weighted
    if isinstance(layers, str):
        layers = [layers]
    unknown = [name for name in layers if name not in weighted]
    if unknown:
        raise SaliencyError(
            f"{unknown[0]!r} is not a layer with weights of this model; choose from {', '.join(map(repr, weighted))}."
        )
    chosen = set(layers)
    return [name for name in weighted if name in chosen]  # output end first, as weighted_layers gives them


__all__ = ["ORDERS", "SIMILARITIES", "SanityCheck", "compare", "sanity_check"]
