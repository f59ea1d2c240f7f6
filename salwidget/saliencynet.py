"""``SaliencyNet``: the seed's (FastEstimator's) batch-dict API over the salwidget core.

Semantics differ from the seed where the seed is wrong (see the README):
IG divides by the number of steps, user targets hold for every sample, noise
and baselines are per image, each input is multiplied by its own
``x - baseline``, and flat maps visualise as zeros.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from .attribution import Attribution
from .backends import get_backend
from .engine import Request, run
from .errors import SaliencyError
from .inputs import prepare_inputs, to_numpy
from .methods import get_method
from .drawing.masks import to_grayscale

TARGET_KEY_PREFIX = "SaliencyNet_Target_Index_"
PAIRINGS = ("paired", "sum")


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class SaliencyNet:
    """Generate saliency masks from batch dictionaries, as FastEstimator's ``SaliencyNet``.

    Parameters
    ----------
    model : torch.nn.Module or Keras model
        Called as ``model(*inputs)`` (torch) or ``model(inputs, training=False)`` (Keras).
    model_inputs : str or list of str
        Batch keys of the model's inputs, in the order the model takes them.
    model_outputs : str or list of str
        Names for the model's outputs, in the order the model returns them. The
        class used for each output is written under this key.
    outputs : str or list of str, default "saliency"
        Keys for the masks. They pair with ``model_inputs``: ``outputs[i]`` is
        the mask of ``model_inputs[i]``.
    pairing : {'paired', 'sum'}, default 'paired'
        With several model outputs, ``'paired'`` differentiates output ``i``'s
        target score with respect to input ``i``, as FastEstimator 1.7's
        gradient op does (one output serves every input); ``'sum'``
        differentiates the sum of every output's target score for every input.
    channels_last : bool, optional
        Layout of image inputs; defaults to the framework's.
    batch_size : 'auto' or int
        Passes per chunk (see :func:`salwidget.attribute`).
    percentile : float, default 99
        Clip percentile of the greyscale masks.

    Targets come from, in order: the ``targets=`` keyword (a dict keyed by
    output name, or one value when there is one output), the batch key
    ``SaliencyNet_Target_Index_<output name>``, else the clean argmax.
    """

    def __init__(
        self,
        model: Any,
        model_inputs: str | Sequence[str],
        model_outputs: str | Sequence[str],
        outputs: str | Sequence[str] = "saliency",
        *,
        channels_last: bool | None = None,
        batch_size: int | str = "auto",
        percentile: float = 99,
        pairing: str = "paired",
    ):
        self.model = model
        self.model_inputs = _as_list(model_inputs)
        self.model_outputs = _as_list(model_outputs)
        self.outputs = _as_list(outputs)
        if len(self.outputs) != len(self.model_inputs):
            raise SaliencyError(
                f"outputs names {len(self.outputs)} mask key(s) for {len(self.model_inputs)} model "
                "input(s); give one mask key per input (outputs[i] is the mask of model_inputs[i])."
            )
        if pairing not in PAIRINGS:
            raise SaliencyError(f"pairing must be one of {PAIRINGS}; got {pairing!r}.")
        if pairing == "paired" and 1 < len(self.model_outputs) < len(self.model_inputs):
            raise SaliencyError(
                f"pairing='paired' pairs model input i with model output i, but there are "
                f"{len(self.model_inputs)} inputs and only {len(self.model_outputs)} outputs. Name one output per "
                "input, or pass pairing='sum' to differentiate the sum of every output's score."
            )
        self.pairing = pairing
        self.gather_keys = [TARGET_KEY_PREFIX + key for key in self.model_outputs]
        self.channels_last = channels_last
        self.batch_size = batch_size
        self.percentile = percentile

    # --- the seed's three calls -------------------------------------------
    def get_masks(self, batch: Mapping[str, Any], *, targets: Any = None) -> dict[str, Any]:
        """Vanilla-gradient greyscale masks for ``batch``."""
        return self._masks(batch, "vanilla", targets=targets)

    def get_smoothed_masks(
        self,
        batch: Mapping[str, Any],
        stdev_spread: float = 0.15,
        nsamples: int = 25,
        nintegration: int | None = None,
        magnitude: bool = True,
        *,
        targets: Any = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """SmoothGrad masks; with ``nintegration``, SmoothGrad over IG maps (SmoothGrad+IG)."""
        method = "smoothgrad" if not nintegration else "smooth_integrated"
        return self._masks(
            batch, method, targets=targets, nsamples=nsamples, stdev_spread=stdev_spread,
            nintegration=nintegration, magnitude=magnitude, seed=seed,
        )

    def get_integrated_masks(
        self,
        batch: Mapping[str, Any],
        nsamples: int = 25,
        *,
        targets: Any = None,
        baseline: Any = "uniform",
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Integrated Gradients masks with ``nsamples`` path steps."""
        return self._masks(batch, "integrated", targets=targets, nsamples=nsamples, baseline=baseline, seed=seed)

    # --- the general call ---------------------------------------------------
    def attribute(self, batch: Mapping[str, Any], method: str, *, targets: Any = None, seed: int | None = None,
                  **options) -> Attribution:
        """The raw :class:`~salwidget.Attribution` behind the masks (``raw`` is a tuple
        when there are several inputs, an array for one).

        ``options`` are the method's (see :func:`salwidget.attribute`); unknown
        ones are an error.
        """
        missing = [key for key in self.model_inputs if key not in batch]
        if missing:
            raise SaliencyError(
                f"The batch has no key {missing[0]!r} (model_inputs); it has {sorted(batch)}."
            )
        started = time.perf_counter()
        backend = get_backend(self.model)
        chosen = get_method(method)
        resolved = chosen.resolve({k: v for k, v in options.items() if v is not None})
        inputs, layout, several = prepare_inputs(
            [batch[key] for key in self.model_inputs], self.channels_last, backend.default_channels_last
        )
        wanted = self._targets(batch, targets)
        outputs = len(self.model_outputs)
        pairing = None
        if self.pairing == "paired" and outputs > 1:
            pairing = [(index,) for index in range(len(inputs))]

        def pick_targets(clean: list[np.ndarray], names: list | None = None) -> dict[int, Any]:
            if len(clean) != outputs:
                raise SaliencyError(
                    f"The model returns {len(clean)} output(s) but model_outputs names "
                    f"{outputs}: {self.model_outputs}."
                )
            return wanted

        request = Request(chosen, resolved, self.batch_size, seed, pairing=pairing)
        return run(backend, inputs, layout, len(inputs) > 1, request, pick_targets, started)

    def _targets(self, batch: Mapping[str, Any], targets: Any) -> dict[int, Any]:
        if targets is not None and not isinstance(targets, Mapping):
            if len(self.model_outputs) != 1:
                raise SaliencyError(
                    f"The model has {len(self.model_outputs)} outputs; pass targets as a dict "
                    f"keyed by {self.model_outputs}."
                )
            targets = {self.model_outputs[0]: targets}
        targets = dict(targets or {})
        unknown = set(targets) - set(self.model_outputs)
        if unknown:
            raise SaliencyError(f"targets names unknown output(s) {sorted(unknown)}; outputs are {self.model_outputs}.")
        chosen = {}
        for index, (name, key) in enumerate(zip(self.model_outputs, self.gather_keys)):
            value = targets.get(name, batch.get(key))
            if value is not None and np.size(to_numpy(value)) == 0:  # the seed's "no target" marker
                value = None
            chosen[index] = value
        return chosen

    def _masks(self, batch: Mapping[str, Any], method: str, *, targets: Any, **options) -> dict[str, Any]:
        result = self.attribute(batch, method, targets=targets, **options)
        response = dict(batch)
        for name, used in zip(self.model_outputs, result.targets):
            response[name] = used
        for index, key in enumerate(self.outputs):
            response[key] = to_grayscale(result, self.percentile, input_index=index)
        return response
