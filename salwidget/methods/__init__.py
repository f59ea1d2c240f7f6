"""Saliency methods, one small module per family, and the registry that names them.

Every module in this package is imported here, and each registers its methods
with :func:`~salwidget.methods.base.register`: adding a method is one new file
(plus its test). Everything else asks the registry: :func:`get_method`,
:func:`all_methods`.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Method, MethodOutput, Option, RunContext, Stage, all_methods, get_method, layer_methods, register

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

# The four gradient methods of the reference design (FastEstimator's SaliencyNet).
CLASSIC = ("vanilla", "smoothgrad", "integrated", "smooth_integrated")

__all__ = ["CLASSIC", "Method", "MethodOutput", "Option", "RunContext", "Stage", "all_methods", "get_method", "layer_methods", "register"]
