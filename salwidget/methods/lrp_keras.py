"""Layer-wise Relevance Propagation for Keras: :mod:`~salwidget.methods.lrp`'s rules on a rebuilt clone.

The same rules, composites and canonizers as the torch implementation (see
:mod:`salwidget.methods.lrp` for the formulas), on a functional clone of the
user's model built with ``keras.models.clone_model(..., call_function=...)``
(a Sequential model is first seen as the functional model over its layers).
Every layer call of the clone is replaced as follows:

=================================  =============================================
Conv1D/2D/3D, Dense                the composite's rule on the linear part
                                   (``tf.custom_gradient``); a built-in
                                   activation passes relevance
BatchNormalization                 merged into the Conv/Dense whose output it
                                   alone reads (that layer without activation)
Add                                relevance split in proportion to each term
average pooling (also global)      ``norm``
activations (Activation, ReLU,     ``pass``
LeakyReLU, ELU, PReLU)
max pooling, Flatten, Reshape,     their gradient
Permute, padding, cropping,
dropout, Concatenate, Identity
=================================  =============================================

Anything else (LayerNormalization, attention, Softmax, a transposed or
depthwise convolution, a nested model, a BatchNorm that cannot be merged) is
refused with a :class:`~salwidget.errors.SaliencyError` naming the layer and
its type. The clone reads the user's variables on every call (merged weights
are computed in the pass), so it never goes stale and never writes into them.
Each output is wrapped so that the relevance starts at the output times the
incoming one-hot: the target's score, as in torch.
"""

from __future__ import annotations

import threading
import weakref

from ..backends.keras_clones import as_functional
from ..errors import SaliencyError

STABILIZER = 1e-6
GAMMA = 0.25
_ELEMENTWISE = ("linear", "relu", "relu6", "sigmoid", "tanh", "softplus", "softsign", "elu", "selu", "gelu", "silu",
                "swish", "leaky_relu", "hard_sigmoid", "hard_silu", "hard_swish", "mish", "celu", "exponential")
_COVERED = ("Conv1D/2D/3D, Dense, BatchNormalization after one of them, Add, average and max pooling, elementwise "
            "activations, Flatten, Reshape, Permute, padding, cropping, dropout, Concatenate and Identity")


# ----------------------------------------------------------------- rules (tensors in, relevance out)
def _stab(z):
    import tensorflow as tf

    return z + (tf.cast(tf.equal(z, 0), z.dtype) + tf.sign(z)) * STABILIZER


def _vjp(function, inputs, output_gradients):
    """Gradients of ``function(*inputs)`` (one tensor or a list) w.r.t. ``inputs`` weighted by ``output_gradients``."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        for t in inputs:
            tape.watch(t)
        outputs = function(*inputs)
    return tape.gradient(outputs, inputs, output_gradients=output_gradients)


def _pos(t):
    import tensorflow as tf

    return tf.maximum(t, tf.zeros_like(t))


def _neg(t):
    import tensorflow as tf

    return tf.minimum(t, tf.zeros_like(t))


def rule_epsilon(linear, x, w, b, relevance):
    """The epsilon rule, ``R_in = x * d/dx [z . R / stab(z)]``.

    Parameters
    ----------
    linear : callable
        ``linear(x, w, b)``: the layer's linear part (``b`` may be None).
    x : tf.Tensor
        The layer's input.
    w, b : tf.Tensor
        Its kernel and bias (BatchNorm merged; ``b`` None without bias).
    relevance : tf.Tensor
        The relevance of its output (shaped like it).

    Returns
    -------
    tf.Tensor
        The relevance of ``x``. Every rule below takes and returns the same.
    """
    (g,) = _vjp(lambda v: linear(v, w, b), [x], relevance / _stab(linear(x, w, b)))
    return x * g


def _without_negative_part(x, full, positive_only):
    """``positive_only()`` when ``x`` has no negative part (after a ReLU: the terms on ``x-`` are exactly zero,
    the same sums with half the convolutions), else ``full()``; decided in the graph (``tf.cond``: no host
    read), as the torch rules skip those terms."""
    import tensorflow as tf

    return tf.cond(tf.reduce_any(x < 0), full, positive_only)


def _signed(linear, x, w, b, weight_positive: bool, relevance):
    """One half of z+ / alpha-beta: ``f(x+; W+-, b+-) + f(x-; W-+, 0)`` as the rule's denominator."""
    first_w, second_w = (_pos(w), _neg(w)) if weight_positive else (_neg(w), _pos(w))
    first_b = None if b is None else (_pos(b) if weight_positive else _neg(b))

    def full():
        inputs = [_pos(x), _neg(x)]

        def both(p, n):
            return [linear(p, first_w, first_b), linear(n, second_w, None)]

        z = both(*inputs)
        scaled = relevance / _stab(z[0] + z[1])
        g = _vjp(both, inputs, [scaled, scaled])
        return inputs[0] * g[0] + inputs[1] * g[1]

    def positive_only():
        positive = _pos(x)
        (g,) = _vjp(lambda p: linear(p, first_w, first_b), [positive],
                    relevance / _stab(linear(positive, first_w, first_b)))
        return positive * g

    return _without_negative_part(x, full, positive_only)


