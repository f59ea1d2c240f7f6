"""The result of one attribution: raw maps plus everything needed to trust them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(eq=False)
class Attribution:
    """Raw saliency for a batch, as returned by :func:`salwidget.attribute`.

    Attributes
    ----------
    raw : numpy.ndarray or tuple of numpy.ndarray
        float32, before any visualisation. For gradient methods (``kind ==
        'input'``) the input's shape and layout (a tuple for several inputs);
        for CAMs (``kind == 'layer'``) ``(B, h, w)`` at the layer's resolution;
        for region methods (``kind == 'pixel'``) ``(B, H, W)``. A progress
        preview fetches it from the device when first read.
    target : numpy.ndarray of shape (B,)
        The class explained for each image (for ``Region(k, ...)`` the class
        ``k``, for ``Output(i)`` the index ``i``; -1 for a similarity or a
        function target).
    explained : salwidget.targets.Target or None
        What was explained, concretely (a prediction as ``Class(classes)``):
        :func:`salwidget.deletion_insertion` scores the same target.
    scores : numpy.ndarray
        The explained output on the clean input: (B, num_classes) class
        scores, or the output's own shape (a dense map, a regression head, an
        embedding).
    output_index, output_name : int, str or None
        Which model output was explained (its name when it has one).
    multilabel : bool
        Whether the (B, K) head was taken as independent sigmoids (given or
        detected); see :attr:`probabilities`.
    delta : numpy.ndarray of shape (B,) or None
        Integrated Gradients completeness gap ``sum(raw) - (f(x) - f(baseline))``
        (averaged over noise samples for SmoothGrad+IG without magnitude);
        None for the other methods.
    method, label : str
        The method's registry name and display label.
    signed : bool
        Whether the sign of ``raw`` carries meaning (show with ``to_diverging``).
    kind : {'input', 'layer', 'pixel'}
    layer : str or None
        The layer a CAM read.
    options : dict
        Every option of the method, defaults filled in.
    nsamples : int
        Noise samples (SmoothGrad, SmoothGrad+IG) or path steps (Integrated
        Gradients) actually included; fewer than asked while a progress
        preview is shown.
    nintegration : int or None
        The method's ``nintegration`` option (path steps per SmoothGrad+IG sample).
    seconds : float
        Wall time of the computation.
    """

    raw: Any = None
    target: np.ndarray | None = None
    scores: np.ndarray | None = None
    delta: np.ndarray | None = None
    method: str = ""
    nsamples: int = 0
    nintegration: int | None = None
    seconds: float = 0.0
    seed: int | None = None
    stdev_spread: float | None = None
    magnitude: bool | None = None
    baseline: str | None = None
    channels_last: bool = False
    framework: str = ""
    device: str = ""
    batch_size: int = 0
    passes_done: int = 0
    passes_total: int = 0
    complete: bool = True
    targets: tuple = ()
    label: str = ""
    signed: bool = False
    kind: str = "input"
    layer: str | None = None
    options: dict = field(default_factory=dict)
    input_size: tuple | None = None
    output_index: int = 0
    output_name: str | None = None
    explained: Any = None
    multilabel: bool = False
    extras: dict = field(default_factory=dict)
    _state: Any = field(default=None, repr=False)
    _fetch: Callable[[], Any] | None = field(default=None, repr=False)

    def __getattribute__(self, name: str):
        if name == "raw":
            fetch = object.__getattribute__(self, "_fetch")
            if fetch is not None:  # a preview: bring its maps from the device now
                object.__setattr__(self, "raw", fetch())
                object.__setattr__(self, "_fetch", None)
        return object.__getattribute__(self, name)

    @property
    def probabilities(self) -> np.ndarray | None:
        """Class probabilities of :attr:`scores` (B, K): sigmoids for a multi-label head, else a softmax;
        None for outputs that are not class scores."""
        if self.scores is None or np.ndim(self.scores) != 2:
            return None
        from .outputs import probabilities

        return probabilities(self.scores, self.multilabel)

    def labels_above(self, threshold: float = 0.5) -> list[np.ndarray]:
        """Per image, the labels whose probability is above ``threshold``, most probable first."""
        from .outputs import labels_above

        if self.scores is None or np.ndim(self.scores) != 2:
            raise ValueError("labels_above needs class scores (B, K); this output has another shape.")
        return labels_above(self.scores, threshold, self.multilabel)

    def grayscale(self, percentile: float = 99, input_index: int = 0) -> np.ndarray:
        """Greyscale masks (B, H, W) in [0, 1] at the input's size; see :func:`salwidget.to_grayscale`."""
        from .drawing.masks import to_grayscale

        return to_grayscale(self, percentile, input_index=input_index)

    def diverging(self, percentile: float = 99, input_index: int = 0) -> np.ndarray:
        """Signed masks (B, H, W) in [-1, 1]; see :func:`salwidget.to_diverging`."""
        from .drawing.masks import to_diverging

        return to_diverging(self, percentile, input_index=input_index)

    def raw_of(self, input_index: int = 0) -> np.ndarray:
        """The raw map of one input (``raw`` itself for a single input)."""
        return self.raw[input_index] if isinstance(self.raw, tuple) else self.raw
