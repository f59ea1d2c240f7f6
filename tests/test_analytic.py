"""Methods against cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salwidget as sw

from .helpers import own_options


def linear_model(in_features=12, classes=4, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_features, classes))


@pytest.fixture
def tiny_images():
    return np.random.default_rng(0).normal(size=(3, 3, 2, 2)).astype(np.float32)


def weight_rows(model, target):
    return model[1].weight.detach().numpy()[target].reshape(-1, 3, 2, 2)


def test_vanilla_gradient_of_linear_model_is_its_weight_row(tiny_images):
    model = linear_model()
    a = sw.attribute(model, tiny_images, "vanilla", target=[0, 1, 3])
    np.testing.assert_allclose(a.raw, weight_rows(model, [0, 1, 3]), rtol=1e-6)


@pytest.mark.parametrize("quadrature", ["riemann", "trapezoid"])
def test_integrated_gradients_of_linear_model_with_zero_baseline_is_w_times_x(tiny_images, quadrature):
    model = linear_model()
    a = sw.attribute(model, tiny_images, "integrated", target=2, baseline=0.0, nsamples=7, quadrature=quadrature)
    np.testing.assert_allclose(a.raw, weight_rows(model, [2, 2, 2]) * tiny_images, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a.delta, 0, atol=1e-5)


def test_completeness_within_one_percent_on_a_nonlinear_model(torch_cnn, images):
    a = sw.attribute(torch_cnn, images, "integrated", nsamples=300, baseline=0.0, seed=0)
    with torch.no_grad():
        fx = torch_cnn(torch.from_numpy(images)).numpy()[np.arange(4), a.target]
        fb = torch_cnn(torch.zeros_like(torch.from_numpy(images))).numpy()[np.arange(4), a.target]
    total = a.raw.reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(total, fx - fb, rtol=0.01)
    np.testing.assert_allclose(a.delta, total - (fx - fb), rtol=1e-3, atol=1e-6)


def test_completeness_gap_shrinks_with_more_steps(torch_cnn, images):
    coarse = sw.attribute(torch_cnn, images, "integrated", nsamples=4, baseline=0.0)
    fine = sw.attribute(torch_cnn, images, "integrated", nsamples=64, baseline=0.0)
    assert np.abs(fine.delta).max() < np.abs(coarse.delta).max() / 4


def test_smoothgrad_without_noise_is_the_vanilla_gradient(torch_cnn, images):
    vanilla = sw.attribute(torch_cnn, images, "vanilla")
    signed = sw.attribute(torch_cnn, images, "smoothgrad", stdev_spread=0.0, nsamples=3, magnitude=False)
    squared = sw.attribute(torch_cnn, images, "smoothgrad", stdev_spread=0.0, nsamples=3, magnitude=True)
    np.testing.assert_allclose(signed.raw, vanilla.raw, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(squared.raw, vanilla.raw**2, rtol=1e-5, atol=1e-12)


class HalfSquaredNorm(torch.nn.Module):
    """f(x) = 0.5 * |x|^2 for every class: its gradient is x itself."""

    def forward(self, x):
        value = 0.5 * (x**2).flatten(1).sum(1, keepdim=True)
        return torch.cat([value, -value], dim=1)


def test_smoothgrad_noise_sigma_is_per_image():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2, 3, 32, 32)).astype(np.float32)
    x[1] *= 100  # a hundred times the range
    # With two samples, raw = (x + (x + noise)) / 2, so the noise is 2 (raw - x).
    a = sw.attribute(HalfSquaredNorm(), x, "smoothgrad", nsamples=2, magnitude=False, stdev_spread=0.1, target=0, seed=3)
    noise = 2 * (a.raw - x)
    for i in range(2):
        expected = 0.1 * (x[i].max() - x[i].min())
        assert noise[i].std() == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("method", ["vanilla", "smoothgrad", "integrated"])
def test_given_target_is_used_for_every_noisy_or_interpolated_sample(tiny_images, method):
    # A linear model's gradient is the target's weight row at every point: any
    # sample explained for another class (e.g. the noisy argmax) would show.
    model = linear_model()
    a = sw.attribute(model, tiny_images, method, target=1, seed=1,
                     **own_options(method, stdev_spread=5.0, nsamples=6, magnitude=False, baseline=0.0))
    rows = weight_rows(model, [1, 1, 1])
    expected = rows * tiny_images if method == "integrated" else rows
    np.testing.assert_allclose(a.raw, expected, rtol=1e-5, atol=1e-7)


def test_predicted_target_is_taken_once_on_the_clean_input(tiny_images):
    model = linear_model()
    with torch.no_grad():
        predicted = model(torch.from_numpy(tiny_images)).argmax(1).numpy()
    a = sw.attribute(model, tiny_images, "smoothgrad", stdev_spread=50.0, nsamples=8, magnitude=False, seed=0)
    np.testing.assert_array_equal(a.target, predicted)
    np.testing.assert_allclose(a.raw, weight_rows(model, predicted), rtol=1e-5)


def test_smooth_integrated_on_linear_model_is_w_times_mean_noisy_input(tiny_images):
    # Each sample is IG from a zero baseline to x + noise: w * (x + noise).
    model = linear_model()
    a = sw.attribute(model, tiny_images, "smooth_integrated", target=0, nsamples=5, nintegration=3,
                     magnitude=False, baseline=0.0, stdev_spread=0.0)
    np.testing.assert_allclose(a.raw, weight_rows(model, [0, 0, 0]) * tiny_images, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a.delta, 0, atol=1e-5)


def test_multi_input_maps_are_multiplied_by_their_own_difference():
    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 3)
            self.b = torch.nn.Linear(2, 3)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    torch.manual_seed(0)
    model = TwoInputs()
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(2, 2)).astype(np.float32)
    a = sw.attribute(model, (x, y), "integrated", target=[0, 2], baseline=0.0, nsamples=5)
    assert isinstance(a.raw, tuple) and len(a.raw) == 2
    wa, wb = model.a.weight.detach().numpy(), model.b.weight.detach().numpy()
    np.testing.assert_allclose(a.raw[0], wa[[0, 2]] * x, rtol=1e-5)
    np.testing.assert_allclose(a.raw[1], wb[[0, 2]] * y, rtol=1e-5)
    np.testing.assert_allclose(a.delta, 0, atol=1e-5)


def test_a_map_is_signed_unless_its_samples_are_squared(tiny_images):
    model = linear_model()
    assert sw.attribute(model, tiny_images, "integrated", nsamples=3).signed
    assert not sw.attribute(model, tiny_images, "smoothgrad", nsamples=2).signed
    assert sw.attribute(model, tiny_images, "smoothgrad", nsamples=2, magnitude=False).signed
    assert not sw.attribute(model, tiny_images, "smooth_integrated", nsamples=2, nintegration=2).signed
    assert sw.attribute(model, tiny_images, "smooth_integrated", nsamples=2, nintegration=2, magnitude=False).signed