def rule_zplus(linear, x, w, b, relevance):
    """z+: ``f(x+; W+, b+) + f(x-; W-, 0)`` as the denominator (see :func:`rule_epsilon` for the arguments)."""
    return _signed(linear, x, w, b, True, relevance)


def rule_alpha2_beta1(linear, x, w, b, relevance, alpha=2.0, beta=1.0):
    """``alpha * (positive part) - beta * (negative part)``, each as z+ (arguments: :func:`rule_epsilon`)."""
    return alpha * _signed(linear, x, w, b, True, relevance) - beta * _signed(linear, x, w, b, False, relevance)


def rule_gamma(linear, x, w, b, relevance, gamma=GAMMA):
    """``W + gamma W+`` where ``z > 0``, ``W + gamma W-`` where ``z < 0`` (arguments: :func:`rule_epsilon`)."""
    import tensorflow as tf

    up, down = w + gamma * _pos(w), w + gamma * _neg(w)
    b_up = None if b is None else b + gamma * _pos(b)
    b_down = None if b is None else b + gamma * _neg(b)
    plain = linear(x, w, b)
    above, below = tf.cast(plain > 0, plain.dtype) * relevance, tf.cast(plain < 0, plain.dtype) * relevance

    def full():
        inputs = [_pos(x), _neg(x), _pos(x), _neg(x)]

        def parts(p0, n0, p1, n1):
            return [linear(p0, up, b_up), linear(n0, down, None), linear(p1, down, b_down), linear(n1, up, None)]

        z = parts(*inputs)
        positive, negative = above / _stab(z[0] + z[1]), below / _stab(z[2] + z[3])
        g = _vjp(parts, inputs, [positive, positive, negative, negative])
        return sum(i * d for i, d in zip(inputs, g))

    def positive_only():  # x- = 0: its two terms are zero
        inputs = [_pos(x), _pos(x)]

        def parts(p0, p1):
            return [linear(p0, up, b_up), linear(p1, down, b_down)]

        z = parts(*inputs)
        g = _vjp(parts, inputs, [above / _stab(z[0]), below / _stab(z[1])])
        return inputs[0] * g[0] + inputs[1] * g[1]

    return _without_negative_part(x, full, positive_only)


def rule_zbox(linear, x, w, b, relevance, low=None, high=None):
    """z-box with the input's bounds ``low``/``high`` (None: each image's own minimum/maximum)."""
    import tensorflow as tf

    axes = list(range(1, len(x.shape)))
    low = tf.reduce_min(x, axes, keepdims=True) if low is None else tf.constant(low, x.dtype)
    high = tf.reduce_max(x, axes, keepdims=True) if high is None else tf.constant(high, x.dtype)
    inputs = [x, low + tf.zeros_like(x), high + tf.zeros_like(x)]

    def parts(plain, lows, highs):
        return [linear(plain, w, b), linear(lows, _pos(w), None if b is None else _pos(b)),
                linear(highs, _neg(w), None if b is None else _neg(b))]

    z = parts(*inputs)
    scaled = relevance / _stab(z[0] - z[1] - z[2])
    g = _vjp(parts, inputs, [scaled] * 3)
    return inputs[0] * g[0] - inputs[1] * g[1] - inputs[2] * g[2]


def rule_flat(linear, x, w, b, relevance):
    """flat: relevance spread by ``f(1; 1, 0)``, whatever the input and weights (arguments: :func:`rule_epsilon`)."""
    import tensorflow as tf

    ones, unit = tf.ones_like(x), tf.ones_like(w)
    (g,) = _vjp(lambda v: linear(v, unit, None), [ones], relevance / _stab(linear(ones, unit, None)))
    return g


