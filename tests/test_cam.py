"""Class activation maps (Grad-CAM, Grad-CAM++, LayerCAM, Score-CAM) against independent references.

References on the same weights: torchcam (Grad-CAM, LayerCAM, its layer locator),
pytorch-grad-cam (Grad-CAM++, Score-CAM, a ViT with its reshape_transform), a
hand-written TensorFlow Grad-CAM, and the analytic case of a global-average-pooled
linear head. pytorch-grad-cam imports a few torchvision names it does not use here:
they are stubbed while it is imported (the registry's torchvision does not load
with this torch).
"""

from __future__ import annotations

import copy
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.errors import AttributionCancelled, SaliencyError

from .helpers import keras_twin, make_torch_cnn, stand_ins

CAMS = ("gradcam", "gradcampp", "layercam", "scorecam")
# Random toy models and targets leave some images without positive evidence: a warned-about result.
pytestmark = pytest.mark.filterwarnings("ignore:.*no positive evidence:UserWarning")


def close(ours, reference, rtol=1e-4):
    reference = np.asarray(reference, np.float32)
    np.testing.assert_allclose(ours, reference, rtol=rtol, atol=rtol * float(np.abs(reference).max()))


def hooked_output(model, layer, x):
    """The output of ``model``'s module ``layer`` on ``x`` (a plain forward hook)."""
    seen = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["a"]


# ----------------------------------------------------------------- references
@pytest.fixture(scope="module")
def grad_cam_lib():
    """pytorch_grad_cam, imported with the torchvision names it needs stubbed where torchvision does not load;
    its normalise-and-resize step replaced by identity, so it returns raw (ReLU'd) layer-resolution maps."""
    stubs = {}
    try:
        import torchvision  # noqa: F401
    except Exception:
        tv = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")
        functional = types.ModuleType("torchvision.transforms.functional")
        for name in ("Compose", "Normalize", "ToTensor"):  # imported by its utils.image, unused here
            setattr(transforms, name, type(name, (), {}))
        functional.resize = None  # imported by its SESS wrapper, unused here
        tv.transforms, transforms.functional = transforms, functional
        stubs = {"torchvision": tv, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}
    with stand_ins(stubs):
        import pytorch_grad_cam
        from pytorch_grad_cam import base_cam
    patch = pytest.MonkeyPatch()
    patch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: np.asarray(cam, np.float32))
    yield pytorch_grad_cam
    patch.undo()


def grad_cam_reference(lib, cls, model, layer, x, targets, **kwargs):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reference = copy.deepcopy(model)
    module = dict(reference.named_modules())[layer]
    with cls(model=reference, target_layers=[module], **kwargs) as cam:
        return cam(input_tensor=torch.as_tensor(x), targets=[ClassifierOutputTarget(int(t)) for t in targets])


@pytest.fixture
def half_pixel_upsampling(monkeypatch):
    """pytorch-grad-cam's Score-CAM upsamples with aligned corners (UpsamplingBilinear2d); salwidget with
    half-pixel centres (torch's default, tf.image.resize). Swap it in to compare the rest exactly."""
    monkeypatch.setattr(torch.nn, "UpsamplingBilinear2d",
                        lambda size: torch.nn.Upsample(size=size, mode="bilinear", align_corners=False))


def torchcam_reference(cls, model, layer, x, targets):
    reference = copy.deepcopy(model)
    with cls(reference, target_layer=layer, input_shape=tuple(x.shape[1:])) as extractor:
        scores = reference(torch.as_tensor(x))
        (cam,) = extractor(class_idx=[int(t) for t in targets], scores=scores, normalized=False)
    return cam.detach().numpy()


# ----------------------------------------------------------------- a toy ViT
class Attention(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1) @ v)


