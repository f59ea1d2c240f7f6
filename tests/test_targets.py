"""Targets other than a class index: regions of a dense output, softmax/sigmoid classes, regression heads,
embedding similarity, functions; checked against independent references on the same weights.

pytorch-grad-cam's own targets (``SemanticSegmentationTarget``, ``ClassifierOutputSoftmaxTarget``,
``BinaryClassifierOutputTarget``, its tutorial's cosine-similarity target), Captum with a wrapped
``forward_func`` (regression, multi-label), gradients written out by hand, the deletion protocol written
plainly, and the Keras twins of the same networks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.errors import NotDifferentiableError, SaliencyError
from salwidget.targets import Class, Function, Output, Region, Similarity

from .helpers import keras_segnet_twin, keras_twin, make_torch_cnn, make_torch_segnet
from .test_cam import close, grad_cam_lib, half_pixel_upsampling  # noqa: F401  (fixtures)
from .test_evaluation import reference_curves

import captum.attr as captum_attr  # noqa: E402  (a test dependency: a missing one must fail, not skip)

pytestmark = pytest.mark.filterwarnings("ignore:.*no positive evidence:UserWarning")
CAMS = ("gradcam", "gradcampp", "layercam", "scorecam")


@pytest.fixture
def segnet():
    return make_torch_segnet()


@pytest.fixture
def masks():
    """Two different regions of 16 x 16 maps."""
    first = np.zeros((16, 16), bool)
    first[3:9, 4:12] = True
    second = np.zeros((16, 16), bool)
    second[10:15, 1:6] = True
    return first, second


def hand_gradient(model, x, score):
    """The input gradient of ``score(model(x))`` summed over rows, by plain autograd."""
    tensor = torch.from_numpy(x).requires_grad_()
    (grad,) = torch.autograd.grad(score(model(tensor)).sum(), tensor)
    return grad.numpy()


def cam_reference(cls, model, layer, x, targets, **kwargs):
    """pytorch-grad-cam's map (raw: its normalisation is patched out by the grad_cam_lib fixture)."""
    import copy

    reference = copy.deepcopy(model)
    with cls(model=reference, target_layers=[dict(reference.named_modules())[layer]], **kwargs) as cam:
        return cam(input_tensor=torch.as_tensor(x), targets=targets)


class SimilarityToConceptTarget:
    """pytorch-grad-cam's tutorial target for embeddings (its 'Pixel Attribution for embeddings')."""

    def __init__(self, features):
        self.features = features

    def __call__(self, model_output):
        return torch.nn.CosineSimilarity(dim=0)(model_output, self.features)


# ----------------------------------------------------------------- Region
def test_region_gradient_is_the_gradient_of_the_masked_class_sum(segnet, images, masks):
    mask = masks[0]
    a = sw.attribute(segnet, images, "vanilla", target=Region(2, mask))
    expected = hand_gradient(segnet, images, lambda out: (out[:, 2] * torch.from_numpy(mask)).sum((1, 2)))
    np.testing.assert_allclose(a.raw, expected, rtol=1e-5, atol=1e-7)
    assert a.target.tolist() == [2] * 4 and a.explained == Region(2, mask) and a.scores.shape == (4, 3, 16, 16)