def choose_rules(composite: str, low=None, high=None):
    """The rule of each Conv/Dense layer under ``composite``, called in the model's layer order.

    Parameters
    ----------
    composite : str
        One of :data:`salwidget.methods.lrp.COMPOSITES`.
    low, high : float, optional
        ``epsilon_gamma_box``'s bounds for its first convolution's z-box rule.

    Returns
    -------
    callable
        ``rule_for(is_convolution) -> rule``; it keeps the composite's "first layer" state, so one model's
        layers must be asked in order (as zennit: the first in definition order).
    """
    state = {"first": True}

    def rule_for(convolution: bool):
        if composite == "epsilon_plus_flat":
            rule = rule_flat if state["first"] else (rule_zplus if convolution else rule_epsilon)
            state["first"] = False
            return rule
        if composite == "epsilon_gamma_box":
            if convolution and state["first"]:
                state["first"] = False
                return lambda linear, x, w, b, r: rule_zbox(linear, x, w, b, r, low, high)
            return rule_gamma if convolution else rule_epsilon
        return rule_alpha2_beta1 if convolution else rule_epsilon

    return rule_for


# ----------------------------------------------------------------- the clone's layers
_layers: dict = {}


class _Parts:
    """Plain holder: the user's layers a wrapper reads (not tracked by Keras: the clone owns no variables)."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _linear_function(layer):
    """``f(x, W, b)`` computing ``layer``'s linear part (its activation excluded)."""
    import keras

    if isinstance(layer, keras.layers.Dense):
        def dense(x, w, b):
            z = keras.ops.matmul(x, w)
            return z if b is None else z + b

        return dense
    config = layer.get_config()
    channels_last = config["data_format"] == "channels_last"

    def convolution(x, w, b):
        z = keras.ops.conv(x, w, strides=config["strides"], padding=config["padding"],
                           data_format=config["data_format"], dilation_rate=config["dilation_rate"])
        if b is None:
            return z
        return z + (b if channels_last else keras.ops.reshape(b, (-1,) + (1,) * (len(z.shape) - 2)))

    return convolution


def _keras_layers():
    """The wrapper layer classes (defined on first use: Keras is imported only for Keras models)."""
    if _layers:
        return _layers
    import keras
    import tensorflow as tf

    class Ruled(keras.layers.Layer):
        """A Conv/Dense (with the BatchNorm merged into it, if any): its output, backward its rule."""

        def __init__(self, layer, rule, name):
            super().__init__(name=name, dtype=layer.dtype_policy)
            self.parts = _Parts(layer=layer, rule=rule, batch_norm=None, linear=_linear_function(layer),
                                activation=layer.activation)

        def weights_now(self):
            """Kernel and bias, the BatchNorm folded in (read from the user's variables on every call)."""
            layer, bn = self.parts.layer, self.parts.batch_norm
            w = tf.convert_to_tensor(layer.kernel)
            b = tf.convert_to_tensor(layer.bias) if layer.use_bias else None
            if bn is None:
                return w, b
            scale = 1.0 / tf.sqrt(tf.convert_to_tensor(bn.moving_variance) + bn.epsilon)
            if bn.scale:
                scale = scale * tf.convert_to_tensor(bn.gamma)
            shift = tf.convert_to_tensor(bn.beta) if bn.center else tf.zeros_like(scale)
            b = tf.zeros_like(scale) if b is None else b
            return w * scale, (b - tf.convert_to_tensor(bn.moving_mean)) * scale + shift

        def call(self, x):
            w, b = self.weights_now()
            linear, rule = self.parts.linear, self.parts.rule

            @tf.custom_gradient
            def ruled(x, w, *bias):  # the bias only when the layer has one (a None is no tensor)
                b = bias[0] if bias else None

                def backward(relevance):
                    return (rule(linear, x, w, b, relevance), None) + (None,) * len(bias)

                return linear(x, w, b), backward

            z = ruled(x, w) if b is None else ruled(x, w, b)
            activation = self.parts.activation
            name = getattr(activation, "__name__", None)
            return z if name == "linear" else passed(activation, z)

        def compute_output_spec(self, x):
            return self.parts.layer.compute_output_spec(x)

    def passed(function, x):
        """``function(x)``; backward: the relevance unchanged (the pass rule)."""
        y = tf.stop_gradient(function(x))

        @tf.custom_gradient
        def identity(x):
            return tf.identity(y), lambda relevance: relevance

        return identity(x)

    class Passed(keras.layers.Layer):
        """An activation: its output; backward the relevance unchanged."""

        def __init__(self, layer, name):
            super().__init__(name=name, dtype=layer.dtype_policy)
            self.parts = _Parts(layer=layer)

        def call(self, x):
            return passed(self.parts.layer, x)

        def compute_output_spec(self, x):
            return self.parts.layer.compute_output_spec(x)

    class Normed(keras.layers.Layer):
        """Average pooling: backward ``x * d/dx [z . R / stab(z)]``."""

        def __init__(self, layer, name):
            super().__init__(name=name, dtype=layer.dtype_policy)
            self.parts = _Parts(layer=layer)

        def call(self, x):
            pool = self.parts.layer

            @tf.custom_gradient
            def normed(x):
                z = pool(x)

                def backward(relevance):
                    (g,) = _vjp(pool, [x], relevance / _stab(z))
                    return x * g

                return z, backward

            return normed(x)

        def compute_output_spec(self, x):
            return self.parts.layer.compute_output_spec(x)

    class Proportional(keras.layers.Layer):
        """``Add``: backward ``R_i = a_i R / stab(sum a)`` (zennit's residual canonizer)."""

        def __init__(self, layer, name):
            super().__init__(name=name, dtype=layer.dtype_policy)
            self.parts = _Parts(layer=layer)

        def call(self, terms):
            @tf.custom_gradient
            def split(*terms):
                total = tf.add_n(list(terms))

                def backward(relevance):
                    scaled = relevance / _stab(total)
                    return [t * scaled for t in terms]

                return total, backward

            return split(*terms)

        def compute_output_spec(self, terms):
            return self.parts.layer.compute_output_spec(terms)

    class Start(keras.layers.Layer):
        """The output itself; backward: the incoming one-hot times the output (relevance = the score)."""

        def call(self, out):
            @tf.custom_gradient
            def start(out):
                return tf.identity(out), lambda grad: grad * out

            return start(out)

        def compute_output_spec(self, out):
            return keras.KerasTensor(out.shape, out.dtype)

    _layers.update(Ruled=Ruled, Passed=Passed, Normed=Normed, Proportional=Proportional, Start=Start)
    return _layers


