"""One CNN in torch and in Keras with the same weights gives the same maps."""

from __future__ import annotations

import numpy as np
import pytest

import salwidget as sw

from .helpers import keras_twin, make_torch_cnn, own_options

OPTIONS = dict(nsamples=6, nintegration=4, seed=11, stdev_spread=0.2, baseline="uniform", target=[0, 1, 2, 3])
NOISE_FREE = dict(baseline=0.0, target=[0, 1, 2, 3], nsamples=6)
NOISY = ("smoothgrad", "smooth_integrated", "vargrad")


@pytest.fixture(scope="module")
def twins():
    torch_model = make_torch_cnn()
    return torch_model, keras_twin(torch_model)


def both(twins, images, method, **options):
    torch_model, keras_model = twins
    options = own_options(method, **options)  # one set of settings for several methods
    a_torch = sw.attribute(torch_model, images, method, **options)
    a_keras = sw.attribute(keras_model, images.transpose(0, 2, 3, 1), method, **options)
    assert a_torch.framework == "torch" and a_keras.framework == "tensorflow" and a_keras.channels_last
    return a_torch, a_keras


def assert_same(a_torch, a_keras):
    np.testing.assert_allclose(a_torch.scores, a_keras.scores, rtol=1e-4, atol=1e-5)
    scale = np.abs(a_torch.raw).max()
    np.testing.assert_allclose(a_keras.raw.transpose(0, 3, 1, 2), a_torch.raw, rtol=1e-3, atol=1e-4 * scale)
    np.testing.assert_allclose(a_keras.grayscale(), a_torch.grayscale(), atol=2e-3)
    if a_torch.delta is not None:
        np.testing.assert_allclose(a_keras.delta, a_torch.delta, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["vanilla", "gradient_x_input", "integrated"])
def test_noise_free_methods_are_equal_in_torch_and_keras(twins, images, method):
    assert_same(*both(twins, images, method, **NOISE_FREE))


@pytest.mark.parametrize("method", sw.CLASSIC + ("gradient_x_input", "vargrad"))
def test_portable_numpy_draws_make_every_method_equal_in_torch_and_keras(twins, images, method):
    assert_same(*both(twins, images, method, rng="numpy", **OPTIONS))


@pytest.mark.parametrize("method", NOISY)
def test_device_draws_differ_between_frameworks_only_as_independent_estimates_do(twins, images, method):
    # Each framework draws its own noise on its device: the torch and Keras maps are
    # two estimates of the same expectation, as far apart as two torch runs with other seeds.
    options = dict(nsamples=48, nintegration=3, stdev_spread=0.2, target=[0, 1, 2, 3])
    a_torch, a_keras = both(twins, images, method, seed=1, **options)
    other = sw.attribute(twins[0], images, method, seed=2, **own_options(method, **options))
    across = np.abs(a_keras.raw.transpose(0, 3, 1, 2) - a_torch.raw).mean()
    within = np.abs(other.raw - a_torch.raw).mean()
    assert not np.allclose(a_keras.raw.transpose(0, 3, 1, 2), a_torch.raw, rtol=1e-3, atol=0)  # independent draws
    assert 0.5 * within < across < 2.0 * within
    assert np.corrcoef(a_keras.grayscale().ravel(), a_torch.grayscale().ravel())[0, 1] > 0.8


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
