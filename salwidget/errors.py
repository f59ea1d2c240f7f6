"""Exceptions raised by salwidget.

Every message names the problem and, where there is one, the fix.
"""

from __future__ import annotations


class SaliencyError(ValueError):
    """Bad input to salwidget: wrong shape, layout, dtype, target, key or method."""

    # Raised while TensorFlow traces a step (a target's checks), it reaches the caller as it is: AutoGraph
    # re-raises an error with this attribute unchanged instead of rewording it as a StagingError.
    ag_pass_through = True


class NotDifferentiableError(SaliencyError):
    """The model's output does not depend differentiably on its input."""


class AttributionCancelled(Exception):
    """Raised when the ``cancel`` hook of :func:`salwidget.attribute` returns True."""
