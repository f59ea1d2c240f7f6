"""LRP against zennit 0.5.1 on the same torch models (VGG-like with BatchNorm, ResNet-like, MLP), conservation on
bias-free nets, refusals, and the user's model left as found."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.errors import SaliencyError

from .lrp_models import Branches, ResNetLike, keras_lrp_twin, mlp, twin_with_zennit_sums, vgg_like

COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")
TARGETS = [0, 1, 2, 3]


def zennit_lrp(model, x, composite, low=0.0, high=1.0, targets=TARGETS):
    """zennit's attribution with relevance starting at the target's score, BatchNorms merged."""
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat

    model = copy.deepcopy(model)
    canonizers = [SequentialMergeBatchNorm()]
    chosen = {"epsilon_plus_flat": lambda: EpsilonPlusFlat(canonizers=canonizers),
              "epsilon_gamma_box": lambda: EpsilonGammaBox(low=low, high=high, canonizers=canonizers),
              "epsilon_alpha2_beta1": lambda: EpsilonAlpha2Beta1(canonizers=canonizers)}[composite]()
    inputs = torch.as_tensor(x).requires_grad_(True)
    with chosen.context(model) as modified:
        out = modified(inputs)
        onehot = torch.zeros_like(out)
        onehot[range(len(x)), targets] = 1
        (relevance,) = torch.autograd.grad(out, inputs, onehot * out)
    return relevance.detach().numpy()


MODELS = {"vgg_like": vgg_like, "resnet_like": ResNetLike, "mlp": mlp}


@pytest.fixture
def x64(images):
    return images.astype(np.float64)


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_lrp_equals_zennit(x64, model_name, composite):
    model = MODELS[model_name]().double().eval()
    reference_model = twin_with_zennit_sums(model).double() if model_name == "resnet_like" else model
    ours = sw.attribute(model, x64, "lrp", composite=composite, box_low=0.0, box_high=1.0, target=TARGETS)
    reference = zennit_lrp(reference_model, x64, composite)
    assert np.abs(reference).max() > 0
    np.testing.assert_allclose(ours.raw, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_the_default_box_is_each_images_own_range(x64):
    model = vgg_like().double()
    ours = sw.attribute(model, x64, "lrp", composite="epsilon_gamma_box", target=TARGETS)
    for i in range(len(x64)):
        reference = zennit_lrp(model, x64[i : i + 1], "epsilon_gamma_box", float(x64[i].min()), float(x64[i].max()),
                               [TARGETS[i]])
        np.testing.assert_allclose(ours.raw[i : i + 1], reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("composite", COMPOSITES)
def test_relevance_is_conserved_on_bias_free_relu_nets(x64, composite):
    """Without biases every rule conserves relevance up to its 1e-6 stabiliser: delta ~ 0; with biases it is not."""
    model = vgg_like().double()
    free = copy.deepcopy(model)
    for module in free.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.bias = None
        if isinstance(module, torch.nn.BatchNorm2d):  # merged bias (bn.bias - mean * scale) zero as well
            module.bias.data.zero_()
            module.running_mean.zero_()
    # A bias-free ReLU net is positively homogeneous: inputs scaled up make every layer's output large next to the
    # 1e-6 stabiliser (what it absorbs shrinks by the same factor).
    a = sw.attribute(free, 1000 * x64, "lrp", composite=composite, box_low=0.0, box_high=1000.0, target=TARGETS)
    score = np.abs(a.scores[range(4), TARGETS])
    assert np.all(np.abs(a.delta) < 1e-4 * score)
    np.testing.assert_allclose(a.raw.sum(axis=(1, 2, 3)), a.scores[range(4), TARGETS], rtol=1e-4)
    biased = sw.attribute(model, x64, "lrp", composite=composite, box_low=0.0, box_high=1.0, target=TARGETS)
    assert np.abs(biased.delta).max() > 1e-3 * np.abs(biased.scores).max()


def test_lrp_leaves_the_users_model_as_found(images):
    model = ResNetLike().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    a = sw.attribute(model, images, "lrp", target=TARGETS)
    assert np.isfinite(a.raw).all()
    assert [type(m) for m in model.modules()] == types and not model.bn._forward_hooks
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with torch.no_grad():  # the same outputs as before: nothing merged into the user's layers
        np.testing.assert_allclose(a.scores, model(torch.as_tensor(images)).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layers,named", [
    (lambda: [torch.nn.Flatten(), torch.nn.Linear(768, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 5)],
     "'2' (LayerNorm)"),
    (lambda: [torch.nn.BatchNorm2d(3), torch.nn.Flatten(), torch.nn.Linear(768, 5)], "'0' (BatchNorm2d)"),
    (lambda: [torch.nn.ConvTranspose2d(3, 3, 3), torch.nn.Flatten(), torch.nn.Linear(972, 5)], "'0' (ConvTranspose2d)"),
])
def test_a_layer_no_rule_covers_is_refused_with_its_name_and_type(images, layers, named):
    model = torch.nn.Sequential(*layers()).eval()
    with pytest.raises(SaliencyError, match=named.replace("(", r"\(").replace(")", r"\)")):
        sw.attribute(model, images, "lrp")


def test_lrp_gives_the_same_maps_in_any_chunk_size(x64):
    model = ResNetLike().double()
    whole = sw.attribute(model, x64, "lrp", target=TARGETS, batch_size=4)
    single = sw.attribute(model, x64, "lrp", target=TARGETS, batch_size=1)
    np.testing.assert_allclose(single.raw, whole.raw, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------- Keras
def keras_map(model, x, **options):
    """LRP of a Keras model on channels-first ``x``; the map and delta back in torch's layout."""
    a = sw.attribute(model, x.transpose(0, 2, 3, 1), "lrp", target=TARGETS, **options)
    return a.raw.transpose(0, 3, 1, 2), a.delta


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_keras_lrp_equals_torch_lrp_on_the_twin(x64, model_name, composite):
    """Merged BatchNorms, residual Adds split in proportion, average pooling, flat/zbox first layers: the Keras
    twin (float64) gives the torch map, which equals zennit's (above). The box is each image's own range."""
    model = MODELS[model_name]().double().eval()
    twin = keras_lrp_twin(model)
    torch_map = sw.attribute(model, x64, "lrp", composite=composite, target=TARGETS)
    ours, delta = keras_map(twin, x64, composite=composite)
    assert np.abs(torch_map.raw).max() > 0
    np.testing.assert_allclose(ours, torch_map.raw, rtol=1e-6, atol=1e-6 * np.abs(torch_map.raw).max())
    np.testing.assert_allclose(delta, torch_map.delta, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("composite", COMPOSITES)
def test_keras_lrp_follows_a_concatenation_as_torch(x64, composite):
    model = Branches().double().eval()
    torch_map = sw.attribute(model, x64, "lrp", composite=composite, target=TARGETS).raw
    ours, _ = keras_map(keras_lrp_twin(model), x64, composite=composite)
    np.testing.assert_allclose(ours, torch_map, rtol=1e-6, atol=1e-6 * np.abs(torch_map).max())


def test_keras_lrp_takes_a_fixed_box_and_any_chunk_size(x64):
    model = vgg_like().double()
    twin = keras_lrp_twin(model)
    reference = zennit_lrp(model, x64, "epsilon_gamma_box", 0.0, 1.0)
    for batch_size in (4, 1):
        ours, _ = keras_map(twin, x64, composite="epsilon_gamma_box", box_low=0.0, box_high=1.0, batch_size=batch_size)
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_keras_lrp_reads_the_current_weights_and_leaves_the_model_as_found(x64):
    model = ResNetLike().double().eval()
    twin = keras_lrp_twin(model)
    layers = [(layer.name, type(layer)) for layer in twin.layers]
    before = [w.copy() for w in twin.get_weights()]
    keras_map(twin, x64)
    assert [(layer.name, type(layer)) for layer in twin.layers] == layers
    for now, then in zip(twin.get_weights(), before):
        np.testing.assert_array_equal(now, then)
    with torch.no_grad():  # a training step between calls: the cached LRP clone must see the new weights
        model.stem.weight.mul_(-1.5)
        model.block1.bn1.running_var.mul_(3.0)
    fresh = keras_lrp_twin(model)
    twin.set_weights(fresh.get_weights())
    ours, _ = keras_map(twin, x64)
    expected = sw.attribute(model, x64, "lrp", target=TARGETS).raw
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def _keras_layers_case(name):
    import keras

    L = keras.layers
    first = {"layernorm": [L.Flatten(), L.Dense(8), L.LayerNormalization(name="norm"), L.Dense(5)],
             "bn_first": [L.BatchNormalization(name="bn"), L.Flatten(), L.Dense(5)],
             "bn_after_relu": [L.Conv2D(4, 3, activation="relu"), L.BatchNormalization(name="late"), L.Flatten(),
                               L.Dense(5)],
             "transposed": [L.Conv2DTranspose(3, 3, name="up"), L.Flatten(), L.Dense(5)],
             "softmax": [L.Flatten(), L.Dense(5, activation="softmax", name="probabilities")]}[name]
    return keras.Sequential([keras.Input((16, 16, 3))] + first)


@pytest.mark.parametrize("case,named", [
    ("layernorm", "'norm' (LayerNormalization)"), ("bn_first", "'bn' (BatchNormalization)"),
    ("bn_after_relu", "'late' (BatchNormalization)"), ("transposed", "'up' (Conv2DTranspose)"),
    ("softmax", "'probabilities' (Dense)"),
])
def test_a_keras_layer_no_rule_covers_is_refused_with_its_name_and_type(images, case, named):
    with pytest.raises(SaliencyError, match=named.replace("(", r"\(").replace(")", r"\)")):
        sw.attribute(_keras_layers_case(case), images.transpose(0, 2, 3, 1), "lrp")


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_lrp_maps_are_the_same_with_in_place_operations_after_layers_whose_forward_the_rules_reuse(composite):
    """The epsilon and gamma rules read the layer's output kept from the forward pass: an in-place residual
    addition (``out += x``) or ReLU right after the layer must not change it."""

    class Net(torch.nn.Module):
        def __init__(self, inplace):
            super().__init__()
            torch.manual_seed(0)
            self.inplace = inplace
            self.conv1, self.conv2 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
            self.relu = torch.nn.ReLU(inplace)
            self.pool, self.fc = torch.nn.AvgPool2d(4), torch.nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            x = self.relu(self.conv1(x))
            out = self.conv2(x)
            if self.inplace:
                out += x
            else:
                out = out + x
            return self.fc(self.pool(self.relu(out)).flatten(1))

    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    plain = sw.attribute(Net(False), x, "lrp", composite=composite, target=[0, 1])
    in_place = sw.attribute(Net(True), x, "lrp", composite=composite, target=[0, 1])
    assert np.abs(plain.raw).max() > 0
    np.testing.assert_allclose(in_place.raw, plain.raw, rtol=1e-6, atol=1e-7 * np.abs(plain.raw).max())


@pytest.mark.parametrize("signed_input", [True, False])
@pytest.mark.parametrize("rule", ["rule_zplus", "rule_alpha2_beta1", "rule_gamma"])
def test_keras_and_torch_rules_agree_with_and_without_a_negative_input_part(rule, signed_input):
    """Both frameworks leave out the terms on the input's negative part when it has none (torch by a host read,
    Keras in the graph): each rule, on one convolution, with an input that has a negative part and one that
    (as after a ReLU) has none, gives the same relevance in both."""
    import tensorflow as tf

    from salwidget.methods import lrp, lrp_keras

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    x = torch.as_tensor(np.random.default_rng(0).uniform(-1 if signed_input else 0, 1, (2, 3, 8, 8)))
    relevance = torch.as_tensor(np.random.default_rng(1).uniform(-1, 1, (2, 4, 8, 8)))
    ours = getattr(lrp, rule)(conv, x, relevance).detach().numpy()

    def linear(v, w, b):
        out = tf.nn.conv2d(v, w, 1, "SAME")
        return out if b is None else out + b

    kernel = tf.constant(conv.weight.detach().numpy().transpose(2, 3, 1, 0))
    theirs = getattr(lrp_keras, rule)(linear, tf.constant(x.numpy().transpose(0, 2, 3, 1)), kernel,
                                      tf.constant(conv.bias.detach().numpy()),
                                      tf.constant(relevance.numpy().transpose(0, 2, 3, 1)))
    assert np.abs(ours).max() > 0
    np.testing.assert_allclose(theirs.numpy().transpose(0, 3, 1, 2), ours, rtol=1e-9, atol=1e-12)
