"""``salwidget.widget.SaliencyWidget``: the Jupyter panel (implemented in :mod:`salwidget.panel`)."""

from .panel import SaliencyWidget

__all__ = ["SaliencyWidget"]
