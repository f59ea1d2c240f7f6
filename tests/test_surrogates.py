"""Feature ablation, LIME and KernelSHAP over segments, each against its reference."""

from __future__ import annotations

import numpy as np
import pytest

import salwidget as sw
from salwidget.errors import SaliencyError
from salwidget.methods import segments as segments_module
from salwidget.methods.surrogates import coalitions_of, lime_weights, shapley_weights

from .helpers import keras_twin, make_torch_cnn, own_options


@pytest.fixture
def model64():
    return make_torch_cnn().double()


@pytest.fixture
def pictures():
    return np.random.default_rng(3).uniform(0, 1, (2, 3, 16, 16))


@pytest.fixture
def six_segments():
    """(2, 16, 16) labels 0..5: blocks of a 2 x 3 grid, shifted in the second image."""
    rows, columns = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    first = (rows // 8) * 3 + np.minimum(columns // 6, 2)
    return np.stack([first, (first + 2) % 6])


def direct_scores(model, image, labels, z, fill, target):
    """The target's scores of ``image`` with the segments off in each coalition replaced by ``fill``."""
    import torch

    keep = z[:, labels].astype(bool)[:, None]  # (P, 1, H, W)
    copies = np.where(keep, image[None], fill)
    with torch.no_grad():
        return model(torch.tensor(copies)).numpy()[:, target]


@pytest.mark.parametrize("shared", [False, True])
def test_feature_ablation_equals_captum(model64, pictures, six_segments, shared):
    import torch
    from captum.attr import FeatureAblation

    mask = six_segments[0] if shared else six_segments
    ours = sw.attribute(model64, pictures, "feature_ablation", segments=mask, fill=0.2, target=[1, 3], batch_size=4)
    theirs = FeatureAblation(model64).attribute(
        torch.tensor(pictures), feature_mask=torch.tensor(np.broadcast_to(mask, (2, 16, 16)).copy())[:, None],
        baselines=0.2, target=[1, 3]).numpy()
    scale = np.abs(theirs).max()
    assert scale > 1e-4
    np.testing.assert_allclose(ours.raw, theirs[:, 0], rtol=1e-6, atol=1e-7 * scale)


def test_kernel_shap_converges_to_exact_shapley_values_and_adds_up(model64, pictures, six_segments):
    import torch
    from captum.attr import ShapleyValues

    x = torch.tensor(pictures)
    exact = ShapleyValues(model64).attribute(x, feature_mask=torch.tensor(six_segments)[:, None], baselines=0.0,
                                             target=2, perturbations_per_eval=64).numpy()[:, 0]
    ours = sw.attribute(model64, pictures, "kernel_shap", segments=six_segments, nsamples=3000, seed=1, target=2)
    for b in range(2):
        values = np.array([ours.raw[b][six_segments[b] == s][0] for s in range(6)])
        truth = np.array([exact[b][six_segments[b] == s][0] for s in range(6)])
        np.testing.assert_allclose(values, truth, atol=0.05 * np.abs(truth).max())
        with torch.no_grad():
            gap = (model64(x[b:b + 1]) - model64(torch.zeros_like(x[b:b + 1])))[0, 2].item()
        np.testing.assert_allclose(values.sum(), gap, rtol=1e-4)
    few = sw.attribute(model64, pictures, "kernel_shap", segments=six_segments, nsamples=20, seed=1, target=2)
    assert np.abs(few.raw - exact).max() > np.abs(ours.raw - exact).max()  # more samples, closer


def _per_segment(maps, labels, count):
    return np.array([maps[labels == s][0] for s in range(count)])


def test_lime_equals_lime_packages_fit_on_the_same_samples(model64, pictures, six_segments):
    from lime.lime_base import LimeBase

    ours = sw.attribute(model64, pictures, "lime", segments=six_segments, nsamples=80, seed=5, target=[0, 4],
                        fill=0.5, batch_size=16)
    for b, target in enumerate([0, 4]):
        z = coalitions_of("lime", 6, dict(nsamples=80), seed=5, image_id=b)
        assert z.shape == (80, 6) and z[0].all()
        scores = direct_scores(model64, pictures[b], six_segments[b], z, 0.5, target)
        from sklearn.metrics import pairwise_distances

        distances = pairwise_distances(z, z[:1], metric="cosine").ravel()
        base = LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2)))
        _, weights, _, _ = base.explain_instance_with_data(z, scores[:, None], distances, 0, 6,
                                                           feature_selection="none")
        theirs = np.zeros(6)
        for feature, weight in weights:
            theirs[feature] = weight
        np.testing.assert_allclose(_per_segment(ours.raw[b], six_segments[b], 6), theirs,
                                   rtol=1e-5, atol=1e-6 * np.abs(theirs).max())
        assert np.abs(theirs).max() > 1e-4


