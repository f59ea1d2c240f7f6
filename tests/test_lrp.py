"""LRP against zennit 0.5.1 on the same torch models (VGG-like with BatchNorm, ResNet-like, MLP), conservation on
bias-free nets, refusals, and the user's model left as found."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.errors import SaliencyError

from .lrp_models import ResNetLike, mlp, twin_with_zennit_sums, vgg_like

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


def test_lrp_on_keras_says_it_is_torch_only(images):
    from .helpers import keras_twin, make_torch_cnn

    with pytest.raises(SaliencyError, match="torch models only"):
        sw.attribute(keras_twin(make_torch_cnn()), images.transpose(0, 2, 3, 1), "lrp")
