"""salwidget: interactive saliency maps for PyTorch and TensorFlow/Keras image models.

The core (:func:`attribute`, :class:`Attribution`, :func:`to_grayscale`,
:class:`SaliencyNet`) is plain numpy on the outside; the framework of the
model is imported only when a model of that kind arrives. The Jupyter panel is
:class:`SaliencyWidget`.
"""

from __future__ import annotations

from .attribution import Attribution
from .engine import attribute, predict
from .methods import CLASSIC, all_methods, get_method
from .errors import AttributionCancelled, NotDifferentiableError, SaliencyError
from . import outputs, targets  # what to explain (sw.targets.Region, ...) and what an output is
from .drawing.masks import to_diverging, to_grayscale

__version__ = "0.2.0"

# Every registered method's name, in the panel's order.
METHODS = tuple(method.name for method in all_methods())

__all__ = [
    "CLASSIC",
    "METHODS",
    "Attribution",
    "AttributionCancelled",
    "NotDifferentiableError",
    "SaliencyError",
    "SaliencyNet",
    "SaliencyWidget",
    "Scan",
    "all_methods",
    "attribute",
    "attribute_dataset",
    "deletion_insertion",
    "get_method",
    "outputs",
    "plot_grid",
    "predict",
    "sanity_check",
    "scan",
    "targets",
    "to_diverging",
    "to_grayscale",
]


def __getattr__(name: str):
    # The facade and the widget pull in more modules (ipywidgets, matplotlib):
    # load them on first use so that `import salwidget` stays light.
    if name == "SaliencyNet":
        from .saliencynet import SaliencyNet

        return SaliencyNet
    if name == "SaliencyWidget":
        from .panel.widget import SaliencyWidget

        return SaliencyWidget
    if name in ("scan", "Scan", "attribute_dataset"):  # datasets: pandas, pyarrow and zarr on first use
        from . import dataset

        return getattr(dataset, name)
    if name == "plot_grid":  # matplotlib, on first use
        from .drawing.plot import plot_grid

        return plot_grid
    if name in ("deletion_insertion", "sanity_check"):  # evaluation: how much to trust a map
        from . import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'salwidget' has no attribute {name!r}")