def test_region_per_image_classes_and_masks(segnet, images, masks):
    per_image = np.stack([masks[0], masks[1], masks[0], masks[1]])
    a = sw.attribute(segnet, images, "vanilla", target=Region([0, 1, 2, 0], per_image))
    for b, k in enumerate([0, 1, 2, 0]):
        alone = sw.attribute(segnet, images[b : b + 1], "vanilla", target=Region(k, per_image[b]))
        np.testing.assert_allclose(a.raw[b : b + 1], alone.raw, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("method, reference", [("gradcam", "GradCAM"), ("gradcampp", "GradCAMPlusPlus"),
                                               ("layercam", "LayerCAM"), ("scorecam", "ScoreCAM")])
def test_region_cams_equal_pytorch_grad_cams_semantic_segmentation_target(segnet, images, masks, grad_cam_lib,
                                                                         half_pixel_upsampling, method, reference):
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    mask = masks[0].astype(np.float32)
    a = sw.attribute(segnet, images, method, layer="2", target=Region(1, mask))
    expected = cam_reference(getattr(grad_cam_lib, reference), segnet, "2", images,
                             [SemanticSegmentationTarget(1, mask)] * len(images))
    close(a.raw, expected)


def test_region_softmax_and_sigmoid_scores(segnet, images, masks):
    mask = torch.from_numpy(masks[1])
    soft = sw.attribute(segnet, images, "vanilla", target=Region(0, masks[1], score="softmax"))
    np.testing.assert_allclose(soft.raw, hand_gradient(segnet, images, lambda out: (
        torch.softmax(out, 1)[:, 0] * mask).sum((1, 2))), rtol=1e-5, atol=1e-8)
    sig = sw.attribute(segnet, images, "vanilla", target=Region(0, masks[1], score="sigmoid"))
    np.testing.assert_allclose(sig.raw, hand_gradient(segnet, images, lambda out: (
        torch.sigmoid(out[:, 0]) * mask).sum((1, 2))), rtol=1e-5, atol=1e-8)


def test_region_deletion_curve_reads_the_regions_score(segnet, images, masks):
    mask = masks[0]
    a = sw.attribute(segnet, images, "vanilla", target=Region(1, mask))
    curves = sw.deletion_insertion(segnet, images, a, steps=4, insertion_start=0.5)

    def region_score(batch):
        with torch.no_grad():
            out = segnet(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        return (out[:, 1] * torch.from_numpy(mask)).sum((1, 2)).numpy()[:, None].astype(np.float64)

    maps = np.abs(a.raw).sum(1)
    deletion, insertion = reference_curves(region_score, images, maps, 4, 0.0, np.full_like(images, 0.5),
                                           [0] * 4, score="logit")
    np.testing.assert_allclose(curves.deletion, deletion, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(curves.insertion, insertion, rtol=1e-5, atol=1e-5)
    assert curves.target.tolist() == [1] * 4


# ------------------------------------------------------------ class scores
def test_softmax_class_equals_pytorch_grad_cams_softmax_target(torch_cnn, images, grad_cam_lib):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    a = sw.attribute(torch_cnn, images, "gradcam", layer="3", target=Class([0, 1, 2, 3], score="softmax"))
    expected = cam_reference(grad_cam_lib.GradCAM, torch_cnn, "3", images,
                             [ClassifierOutputSoftmaxTarget(k) for k in range(4)])
    close(a.raw, expected)
    assert a.target.tolist() == [0, 1, 2, 3]


def test_binary_logit_equals_pytorch_grad_cams_binary_target(images, grad_cam_lib):
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    model = make_torch_cnn(num_classes=1)
    positive = sw.attribute(model, images, "gradcam", layer="3")  # "predicted": the only logit
    close(positive.raw, cam_reference(grad_cam_lib.GradCAM, model, "3", images, [BinaryClassifierOutputTarget(1)] * 4))
    negative = sw.attribute(model, images, "gradcam", layer="3", target=lambda out: -out[:, 0])
    close(negative.raw, cam_reference(grad_cam_lib.GradCAM, model, "3", images, [BinaryClassifierOutputTarget(0)] * 4))
    assert positive.multilabel and positive.target.tolist() == [0] * 4


def test_sigmoid_class_equals_captum_on_a_wrapped_multilabel_forward(torch_cnn, images):
    ours = sw.attribute(torch_cnn, images, "vanilla", target=Class(3, score="sigmoid"), multilabel=True)
    theirs = captum_attr.Saliency(lambda x: torch.sigmoid(torch_cnn(x))).attribute(
        torch.from_numpy(images).requires_grad_(), target=3, abs=False)
    np.testing.assert_allclose(ours.raw, theirs.detach().numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours.probabilities, 1 / (1 + np.exp(-ours.scores.astype(np.float64))), rtol=1e-6)


def test_sigmoid_class_integrated_gradients_equal_captums(torch_cnn, images):
    steps = 8
    ours = sw.attribute(torch_cnn, images, "integrated", target=Class(1, score="sigmoid"), nsamples=steps,
                        baseline=0.0, quadrature="trapezoid")
    theirs = captum_attr.IntegratedGradients(lambda x: torch.sigmoid(torch_cnn(x))).attribute(
        torch.from_numpy(images), baselines=0.0, target=1, n_steps=steps, method="riemann_trapezoid")
    np.testing.assert_allclose(ours.raw * (steps - 1) / steps, theirs.numpy(), rtol=1e-4, atol=1e-8)


def test_logit_class_is_the_plain_class_target(torch_cnn, images):
    np.testing.assert_array_equal(sw.attribute(torch_cnn, images, "gradcam", target=Class(2)).raw,
                                  sw.attribute(torch_cnn, images, "gradcam", target=2).raw)


# ------------------------------------------------------- regression heads
def test_output_i_equals_captum_on_a_wrapped_regression_forward(torch_cnn, images):
    ours = sw.attribute(torch_cnn, images, "vanilla", target=Output(2))
    theirs = captum_attr.Saliency(lambda x: torch_cnn(x)[:, 2]).attribute(
        torch.from_numpy(images).requires_grad_(), abs=False)
    np.testing.assert_allclose(ours.raw, theirs.detach().numpy(), rtol=1e-5, atol=1e-9)
    steps = 6
    ours = sw.attribute(torch_cnn, images, "integrated", target=Output(4), nsamples=steps, baseline=0.25,
                        quadrature="trapezoid")
    theirs = captum_attr.IntegratedGradients(lambda x: torch_cnn(x)[:, 4]).attribute(
        torch.from_numpy(images), baselines=0.25, n_steps=steps, method="riemann_trapezoid")
    np.testing.assert_allclose(ours.raw * (steps - 1) / steps, theirs.numpy(), rtol=1e-4, atol=1e-8)
    assert ours.target.tolist() == [4] * 4


def test_scalar_head_is_explained_by_output(images):
    model = torch.nn.Sequential(make_torch_cnn(num_classes=1), torch.nn.Flatten(0)).eval()  # (B,)
    ours = sw.attribute(model, images, "vanilla", target=Output())
    theirs = captum_attr.Saliency(model).attribute(torch.from_numpy(images).requires_grad_(), abs=False)
    np.testing.assert_allclose(ours.raw, theirs.detach().numpy(), rtol=1e-5, atol=1e-9)
    assert ours.scores.shape == (4,)
    with pytest.raises(SaliencyError, match=r"has shape \(4,\).*target=sw.targets.Output\(\)"):
        sw.attribute(model, images, "vanilla")


# -------------------------------------------------------------- embeddings
def test_similarity_equals_pytorch_grad_cams_cosine_target(torch_cnn, images, grad_cam_lib):
    references = np.random.default_rng(4).normal(size=(4, 5)).astype(np.float32)
    a = sw.attribute(torch_cnn, images, "gradcam", layer="3", target=Similarity(references))
    expected = cam_reference(grad_cam_lib.GradCAM, torch_cnn, "3", images,
                             [SimilarityToConceptTarget(torch.from_numpy(r)) for r in references])
    close(a.raw, expected)
    one = sw.attribute(torch_cnn, images, "vanilla", target=Similarity(references[0]))
    expected = hand_gradient(torch_cnn, images, lambda out: torch.nn.functional.cosine_similarity(
        out, torch.from_numpy(references[:1]), dim=1))
    np.testing.assert_allclose(one.raw, expected, rtol=1e-5, atol=1e-9)
    assert one.target.tolist() == [-1] * 4


# ------------------------------------------------------ every method, every target
def _function_twin(target, channels_last=False):
    """The same score as a built-in target, written as a plain torch function of the output."""
    if isinstance(target, Region):
        mask = torch.from_numpy(np.array(target.mask))
        return lambda out: (out[:, int(target.k[0])] * mask).sum((1, 2))
    if isinstance(target, Output):
        return lambda out: out[:, target.i]
    if isinstance(target, Similarity):
        reference = torch.from_numpy(np.array(target.reference))[None]
        return lambda out: torch.nn.functional.cosine_similarity(out, reference, dim=1)
    return lambda out: torch.softmax(out, 1)[:, int(target.k[0])]


@pytest.mark.parametrize("method", sw.METHODS)
def test_every_method_explains_a_region_as_the_same_function_would(segnet, images, masks, method):
    target = Region(1, masks[0])
    options = dict(nsamples=3, seed=0, batch_size=5)
    if method in CAMS:
        options["layer"] = "2"
    built_in = sw.attribute(segnet, images[:2], method, target=target, **options)
    by_hand = sw.attribute(segnet, images[:2], method, target=_function_twin(target), **options)
    np.testing.assert_allclose(built_in.raw, by_hand.raw, rtol=1e-4, atol=1e-5 * (np.abs(by_hand.raw).max() + 1e-12))
    assert np.abs(built_in.raw).max() > 0


@pytest.mark.parametrize("target", [Output(3), Similarity(np.arange(5, dtype=np.float32) - 2), Class(1, "softmax")],
                         ids=repr)
@pytest.mark.parametrize("method", ["vanilla", "integrated", "smoothgrad", "gradcam", "scorecam", "guided_ig"])
def test_other_targets_take_every_road_as_the_same_function_would(torch_cnn, images, target, method):
    options = dict(nsamples=3, seed=0, batch_size=3)
    built_in = sw.attribute(torch_cnn, images, method, target=target, **options)
    by_hand = sw.attribute(torch_cnn, images, method, target=_function_twin(target), **options)
    np.testing.assert_allclose(built_in.raw, by_hand.raw, rtol=1e-4, atol=1e-5 * (np.abs(by_hand.raw).max() + 1e-12))


def test_sanity_check_holds_the_region_for_every_randomised_model(segnet, images, masks):
    target = Region(0, masks[1])
    r = sw.sanity_check(segnet, images[:2], "vanilla", target=target, layers=["4"])
    original = sw.attribute(segnet, images[:2], "vanilla", target=target)
    np.testing.assert_allclose(r.original.raw, original.raw, rtol=1e-6)
    assert r.original.explained == target and np.isfinite(r.similarity).all()


def test_saliencynet_takes_a_target(torch_cnn, images):
    net = sw.SaliencyNet(torch_cnn, "x", "y_pred")
    out = net.get_masks({"x": images}, targets=Output(2))
    np.testing.assert_allclose(out["saliency"], sw.attribute(torch_cnn, images, "vanilla", target=Output(2)).grayscale(),
                               rtol=1e-6)


# ---------------------------------------------------------- keys and caching
def test_targets_compare_by_value_and_a_function_is_never_cached(torch_cnn, images, masks):
    assert Region(1, masks[0]) == Region(1, masks[0].copy()) and Region(1, masks[0]) != Region(1, masks[1])
    assert hash(Similarity([1.0, 2.0])) == hash(Similarity(np.array([1.0, 2.0])))
    assert Region(1, masks[0]).cacheable and not Function(lambda out: out[:, 0]).cacheable
    smooth = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=2, seed=0, target=Output(1))
    more = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=4, seed=0, target=Output(1), resume_from=smooth)
    assert more.passes_done == 2 * 4  # resumed: only the new samples
    other = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=4, seed=0, target=Output(2), resume_from=smooth)
    assert other.passes_done == 4 * 4  # another target: computed afresh
    function = lambda out: out[:, 1]  # noqa: E731
    first = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=2, seed=0, target=function)
    again = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=4, seed=0, target=function, resume_from=first)
    assert again.passes_done == 4 * 4  # a function cannot be keyed: never resumed from
    np.testing.assert_allclose(again.raw, more.raw, rtol=1e-5, atol=1e-9)