def test_kernel_shap_equals_the_shapley_kernel_regression_on_the_same_samples(model64, pictures, six_segments):
    from sklearn.linear_model import LinearRegression  # what Captum's KernelShap fits (SkLearnLinearRegression)

    ours = sw.attribute(model64, pictures, "kernel_shap", segments=six_segments, nsamples=40, seed=9, target=1)
    for b in range(2):
        z = coalitions_of("kernel_shap", 6, dict(nsamples=40), seed=9, image_id=b)
        assert z[0].sum() == 0 and z[1].all() and 0 < z[2:].sum(axis=1).min() and z[2:].sum(axis=1).max() < 6
        scores = direct_scores(model64, pictures[b], six_segments[b], z, 0.0, 1)
        fit = LinearRegression().fit(z, scores, sample_weight=shapley_weights(z))
        np.testing.assert_allclose(_per_segment(ours.raw[b], six_segments[b], 6), fit.coef_,
                                   rtol=1e-4, atol=1e-5 * np.abs(fit.coef_).max())


def test_lime_weights_are_lime_images_kernel():
    from sklearn.metrics import pairwise_distances

    z = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], np.uint8)
    d = pairwise_distances(z, z[:1], metric="cosine").ravel()
    np.testing.assert_allclose(lime_weights(z, 0.25), np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2)))


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_samples_are_keyed_by_image_id_not_row_or_chunk(model64, pictures, six_segments, method):
    one = sw.attribute(model64, pictures, method, segments=six_segments, nsamples=30, seed=2, target=1, batch_size=3)
    other = sw.attribute(model64, pictures[::-1].copy(), method, segments=six_segments[::-1].copy(), nsamples=30,
                         seed=2, target=1, batch_size=17, image_ids=[1, 0])
    np.testing.assert_allclose(other.raw[::-1], one.raw, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["feature_ablation", "lime", "kernel_shap"])
def test_keras_twin_equals_torch(pictures, six_segments, method):
    torch_model = make_torch_cnn().double()
    keras_model = keras_twin(torch_model)  # float32 in salwidget's TensorFlow backend
    kwargs = dict(segments=six_segments, nsamples=40, seed=3, target=[2, 0], fill="mean")
    kwargs = own_options(method, **kwargs)  # feature ablation draws no samples: no nsamples=
    ours = sw.attribute(torch_model, pictures, method, **kwargs)
    theirs = sw.attribute(keras_model, pictures.transpose(0, 2, 3, 1), method, **kwargs)
    # a fit of float32 scores: its rounding grows by the conditioning of the coalitions
    np.testing.assert_allclose(theirs.raw, ours.raw, atol=2e-4 * np.abs(ours.raw).max())
    assert np.abs(ours.raw).max() > 1e-4


def test_segments_are_computed_once_per_image(model64, pictures, monkeypatch):
    from skimage import segmentation

    calls = []
    original = segmentation.slic
    monkeypatch.setattr(segmentation, "slic", lambda *a, **k: calls.append(1) or original(*a, **k))
    segments_module._MEMO.clear()
    first = sw.attribute(model64, pictures, "lime", segments="slic", nsamples=10, seed=0)
    sw.attribute(model64, pictures, "lime", segments="slic", nsamples=20, seed=0)
    assert len(calls) == 2  # two images, segmented once
    labels = first.extras["segments"]
    assert labels.shape == (2, 16, 16) and labels.min() == 0 and labels[0].max() >= 1


@pytest.mark.parametrize("algorithm", ["quickshift", "felzenszwalb"])
def test_other_segmentations_give_maps_constant_on_each_segment(model64, pictures, algorithm):
    result = sw.attribute(model64, pictures, "feature_ablation", segments=algorithm)
    labels = result.extras["segments"]
    for s in np.unique(labels[0]):
        assert np.ptp(result.raw[0][labels[0] == s]) == 0


@pytest.mark.parametrize("bad, words", [("watershed", "segments must be one of"),
                                        (np.zeros((16, 16)), "integer array"),
                                        (np.zeros((3, 16, 16), int), "must be \\(H, W\\)")])
def test_bad_segments_are_refused(model64, pictures, bad, words):
    with pytest.raises(SaliencyError, match=words):
        sw.attribute(model64, pictures, "lime", segments=bad)