# ----------------------------------------------------------------- the clone
def _refuse(layer, why: str = "") -> SaliencyError:
    return SaliencyError(
        f"LRP has no rule for layer {layer.name!r} ({type(layer).__name__}){': ' + why if why else ''}. Covered: "
        f"{_COVERED}. Use a gradient method (e.g. 'integrated' or 'deeplift') for this model."
    )


def _activation_name(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


class _Rebuild:
    """The ``call_function`` of ``clone_model``: each layer call replaced by its LRP twin (see the table above)."""

    def __init__(self, composite: str, low=None, high=None, outputs=()):
        import keras

        self.outputs = set(outputs)  # output layers' names: their twins are renamed, the names go to the outputs
        L = keras.layers
        self.keras = keras
        self.rule_for = choose_rules(composite, low, high)
        self.convolutions = (L.Conv1D, L.Conv2D, L.Conv3D)
        self.refused = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose, L.DepthwiseConv1D,
                        L.DepthwiseConv2D, L.SeparableConv1D, L.SeparableConv2D)
        self.average = (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
                        L.GlobalAveragePooling2D, L.GlobalAveragePooling3D)
        self.gradient = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D,
                         L.GlobalMaxPooling3D, L.Flatten, L.Reshape, L.Permute, L.ZeroPadding1D, L.ZeroPadding2D,
                         L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D, L.Dropout, L.SpatialDropout1D,
                         L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianDropout, L.GaussianNoise,
                         L.AlphaDropout, L.Concatenate, L.Identity, L.InputLayer)
        self.activations = (L.ReLU, L.LeakyReLU, L.ELU, L.PReLU)
        self.made_by: dict = {}  # id(tensor) -> the Ruled layer that output it (a BatchNorm may merge into it)
        self.read: set = set()  # ids of tensors some layer read
        self.merged: set = set()  # ids of tensors a BatchNorm was merged into: no other layer may read them
        self.keep: list = []  # the tensors whose ids are held (ids stay unique while the clone is built)

    def __call__(self, layer, *args, **kwargs):
        kwargs.pop("training", None)
        tensors = self.keras.tree.flatten((args, kwargs))
        for t in tensors:
            if id(t) in self.merged:
                raise _refuse(layer, "it reads the output of a Conv/Dense layer whose BatchNorm was merged into it")
        layer_types = self.keras.layers
        if isinstance(layer, layer_types.BatchNormalization):
            out = self._merge(layer, args[0])
        else:
            replacement = self._replace(layer, layer_types)
            out = replacement(*args, **kwargs) if replacement is layer else replacement(*args)
        self.read.update(id(t) for t in tensors)
        self.keep.extend(tensors)
        return out

    def _replace(self, layer, L):
        parts = _keras_layers()
        name = f"{layer.name}_lrp" if layer.name in self.outputs else layer.name
        if isinstance(layer, self.refused):
            raise _refuse(layer)
        if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense)) and type(layer) in (
                L.Conv1D, L.Conv2D, L.Conv3D, L.Dense):
            if layer.get_config().get("padding") == "causal":
                raise _refuse(layer, "causal padding")
            activation = _activation_name(layer)
            if activation not in _ELEMENTWISE:
                raise _refuse(layer, f"its activation {activation!r} is not elementwise")
            ruled = parts["Ruled"](layer, self.rule_for(isinstance(layer, self.convolutions)), name)

            def call(x):
                out = ruled(x)
                if activation == "linear":
                    self.made_by[id(out)] = ruled
                    self.keep.append(out)
                return out

            return call
        if isinstance(layer, self.average):
            return parts["Normed"](layer, name)
        if type(layer) is L.Add:
            return parts["Proportional"](layer, name)
        if isinstance(layer, self.activations) or (type(layer) is L.Activation
                                                   and _activation_name(layer) in _ELEMENTWISE):
            return parts["Passed"](layer, name)
        if isinstance(layer, self.gradient):
            return layer
        raise _refuse(layer)

    def _merge(self, layer, x):
        ruled = self.made_by.get(id(x))
        axis = layer.axis if isinstance(layer.axis, int) else None
        if ruled is None or ruled.parts.batch_norm is not None or id(x) in self.read:
            raise _refuse(layer, "a BatchNorm is merged into the Conv/Dense layer (without activation) whose "
                          "output it alone reads, and none precedes it")
        if axis not in (-1, len(x.shape) - 1) or ruled.parts.layer.get_config().get("data_format") == "channels_first":
            raise _refuse(layer, "a BatchNorm is merged over the last (channel) axis only")
        ruled.parts.batch_norm = layer
        self.merged.add(id(x))
        name = f"{layer.name}_lrp" if layer.name in self.outputs else layer.name
        return self.keras.layers.Identity(name=name, dtype=layer.dtype_policy)(x)  # a new tensor: x is spent