def test_the_explorer_caches_regions_by_value_and_never_a_function(segnet, images, masks):
    from salwidget.panel.map_cache import Explorer, Settings

    explorer = Explorer(segnet, images[:2])
    first = explorer.compute("vanilla", Settings(("vanilla",), target=Region(1, masks[0])))
    assert explorer.compute("vanilla", Settings(("vanilla",), target=Region(1, masks[0].copy()))) is first
    other = explorer.compute("vanilla", Settings(("vanilla",), target=Region(1, masks[1])))
    assert other is not first and not np.allclose(other.raw, first.raw)
    function = Function(lambda out: out[:, 1].sum((1, 2)))
    computed = explorer.compute("vanilla", Settings(("vanilla",), target=function))
    assert explorer.compute("vanilla", Settings(("vanilla",), target=function)) is not computed


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("target, message", [
    (lambda m: Region(1, m[:8]), r"Region mask is 8 x 16 but model output 0 \(4, 3, 16, 16\) is a 16 x 16 map"),
    (lambda m: Region(1, np.zeros((16, 16), bool)), r"Region mask is all False"),
    (lambda m: Region(1, np.stack([m, m, np.zeros_like(m), m])), r"mask of image 2 is all False"),
    (lambda m: Region(3, m), r"Target class 3 is out of range: the model has 3 classes \(0 to 2\)"),
    (lambda m: Region(1, np.stack([m, m])), r"Got 2 masks for 4 images"),
    (lambda m: Region(1, np.full((16, 16), 0.5)), r"Region mask must be boolean \(or 0/1\)"),
    (lambda m: Region(0, m, score="prob"), r"score must be one of 'logit', 'softmax', 'sigmoid'"),
    (lambda m: Output(1), r"Output\(1\) reads a \(B,\) or \(B, n\) head; model output 0 has shape \(4, 3, 16, 16\)"),
    (lambda m: Class(1), r"Model output 0 has shape \(4, 3, 16, 16\).*target=sw.targets.Region\(k, mask\)"),
])
def test_bad_targets_of_a_dense_output_name_the_fix(segnet, images, masks, target, message):
    with pytest.raises(SaliencyError, match=message):
        sw.attribute(segnet, images, "vanilla", target=target(masks[0]))


