"""One CNN in torch and in Keras with the same weights gives the same maps."""

from __future__ import annotations

import numpy as np
import pytest

import salwidget as sw

from .helpers import keras_twin, make_torch_cnn

OPTIONS = dict(nsamples=6, nintegration=4, seed=11, stdev_spread=0.2, baseline="uniform", target=[0, 1, 2, 3])


@pytest.fixture(scope="module")
def twins():
    torch_model = make_torch_cnn()
    return torch_model, keras_twin(torch_model)


@pytest.mark.parametrize("method", sw.METHODS)
def test_torch_and_keras_twins_give_the_same_raw_maps_and_masks(twins, images, method):
    torch_model, keras_model = twins
    a_torch = sw.attribute(torch_model, images, method, **OPTIONS)
    a_keras = sw.attribute(keras_model, images.transpose(0, 2, 3, 1), method, **OPTIONS)
    assert a_torch.framework == "torch" and a_keras.framework == "tensorflow"
    assert a_keras.channels_last
    np.testing.assert_allclose(a_torch.scores, a_keras.scores, rtol=1e-4, atol=1e-5)
    scale = np.abs(a_torch.raw).max()
    np.testing.assert_allclose(a_keras.raw.transpose(0, 3, 1, 2), a_torch.raw, rtol=1e-3, atol=1e-4 * scale)
    np.testing.assert_allclose(a_keras.grayscale(), a_torch.grayscale(), atol=2e-3)
    if a_torch.delta is not None:
        np.testing.assert_allclose(a_keras.delta, a_torch.delta, rtol=1e-3, atol=1e-4)


def test_keras_linear_model_gradient_is_its_weight_row():
    import keras

    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    x = np.random.default_rng(0).normal(size=(2, 2, 2, 3)).astype(np.float32)
    a = sw.attribute(model, x, "vanilla", target=[3, 1])
    w = model.layers[1].get_weights()[0]  # (12, 4)
    np.testing.assert_allclose(a.raw.reshape(2, -1), w[:, [3, 1]].T, rtol=1e-6)


def test_tf_module_and_tf_function_are_detected():
    import tensorflow as tf

    class Linear(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.arange(12 * 3, dtype=np.float32).reshape(12, 3))

        def __call__(self, x):
            return tf.reshape(x, (-1, 12)) @ self.w

    x = np.ones((1, 2, 2, 3), np.float32)
    module = Linear()
    a = sw.attribute(module, x, "vanilla", target=2)
    np.testing.assert_allclose(a.raw.reshape(-1), module.w.numpy()[:, 2])
    b = sw.attribute(tf.function(module.__call__), x, "vanilla", target=2, framework="tensorflow")
    np.testing.assert_allclose(b.raw, a.raw)
