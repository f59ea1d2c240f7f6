"""Expected Gradients, VarGrad and Gradient x Input against Captum and analytic cases; the new
methods' options, flags and the zero-border blur they use."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

import salwidget as sw
from salwidget.errors import SaliencyError

import captum.attr as captum_attr  # noqa: E402  (a test dependency: a missing one must fail, not skip)

from .helpers import keras_twin

TARGETS = [0, 1, 2, 3]
NEW_METHODS = ("guided_backprop", "expected_gradients", "blur_ig", "guided_ig", "xrai")


@pytest.fixture
def linear():
    """A linear model on (3, 16, 16) images: its gradient is the weight row of the target."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 5)).eval()


def weights_of(linear, targets) -> np.ndarray:
    return linear[1].weight.detach().numpy().reshape(5, 3, 16, 16)[targets]


def relative_error(ours, reference) -> float:
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


# ------------------------------------------------------------ gradient x input
def test_gradient_x_input_matches_captum_input_x_gradient(torch_cnn, images):
    ours = sw.attribute(torch_cnn, images, "gradient_x_input", target=TARGETS).raw
    theirs = captum_attr.InputXGradient(torch_cnn).attribute(torch.from_numpy(images), target=TARGETS).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-9)


def test_gradient_x_input_is_ig_from_zero_on_a_linear_model(linear, images):
    ours = sw.attribute(linear, images, "gradient_x_input", target=TARGETS).raw
    integrated = sw.attribute(linear, images, "integrated", target=TARGETS, nsamples=3, baseline=0.0).raw
    np.testing.assert_allclose(ours, weights_of(linear, TARGETS) * images, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours, integrated, rtol=1e-5, atol=1e-9)


# ------------------------------------------------------------------ vargrad
def test_vargrad_is_the_variance_of_smoothgrads_samples(torch_cnn, images):
    options = dict(target=TARGETS, nsamples=12, seed=5, stdev_spread=0.2, batch_size=5)
    vargrad = sw.attribute(torch_cnn, images, "vargrad", **options).raw.astype(np.float64)
    mean_square = sw.attribute(torch_cnn, images, "smoothgrad", magnitude=True, **options).raw.astype(np.float64)
    mean = sw.attribute(torch_cnn, images, "smoothgrad", magnitude=False, **options).raw.astype(np.float64)
    # The reference cancels in float32 (E[g^2] and E[g]^2 are close); other noise samples would differ by ~40%.
    np.testing.assert_allclose(vargrad, mean_square - mean**2, rtol=0.02, atol=1e-3 * vargrad.max())
    assert vargrad.min() >= 0 and vargrad.max() > 0


def test_vargrad_is_zero_on_a_linear_model(linear, images):
    maps = sw.attribute(linear, images, "vargrad", target=TARGETS, nsamples=6, seed=0).raw
    assert np.abs(maps).max() <= 1e-6 * np.abs(weights_of(linear, TARGETS)).max() ** 2


def test_vargrad_agrees_with_captum_noise_tunnel_in_distribution(torch_cnn, images):
    # Captum draws its own noise (and no clean first sample): compare the estimates, not the numbers.
    samples = 128
    ours = sw.attribute(torch_cnn, images, "vargrad", target=TARGETS, nsamples=samples, seed=0).raw
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(torch_cnn))
    torch.manual_seed(0)
    theirs = np.concatenate([
        tunnel.attribute(torch.from_numpy(images[i: i + 1]), nt_type="vargrad", nt_samples=samples,
                         stdevs=float(0.15 * (images[i].max() - images[i].min())), target=TARGETS[i],
                         abs=False).numpy()
        for i in range(len(images))
    ])
    for mine, captum in zip(ours, theirs):
        # Doubling sigma would multiply the variance by ~4: a 10% band on the totals tells them apart.
        assert mine.sum() / captum.sum() == pytest.approx(1.0, abs=0.1)
        assert np.corrcoef(mine.ravel(), captum.ravel())[0, 1] > 0.85


# ------------------------------------------------------------ expected gradients
def test_expected_gradients_on_a_linear_model_is_the_mean_over_references(linear, images):
    references = np.random.default_rng(7).uniform(size=(5, 3, 16, 16)).astype(np.float32)
    # Each round of len(references) samples uses every reference once, whatever the path positions.
    maps = sw.attribute(linear, images, "expected_gradients", target=TARGETS, references=references, nsamples=10,
                        seed=3).raw
    expected = np.stack([w * (x - references).mean(axis=0) for w, x in zip(weights_of(linear, TARGETS), images)])
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_expected_gradients_defaults_to_the_other_images_of_the_batch(linear, images):
    maps = sw.attribute(linear, images, "expected_gradients", target=TARGETS, nsamples=6, seed=1).raw
    others = [np.delete(images, i, axis=0) for i in range(len(images))]
    expected = np.stack([w * (x - rest).mean(axis=0)
                         for w, x, rest in zip(weights_of(linear, TARGETS), images, others)])
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_expected_gradients_with_one_reference_matches_captum_gradient_shap(torch_cnn, images):
    # One reference and no noise: both estimate IG from that reference by random path positions.
    reference = np.random.default_rng(3).uniform(size=(1, 3, 16, 16)).astype(np.float32)
    samples = 64
    ours = sw.attribute(torch_cnn, images, "expected_gradients", target=TARGETS, references=reference,
                        nsamples=samples, seed=0).raw
    torch.manual_seed(0)
    theirs = captum_attr.GradientShap(torch_cnn).attribute(
        torch.from_numpy(images), baselines=torch.from_numpy(reference), n_samples=samples, stdevs=0.0,
        target=TARGETS).numpy()
    integrated = sw.attribute(torch_cnn, images, "integrated", target=TARGETS, nsamples=100, quadrature="trapezoid",
                              baseline=np.broadcast_to(reference, images.shape).copy()).raw
    assert relative_error(theirs, integrated) < 0.03  # the reference's own sampling error
    assert relative_error(ours, integrated) < 0.03
    assert relative_error(ours, theirs) < 0.04


