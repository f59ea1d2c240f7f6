"""How much to trust a map: deletion/insertion curves and the model-randomisation sanity check.

The curves are checked against a plain reference of the protocol (Python's
stable sort, one image at a time, scipy's blur) and across frameworks; the
sanity check against the behaviour Adebayo et al. (2018) report (gradients
decorrelate, Guided Backprop does not) and against scipy/scikit-image.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

import salwidget as sw
from salwidget.errors import AttributionCancelled, SaliencyError
from salwidget.evaluation import blur_sigma, spearman, ssim
from salwidget.evaluation.curves import ranking
from salwidget.evaluation.sanity import compare
from salwidget.arrays import resize_bilinear

from .helpers import keras_twin


# ----------------------------------------------------------------- references
def torch_logits(model):
    def call(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy().astype(np.float64)

    return call


def score_of(logits: np.ndarray, target: int, score: str) -> float:
    if score == "logit":
        return float(logits[target])
    if len(logits) == 1:
        return float(1 / (1 + np.exp(-logits[0])))
    e = np.exp(logits - logits.max())
    return float(e[target] / e.sum())


def reference_curves(logits_of, x, maps, steps, deletion_value, start, target, score="probability"):
    """The protocol written plainly: channels-first images, one perturbed image per call."""
    batch, _, height, width = x.shape
    deletion, insertion = np.zeros((batch, steps + 1)), np.zeros((batch, steps + 1))
    for b in range(batch):
        flat = maps[b].ravel()
        order = sorted(range(height * width), key=lambda p: -flat[p])  # stable: ties in row-major order
        for k in range(steps + 1):
            deleted, revealed = x[b].copy(), start[b].copy()
            for p in order[: k * height * width // steps]:
                row, col = divmod(p, width)
                deleted[:, row, col] = deletion_value
                revealed[:, row, col] = x[b][:, row, col]
            deletion[b, k] = score_of(logits_of(deleted[None])[0], target[b], score)
            insertion[b, k] = score_of(logits_of(revealed[None])[0], target[b], score)
    return deletion, insertion


def scipy_blur(x: np.ndarray) -> np.ndarray:
    sigma = blur_sigma(*x.shape[2:])
    return gaussian_filter(x.astype(np.float64), (0, 0, sigma, sigma)).astype(np.float32)


def relu_cnn(seed: int = 0, width: int = 16):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(width * 8 * 8, 5),
    ).eval()


def block_images(seed: int = 0) -> np.ndarray:
    """Four 16x16 images of a few flat rectangles: structure for Guided Backprop to follow."""
    rng = np.random.default_rng(seed)
    out = np.zeros((4, 3, 16, 16), np.float32)
    for image in out:
        for _ in range(3):
            top, left = rng.integers(0, 12, 2)
            height, width = rng.integers(3, 8, 2)
            image[:, top : top + height, left : left + width] += rng.uniform(0.3, 1, (3, 1, 1)).astype(np.float32)
    return out


@pytest.fixture
def tied_maps(images):
    """Saliency with many ties (4 levels), so that the tie order matters."""
    return np.round(np.random.default_rng(3).random((4, 16, 16)) * 3)


# ----------------------------------------------------------------- the curves
def test_curves_and_areas_match_a_plain_reference(torch_cnn, images, tied_maps):
    c = sw.deletion_insertion(torch_cnn, images, tied_maps, steps=8)
    target = sw.predict(torch_cnn, images).argmax(1)
    deletion, insertion = reference_curves(torch_logits(torch_cnn), images, tied_maps, 8, 0.0,
                                           scipy_blur(images), target)
    np.testing.assert_allclose(c.deletion, deletion, atol=1e-6)
    np.testing.assert_allclose(c.insertion, insertion, atol=1e-6)
    np.testing.assert_array_equal(c.fractions, np.arange(9) / 8)
    np.testing.assert_allclose(c.auc_deletion, np.trapezoid(deletion, c.fractions, axis=1), atol=1e-6)
    np.testing.assert_allclose(c.auc_insertion, np.trapezoid(insertion, c.fractions, axis=1), atol=1e-6)
    np.testing.assert_array_equal(c.target, target)
    assert c.deletion.shape == c.insertion.shape == (4, 9) and c.auc_deletion.shape == (4,)
    assert c.complete and c.blur_sigma == blur_sigma(16, 16) == 0.8


def test_other_replacements_logits_and_uneven_steps_match_the_reference(torch_cnn, images, tied_maps):
    grey = np.full_like(images, 0.5)
    c = sw.deletion_insertion(torch_cnn, images, tied_maps, steps=7, deletion_value=0.3, insertion_start=grey,
                              score="logit", target=2)
    deletion, insertion = reference_curves(torch_logits(torch_cnn), images, tied_maps, 7, 0.3, grey, [2] * 4, "logit")
    np.testing.assert_allclose(c.deletion, deletion, atol=1e-5)
    np.testing.assert_allclose(c.insertion, insertion, atol=1e-5)
    np.testing.assert_array_equal(c.fractions, (np.arange(8) * 256 // 7) / 256)  # pixels actually replaced


def test_curves_are_equal_in_torch_and_keras(torch_cnn, images, tied_maps):
    keras_model = keras_twin(torch_cnn)
    ours = sw.deletion_insertion(torch_cnn, images, tied_maps, steps=8)
    theirs = sw.deletion_insertion(keras_model, images.transpose(0, 2, 3, 1), tied_maps, steps=8)
    np.testing.assert_allclose(theirs.deletion, ours.deletion, atol=1e-5)
    np.testing.assert_allclose(theirs.insertion, ours.insertion, atol=1e-5)
    np.testing.assert_array_equal(theirs.target, ours.target)


def test_the_ends_are_the_clean_score(torch_cnn, images, tied_maps):
    c = sw.deletion_insertion(torch_cnn, images, tied_maps, steps=4)
    logits = sw.predict(torch_cnn, images).astype(np.float64)
    clean = np.exp(logits.max(1)) / np.exp(logits).sum(1)
    np.testing.assert_allclose(c.deletion[:, 0], clean, atol=1e-6)
    np.testing.assert_allclose(c.insertion[:, -1], clean, atol=1e-6)


def test_an_attribution_is_ranked_by_the_channel_sum_of_abs_raw(torch_cnn, images):
    a = sw.attribute(torch_cnn, images, "gradient_x_input")
    from_attribution = sw.deletion_insertion(torch_cnn, images, a, steps=8)
    from_abs = sw.deletion_insertion(torch_cnn, images, np.abs(a.raw).sum(1), steps=8)
    from_signed = sw.deletion_insertion(torch_cnn, images, a.raw.sum(1), steps=8)
    np.testing.assert_array_equal(from_attribution.deletion, from_abs.deletion)
    np.testing.assert_array_equal(from_attribution.insertion, from_abs.insertion)
    assert not np.allclose(from_attribution.deletion, from_signed.deletion)
    assert from_attribution.saliency == "gradient_x_input"


def test_a_layer_map_is_upsampled_and_a_pixel_map_used_as_is(torch_cnn, images):
    rng = np.random.default_rng(4)
    target = sw.predict(torch_cnn, images).argmax(1)
    cam = sw.Attribution(raw=rng.random((4, 4, 4)).astype(np.float32), kind="layer", input_size=(16, 16),
                         target=target, method="gradcam")
    pixel = sw.Attribution(raw=rng.normal(size=(4, 16, 16)).astype(np.float32), kind="pixel", target=target)
    for a, maps in ((cam, resize_bilinear(cam.raw, (16, 16))), (pixel, pixel.raw)):
        ours = sw.deletion_insertion(torch_cnn, images, a, steps=8)
        expected = sw.deletion_insertion(torch_cnn, images, maps, steps=8)
        np.testing.assert_array_equal(ours.deletion, expected.deletion)


def test_an_attributions_own_target_is_scored(torch_cnn, images):
    a = sw.attribute(torch_cnn, images, "vanilla", target=3)
    c = sw.deletion_insertion(torch_cnn, images, a, steps=2)
    np.testing.assert_array_equal(c.target, [3, 3, 3, 3])


def test_ties_are_replaced_in_row_major_order():
    maps = np.array([[[3.0, 1.0, 3.0], [1.0, 3.0, 0.0]]])
    np.testing.assert_array_equal(ranking(maps), [[[0, 3, 1], [4, 2, 5]]])
    np.testing.assert_array_equal(ranking(np.zeros((2, 2, 3))), np.arange(6).reshape(1, 2, 3).repeat(2, 0))


def test_a_single_logit_model_is_scored_by_its_sigmoid(images, tied_maps):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(2, 1)).eval()
    c = sw.deletion_insertion(model, images, tied_maps, steps=4, insertion_start=0.5)
    deletion, insertion = reference_curves(torch_logits(model), images, tied_maps, 4, 0.0,
                                           np.full_like(images, 0.5), [0] * 4)
    np.testing.assert_allclose(c.deletion, deletion, atol=1e-6)
    np.testing.assert_allclose(c.insertion, insertion, atol=1e-6)


def test_random_order_is_seeded_differs_from_a_map_and_a_faithful_map_beats_it(images):
    # A linear model whose logit is the sum of the pixels of one 6x6 corner.
    weight = torch.zeros(2, 3, 16, 16)
    weight[0, :, :6, :6] = 1.0
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 2, bias=False)).eval()
    model[1].weight.data = weight.reshape(2, -1)
    kwargs = dict(steps=16, score="logit", target=0, insertion_start=0.0)
    first, again = (sw.deletion_insertion(model, images, "random", seed=5, **kwargs) for _ in range(2))
    other = sw.deletion_insertion(model, images, "random", seed=6, **kwargs)
    np.testing.assert_array_equal(first.deletion, again.deletion)
    assert not np.allclose(first.deletion, other.deletion)
    assert first.saliency == "random" and first.seed == 5
    faithful = sw.deletion_insertion(model, images, sw.attribute(model, images, "gradient_x_input", target=0), **kwargs)
    assert not np.allclose(faithful.deletion, first.deletion)
    assert np.all(faithful.auc_deletion < first.auc_deletion - 0.1 * np.abs(first.deletion[:, 0]))
    assert np.all(faithful.auc_insertion > first.auc_insertion + 0.1 * np.abs(first.insertion[:, -1]))


@pytest.mark.parametrize("maps, words", [
    (np.zeros((4, 16, 15)), "(4, 16, 16)"),
    (np.zeros((3, 16, 16)), "(4, 16, 16)"),
    (np.zeros((4, 3, 16, 16)), "Attribution"),
    (np.full((4, 16, 16), np.nan), "NaN"),
    ("randm", "'random'"),
])
def test_a_saliency_map_that_does_not_fit_the_images_is_an_error(torch_cnn, images, maps, words):
    with pytest.raises(SaliencyError, match=re.escape(words)):
        sw.deletion_insertion(torch_cnn, images, maps)


def test_an_attribution_of_other_images_is_an_error(torch_cnn, images):
    other = sw.attribute(torch_cnn, np.zeros((4, 3, 12, 12), np.float32), "vanilla")
    with pytest.raises(SaliencyError, match="maps of these images"):
        sw.deletion_insertion(torch_cnn, images, other)


@pytest.mark.parametrize("kwargs, words", [
    (dict(score="prob"), "'probability'"),
    (dict(steps=0), "steps must be an integer from 1"),
    (dict(steps=2.5), "steps must be an integer from 1"),
    (dict(steps=True), "steps must be an integer from 1"),
    (dict(steps=257), "(256)"),
    (dict(insertion_start="gray"), "insertion_start"),
    (dict(deletion_value=np.zeros((2, 2))), "deletion_value"),
    (dict(deletion_value=float("nan")), "finite"),
])
def test_bad_options_are_errors(torch_cnn, images, tied_maps, kwargs, words):
    with pytest.raises(SaliencyError, match=re.escape(words)):
        sw.deletion_insertion(torch_cnn, images, tied_maps, **kwargs)


def test_progress_previews_fill_in_and_cancel_stops(torch_cnn, images, tied_maps):
    calls = []
    final = sw.deletion_insertion(torch_cnn, images, tied_maps, steps=8, batch_size=8,
                                  progress=lambda done, total, partial: calls.append((done, total, partial)))
    assert [c[0] for c in calls] == list(range(8, 65, 8)) and {c[1] for c in calls} == {64}
    first = calls[0][2]
    assert not first.complete and np.isnan(first.deletion).any() and np.isfinite(first.auc_deletion).all()
    np.testing.assert_array_equal(calls[-1][2].deletion, final.deletion)
    with pytest.raises(AttributionCancelled):
        sw.deletion_insertion(torch_cnn, images, tied_maps, steps=8, batch_size=8, cancel=lambda: len(calls) > 8,
                              progress=lambda *args: calls.append(args))
    assert len(calls) == 9  # one chunk ran, then the cancel was seen


def test_an_integer_batch_size_bounds_the_images_per_model_call(torch_cnn, images, tied_maps):
    seen = []
    handle = torch_cnn[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        sw.deletion_insertion(torch_cnn, images, tied_maps, steps=8, batch_size=5)
    finally:
        handle.remove()
    assert max(seen) <= 5 and sum(seen) == 4 + 2 * 8 * 4  # the clean pass, then every perturbed image once


# ----------------------------------------------------------------- the sanity check
def test_gradient_maps_decorrelate_as_layers_are_randomised(torch_cnn, images):
    r = sw.sanity_check(torch_cnn, images, "vanilla")
    assert r.layers == ("6", "2", "0") and r.similarity.shape == (4, 3) and r.maps.shape == (3, 4, 16, 16)
    assert np.all(np.abs(r.similarity[:, -1]) < 0.5)  # the fully randomised model
    for layer in range(3):  # the numbers are the rank correlations of the masks kept
        expected = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(r.original_mask, r.maps[layer])]
        np.testing.assert_allclose(r.similarity[:, layer], expected, atol=1e-9)
    np.testing.assert_array_equal(r.original_mask, sw.to_grayscale(r.original))
    assert r.complete and r.layers_done == 3 and r.order == "cascading" and r.measure == "spearman"


def test_cascading_and_independent_agree_on_the_output_layer_only(torch_cnn, images):
    cascading = sw.sanity_check(torch_cnn, images, "vanilla", seed=1)
    independent = sw.sanity_check(torch_cnn, images, "vanilla", seed=1, order="independent")
    np.testing.assert_array_equal(cascading.maps[0], independent.maps[0])  # both randomise layer '6' only
    assert not np.allclose(cascading.maps[2], independent.maps[2])
    again = sw.sanity_check(torch_cnn, images, "vanilla", seed=1, layers=["0"])
    assert again.layers == ("0",)
    np.testing.assert_array_equal(again.maps[0], cascading.maps[2])  # still randomises every layer above


def test_guided_backprop_maps_stay_similar_when_the_top_layer_is_randomised():
    model, x = relu_cnn(), block_images()
    guided = sw.sanity_check(model, x, "guided_backprop", layers=["8"])
    gradient = sw.sanity_check(model, x, "vanilla", layers=["8"])
    assert np.all(guided.similarity > 0.6)
    assert guided.similarity.min() > gradient.similarity.max() + 0.2


def test_the_users_torch_model_is_unchanged(images):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 3)).train()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    r = sw.sanity_check(model, images, "smoothgrad", nsamples=2, order="independent")
    assert r.layers == ("4", "1", "0")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_the_users_keras_model_is_unchanged(torch_cnn, images):
    model = keras_twin(torch_cnn)
    before = [np.array(w) for w in model.weights]
    trainable = [w.trainable for w in model.weights]
    r = sw.sanity_check(model, images.transpose(0, 2, 3, 1), "vanilla")
    assert r.layers == tuple(layer.name for layer in model.layers if layer.weights)[::-1]
    assert np.all(np.abs(r.similarity[:, -1]) < 0.5)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, model.weights))
    assert [w.trainable for w in model.weights] == trainable


def test_sanity_progress_counts_every_computation_and_cancel_stops(torch_cnn, images):
    calls = []
    r = sw.sanity_check(torch_cnn, images, "vanilla", progress=lambda done, total, p: calls.append((done, total, p)))
    assert [c[0] for c in calls] == [4, 8, 12, 16] and {c[1] for c in calls} == {16}
    assert [c[2].layers_done for c in calls] == [0, 0, 1, 2]
    assert np.isnan(calls[1][2].similarity).all() and not calls[-1][2].complete
    np.testing.assert_array_equal(calls[-1][2].similarity[:, :2], r.similarity[:, :2])
    with pytest.raises(AttributionCancelled):
        sw.sanity_check(torch_cnn, images, "vanilla", cancel=lambda: True)


@pytest.mark.parametrize("kwargs, words", [
    (dict(order="top_down"), "'cascading'"),
    (dict(similarity="pearson"), "'spearman'"),
    (dict(layers=["7"]), "'6', '2', '0'"),
    (dict(nsample=3), "nsamples"),
])
def test_bad_sanity_options_are_errors(torch_cnn, images, kwargs, words):
    with pytest.raises(SaliencyError, match=re.escape(words)):
        sw.sanity_check(torch_cnn, images, "vanilla", **kwargs)


# ----------------------------------------------------------------- the similarities
def test_spearman_and_ssim_match_scipy_and_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = np.round(rng.random((3, 20, 17)) * 5) / 5  # ties
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    np.testing.assert_allclose(spearman(a, b), [spearmanr(p.ravel(), q.ravel())[0] for p, q in zip(a, b)], atol=1e-12)
    np.testing.assert_allclose(ssim(a, b), [structural_similarity(p, q, data_range=1.0) for p, q in zip(a, b)],
                               atol=1e-10)
    assert np.isnan(spearman(np.zeros((1, 4, 4)), a[:1, :4, :4]))[0]
    np.testing.assert_allclose(ssim(a, a), 1.0)


def test_signed_methods_compare_signed_maps_under_spearman(torch_cnn, images):
    a = sw.attribute(torch_cnn, images, "gradient_x_input")
    b = sw.attribute(torch_cnn, images * 0.5 + 0.2, "gradient_x_input")
    np.testing.assert_allclose(compare("spearman", a, b), spearman(sw.to_diverging(a), sw.to_diverging(b)))
    np.testing.assert_allclose(compare("spearman_abs", a, b), spearman(sw.to_grayscale(a), sw.to_grayscale(b)))
    np.testing.assert_allclose(compare("ssim", a, b), ssim(sw.to_grayscale(a), sw.to_grayscale(b)))
