"""The protocol every framework backend implements.

A backend speaks numpy at its edges: the engine hands it batches of float32
arrays and target indices; it runs the model on the model's own device and
returns gradients and scores as numpy. Everything else (noise, paths,
accumulation) is framework-neutral and lives in the engine, which is why the
same seed gives the same maps in torch and TensorFlow.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, Sequence

import numpy as np

from ..errors import NotDifferentiableError, SaliencyError


class Backend(Protocol):
    """What the engine needs from a framework.

    Layer-based methods (Grad-CAM) will add ``layer_gradients(inputs, targets, layer)``
    returning an inner layer's activations and gradients; nothing else changes.
    """

    framework: str
    device: str
    default_channels_last: bool

    def session(self) -> AbstractContextManager:
        """Put the model in inference mode for a computation; restore it afterwards."""

    def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the model without gradients; return every output as numpy."""

    def gradients(
        self, inputs: Sequence[np.ndarray], targets: dict[int, np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradient of ``sum_o sum_b out_o[b, targets[o][b]]`` with respect to each input.

        Returns ``(grads, outputs)``: one float32 gradient per input (same shape),
        and every model output as numpy. Targets are already checked by the engine.
        """


def not_differentiable(detail: str) -> NotDifferentiableError:
    """The error for a model whose output has no gradient with respect to its input."""
    return NotDifferentiableError(
        "The model's output is not differentiable with respect to its input "
        f"({detail}). Remove .detach(), .numpy(), torch.no_grad()/stop_gradient, argmax or "
        "integer casts between the input and the class scores."
    )


def model_call_error(exc: Exception, shapes: Sequence[tuple], layout_hint: str) -> SaliencyError:
    """The model's own exception, restated with the shapes it was given and a layout hint."""
    shown = ", ".join(str(tuple(shape)) for shape in shapes)
    return SaliencyError(
        f"The model raised {type(exc).__name__} on input of shape {shown}: {exc}. "
        f"Check the layout ({layout_hint}) and the input size."
    )
