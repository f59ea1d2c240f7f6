"""Guided Backprop against Captum, hook references, its Keras twin; the user's model and threads untouched."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.errors import SaliencyError

import captum.attr as captum_attr  # noqa: E402  (a test dependency: a missing one must fail, not skip)

TARGETS = [0, 1, 2, 3]


class FunctionalReLUNet(torch.nn.Module):
    """Conv-ReLU-Conv-ReLU-GAP-Linear with the ReLUs as function calls (Captum cannot see them)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(6, 8, 3, padding=1, stride=2)
        self.linear = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.nn.functional.relu(self.conv2(x))
        return self.linear(x.mean((2, 3)))


def module_twin(net: FunctionalReLUNet, *, activation=torch.nn.ReLU, inplace: bool = False) -> torch.nn.Module:
    """The same network with ReLU modules (sharing the weights)."""
    return torch.nn.Sequential(
        net.conv1, activation(inplace=inplace), net.conv2, activation(inplace=inplace),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), net.linear,
    ).eval()


def keras_relu_twin(net: FunctionalReLUNet, image_size: int = 16, relu6: bool = False):
    """The network in Keras: one conv with activation='relu'/'relu6', one followed by a ReLU layer."""
    import keras

    last = keras.layers.ReLU(6.0) if relu6 else keras.layers.ReLU()
    model = keras.Sequential([
        keras.Input((image_size, image_size, 3)),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu6" if relu6 else "relu"),
        keras.layers.ZeroPadding2D(1),
        keras.layers.Conv2D(8, 3, strides=2, padding="valid"),
        last,
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5),
    ])
    set_keras_weights(model, net)
    return model


def set_keras_weights(model, net: FunctionalReLUNet) -> None:
    to_np = lambda t: t.detach().numpy()
    model.layers[0].set_weights([to_np(net.conv1.weight).transpose(2, 3, 1, 0), to_np(net.conv1.bias)])
    model.layers[2].set_weights([to_np(net.conv2.weight).transpose(2, 3, 1, 0), to_np(net.conv2.bias)])
    model.layers[5].set_weights([to_np(net.linear.weight).T, to_np(net.linear.bias)])


@pytest.fixture
def relu_net():
    return FunctionalReLUNet().eval()


@pytest.fixture
def bright(images):
    """The shared images scaled up so that some ReLU6 units saturate (about 10% of the first layer's)."""
    return images * 40.0