def test_expected_gradients_resumes_and_ignores_chunking(torch_cnn, images):
    first = sw.attribute(torch_cnn, images, "expected_gradients", target=TARGETS, nsamples=3, seed=2)
    resumed = sw.attribute(torch_cnn, images, "expected_gradients", target=TARGETS, nsamples=7, seed=2,
                           resume_from=first)
    fresh = sw.attribute(torch_cnn, images, "expected_gradients", target=TARGETS, nsamples=7, seed=2, batch_size=3)
    assert resumed.passes_done == 4 * len(images)
    np.testing.assert_allclose(resumed.raw, fresh.raw, rtol=1e-5, atol=1e-10)
    assert resumed.signed and fresh.nsamples == 7


def test_expected_gradients_keras_twin_matches_torch(torch_cnn, images):
    # References and positions are host draws: the same numbers in both frameworks.
    ours = sw.attribute(torch_cnn, images, "expected_gradients", target=TARGETS, nsamples=5, seed=4).raw
    keras_maps = sw.attribute(keras_twin(torch_cnn), images.transpose(0, 2, 3, 1), "expected_gradients",
                              target=TARGETS, nsamples=5, seed=4).raw
    np.testing.assert_allclose(keras_maps.transpose(0, 3, 1, 2), ours, rtol=1e-4, atol=1e-5 * np.abs(ours).max())


def test_expected_gradients_explains_missing_and_misshapen_references(torch_cnn, images):
    with pytest.raises(SaliencyError, match="references="):
        sw.attribute(torch_cnn, images[:1], "expected_gradients")
    with pytest.raises(SaliencyError, match="shaped like one image"):
        sw.attribute(torch_cnn, images, "expected_gradients", references=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(SaliencyError, match="batch of reference images"):
        sw.attribute(torch_cnn, images, "expected_gradients", references=np.zeros(5, np.float32))


# ------------------------------------------------------------ options and flags
@pytest.mark.parametrize("method, option, value", [
    ("blur_ig", "max_sigma", 0.0),
    ("blur_ig", "grad_step", -1.0),
    ("blur_ig", "nsamples", 0),
    ("guided_ig", "fraction", 1.5),
    ("guided_ig", "max_dist", -0.1),
    ("xrai", "area_threshold", 2.0),
    ("xrai", "nsamples", 1),
    ("expected_gradients", "nsamples", 0),
])
def test_out_of_range_options_are_refused_by_name(torch_cnn, images, method, option, value):
    with pytest.raises(SaliencyError, match=f"{option} must be"):
        sw.attribute(torch_cnn, images, method, **{option: value})


@pytest.mark.parametrize("name", NEW_METHODS)
def test_new_methods_declare_defaults_help_and_their_sign(name):
    method = sw.get_method(name)
    assert name in sw.METHODS and method.label and method.summary
    for option in method.options:
        assert option.help.strip()
        option.validate(option.default, name)  # every default is allowed by its own range
    assert method.signed == (name in ("expected_gradients", "blur_ig", "guided_ig", "xrai"))
    assert (method.output == "pixel") == (name == "xrai")


def test_signed_methods_of_the_issue():
    for name in ("integrated", "expected_gradients", "gradient_x_input", "blur_ig"):
        assert sw.get_method(name).signed, name


# -------------------------------------------------------------------- blur op
@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_device_blur_equals_scipy_in_both_frameworks(mode):
    from salwidget.backends.tf_backend import TFOps
    from salwidget.backends.torch_backend import TorchOps

    x = np.random.default_rng(0).uniform(size=(3, 3, 20, 17)).astype(np.float32)
    sigmas = np.array([0.7, 6.0, 30.0])  # the last reaches far beyond the image
    expected = np.stack([scipy.ndimage.gaussian_filter(x[i].astype(np.float64), [0, s, s], mode=mode)
                         for i, s in enumerate(sigmas)])
    on_torch = TorchOps(torch.device("cpu"), torch.float32).blur(torch.from_numpy(x), sigmas, False, mode=mode)
    on_tf = TFOps().blur(x.transpose(0, 2, 3, 1), sigmas, True, mode=mode)
    np.testing.assert_allclose(on_torch.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(on_tf).transpose(0, 3, 1, 2), expected, atol=1e-6)
