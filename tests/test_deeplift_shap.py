"""DeepLIFT, DeepLiftShap and GradientSHAP against Captum, analytic cases, hand-written draws and Keras twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.randomness import NOISE, POSITION, REFERENCE, Draws

from .helpers import keras_twin, make_torch_cnn

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TARGETS = [0, 1, 2, 3]


def relu_cnn(seed=0, functional=False):
    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Conv2d(6, 8, 3, stride=2)
            self.bn = torch.nn.BatchNorm2d(8)
            self.relu1, self.relu2 = torch.nn.ReLU(), torch.nn.ReLU()  # Captum needs each module used once
            self.sigmoid = torch.nn.Sigmoid()
            self.pool, self.fc1, self.fc2 = torch.nn.AvgPool2d(2), torch.nn.Linear(72, 16), torch.nn.Linear(16, 5)
            with torch.no_grad():
                self.bn.running_mean.uniform_(-0.2, 0.2)
                self.bn.running_var.uniform_(0.5, 2)

        def forward(self, x):
            act1 = torch.nn.functional.relu if functional else self.relu1
            act2 = torch.nn.functional.relu if functional else self.relu2
            x = self.pool(act2(self.bn(self.conv2(act1(self.conv1(x))))))
            squash = torch.sigmoid if functional else self.sigmoid
            return self.fc2(squash(self.fc1(x.flatten(1))))

    return Net().eval()


def captum(cls, model, x, baselines, **kwargs):
    return cls(model).attribute(torch.as_tensor(x), baselines=torch.as_tensor(baselines), target=TARGETS,
                                **kwargs).detach().numpy()


def close(ours, reference, rtol=1e-5):
    np.testing.assert_allclose(ours, reference, rtol=rtol, atol=rtol * float(np.abs(reference).max()))


@pytest.mark.parametrize("make", [make_torch_cnn, relu_cnn])
@pytest.mark.parametrize("baseline", ["zero", "image", "per_image"])
def test_deeplift_equals_captum(images, make, baseline):
    """In float64: where a pre-activation nearly equals the baseline's, the difference quotient magnifies
    float32 rounding, which differs with the batch's size (salwidget passes one shared baseline row)."""
    from captum.attr import DeepLift

    model, images = make().double(), images.astype(np.float64)
    rng = np.random.default_rng(3)
    value = {"zero": np.zeros((3, 16, 16)), "image": rng.uniform(0, 1, (3, 16, 16)),
             "per_image": rng.uniform(0, 1, (4, 3, 16, 16))}[baseline].astype(np.float32).astype(np.float64)
    ours = sw.attribute(model, images, "deeplift", baseline=0.0 if baseline == "zero" else value, target=TARGETS)
    reference = captum(DeepLift, model, images, np.broadcast_to(value, images.shape).copy())
    close(ours.raw, reference)
    np.testing.assert_allclose(ours.delta, 0, atol=1e-5 * np.abs(reference).sum(axis=(1, 2, 3)).max())


def test_deeplift_shap_equals_captum(images):
    from captum.attr import DeepLiftShap

    model, images = relu_cnn().double(), images.astype(np.float64)
    references = np.random.default_rng(4).uniform(0, 1, (3, 3, 16, 16)).astype(np.float32).astype(np.float64)
    ours = sw.attribute(model, images, "deeplift_shap", references=references, target=TARGETS, batch_size=5)
    close(ours.raw, captum(DeepLiftShap, model, images, references))
    assert ours.passes_total == 12


def test_deeplift_completeness_on_a_relu_net_and_its_rule_on_functional_relus(images):
    """sum(map) = f(x) - f(b) (gap near zero), and functional ReLUs (which Captum's module hooks miss) get the
    Rescale rule: the same map as the module version of the same network."""
    modules, functional = relu_cnn(), relu_cnn(functional=True)
    a = sw.attribute(modules, images, "deeplift", baseline=0.0, target=TARGETS)
    b = sw.attribute(functional, images, "deeplift", baseline=0.0, target=TARGETS)
    with torch.no_grad():
        gain = (modules(torch.as_tensor(images)) - modules(torch.zeros(1, 3, 16, 16))).numpy()[range(4), TARGETS]
    np.testing.assert_allclose(a.raw.sum(axis=(1, 2, 3)), gain, rtol=1e-4, atol=1e-6)
    assert np.abs(a.delta).max() < 1e-4 * np.abs(gain).max()  # float32 sums of 768 terms
    close(b.raw, a.raw)
    assert not np.allclose(a.raw, sw.attribute(modules, images, "gradient_x_input", target=TARGETS).raw, atol=1e-4)


