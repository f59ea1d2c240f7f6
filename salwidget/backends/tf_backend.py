"""TensorFlow/Keras backend: ``tf.GradientTape`` with ``training=False``."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import numpy as np
import tensorflow as tf

from ..errors import SaliencyError
from .base import model_call_error, not_differentiable


def _is_keras(model) -> bool:
    return any(cls.__module__.split(".")[0] in ("keras", "tf_keras") for cls in type(model).__mro__)


def _as_list(output) -> list:
    if isinstance(output, dict):
        return list(output.values())
    if isinstance(output, (tuple, list)):
        return list(output)
    return [output]


class TensorFlowBackend:
    """Runs a Keras model, a ``tf.Module`` or a TF callable where TensorFlow places it.

    The gradient step is a ``tf.function`` traced once per set of targets, with
    a free batch dimension so that the last, smaller chunk does not retrace.
    """

    framework = "tensorflow"
    default_channels_last = True

    def __init__(self, model):
        self.model = model
        self._keras = _is_keras(model)
        gpus = tf.config.list_logical_devices("GPU")
        self.device = gpus[0].name if gpus else "CPU"
        self._grad_fns: dict[tuple[int, ...], object] = {}

    def session(self):
        # training=False is passed on every call; nothing to switch or restore.
        return nullcontext()

    def _call(self, tensors):
        try:
            if self._keras:
                inputs = tensors[0] if len(tensors) == 1 else list(tensors)
                return _as_list(self.model(inputs, training=False))
            return _as_list(self.model(*tensors))
        except SaliencyError:
            raise
        except Exception as exc:
            hint = "Keras models usually take (B, H, W, C); pass channels_last=False if yours takes (B, C, H, W)"
            raise model_call_error(exc, [t.shape for t in tensors], hint) from exc

    def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs = self._call([tf.convert_to_tensor(x, tf.float32) for x in inputs])
        return [np.asarray(o, dtype=np.float32) for o in outputs]

    def _grad_fn(self, output_indices: tuple[int, ...]):
        if output_indices not in self._grad_fns:

            def step(tensors, targets):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    for t in tensors:
                        tape.watch(t)
                    outputs = self._call(list(tensors))
                    score = tf.constant(0.0)
                    for index, target in zip(output_indices, targets):
                        picked = tf.gather(outputs[index], target, axis=1, batch_dims=1)
                        score = score + tf.reduce_sum(tf.cast(picked, tf.float32))
                grads = tape.gradient(score, list(tensors))
                return grads, outputs

            self._grad_fns[output_indices] = tf.function(step, reduce_retracing=True)
        return self._grad_fns[output_indices]

    def gradients(
        self, inputs: Sequence[np.ndarray], targets: dict[int, np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # The engine has checked the targets against the clean outputs: a bad class
        # index inside tf.gather would be a silent zero on GPU.
        tensors = [tf.convert_to_tensor(x, tf.float32) for x in inputs]
        indices = tuple(targets)
        target_tensors = [tf.constant(targets[i], tf.int32) for i in indices]
        grads, outputs = self._grad_fn(indices)(tensors, target_tensors)
        missing = [i for i, g in enumerate(grads) if g is None]
        if missing:
            raise not_differentiable(f"input {missing[0]} does not reach the class score")
        return [np.asarray(g, np.float32) for g in grads], [np.asarray(o, np.float32) for o in outputs]
