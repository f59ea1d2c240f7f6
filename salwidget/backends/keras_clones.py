"""Functional rebuilds of a Keras model over the user's own layers (nothing copied, nothing written).

:func:`as_functional` sees a Sequential model as the functional model over its
layers (``clone_model``'s ``call_function`` takes functional models only);
:func:`outputs_with_replaced_layer` runs a model with one layer's output
replaced (AblationCAM's ablated channels) through a spliced twin built once
per model and layer, whose splice calls this thread's replacement;
:func:`randomized_clone` copies a model with some layers drawn afresh (the
sanity check's randomised model).
"""

from __future__ import annotations

import threading
import weakref
from typing import Sequence

from ..errors import SaliencyError

_LOCAL = threading.local()  # the replacement of this thread's current call
_SPLICED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def as_functional(model):
    """``model`` itself, or for a Sequential model the functional model over the same layers.

    Parameters
    ----------
    model : keras.Model
        A functional or built Sequential model.

    Returns
    -------
    keras.Model
        A functional model sharing ``model``'s layers and variables.
    """
    import keras

    if isinstance(model, keras.Sequential):
        try:
            return keras.Model(model.inputs, model.outputs, name=model.name)
        except (AttributeError, ValueError) as exc:
            raise SaliencyError(f"This Sequential model cannot be rebuilt layer by layer ({exc}); build it with "
                                "keras.Input first.") from exc
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs"):
        raise SaliencyError(f"This needs a functional or Sequential Keras model; got a {type(model).__name__}.")
    return model


def _splice_layer():
    import keras

    class Splice(keras.layers.Layer):
        """Its input, or this thread's replacement of it while :func:`outputs_with_replaced_layer` runs."""

        def call(self, x):
            replace = getattr(_LOCAL, "replace", None)
            return x if replace is None else replace(x)

        def compute_output_spec(self, x):
            return keras.KerasTensor(x.shape, x.dtype)

    return Splice


def _spliced(model, layer: str):
    import keras

    with _LOCK:
        per_model = _SPLICED.setdefault(model, {})
        if layer not in per_model:
            splice = _splice_layer()(name=f"{layer}_replaced")

            def call(operation, *args, **kwargs):
                out = operation(*args, **kwargs)
                return splice(out) if operation.name == layer else out

            try:
                per_model[layer] = keras.models.clone_model(as_functional(model), clone_function=lambda op: op,
                                                            call_function=call)
            except SaliencyError:
                raise
            except Exception as exc:
                raise SaliencyError(f"Cannot splice into layer {layer!r} of this model ({exc}).") from exc
        return per_model[layer]


def outputs_with_replaced_layer(model, layer: str, replace, run):
    """``run(spliced)``: the model's outputs with ``layer``'s output replaced by ``replace(output)``.

    Parameters
    ----------
    model : keras.Model
        The model (functional or Sequential; its layers are shared, not copied).
    layer : str
        The name of the layer whose output is replaced.
    replace : callable
        ``replace(output) -> tensor`` of the same shape, called eagerly on every call of ``run``'s model.
    run : callable
        Calls the model it is given on the inputs and returns its outputs.

    Returns
    -------
    Whatever ``run`` returns.
    """
    spliced = _spliced(model, layer)
    previous = getattr(_LOCAL, "replace", None)
    _LOCAL.replace = replace
    try:
        return run(spliced)
    finally:
        _LOCAL.replace = previous


def randomized_clone(model, names: Sequence[str], seed: int):
    """A clone of ``model`` with the user's weights, except that the variables of
    layers ``names`` are drawn afresh from their own initialisers (seeded).

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model (its own variables are only read).
    names : sequence of str
        The layers to randomise (the model-randomisation sanity check).
    seed : int
        Seeds each chosen layer's initialiser (``seed * 1000 + its position``).

    Returns
    -------
    keras.Model
        The clone.
    """
    import keras

    try:
        clone = keras.models.clone_model(model)
    except Exception as exc:
        raise SaliencyError(
            f"Cannot copy this {type(model).__name__} to randomise its layers ({exc}); the sanity check "
            "needs a functional or Sequential Keras model."
        ) from exc
    chosen = set(names)
    for number, (original, copied) in enumerate(zip(model.layers, clone.layers)):
        copied.set_weights(original.get_weights())
        if original.name not in chosen:
            continue
        for attribute in dir(copied):
            if not attribute.endswith("_initializer"):
                continue
            variable = getattr(copied, attribute[: -len("_initializer")], None)
            initializer = getattr(copied, attribute)
            if variable is None or not hasattr(variable, "assign") or initializer is None:
                continue
            config = {**initializer.get_config()}
            if "seed" in config:
                config["seed"] = seed * 1000 + number
            fresh = type(initializer).from_config(config)
            variable.assign(fresh(tuple(variable.shape), dtype=variable.dtype))
    return clone
