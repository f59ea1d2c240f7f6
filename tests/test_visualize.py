"""The seed's greyscale visualisation and its fixes."""

from __future__ import annotations

import numpy as np
import pytest

import salwidget as sw


def seed_formula(raw, tile=99):
    """FastEstimator's _convert_for_visualization, in numpy, channels first."""
    flat = np.abs(raw).sum(axis=1, keepdims=True)
    vmax = np.percentile(flat, tile, axis=(1, 2, 3), keepdims=True, method="lower")
    vmin = flat.min(axis=(1, 2, 3), keepdims=True)
    return np.clip((flat - vmin) / (vmax - vmin), 0, 1)[:, 0]


def test_grayscale_equals_the_seed_formula():
    raw = np.random.default_rng(0).normal(size=(3, 3, 10, 12)).astype(np.float32)
    raw[1] *= 1000
    np.testing.assert_allclose(sw.to_grayscale(raw), seed_formula(raw), rtol=1e-5)
    np.testing.assert_allclose(sw.to_grayscale(raw, percentile=50), seed_formula(raw, 50), rtol=1e-5)


def test_grayscale_channels_last_matches_channels_first():
    raw = np.random.default_rng(1).normal(size=(2, 3, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(sw.to_grayscale(raw.transpose(0, 2, 3, 1), channels_last=True), sw.to_grayscale(raw))


def test_constant_map_gives_zeros_not_nan():
    out = sw.to_grayscale(np.full((2, 3, 4, 4), 7.0, np.float32))
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out, 0)


def test_sparse_map_still_shows_its_salient_pixels():
    raw = np.zeros((1, 1, 20, 20), np.float32)
    raw[0, 0, 3, 4] = 5.0  # the 99th percentile is 0, the minimum
    out = sw.to_grayscale(raw)
    assert out[0, 3, 4] == 1.0 and out.sum() == 1.0


def test_diverging_keeps_the_sign():
    raw = np.zeros((1, 3, 4, 4), np.float32)
    raw[0, :, 0, 0] = 1.0
    raw[0, :, 1, 1] = -2.0
    out = sw.to_diverging(raw, percentile=100)
    assert out[0, 0, 0] == pytest.approx(0.5) and out[0, 1, 1] == pytest.approx(-1.0)
    np.testing.assert_array_equal(sw.to_diverging(np.zeros((1, 1, 3, 3))), 0)


def test_grayscale_rejects_a_tuple_of_maps_and_bad_percentile():
    with pytest.raises(sw.SaliencyError, match=r"visualise one input at a time"):
        sw.to_grayscale((np.zeros((1, 3, 2, 2)), np.zeros((1, 3, 2, 2))))
    with pytest.raises(sw.SaliencyError, match=r"percentile must be in \(0, 100\]"):
        sw.to_grayscale(np.zeros((1, 3, 2, 2)), percentile=0)


def test_an_attribution_knows_its_layout_and_a_channels_last_array_is_not_misread():
    from .helpers import keras_twin, make_torch_cnn

    x = np.random.default_rng(0).uniform(size=(2, 3, 16, 16)).astype(np.float32)
    model = make_torch_cnn()
    a_torch = sw.attribute(model, x, "vanilla", target=1)
    a_keras = sw.attribute(keras_twin(model), x.transpose(0, 2, 3, 1), "vanilla", target=1)
    assert sw.to_grayscale(a_keras).shape == (2, 16, 16)
    np.testing.assert_allclose(sw.to_grayscale(a_keras), sw.to_grayscale(a_torch), atol=2e-3)
    np.testing.assert_allclose(sw.to_diverging(a_keras), sw.to_diverging(a_torch), atol=2e-3)
    with pytest.raises(sw.SaliencyError, match=r"looks channels-last.*sw\.to_grayscale\(a\)"):
        sw.to_grayscale(a_keras.raw)
    np.testing.assert_allclose(sw.to_grayscale(a_keras.raw, channels_last=True), sw.to_grayscale(a_keras))


def test_layer_maps_are_upsampled_bilinearly_to_the_input():
    from salwidget.arrays import resize_bilinear

    coarse = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
    fine = resize_bilinear(coarse, (4, 4))
    import torch

    expected = torch.nn.functional.interpolate(torch.from_numpy(coarse)[:, None], size=(4, 4), mode="bilinear",
                                               align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(fine, expected, atol=1e-6)
    a = sw.Attribution(raw=coarse, kind="layer", input_size=(4, 4), target=np.zeros(1, int))
    np.testing.assert_allclose(sw.to_grayscale(a, percentile=100), fine / 3.0, atol=1e-6)