@pytest.mark.parametrize("target, message", [
    (Output(5), r"Output\(5\) is out of range: model output 0 \(4, 5\) has 5 value\(s\) per image \(0 to 4\)"),
    (Output(), r"has 5 values per image \(4, 5\); choose one with Output\(i\), i from 0 to 4"),
    (Class(7, score="softmax"), r"Target class 7 is out of range: the model has 5 classes"),
    (Similarity(np.ones(4)), r"reference has 4 values per image but model output 0 \(4, 5\) has 5"),
    (Similarity(np.zeros(5)), r"reference is all zeros"),
    (lambda out: out.sum(), r"returned shape \(\) for an output of shape \(4, 5\); it must return one score per row"),
    (lambda out: out[:, :1], r"returned shape \(4, 1\).*shape \(4,\)"),
    (lambda out: out[:, 0].detach().numpy(), r"returned a ndarray; it must return a tensor"),
])
def test_bad_targets_of_class_scores_name_the_fix(torch_cnn, images, target, message):
    with pytest.raises(SaliencyError, match=message):
        sw.attribute(torch_cnn, images, "vanilla", target=target)


@pytest.mark.parametrize("function, message", [
    (lambda out: out[:, 0].detach(), r"do not depend differentiably on the output"),
    (lambda out: out.argmax(1), r"returned torch.int64 scores, which have no gradient"),
])
def test_a_function_that_is_not_differentiable_says_so(torch_cnn, images, function, message):
    with pytest.raises(NotDifferentiableError, match=message):
        sw.attribute(torch_cnn, images, "vanilla", target=function)


