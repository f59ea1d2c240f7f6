"""Blur IG, Guided IG and XRAI against PAIR saliency (saliency.core) on the same weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.errors import SaliencyError
from salwidget.methods import xrai as xrai_module

import saliency.core as pair  # noqa: E402  (a test dependency: a missing one must fail, not skip)
import saliency.core.guided_ig as pair_guided_ig  # noqa: E402

from .helpers import keras_twin

TARGETS = [0, 1, 2, 3]


def pair_call_model(model, dtype=np.float32):
    """PAIR's model interface for a torch model: channels-last numpy batches in, input gradients out."""

    def call_model(batch, call_model_args=None, expected_keys=None):
        x = torch.from_numpy(np.asarray(batch, dtype)).permute(0, 3, 1, 2).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[:, call_model_args].sum(), x)
        return {pair.INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).numpy()}

    return call_model


def per_image(images, targets, mask):
    """PAIR's mask(image HWC, target) for every image, back in (B, C, H, W)."""
    return np.stack([mask(image.transpose(1, 2, 0), int(t)) for image, t in zip(images, targets)]).transpose(0, 3, 1, 2)


@pytest.fixture
def numpy_quantile_shim(monkeypatch):
    """PAIR calls np.quantile(..., interpolation=), which numpy 2.4 removed; route it to method=."""
    original = np.quantile

    def quantile(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return original(a, q, *args, **kwargs)

    monkeypatch.setattr(pair_guided_ig.np, "quantile", quantile)


# ----------------------------------------------------------------- Blur IG
@pytest.mark.parametrize("steps, max_sigma, grad_step, sqrt", [
    (20, 5.0, 0.01, False),
    (13, 9.0, 0.3, True),
    (8, 30.0, 0.01, False),  # kernels far wider than the image: zeros outside matter
])
def test_blur_ig_matches_pair(torch_cnn, images, steps, max_sigma, grad_step, sqrt):
    ours = sw.attribute(torch_cnn, images, "blur_ig", target=TARGETS, nsamples=steps, max_sigma=max_sigma,
                        grad_step=grad_step, sqrt=sqrt, batch_size=7)
    # PAIR's batch_size=1: with larger batches it weighs a whole batch by its last step's width (sqrt
    # spacing). Float64 images: on float32 ones PAIR's difference of two blurred images loses its precision.
    theirs = per_image(images.astype(np.float64), TARGETS, lambda image, t: pair.BlurIG().GetMask(
        image, pair_call_model(torch_cnn), t, max_sigma=max_sigma, steps=steps, grad_step=grad_step, sqrt=sqrt,
        batch_size=1))
    np.testing.assert_allclose(ours.raw, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())
    assert ours.signed and ours.nsamples == steps


def test_blur_ig_keras_twin_matches_torch(torch_cnn, images):
    options = dict(target=TARGETS, nsamples=6, max_sigma=6.0)
    ours = sw.attribute(torch_cnn, images, "blur_ig", **options).raw
    keras_maps = sw.attribute(keras_twin(torch_cnn), images.transpose(0, 2, 3, 1), "blur_ig", **options).raw
    np.testing.assert_allclose(keras_maps.transpose(0, 3, 1, 2), ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())


def test_blur_ig_previews_approach_the_final_map(torch_cnn, images):
    previews = []
    final = sw.attribute(torch_cnn, images, "blur_ig", target=TARGETS, nsamples=16, batch_size=8,
                         progress=lambda done, total, partial: previews.append((done, total, partial.raw)))
    assert [p[:2] for p in previews] == [(8 * k, 64) for k in range(1, 9)]
    np.testing.assert_allclose(previews[-1][2], final.raw, rtol=1e-5, atol=1e-12)
    errors = [np.linalg.norm(raw - final.raw) for _, _, raw in previews]
    assert errors[len(errors) // 2] < np.linalg.norm(final.raw)  # a half path is already a rough map


# --------------------------------------------------------------- Guided IG
@pytest.mark.parametrize("steps, fraction, max_dist, baseline", [
    (20, 0.25, 0.02, 0.0),
    (13, 0.1, 1.0, 0.5),
    (7, 0.5, 0.0, 0.2),
])
def test_guided_ig_matches_pair(torch_cnn, images, numpy_quantile_shim, steps, fraction, max_dist, baseline):
    # Guided IG picks the features to move by a quantile of |gradient| at every step: in float32, a last-bit
    # difference (a batch of 3 against PAIR's batch of 1, another CPU's convolution kernels) can flip a pick
    # and send the path elsewhere. Both sides run in float64 (the model copied to float64), where rounding
    # cannot reach a selection, and must then agree to a tight tolerance.
    model, x = copy.deepcopy(torch_cnn).double(), images.astype(np.float64)
    ours = sw.attribute(model, x, "guided_ig", target=TARGETS, nsamples=steps, fraction=fraction,
                        max_dist=max_dist, baseline=baseline, batch_size=3)
    theirs = per_image(x, TARGETS, lambda image, t: pair.GuidedIG().GetMask(
        image, pair_call_model(model, np.float64), t, x_baseline=np.full_like(image, baseline), x_steps=steps,
        fraction=fraction, max_dist=max_dist))
    # (salwidget hands maps out as float32: the tolerance is that rounding, ~6e-8 of the largest value)
    np.testing.assert_allclose(ours.raw, theirs, rtol=1e-6, atol=2e-7 * np.abs(theirs).max())
    assert ours.passes_done == steps * len(images) and ours.nsamples == steps


def test_guided_ig_differs_from_straight_ig_unless_max_dist_is_zero(torch_cnn, images):
    straight = sw.attribute(torch_cnn, images, "integrated", target=TARGETS, nsamples=20, baseline=0.0).raw
    bounded = sw.attribute(torch_cnn, images, "guided_ig", target=TARGETS, nsamples=20, max_dist=0.0).raw
    free = sw.attribute(torch_cnn, images, "guided_ig", target=TARGETS, nsamples=20, max_dist=1.0).raw
    # max_dist=0 keeps to the straight line (left Riemann sums against IG's end-inclusive ones).
    near = np.linalg.norm(bounded - straight) / np.linalg.norm(straight)
    far = np.linalg.norm(free - straight) / np.linalg.norm(straight)
    assert near < 0.01 and far > 5 * near


def test_guided_ig_keras_twin_matches_torch(torch_cnn, images):
    # In float32 the frameworks' gradients differ in the last bits, which can tip a feature across the
    # selection threshold: both twins run in float64, where they must agree to float32 output rounding.
    options = dict(target=TARGETS, nsamples=10)
    x = images.astype(np.float64)
    ours = sw.attribute(copy.deepcopy(torch_cnn).double(), x, "guided_ig", **options).raw
    keras_maps = sw.attribute(keras_twin(torch_cnn, dtype="float64"), x.transpose(0, 2, 3, 1), "guided_ig",
                              **options).raw
    np.testing.assert_allclose(keras_maps.transpose(0, 3, 1, 2), ours, rtol=1e-6, atol=2e-7 * np.abs(ours).max())


def test_guided_ig_runs_one_stage_per_step_and_can_be_cancelled(torch_cnn, images):
    seen = []
    sw.attribute(torch_cnn, images, "guided_ig", target=TARGETS, nsamples=5, batch_size=2,
                 progress=lambda done, total, partial: seen.append((done, total, partial.nsamples)))
    assert [s[:2] for s in seen] == [(2 * k, 20) for k in range(1, 11)]
    assert [s[2] for s in seen[1::2]] == [0, 1, 2, 3, 4]  # steps finished when each step's last chunk reports
    with pytest.raises(sw.AttributionCancelled):
        sw.attribute(torch_cnn, images, "guided_ig", nsamples=5, cancel=lambda: len(seen) > 12,
                     progress=lambda *args: seen.append(args))


# -------------------------------------------------------------------- XRAI
@pytest.fixture
def pictures():
    """Two real photos at 32 x 32, channels first (segmentation needs structure, not noise)."""
    from salwidget import models

    return models.sample_images(["chelsea", "coffee"], size=32).transpose(0, 3, 1, 2).copy()


def test_xrai_regions_equal_pairs(pictures):
    for image in pictures.transpose(0, 2, 3, 1):
        theirs = pair.xrai._get_segments_felzenszwalb(image)
        ours = xrai_module.dilated_masks(xrai_module.segment_labels(image))
        assert ours.shape == (len(theirs), image.shape[0] * image.shape[1])
        assert all(np.array_equal(a.ravel(), b) for a, b in zip(theirs, ours))


def test_xrai_with_a_base_attribution_matches_pair(torch_cnn, pictures):
    base = np.random.default_rng(0).normal(size=pictures.shape).astype(np.float32)
    targets = [1, 3]
    for threshold in (1.0, 0.3):
        ours = sw.attribute(torch_cnn, pictures, "xrai", target=targets, base_attribution=base,
                            area_threshold=threshold)
        parameters = pair.XRAIParameters(area_threshold=threshold, return_xrai_segments=True)
        details = [pair.XRAI().GetMaskWithDetails(image.transpose(1, 2, 0), pair_call_model(torch_cnn), t,
                                                  base_attribution=b.transpose(1, 2, 0), extra_parameters=parameters)
                   for image, t, b in zip(pictures, targets, base)]
        np.testing.assert_allclose(ours.raw, np.stack([d.attribution_mask for d in details]), rtol=1e-6)
        np.testing.assert_array_equal(ours.extras["region_ranks"], np.stack([d.segments for d in details]))
        assert ours.kind == "pixel" and ours.raw.shape == (2, 32, 32) and ours.passes_total == 0


def test_xrai_computing_its_own_ig_matches_pair(torch_cnn, pictures):
    # XRAI ranks regions by their attribution gain: two nearly equal gains may swap on a last-bit difference
    # of the IG (a batch against PAIR's one image at a time). Both sides run in float64 so they cannot.
    targets = [1, 3]
    seen = []
    model, x = copy.deepcopy(torch_cnn).double(), pictures.astype(np.float64)
    ours = sw.attribute(model, x, "xrai", target=targets, nsamples=10,
                        progress=lambda done, total, partial: seen.append((done, total, partial.raw.shape)))
    parameters = pair.XRAIParameters(steps=10)
    theirs = np.stack([pair.XRAI().GetMask(image.transpose(1, 2, 0), pair_call_model(model, np.float64), t,
                                           extra_parameters=parameters) for image, t in zip(x, targets)])
    np.testing.assert_allclose(ours.raw, theirs, rtol=1e-6, atol=2e-7 * np.abs(theirs).max())
    assert ours.passes_done == 2 * 10 * 2 and seen[-1][:2] == (40, 40)
    assert all(shape == (2, 32, 32) for _, _, shape in seen)  # previews: the IG so far, one value per pixel


def test_xrai_takes_an_attribution_as_its_base(torch_cnn, pictures):
    integrated = sw.attribute(torch_cnn, pictures, "integrated", target=[1, 3], nsamples=6, baseline=0.0)
    from_attribution = sw.attribute(torch_cnn, pictures, "xrai", target=[1, 3], base_attribution=integrated)
    from_array = sw.attribute(torch_cnn, pictures, "xrai", target=[1, 3], base_attribution=integrated.raw)
    np.testing.assert_array_equal(from_attribution.raw, from_array.raw)
    with pytest.raises(SaliencyError, match="target=base_attribution.target"):
        sw.attribute(torch_cnn, pictures, "xrai", target=[0, 0], base_attribution=integrated)
    with pytest.raises(SaliencyError, match="one per image of this batch"):
        sw.attribute(torch_cnn, pictures, "xrai", target=[1, 3], base_attribution=integrated.raw[:, :, :16])


def test_xrai_maps_show_through_the_visualisations(torch_cnn, pictures):
    result = sw.attribute(torch_cnn, pictures, "xrai", target=[1, 3], nsamples=4)
    diverging = sw.to_diverging(result)
    assert diverging.shape == (2, 32, 32) and np.abs(diverging).max() == pytest.approx(1.0)
    assert np.isfinite(result.raw).all() and result.extras["region_ranks"].min() >= 1


def test_blur_matrices_are_scipys_zero_border_gaussian_filter():
    import scipy.ndimage

    from salwidget.methods.blur_ig import blur_matrix

    signal = np.random.default_rng(2).normal(size=50)
    for sigma in (0.0, 0.01, 0.4, 3.0, 40.0):
        expected = signal if sigma == 0 else scipy.ndimage.gaussian_filter1d(signal, sigma, mode="constant")
        np.testing.assert_allclose(blur_matrix(50, sigma) @ signal, expected, rtol=1e-12, atol=1e-12)
