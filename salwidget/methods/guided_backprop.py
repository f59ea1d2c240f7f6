"""Guided Backprop: the input gradient with every ReLU passing only positive gradients.

At a ReLU the ordinary backward pass keeps the incoming gradient where the
forward input was positive; Guided Backprop (Springenberg et al. 2015) also
drops the negative incoming gradients. ReLU6 (EfficientNet-Lite, MobileNet)
gets the same rule inside its linear range 0 < x < 6.

The model runs as a :class:`GuidedReLUs` variant, so the user's model never
changes:

- torch: a thread-local ``TorchFunctionMode`` entered around each model call
  reroutes ``torch.relu``, ``F.relu``, ``Tensor.relu`` (and their in-place
  forms), ``F.relu6`` and ``F.hardtanh(x, 0, max)`` to guided versions. An
  ``nn.ReLU``/``nn.ReLU6`` module calls those functions, so modules and
  functional calls are both covered (Captum patches modules only); other
  threads never see the mode.
- Keras: a clone whose ReLU layers and ``activation='relu'``/``'relu6'``
  layers have the guided gradient (``tf.custom_gradient``); layers without a
  ReLU are shared with the user's model, the others get copies of its weights
  at every call.

The map hardly changes when the upper layers' weights are randomised: it fails
the model-randomisation sanity check (Adebayo et al. 2018), and says so.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from ..errors import SaliencyError
from .base import register
from .sampling import SampledGradients, Sampling

_ONE = Sampling(groups=1, steps=1, alphas=np.ones(1), weights=np.ones(1))


# ---------------------------------------------------------------- torch
_torch_parts: dict = {}


def _torch_guided():
    """The guided autograd function and the function mode (built once, on first use)."""
    if _torch_parts:
        return _torch_parts["mode"]
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class GuidedClamp(torch.autograd.Function):
        """``clamp(x, 0, top)`` whose backward passes ``relu(grad)`` where ``0 < x < top``."""

        @staticmethod
        def forward(ctx, x, top):
            out = x.clamp(min=0) if top is None else x.clamp(0, top)
            # The output tells where the input was inside (0, top), and unlike
            # the input it is never written in place afterwards.
            ctx.save_for_backward(out)
            ctx.top = top
            return out

        @staticmethod
        def backward(ctx, grad):
            (out,) = ctx.saved_tensors
            inside = out > 0 if ctx.top is None else (out > 0) & (out < ctx.top)
            return grad.clamp(min=0) * inside, None

    relus = {torch.relu, F.relu, torch.Tensor.relu}
    relus_in_place = {torch.relu_, torch.Tensor.relu_}

    def clamp_top(func, args, kwargs):
        """None for a ReLU, 6 for ReLU6, max_val for hardtanh(x, 0, max_val); False for anything else."""
        if func in relus or func in relus_in_place:
            return None
        if func is F.relu6:
            return 6.0
        if func is F.hardtanh:
            low = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            high = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            return float(high) if low == 0 else False
        return False

    def in_place(func, args, kwargs) -> bool:
        if func in relus_in_place:
            return True
        if func is F.relu or func is F.relu6:
            return bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
        if func is F.hardtanh:
            return bool(kwargs.get("inplace", args[3] if len(args) > 3 else False))
        return False

    class GuidedReluMode(TorchFunctionMode):
        """Routes ReLU calls to :class:`GuidedClamp` while active (on this thread only)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            top = clamp_top(func, args, kwargs) if func in watched else False
            if top is False:
                return func(*args, **kwargs)
            x = args[0]
            out = GuidedClamp.apply(x, top)
            return x.copy_(out) if in_place(func, args, kwargs) else out

    watched = relus | relus_in_place | {F.relu6, F.hardtanh}
    _torch_parts["mode"] = GuidedReluMode
    return GuidedReluMode


# ---------------------------------------------------------------- Keras
_RELU_ACTIVATIONS = {"relu": None, "relu6": 6.0}


def _guided_activation(top: float | None):
    import tensorflow as tf

    @tf.custom_gradient
    def guided(x):
        out = tf.nn.relu(x) if top is None else tf.clip_by_value(x, 0.0, top)

        def grad(upstream):
            inside = x > 0 if top is None else tf.logical_and(x > 0, x < top)
            return tf.nn.relu(upstream) * tf.cast(inside, upstream.dtype)

        return out, grad

    guided.__name__ = "guided_relu" if top is None else "guided_relu6"
    return guided


def _keras_relu_top(layer) -> Any:
    """None or 6.0 for a plain ReLU(6) layer or a layer with activation relu/relu6; False otherwise."""
    import keras

    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        plain = not config.get("negative_slope") and not config.get("threshold")
        top = config.get("max_value")
        return (None if top is None else float(top)) if plain else False
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", activation)
    return _RELU_ACTIVATIONS.get(name, False) if isinstance(name, str) else False


class _GuidedClone:
    """A Keras model's guided twin and the (original, copy) layer pairs whose weights it copies."""

    def __init__(self, model):
        import keras

        self.pairs: list = []

        def clone(layer):
            top = _keras_relu_top(layer)
            if top is False:
                return layer  # shared: no ReLU inside, nothing to change
            if isinstance(layer, keras.layers.ReLU):
                return keras.layers.Activation(_guided_activation(top), name=layer.name)
            config = dict(layer.get_config(), activation=_guided_activation(top))
            copy = type(layer).from_config(config)
            self.pairs.append((layer, copy))
            return copy

        try:
            self.model = keras.models.clone_model(model, clone_function=clone, recursive=True)
        except Exception as exc:
            raise SaliencyError(
                f"Guided Backprop cannot rebuild this {type(model).__name__} with guided ReLUs ({exc}). It needs "
                "a functional or Sequential Keras model (keras.Model(inputs, outputs) or keras.Sequential)."
            ) from exc
        self.refresh()

    def refresh(self) -> None:
        """Copy the user's current weights into the layers that were rebuilt."""
        for original, copy in self.pairs:
            copy.set_weights(original.get_weights())


class GuidedReLUs:
    """The :class:`~salwidget.backends.base.ModelVariant` of Guided Backprop."""

    def __init__(self):
        self._clones: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    keeps_shadow = True  # torch() changes nothing: the cached shadow serves

    def torch(self, shadow):
        return shadow  # the function mode covers nn.ReLU modules too: they call F.relu

    @property
    def torch_context(self):
        return _torch_guided()

    def keras(self, model):
        if not hasattr(model, "layers"):
            raise SaliencyError(
                f"Guided Backprop in TensorFlow needs a Keras model with layers; got a {type(model).__name__}. "
                "Build it with keras.Model(inputs, outputs) or keras.Sequential."
            )
        # One clone per model, so TensorFlow's traced steps (keyed by the model in use) are reused.
        with self._lock:
            clone = self._clones.get(model)
            if clone is None:
                clone = self._clones[model] = _GuidedClone(model)
            else:
                clone.refresh()
        return clone.model


GUIDED_RELUS = GuidedReLUs()


class GuidedBackprop(SampledGradients):
    name = "guided_backprop"
    order = 62
    label = "Guided Backprop"
    summary = ("The gradient with ReLUs passing only positive gradients where their input is positive "
               "(Springenberg et al. 2015); it hardly depends on the upper layers' weights, so it fails the "
               "model-randomisation sanity check (Adebayo et al. 2018).")
    fails_sanity_check = True

    def sampling(self, options: dict) -> Sampling:
        return _ONE

    def variant(self, options: dict):
        return GUIDED_RELUS


GUIDED_BACKPROP = register(GuidedBackprop())