def build_lrp_model(model, composite: str, low=None, high=None):
    """A functional clone of the Keras ``model`` whose backward pass is LRP with ``composite``.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential Keras model (not written: the clone reads its variables).
    composite : str
        ``"epsilon_plus_flat"``, ``"epsilon_gamma_box"`` or ``"epsilon_alpha2_beta1"``.
    low, high : float, optional
        ``epsilon_gamma_box``'s input bounds (None: each image's own minimum and maximum).

    Returns
    -------
    keras.Model
        The same outputs as ``model``; the gradient of a one-hot-weighted sum of its outputs w.r.t. its
        inputs is the relevance map starting at the target's score.

    Raises
    ------
    SaliencyError
        A layer no rule covers, named with its type; a model that cannot be rebuilt.
    """
    import keras

    functional = as_functional(model)
    for layer in functional.layers:
        if isinstance(layer, keras.Model):
            raise _refuse(layer, "a nested model (LRP rebuilds one level of layers)")
    names = list(functional.output_names or [])
    try:
        clone = keras.models.clone_model(functional, clone_function=lambda layer: layer,
                                         call_function=_Rebuild(composite, low, high, names))
    except SaliencyError:
        raise
    except Exception as exc:
        raise SaliencyError(f"LRP cannot rebuild this {type(model).__name__} with its rules ({exc}).") from exc
    outputs = clone.outputs
    taken = {layer.name for layer in clone.layers}
    started = []
    for i, out in enumerate(outputs):
        name = names[i] if i < len(names) and names[i] not in taken else f"relevance_{i}"
        started.append(_keras_layers()["Start"](name=name, dtype=out.dtype)(out))
    return keras.Model(clone.inputs, started if len(started) > 1 else started[0], name=f"{model.name}_lrp")


class KerasLRPModels:
    """LRP clones per user model and settings (built once; they read the user's variables live)."""

    def __init__(self):
        self._clones: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, model, composite: str, low=None, high=None):
        """The clone of ``model`` for these settings (see :func:`build_lrp_model`)."""
        if not hasattr(model, "layers"):
            raise SaliencyError(f"LRP in TensorFlow needs a Keras model with layers; got a {type(model).__name__}.")
        key = (composite, low, high)
        with self._lock:
            per_model = self._clones.setdefault(model, {})
            if key not in per_model:
                per_model[key] = build_lrp_model(model, composite, low, high)
            return per_model[key]


KERAS_LRP = KerasLRPModels()