def test_a_region_that_explains_another_region_is_refused_as_xrais_base(segnet, images, masks):
    base = sw.attribute(segnet, images[:2], "integrated", target=Region(1, masks[0]), nsamples=4)
    xrai = sw.attribute(segnet, images[:2], "xrai", target=Region(1, masks[0]), base_attribution=base)
    assert xrai.raw.shape == (2, 16, 16)
    with pytest.raises(SaliencyError, match=r"base_attribution explains Region\(1.*but this call explains Region\(1"):
        sw.attribute(segnet, images[:2], "xrai", target=Region(1, masks[1]), base_attribution=base)


# ------------------------------------------------------------------ Keras twins
@pytest.fixture(scope="module")
def seg_twins():
    torch_model = make_torch_segnet()
    return torch_model, keras_segnet_twin(torch_model)


def _same_maps(ours, theirs, kind):
    if kind == "input":
        theirs = theirs.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())


@pytest.mark.parametrize("method", ["vanilla", "integrated", "smoothgrad", "gradcam", "scorecam"])
@pytest.mark.parametrize("score", ["logit", "softmax"])
def test_keras_segmentation_twin_explains_a_region_alike(seg_twins, images, masks, method, score):
    torch_model, keras_model = seg_twins
    target = Region(2, masks[0], score=score)
    options = dict(target=target, nsamples=3, seed=0, rng="numpy", baseline=0.0)
    layers = {"torch": "3", "keras": keras_model.layers[1].name} if method in CAMS else {}  # after the softplus
    ours = sw.attribute(torch_model, images, method, layer=layers.get("torch"), **options)
    theirs = sw.attribute(keras_model, images.transpose(0, 2, 3, 1), method, layer=layers.get("keras"), **options)
    _same_maps(ours.raw, theirs.raw, ours.kind)