def test_deeplift_on_a_two_layer_relu_mlp_is_the_analytic_multiplier():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)).eval()
    x, b = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32), np.full((6, 5), 0.3, np.float32)
    w1, b1 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    w2 = model[2].weight.detach().numpy()
    z, zb = x @ w1.T + b1, b @ w1.T + b1
    ratio = np.where(np.abs(z - zb) < 1e-10, (z > 0), (np.maximum(z, 0) - np.maximum(zb, 0)) / (z - zb))
    expected = (x - b) * ((w2[[0, 1, 2, 0, 1, 2]] * ratio) @ w1)
    a = sw.attribute(model, x, "deeplift", baseline=0.3, target=[0, 1, 2, 0, 1, 2])
    close(a.raw, expected, rtol=1e-5)


@pytest.mark.parametrize("bias", [0.5, -2.0])
def test_deeplift_where_a_pre_activation_equals_the_baselines_takes_the_relu_derivative(bias):
    """A hidden unit whose weights are orthogonal to x - b has t = t_b exactly: its multiplier is the
    derivative [t > 0] (0/0 otherwise, a NaN map), and it still moves each pixel's share."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1)).eval()
    w1, b1, w2 = np.array([[1.0, 1.0], [1.0, -1.0]]), np.array([bias, 0.25]), np.array([[2.0, -1.0]])
    with torch.no_grad():
        model[0].weight.copy_(torch.as_tensor(w1)), model[0].bias.copy_(torch.as_tensor(b1))
        model[2].weight.copy_(torch.as_tensor(w2)), model[2].bias.zero_()
    x, b = np.array([[0.75, 0.25]], np.float32), np.array([[0.25, 0.75]], np.float32)
    z, zb = x @ w1.T + b1, b @ w1.T + b1
    assert z[0, 0] == zb[0, 0]  # exact in binary fractions
    ratio = np.where(z == zb, z > 0, (np.maximum(z, 0) - np.maximum(zb, 0)) / np.where(z == zb, 1, z - zb))
    expected = (x - b) * ((w2 * ratio) @ w1)
    result = sw.attribute(model, x, "deeplift", baseline=b, target=0)
    assert np.isfinite(result.raw).all()
    close(result.raw, expected, rtol=1e-6)


class _HostOps:
    asarray = staticmethod(lambda value, dtype="float": np.asarray(value))


def test_gradient_shap_equals_a_hand_written_reference_on_the_same_draws(images):
    """Draws made by salwidget.randomness (portable numpy draws); every other step written here."""
    model, nsamples, spread = relu_cnn(), 7, 0.1
    references = np.random.default_rng(5).uniform(0, 1, (3, 3, 16, 16)).astype(np.float32)
    ours = sw.attribute(model, images, "gradient_shap", references=references, nsamples=nsamples,
                        stdev_spread=spread, target=TARGETS, seed=9, rng="numpy", batch_size=5)
    draws = Draws(_HostOps(), [images.shape], 9, "numpy", False)
    sigma = spread * (images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)))
    total = np.zeros_like(images)
    for s in range(nsamples):
        round_, position = divmod(s, 3)
        picked = np.argsort(draws.vector(REFERENCE, round_, 4 * 3).reshape(4, 3), axis=1, kind="stable")[:, position]
        alpha = draws.vector(POSITION, s, 4).astype(np.float32)[:, None, None, None]
        noisy = images + draws.normal(NOISE, 0, s) * sigma[:, None, None, None]
        point = torch.as_tensor((references[picked] + alpha * (noisy - references[picked])).astype(np.float32))
        point.requires_grad_(True)
        model(point)[range(4), TARGETS].sum().backward()
        total += (noisy - references[picked]) * point.grad.numpy()
    close(ours.raw, total / nsamples, rtol=1e-4)


def test_gradient_shap_without_noise_matches_captum_in_expectation(images):
    """Captum draws its own references and positions: with many samples both estimate the same expectation."""
    from captum.attr import GradientShap

    model = relu_cnn()
    references = np.random.default_rng(5).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)
    ours = sw.attribute(model, images, "gradient_shap", references=references, nsamples=400, target=TARGETS)
    torch.manual_seed(0)
    reference = captum(GradientShap, model, images, references, n_samples=400)
    other = sw.attribute(model, images, "gradient_shap", references=references, nsamples=400, target=TARGETS, seed=1)
    within = np.abs(other.raw - ours.raw).mean()
    assert np.abs(reference - ours.raw).mean() < 2.0 * within
    assert np.corrcoef(reference.ravel(), ours.raw.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("method,options", [
    ("deeplift", dict(baseline=0.0)),
    ("deeplift", dict(baseline="uniform", seed=3)),
    ("deeplift_shap", dict(references=np.random.default_rng(6).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32))),
    ("gradient_shap", dict(nsamples=5, stdev_spread=0.1, rng="numpy", seed=4)),
    ("gradient_shap", dict(nsamples=5, stdev_spread=0.1, seed=4)),
])
def test_propagation_methods_give_the_same_maps_in_any_chunk_size(images, method, options):
    """float64: a difference quotient magnifies float32 rounding, which differs with the chunk's size."""
    model, images = relu_cnn().double(), images.astype(np.float64)
    whole = sw.attribute(model, images, method, target=TARGETS, batch_size=64, **options)
    single = sw.attribute(model, images, method, target=TARGETS, batch_size=1, **options)
    close(single.raw, whole.raw, rtol=1e-5)