def hooked_reference(model: torch.nn.Module, x: np.ndarray, kinds: tuple) -> np.ndarray:
    """Guided Backprop by module backward hooks returning relu(grad_input), Captum's rule, for any module kinds."""
    handles = [m.register_full_backward_hook(lambda mod, gin, gout: (torch.relu(gin[0]),))
               for m in model.modules() if isinstance(m, kinds)]
    try:
        xi = torch.from_numpy(x).requires_grad_(True)
        score = model(xi).gather(1, torch.tensor(TARGETS).reshape(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, xi)
    finally:
        for handle in handles:
            handle.remove()
    return grad.numpy()


def test_functional_relu_matches_relu_modules_and_captum(relu_net, images):
    modules = module_twin(relu_net)
    functional = sw.attribute(relu_net, images, "guided_backprop", target=TARGETS).raw
    with_modules = sw.attribute(modules, images, "guided_backprop", target=TARGETS).raw
    captum = captum_attr.GuidedBackprop(modules).attribute(torch.from_numpy(images), target=TARGETS).numpy()
    np.testing.assert_allclose(functional, with_modules, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(with_modules, captum, rtol=1e-5, atol=1e-9)
    # ... and it is not the plain gradient
    vanilla = sw.attribute(modules, images, "vanilla", target=TARGETS).raw
    assert np.abs(vanilla - captum).max() > 0.05 * np.abs(captum).max()


def test_in_place_relus_are_guided_too(relu_net, images):
    class InPlace(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            h = self.net.conv1(x).relu_()
            h = torch.relu_(self.net.conv2(h))
            return self.net.linear(h.mean((2, 3)))

    expected = sw.attribute(relu_net, images, "guided_backprop", target=TARGETS).raw
    for model in (InPlace(relu_net).eval(), module_twin(relu_net, inplace=True)):
        np.testing.assert_allclose(sw.attribute(model, images, "guided_backprop", target=TARGETS).raw, expected,
                                   rtol=1e-6, atol=1e-10)


def test_relu6_passes_positive_gradients_inside_its_linear_range(relu_net, bright):
    model = module_twin(relu_net, activation=torch.nn.ReLU6)
    ours = sw.attribute(model, bright, "guided_backprop", target=TARGETS).raw
    np.testing.assert_allclose(ours, hooked_reference(model, bright, (torch.nn.ReLU6,)), rtol=1e-5, atol=1e-9)


def test_keras_twin_matches_torch_and_keeps_the_users_model(relu_net, bright):
    import keras

    for relu6, activation in ((False, torch.nn.ReLU), (True, torch.nn.ReLU6)):
        model = keras_relu_twin(relu_net, relu6=relu6)
        weights = [w.copy() for w in model.get_weights()]
        layers = list(model.layers)
        x = bright.transpose(0, 2, 3, 1)
        plain_before = sw.attribute(model, x, "vanilla", target=TARGETS).raw
        guided = sw.attribute(model, x, "guided_backprop", target=TARGETS).raw.transpose(0, 3, 1, 2)
        expected = sw.attribute(module_twin(relu_net, activation=activation), bright, "guided_backprop",
                                target=TARGETS).raw
        np.testing.assert_allclose(guided, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
        # The user's model: same layers, same activations, same weights, same plain gradients.
        assert list(model.layers) == layers
        assert model.layers[0].activation is keras.activations.get("relu6" if relu6 else "relu")
        assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
        np.testing.assert_array_equal(sw.attribute(model, x, "vanilla", target=TARGETS).raw, plain_before)


def test_keras_guided_copy_follows_weight_updates(relu_net, images):
    model = keras_relu_twin(relu_net)
    x = images.transpose(0, 2, 3, 1)
    sw.attribute(model, x, "guided_backprop", target=TARGETS)  # builds and keeps the guided clone
    updated = FunctionalReLUNet(seed=1).eval()
    set_keras_weights(model, updated)  # the user trains: new weights in place
    guided = sw.attribute(model, x, "guided_backprop", target=TARGETS).raw.transpose(0, 3, 1, 2)
    expected = sw.attribute(updated, images, "guided_backprop", target=TARGETS).raw
    np.testing.assert_allclose(guided, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_other_threads_keep_ordinary_relu_gradients(relu_net, images):
    entered, release = threading.Event(), threading.Event()

    class Pausing(torch.nn.Module):
        """The ReLU network, pausing inside its first forward call until the main thread has checked."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            if not entered.is_set():
                entered.set()
                release.wait(30)
            return out

    results = []
    worker = threading.Thread(target=lambda: results.append(
        sw.attribute(Pausing(relu_net).eval(), images, "guided_backprop", target=TARGETS)))
    worker.start()
    try:
        assert entered.wait(30)
        # The worker is inside a guided model call now; here ReLU gradients are the ordinary ones.
        z = torch.tensor([1.0, -1.0, 2.0], requires_grad=True)
        (grad,) = torch.autograd.grad((torch.relu(z) * torch.tensor([-3.0, 1.0, 2.0])).sum(), z)
        assert grad.tolist() == [-3.0, 0.0, 2.0]
        plain = sw.attribute(relu_net, images, "vanilla", target=TARGETS).raw
    finally:
        release.set()
        worker.join(60)
    expected = sw.attribute(relu_net, images, "guided_backprop", target=TARGETS).raw
    np.testing.assert_allclose(results[0].raw, expected, rtol=1e-6, atol=1e-10)
    np.testing.assert_array_equal(plain, sw.attribute(relu_net, images, "vanilla", target=TARGETS).raw)


def test_users_torch_model_is_unchanged(relu_net, images):
    modules = module_twin(relu_net)
    kinds = [type(m) for m in modules.modules()]
    before = [p.detach().clone() for p in modules.parameters()]
    sw.attribute(modules, images, "guided_backprop", target=TARGETS)
    assert [type(m) for m in modules.modules()] == kinds
    assert all(torch.equal(a, b) for a, b in zip(before, modules.parameters()))
    assert not any(m._backward_hooks or m._forward_hooks for m in modules.modules())
    xi = torch.from_numpy(images).requires_grad_(True)
    (grad,) = torch.autograd.grad(modules(xi)[:, 0].sum(), xi)
    np.testing.assert_allclose(grad.numpy(), sw.attribute(modules, images, "vanilla", target=0).raw, rtol=1e-6)


def test_declares_that_it_fails_the_sanity_check():
    method = sw.get_method("guided_backprop")
    assert method.fails_sanity_check
    assert "sanity check" in method.summary


def test_tensorflow_callable_without_layers_is_refused(images):
    import tensorflow as tf

    weights = tf.constant(np.random.default_rng(0).normal(size=(16 * 16 * 3, 3)).astype(np.float32))

    class Plain(tf.Module):
        def __call__(self, x):
            return tf.nn.relu(tf.reshape(x, (-1, 16 * 16 * 3))) @ weights

    with pytest.raises(SaliencyError, match="Keras model with layers"):
        sw.attribute(Plain(), images.transpose(0, 2, 3, 1), "guided_backprop")


def test_keras_functional_model_with_a_nested_model_matches_torch():
    import keras

    rng = np.random.default_rng(3)
    inputs = keras.Input((8, 8, 3))
    first = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    inner = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(4, 3, padding="same"), keras.layers.ReLU()])
    dense = keras.layers.Dense(3)
    h = first(inputs)
    merged = keras.layers.Activation("relu")(keras.layers.Add()([h, inner(h)]))
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(merged)))
    for layer in (first, inner.layers[0], dense):
        layer.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in layer.get_weights()])

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
            self.dense = torch.nn.Linear(4, 3)
            with torch.no_grad():
                for conv, layer in ((self.first, first), (self.second, inner.layers[0])):
                    kernel, bias = layer.get_weights()
                    conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
                    conv.bias.copy_(torch.from_numpy(bias))
                kernel, bias = dense.get_weights()
                self.dense.weight.copy_(torch.from_numpy(kernel.T))
                self.dense.bias.copy_(torch.from_numpy(bias))

        def forward(self, x):
            h = torch.relu(self.first(x))
            return self.dense(torch.relu(h + torch.relu(self.second(h))).mean((2, 3)))

    x = rng.uniform(size=(2, 3, 8, 8)).astype(np.float32)
    expected = sw.attribute(Twin().eval(), x, "guided_backprop", target=[0, 2]).raw
    guided = sw.attribute(model, x.transpose(0, 2, 3, 1), "guided_backprop", target=[0, 2]).raw
    np.testing.assert_allclose(guided.transpose(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    plain = sw.attribute(model, x.transpose(0, 2, 3, 1), "vanilla", target=[0, 2]).raw
    assert np.abs(plain - guided).max() > 0.05 * np.abs(guided).max()
