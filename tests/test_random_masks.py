"""RISE and Sobol against hand-written numpy versions given the same masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import salwidget as sw
from salwidget.errors import SaliencyError
from salwidget.methods.random_masks import RISE_MASKS, rise_draws, sobol_design

from .helpers import keras_twin, make_torch_cnn


@pytest.fixture
def model64():
    return make_torch_cnn().double()


@pytest.fixture
def pictures():
    return np.random.default_rng(4).uniform(0, 1, (2, 3, 16, 16))


def scores_of(model, copies, target):
    import torch

    with torch.no_grad():
        return model(torch.tensor(copies)).numpy()[:, target]


def numpy_rise_masks(grids, shifts, size, grid):
    """Upsampled with torch's bilinear resize (half-pixel centres), cropped by numpy slicing."""
    import torch

    cell = (math.ceil(size[0] / grid), math.ceil(size[1] / grid))
    big = ((grid + 1) * cell[0], (grid + 1) * cell[1])
    up = torch.nn.functional.interpolate(torch.tensor(grids, dtype=torch.float64)[:, None], size=big,
                                         mode="bilinear", align_corners=False)[:, 0].numpy()
    return np.stack([u[y:y + size[0], x:x + size[1]] for u, (y, x) in zip(up, shifts)])


def test_rise_equals_numpy_rise_on_the_same_masks(model64, pictures):
    ours = sw.attribute(model64, pictures, "rise", nmasks=300, grid=5, keep=0.4, seed=7, target=[2, 1],
                        batch_size=64)
    assert ours.raw.shape == (2, 16, 16)
    for b, target in enumerate([2, 1]):
        grids, shifts = rise_draws(300, 5, 0.4, (4, 4), np.random.default_rng([7, RISE_MASKS, b]))
        masks = numpy_rise_masks(grids, shifts, (16, 16), 5)
        assert masks.min() >= 0 and masks.max() <= 1 + 1e-12 and 0 < masks.mean() < 1
        scores = scores_of(model64, pictures[b][None] * masks[:, None], target)
        reference = np.einsum("n,nhw->hw", scores, masks) / (300 * 0.4)
        np.testing.assert_allclose(ours.raw[b], reference, rtol=1e-6, atol=1e-7 * np.abs(reference).max())


def numpy_sobol(model, image, target, grid, nmasks):
    """xplique's SobolAttributionMethod (ScipySobolSequenceRS, JansenEstimator, inpainting) in numpy."""
    design = sobol_design(grid * grid, nmasks).reshape(-1, grid, grid)
    size = image.shape[-1]
    assert size % grid == 0
    masks = design.repeat(size // grid, axis=1).repeat(size // grid, axis=2)  # nearest upsampling
    outputs = scores_of(model, image[None] * masks[:, None], target)
    dims = grid * grid
    a, c = outputs[:nmasks], outputs[2 * nmasks:].reshape(dims, nmasks)
    var = np.sum((a - a.mean()) ** 2) / (nmasks - 1)
    return (np.sum((a[None] - c) ** 2, axis=-1) / (2.0 * nmasks * var)).reshape(grid, grid)


def test_sobol_design_is_xpliques_replicated_design():
    from scipy.stats import qmc

    design = sobol_design(4, 8)
    ab = qmc.Sobol(8, scramble=False).random(8)
    np.testing.assert_array_equal(design[:8], ab[:, :4].astype(np.float32))
    np.testing.assert_array_equal(design[8:16], ab[:, 4:].astype(np.float32))
    c2 = design[16 + 2 * 8: 16 + 3 * 8]  # C_2: A with column 2 from B
    np.testing.assert_array_equal(c2[:, [0, 1, 3]], design[:8][:, [0, 1, 3]])
    np.testing.assert_array_equal(c2[:, 2], design[8:16][:, 2])


def test_sobol_equals_numpy_xplique_estimator_on_the_same_masks(model64, pictures):
    ours = sw.attribute(model64, pictures, "sobol", grid=4, nmasks=16, target=[0, 3], batch_size=50)
    assert ours.raw.shape == (2, 4, 4) and ours.kind == "layer"
    for b, target in enumerate([0, 3]):
        reference = numpy_sobol(model64, pictures[b], target, 4, 16)
        assert reference.min() >= 0 and reference.max() > 0.01
        np.testing.assert_allclose(ours.raw[b], reference, rtol=1e-5)


@pytest.mark.parametrize("method, kwargs", [("rise", dict(nmasks=64, grid=4)), ("sobol", dict(grid=4, nmasks=8))])
def test_keras_twin_equals_torch(pictures, method, kwargs):
    torch_model = make_torch_cnn()
    x = pictures.astype(np.float32)
    ours = sw.attribute(torch_model, x, method, seed=1, target=[4, 2], **kwargs)
    theirs = sw.attribute(keras_twin(torch_model), x.transpose(0, 2, 3, 1), method, seed=1, target=[4, 2], **kwargs)
    np.testing.assert_allclose(theirs.raw, ours.raw, rtol=2e-3, atol=2e-3 * np.abs(ours.raw).max())


def test_rise_is_the_same_for_any_chunk_and_keyed_by_image_id(model64, pictures):
    one = sw.attribute(model64, pictures, "rise", nmasks=50, grid=4, seed=3, batch_size=7)
    other = sw.attribute(model64, pictures[::-1].copy(), "rise", nmasks=50, grid=4, seed=3, batch_size=64,
                         image_ids=[1, 0], target=one.target[::-1].copy())
    np.testing.assert_allclose(other.raw[::-1], one.raw, rtol=1e-6)


def test_bad_settings_are_refused(model64, pictures):
    with pytest.raises(SaliencyError, match="power of two"):
        sw.attribute(model64, pictures, "sobol", nmasks=24)
    with pytest.raises(SaliencyError, match="finer than the image"):
        sw.attribute(model64, pictures, "rise", grid=20)
    with pytest.raises(SaliencyError, match="keep must be"):
        sw.attribute(model64, pictures, "rise", keep=1.5)