@pytest.mark.parametrize("target", [Output(3), Similarity(np.arange(5, dtype=np.float32) - 2), Class(1, "sigmoid"),
                                    Class(2, "softmax")], ids=repr)
@pytest.mark.parametrize("method", ["vanilla", "integrated", "gradcam"])
def test_keras_twin_explains_other_targets_alike(images, target, method):
    torch_model = make_torch_cnn()
    keras_model = keras_twin(torch_model)
    options = dict(target=target, nsamples=4, seed=0, baseline=0.0)
    _same_maps(sw.attribute(torch_model, images, method, **options).raw,
               sw.attribute(keras_model, images.transpose(0, 2, 3, 1), method, **options).raw,
               "layer" if method in CAMS else "input")


def test_keras_function_target_and_its_checks(images):
    import tensorflow as tf

    torch_model = make_torch_cnn()
    keras_model = keras_twin(torch_model)
    x = images.transpose(0, 2, 3, 1)
    ours = sw.attribute(torch_model, images, "vanilla", target=lambda out: out[:, 1] - out[:, 3])
    theirs = sw.attribute(keras_model, x, "vanilla", target=lambda out: out[:, 1] - out[:, 3])
    _same_maps(ours.raw, theirs.raw, "input")
    with pytest.raises(SaliencyError, match=r"returned shape \(\) for an output of shape"):
        sw.attribute(keras_model, x, "vanilla", target=lambda out: tf.reduce_sum(out))
    with pytest.raises(NotDifferentiableError, match=r"returned <dtype: 'int64'> scores, which have no gradient"):
        sw.attribute(keras_model, x, "vanilla", target=lambda out: tf.argmax(out, axis=1))
    with pytest.raises(SaliencyError, match=r"Region mask is 8 x 8 but model output 0 \(4, 16, 16, 3\)"):
        sw.attribute(keras_segnet_twin(make_torch_segnet()), x, "vanilla", target=Region(0, np.ones((8, 8), bool)))