class Block(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1, self.attn = torch.nn.LayerNorm(dim), Attention(dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ToyViT(torch.nn.Module):
    """4x4 patches of a 16x16 image, a class token, two blocks; the head reads the class token only."""

    def __init__(self, dim=8, classes=5, drop_patches=0):
        super().__init__()
        torch.manual_seed(0)
        self.patch = torch.nn.Conv2d(3, dim, 4, stride=4)
        self.cls = torch.nn.Parameter(0.5 * torch.randn(1, 1, dim))
        self.blocks = torch.nn.Sequential(Block(dim), Block(dim))
        self.norm, self.head = torch.nn.LayerNorm(dim), torch.nn.Linear(dim, classes)
        self.drop_patches = drop_patches

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = tokens[:, : tokens.shape[1] - self.drop_patches]
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def vit_reshape(tensor, height=4, width=4):
    """pytorch-grad-cam's documented reshape_transform for ViTs."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


# ------------------------------------------------------- the API and analytic
@pytest.mark.parametrize("method", CAMS)
def test_cam_result_is_a_relu_map_at_the_layer_resolution(torch_cnn, images, method):
    a = sw.attribute(torch_cnn, images, method, seed=0)
    assert a.layer == "3" and a.kind == "layer" and a.raw.shape == (4, 8, 8) and a.raw.dtype == np.float32
    assert a.raw.min() >= 0 and a.raw.max() > 0 and a.input_size == (16, 16)
    assert sw.to_grayscale(a).shape == (4, 16, 16)


def test_gradcam_on_a_pooled_linear_head_is_the_class_weighted_channel_sum_over_positions(torch_cnn, images):
    """Grad-CAM keeps the mean gradient as channel weight, so on GAP + linear it is CAM / (h * w)."""
    a = sw.attribute(torch_cnn, images, "gradcam", layer="3")
    features = hooked_output(torch_cnn, "3", torch.as_tensor(images)).numpy()
    weights = torch_cnn[6].weight.detach().numpy()[a.target]  # (B, C)
    expected = np.maximum(np.einsum("bc,bchw->bhw", weights, features), 0) / (8 * 8)
    close(a.raw, expected, rtol=1e-5)


def test_layercam_on_a_pooled_linear_head_keeps_the_positive_class_weights(torch_cnn, images):
    a = sw.attribute(torch_cnn, images, "layercam", layer="3")
    features = hooked_output(torch_cnn, "3", torch.as_tensor(images)).numpy()
    weights = np.maximum(torch_cnn[6].weight.detach().numpy()[a.target], 0)
    close(a.raw, np.maximum(np.einsum("bc,bchw->bhw", weights, features), 0) / 64, rtol=1e-5)


def test_multi_input_cam_is_for_input_0(images):
    """A second input added after pooling leaves the gradient at the conv layer unchanged."""

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn, self.side = make_torch_cnn(), torch.nn.Linear(2, 5)

        def forward(self, x, v):
            return self.cnn(x) + self.side(v)

    model = TwoInputs().eval()
    v = np.random.default_rng(2).normal(size=(4, 2)).astype(np.float32)
    a = sw.attribute(model, (images, v), "gradcam", target=[0, 1, 2, 3])
    assert a.layer == "cnn.3" and a.raw.shape == (4, 8, 8)
    features = hooked_output(model.cnn, "3", torch.as_tensor(images)).numpy()
    weights = model.cnn[6].weight.detach().numpy()[[0, 1, 2, 3]]
    close(a.raw, np.maximum(np.einsum("bc,bchw->bhw", weights, features), 0) / 64, rtol=1e-5)
    s = sw.attribute(model, (images, v), "scorecam", target=[0, 1, 2, 3])
    assert s.raw.shape == (4, 8, 8) and s.passes_total == 4 * 8


# ----------------------------------------------------------- torch references
@pytest.mark.parametrize("method, reference", [("gradcam", "GradCAM"), ("layercam", "LayerCAM")])
@pytest.mark.parametrize("layer", ["1", "3"])
def test_gradcam_and_layercam_equal_torchcam(torch_cnn, images, method, reference, layer):
    import torchcam.methods

    a = sw.attribute(torch_cnn, images, method, layer=layer, target=[0, 1, 2, 3])
    close(a.raw, torchcam_reference(getattr(torchcam.methods, reference), torch_cnn, layer, images, [0, 1, 2, 3]))


@pytest.mark.parametrize("layer", ["1", "3"])
def test_gradcampp_equals_pytorch_grad_cam(torch_cnn, images, grad_cam_lib, layer):
    a = sw.attribute(torch_cnn, images, "gradcampp", layer=layer)
    close(a.raw, grad_cam_reference(grad_cam_lib, grad_cam_lib.GradCAMPlusPlus, torch_cnn, layer, images, a.target))


def test_scorecam_equals_pytorch_grad_cam_at_the_input_resolution(torch_cnn, images, grad_cam_lib):
    """Layer '1' is 16x16 like the input: no upsampling, the reference as it is."""
    a = sw.attribute(torch_cnn, images, "scorecam", layer="1", target=[4, 3, 2, 1])
    close(a.raw, grad_cam_reference(grad_cam_lib, grad_cam_lib.ScoreCAM, torch_cnn, "1", images, [4, 3, 2, 1]))


def test_scorecam_equals_pytorch_grad_cam_with_half_pixel_upsampling(torch_cnn, images, grad_cam_lib,
                                                                     half_pixel_upsampling):
    a = sw.attribute(torch_cnn, images, "scorecam", layer="3")
    close(a.raw, grad_cam_reference(grad_cam_lib, grad_cam_lib.ScoreCAM, torch_cnn, "3", images, a.target))


def relu_cnn_with_dead_channels():
    """The test CNN with ReLU after its second conv, three of whose 8 channels never fire."""
    model = make_torch_cnn()
    model[3] = torch.nn.ReLU()
    with torch.no_grad():
        model[2].bias[:3] = -100.0
    return model


def test_scorecam_shares_one_pass_among_an_images_constant_channels(images, grad_cam_lib, half_pixel_upsampling):
    model = relu_cnn_with_dead_channels()
    a = sw.attribute(model, images, "scorecam", layer="3")
    features = hooked_output(model, "3", torch.as_tensor(images)).flatten(2)
    constant = (features.amax(-1) == features.amin(-1)).numpy()  # (B, C)
    assert constant[:, :3].all()
    assert a.passes_total == (~constant).sum() + constant.any(axis=1).sum()
    close(a.raw, grad_cam_reference(grad_cam_lib, grad_cam_lib.ScoreCAM, model, "3", images, a.target))


def test_scorecam_does_not_depend_on_the_chunk_size_and_reports_progress(torch_cnn, images):
    seen = []
    small = sw.attribute(torch_cnn, images, "scorecam", batch_size=1,
                         progress=lambda done, total, partial: seen.append((done, total, partial.raw.shape)))
    big = sw.attribute(torch_cnn, images, "scorecam", batch_size=13)
    np.testing.assert_allclose(small.raw, big.raw, rtol=1e-6, atol=1e-7)
    assert [d for d, _, _ in seen] == list(range(1, 33))  # a given batch_size caps every model call
    assert {(t, s) for _, t, s in seen} == {(32, (4, 8, 8))}


def test_scorecam_can_be_cancelled_between_chunks(torch_cnn, images):
    calls = []
    with pytest.raises(AttributionCancelled):
        sw.attribute(torch_cnn, images, "scorecam", batch_size=1, cancel=lambda: len(calls) > 2,
                     progress=lambda *args: calls.append(args))
    assert len(calls) == 3


@pytest.mark.parametrize("method, reference", [("gradcam", "GradCAM"), ("scorecam", "ScoreCAM")])
def test_vit_tokens_are_folded_as_pytorch_grad_cams_reshape_transform(grad_cam_lib, images, method, reference,
                                                                       half_pixel_upsampling):
    model = ToyViT().eval()
    folded = sw.attribute(model, images, method, layer="blocks.0")
    given = sw.attribute(model, images, method, layer=model.blocks[0], reshape=vit_reshape)
    assert folded.layer == given.layer == "blocks.0" and folded.raw.shape == (4, 4, 4)
    expected = grad_cam_reference(grad_cam_lib, getattr(grad_cam_lib, reference), model, "blocks.0", images,
                                  folded.target, reshape_transform=vit_reshape)
    close(folded.raw, expected)
    close(given.raw, expected)


# ------------------------------------------------------------------- Keras
@pytest.fixture(scope="module")
def twin():
    torch_model = make_torch_cnn()
    return torch_model, keras_twin(torch_model)


@pytest.mark.parametrize("method", CAMS)
def test_torch_and_keras_twins_give_the_same_cam(twin, images, method):
    torch_model, keras_model = twin
    a = sw.attribute(torch_model, images, method)
    b = sw.attribute(keras_model, images.transpose(0, 2, 3, 1), method)
    assert (a.layer, b.layer) == ("3", keras_model.layers[2].name)
    close(b.raw, a.raw, rtol=1e-4)


def test_keras_functional_model_gives_the_sequential_twins_cam(twin, images):
    import keras

    _, sequential = twin
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for layer in sequential.layers:  # the same layers and weights, as a functional graph
        clone = type(layer).from_config(layer.get_config())
        x = clone(x)
        clone.set_weights(layer.get_weights())
    functional = keras.Model(inputs, x)
    x = images.transpose(0, 2, 3, 1)
    for method in ("gradcam", "scorecam"):
        a, b = sw.attribute(sequential, x, method), sw.attribute(functional, x, method)
        assert a.layer == b.layer
        close(b.raw, a.raw, rtol=1e-6)


def test_keras_scorecam_with_constant_channels_equals_torch(images):
    import keras

    torch_model = relu_cnn_with_dead_channels()
    keras_model = keras_twin(torch_model)
    keras_model.layers[2].activation = keras.activations.relu
    a = sw.attribute(torch_model, images, "scorecam", batch_size=2)
    b = sw.attribute(keras_model, images.transpose(0, 2, 3, 1), "scorecam", batch_size=3)
    assert a.passes_total == b.passes_total < 4 * 8
    close(b.raw, a.raw, rtol=1e-4)


def test_keras_gradcam_equals_a_hand_written_tensorflow_gradcam(twin, images):
    import keras
    import tensorflow as tf

    _, model = twin
    x = images.transpose(0, 2, 3, 1)
    conv = model.layers[2]
    a = sw.attribute(model, x, "gradcam", layer=conv, target=[1, 2, 3, 4])
    tapped = keras.Model(model.inputs[0], [conv.output, model.outputs[0]])
    with tf.GradientTape() as tape:
        activation, out = tapped(x)
        score = tf.reduce_sum(tf.gather(out, [1, 2, 3, 4], axis=1, batch_dims=1))
    gradient = tape.gradient(score, activation)
    expected = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(gradient, axis=(1, 2), keepdims=True) * activation, axis=-1))
    assert a.layer == conv.name
    close(a.raw, expected.numpy(), rtol=1e-5)


def test_keras_subclassed_model_gets_a_clear_error():
    import keras

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
            self.pool, self.dense = keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)

        def call(self, x):
            return self.dense(self.pool(self.conv(x)))

    model = Subclassed()
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    model(x)
    for layer in (None, model.conv.name):
        with pytest.raises(SaliencyError, match="subclassed Keras model.*keras.Model\\(inputs, outputs\\)"):
            sw.attribute(model, x, "gradcam", layer=layer)


# ------------------------------------------------------------------ the layer
def test_auto_layer_is_torchcams_candidate_on_the_test_cnn_and_efficientnet(torch_cnn, images):
    from torchcam.methods._utils import locate_candidate_layer

    from salwidget import models

    assert sw.attribute(torch_cnn, images, "gradcam").layer == locate_candidate_layer(torch_cnn, (3, 16, 16)) == "3"
    model, _ = models.efficientnet_lite0()
    x = np.random.default_rng(0).uniform(size=(1, 3, 64, 64)).astype(np.float32)
    a = sw.attribute(model, x, "gradcam")
    assert a.layer == locate_candidate_layer(model, (3, 64, 64)) == "net._swish"
    import torchcam.methods

    close(a.raw, torchcam_reference(torchcam.methods.GradCAM, model, a.layer, x, a.target))


def test_auto_layer_is_found_once_per_model_and_input_shape(images, monkeypatch):
    from salwidget.backends.torch_backend import TorchBackend

    calls = []
    original = TorchBackend.layer_shapes
    monkeypatch.setattr(TorchBackend, "layer_shapes", lambda self, points: calls.append(1) or original(self, points))
    first, second = make_torch_cnn(), make_torch_cnn()
    for model, x in [(first, images), (first, images[:2]), (first, images[..., :12]), (second, images)]:
        assert sw.attribute(model, x, "layercam").layer == "3"
    assert len(calls) == 3  # the second call on the first model remembers its layer


def test_layer_may_be_a_module_and_an_unknown_name_lists_the_closest(images):
    model = torch.nn.Sequential(OrderedDict(
        conv1=torch.nn.Conv2d(3, 4, 3), act1=torch.nn.ReLU(), conv2=torch.nn.Conv2d(4, 4, 3),
        act2=torch.nn.ReLU(), pool=torch.nn.AdaptiveAvgPool2d(1), flat=torch.nn.Flatten(), fc=torch.nn.Linear(4, 3),
    )).eval()
    assert sw.attribute(model, images, "gradcam", layer=model.conv2).layer == "conv2"
    with pytest.raises(SaliencyError, match="no layer 'conv3'.*Closest names: 'conv1', 'conv2'|"
                                            "no layer 'conv3'.*Closest names: 'conv2', 'conv1'"):
        sw.attribute(model, images, "gradcam", layer="conv3")
    with pytest.raises(SaliencyError, match="outputs shape \\(4, 4\\).*before the flattening"):
        sw.attribute(model, images, "gradcam", layer="flat")


def test_token_layer_that_is_not_a_grid_names_the_fix(images):
    model = ToyViT(drop_patches=3).eval()  # 1 + 13 tokens
    with pytest.raises(SaliencyError, match="outputs 14 tokens.*not a perfect square.*prefix_tokens=5.*reshape=f"):
        sw.attribute(model, images, "gradcam", layer="blocks.0")
    with pytest.raises(SaliencyError, match="reshape= returned shape \\(4, 8, 13\\)"):
        sw.attribute(model, images, "gradcam", layer="blocks.0", reshape=lambda t: t[:, 1:].transpose(1, 2))


def test_prefix_tokens_and_aspect_ratio(images):
    model = ToyViT().eval()
    wide = np.concatenate([images, images[..., :8]], axis=3)  # 16 x 24: 4 x 6 patches
    a = sw.attribute(model, wide, "gradcam", layer="blocks.0")
    assert a.raw.shape == (4, 4, 6)
    with pytest.raises(SaliencyError, match="dropping 2 prefix token"):
        sw.attribute(model, images, "gradcam", layer="blocks.0", prefix_tokens=2)


def test_all_zero_cam_raises_a_message_naming_an_earlier_layer(images):
    """The last block's patch tokens never reach a head that reads the class token only."""
    model = ToyViT().eval()
    for layer in ("blocks.1", "norm"):
        with pytest.raises(SaliencyError, match=f"at layer '{layer}' is zero for every image.*layer='blocks.0'"):
            sw.attribute(model, images, "gradcam", layer=layer)


def test_maps_zero_from_negative_evidence_are_results_listed_with_a_warning():
    """The score reaches every position; only the ReLU zeroes an image whose evidence is negative."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    x = np.stack([np.ones((1, 4, 4)), -np.ones((1, 4, 4))]).astype(np.float32)
    with pytest.warns(UserWarning, match="zero for image\\(s\\) \\[1\\]: no positive evidence"):
        a = sw.attribute(model, x, "gradcam")
    assert a.extras["zero_maps"] == [1] and a.raw[0].min() > 0 and a.raw[1].max() == 0
    with pytest.warns(UserWarning, match="zero for image\\(s\\) \\[0\\]"):
        b = sw.attribute(model, x[1:], "gradcam")
    assert b.raw.shape == (1, 4, 4) and b.raw.max() == 0


# ----------------------------------------------------------- model untouched
@pytest.mark.parametrize("method", CAMS)
def test_torch_model_is_left_as_found(images, method):
    model = make_torch_cnn().train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sw.attribute(model, images, method)
    assert all(module.training for module in model.modules())
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    for name, p in model.named_parameters():
        assert p.requires_grad and p.grad is None and torch.equal(p, before[name])


def test_keras_model_is_left_as_found(twin, images):
    _, model = twin
    layers, weights = list(model.layers), [w.copy() for w in model.get_weights()]
    for method in CAMS:
        sw.attribute(model, images.transpose(0, 2, 3, 1), method)
    assert list(model.layers) == layers and len(model.outputs) == 1
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))