@pytest.mark.parametrize("method,options", [
    ("deeplift", dict(baseline=0.0)),
    ("deeplift", dict(baseline=np.random.default_rng(7).uniform(0, 1, (4, 3, 16, 16)).astype(np.float32))),
    ("deeplift_shap", dict(references=np.random.default_rng(6).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32))),
    ("gradient_shap", dict(nsamples=5, stdev_spread=0.1, rng="numpy", seed=2)),
])
def test_propagation_methods_are_equal_in_torch_and_keras(images, method, options):
    """float64 twins, both computed in float64 (a float64 Keras model gets float64 inputs): a difference
    quotient would magnify float32 rounding, which differs between the frameworks."""
    torch_model = make_torch_cnn()
    keras_model = keras_twin(torch_model, dtype="float64")
    torch_model, images = torch_model.double(), images.astype(np.float64)
    keras_options = dict(options)
    for name in ("references", "baseline"):  # arrays in Keras' layout
        if isinstance(options.get(name), np.ndarray):
            keras_options[name] = options[name].transpose(0, 2, 3, 1)
    a_torch = sw.attribute(torch_model, images, method, target=TARGETS, **options)
    a_keras = sw.attribute(keras_model, images.transpose(0, 2, 3, 1), method, target=TARGETS, **keras_options)
    np.testing.assert_allclose(a_torch.scores, a_keras.scores, rtol=1e-6, atol=1e-9)  # scores are kept in float32
    ours, theirs = a_keras.raw.transpose(0, 3, 1, 2), a_torch.raw
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9 * scale)
    if a_torch.delta is not None:
        np.testing.assert_allclose(a_keras.delta, a_torch.delta, rtol=1e-6, atol=1e-9 * np.abs(a_torch.scores).max())
    assert not np.allclose(theirs, sw.attribute(torch_model, images, "gradient_x_input", target=TARGETS).raw,
                           atol=1e-2 * scale) or method == "gradient_shap"


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("baseline", ["zero", "per_image"])
def test_deeplift_explaining_the_prediction_equals_deeplift_given_the_predicted_classes(images, framework, baseline):
    """With no target DeepLIFT reads the clean outputs and predictions from its own pass (the reference rows
    ride along in it, scored again for each image's predicted class): the same maps, scores and deltas as
    when the predicted classes are given (the engine's clean forward first)."""
    torch_model = make_torch_cnn()
    with torch.no_grad():  # a classifier over the centred features: the four images' predictions differ
        features = torch_model[:6](torch.as_tensor(images))
        weight = torch.as_tensor(np.random.default_rng(0).normal(size=(5, 8)), dtype=torch.float32)
        weight /= (features - features.mean(0)).std()
        torch_model[6].weight.copy_(weight)
        torch_model[6].bias.copy_(-(features.mean(0) @ weight.T))
    model = keras_twin(torch_model, dtype="float64") if framework == "keras" else torch_model.double()
    x = images.astype(np.float64)
    value = 0.0 if baseline == "zero" else np.random.default_rng(8).uniform(0, 1, x.shape)
    if framework == "keras":
        x = x.transpose(0, 2, 3, 1)
        value = value if baseline == "zero" else value.transpose(0, 2, 3, 1)
    predicted = sw.predict(model, x).argmax(1)
    assert len(set(predicted.tolist())) > 1  # the rows' targets differ: image 0's would be wrong for the others
    fused = sw.attribute(model, x, "deeplift", baseline=value)
    given = sw.attribute(model, x, "deeplift", baseline=value, target=predicted)
    np.testing.assert_array_equal(fused.target, predicted)
    np.testing.assert_allclose(fused.scores, given.scores, rtol=1e-12)
    np.testing.assert_allclose(fused.raw, given.raw, rtol=1e-9, atol=1e-12 * np.abs(given.raw).max())
    np.testing.assert_allclose(fused.delta, given.delta, atol=1e-9 * np.abs(given.scores).max())
    np.testing.assert_allclose(fused.delta, 0, atol=1e-6 * np.abs(given.scores).max())  # f(x) - f(b), each class


def test_deeplift_runs_the_model_once_per_chunk_when_explaining_raw_classes(images):
    """No clean forward of its own, no extra pass for a shared reference: one call of the model per chunk."""
    calls = []

    class Counted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            calls.append(len(x))
            return self.inner(x)

    model = Counted(relu_cnn())
    for target in (None, TARGETS):
        calls.clear()
        sw.attribute(model, images, "deeplift", baseline=0.0, target=target, batch_size=2)
        assert calls == [3, 3], calls  # two images and the shared black reference, twice
