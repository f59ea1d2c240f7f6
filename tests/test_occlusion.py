"""Occlusion against Captum's Occlusion on the same torch model, and the Keras twin against torch."""

from __future__ import annotations

import numpy as np
import pytest

import salwidget as sw
from salwidget.errors import SaliencyError
from salwidget.methods.occlusion import indicator, occlusion_maps, window_starts

from .helpers import keras_twin, make_torch_cnn


@pytest.fixture
def model64():
    return make_torch_cnn().double()


@pytest.fixture
def pictures():
    return np.random.default_rng(3).uniform(0, 1, (3, 3, 16, 16))


@pytest.mark.parametrize("window, stride", [(4, 3), (5, 4), (16, 16), (3, 1)])
def test_occlusion_equals_captum_including_windows_cut_at_the_border(model64, pictures, window, stride):
    import torch
    from captum.attr import Occlusion

    targets = [0, 3, 4]
    ours = sw.attribute(model64, pictures, "occlusion", window=window, stride=stride, fill=0.25, target=targets,
                        batch_size=7)
    theirs = Occlusion(model64).attribute(
        torch.tensor(pictures), sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
        baselines=0.25, target=targets, perturbations_per_eval=5,
    ).numpy()
    assert ours.raw.shape == (3, 16, 16) and ours.kind == "pixel"
    np.testing.assert_allclose(theirs[:, 1], theirs[:, 0])  # Captum's map is the same on every channel
    scale = np.abs(theirs).max()
    assert scale > 1e-4
    # float64 model: equal up to the Attribution's float32 maps
    np.testing.assert_allclose(ours.raw, theirs[:, 0], rtol=1e-6, atol=1e-7 * scale)


def test_the_combination_is_captums_mean_in_float64():
    starts = window_starts(11, 4, 3)
    assert starts.tolist() == [0, 3, 6, 9]  # ceil((11 - 4) / 3) + 1 windows, the last cut at the border
    rows = indicator(11, starts, 4)
    assert rows[-1].tolist() == [0] * 9 + [1, 1]
    differences = np.random.default_rng(0).normal(size=(1, 4, 4))
    maps = occlusion_maps(differences, rows, rows)
    # pixel (10, 0): only the last window row covers it, and the first window column
    assert maps[0, 10, 0] == differences[0, 3, 0]
    # pixel (3, 3): the windows starting at rows 0 and 3 cover it, and the same columns
    np.testing.assert_allclose(maps[0, 3, 3], differences[0, :2, :2].mean())


@pytest.mark.parametrize("fill", ["mean", "blur", -1.0])
def test_keras_twin_equals_torch(pictures, fill):
    torch_model = make_torch_cnn().double()
    keras_model = keras_twin(torch_model)  # salwidget's TensorFlow backend computes in float32
    x = pictures
    kwargs = dict(window=5, stride=3, fill=fill, target=[1, 2, 0])
    ours = sw.attribute(torch_model, x, "occlusion", **kwargs)
    theirs = sw.attribute(keras_model, x.transpose(0, 2, 3, 1), "occlusion", **kwargs)
    np.testing.assert_allclose(theirs.raw, ours.raw, atol=2e-6 * np.abs(ours.scores).max())
    # the tolerance is float32 rounding of the scores whose differences make the map; the map is not that small
    assert np.abs(ours.raw).max() > 100 * 2e-6 * np.abs(ours.scores).max()


def test_fill_mean_hides_with_each_images_channel_means(model64, pictures):
    import torch
    from captum.attr import Occlusion

    means = pictures.mean(axis=(2, 3), keepdims=True)
    ours = sw.attribute(model64, pictures, "occlusion", window=4, stride=4, fill="mean", target=1)
    theirs = Occlusion(model64).attribute(torch.tensor(pictures), sliding_window_shapes=(3, 4, 4),
                                          strides=(3, 4, 4), baselines=torch.tensor(means), target=1).numpy()
    np.testing.assert_allclose(ours.raw, theirs[:, 0], rtol=1e-6, atol=1e-7 * np.abs(theirs).max())


@pytest.mark.parametrize("bad, words", [(dict(fill="zero"), "fill must be"), (dict(window=40), "larger than the image"),
                                        (dict(stride=0), "stride must be")])
def test_bad_occlusion_settings_are_refused(model64, pictures, bad, words):
    with pytest.raises(SaliencyError, match=words):
        sw.attribute(model64, pictures, "occlusion", **bad)


def test_cancel_between_chunks_and_progress(model64, pictures):
    seen = []
    result = sw.attribute(model64, pictures[:1], "occlusion", window=4, stride=4, batch_size=4,
                          progress=lambda done, total, partial: seen.append((done, total)))
    assert seen[-1] == (17, 17) and len(seen) >= 4 and result.passes_done == 17
    with pytest.raises(sw.AttributionCancelled):
        sw.attribute(model64, pictures[:1], "occlusion", window=4, stride=4, batch_size=4,
                     cancel=lambda: len(seen) > 5, progress=lambda *a: seen.append(a))
