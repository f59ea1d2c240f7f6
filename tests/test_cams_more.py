"""HiResCAM, XGradCAM and EigenCAM against pytorch-grad-cam 1.5.7 on the same layer, and their Keras twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.methods.cam_more import first_component_projection

from .helpers import keras_twin, make_torch_cnn
from .test_cam import close, grad_cam_lib, grad_cam_reference, hooked_output  # noqa: F401 (fixture)

pytestmark = pytest.mark.filterwarnings("ignore:.*no positive evidence:UserWarning")
MORE_CAMS = ("hirescam", "xgradcam", "eigencam")


@pytest.fixture
def sign_corrected_eigencam(grad_cam_lib, monkeypatch):
    """pytorch-grad-cam's EigenCAM with its documented sign correction (a singular vector's sign is LAPACK's
    choice; salwidget fixes it as ``get_2d_projection_with_sign_correction`` does)."""
    from pytorch_grad_cam import eigen_cam
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    monkeypatch.setattr(eigen_cam, "get_2d_projection", get_2d_projection_with_sign_correction)
    return eigen_cam.EigenCAM


@pytest.mark.parametrize("method,name", [("hirescam", "HiResCAM"), ("xgradcam", "XGradCAM")])
@pytest.mark.parametrize("layer", ["1", "3"])
def test_gradient_cams_equal_pytorch_grad_cam(grad_cam_lib, torch_cnn, images, method, name, layer):
    targets = [0, 1, 2, 3]
    ours = sw.attribute(torch_cnn, images, method, layer=layer, target=targets)
    reference = grad_cam_reference(grad_cam_lib, getattr(grad_cam_lib, name), torch_cnn, layer, images, targets)
    assert ours.raw.shape == reference.shape and reference.max() > 0
    close(ours.raw, reference, rtol=1e-4)


@pytest.mark.parametrize("layer", ["1", "3"])
def test_eigencam_equals_pytorch_grad_cam_with_sign_correction(sign_corrected_eigencam, grad_cam_lib, torch_cnn,
                                                              images, layer):
    ours = sw.attribute(torch_cnn, images, "eigencam", layer=layer)
    reference = grad_cam_reference(grad_cam_lib, sign_corrected_eigencam, torch_cnn, layer, images, [0, 0, 0, 0])
    close(ours.raw, reference, rtol=1e-4)


def test_eigencam_is_the_first_principal_component_and_ignores_the_target(torch_cnn, images):
    """Analytic: a rank-one centred feature map u v^T is projected to +-|v| u; the class does not matter."""
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(1, 36)), rng.normal(size=(5, 1))
    features = (v @ u).reshape(1, 5, 6, 6) + rng.normal(size=(1, 5, 1, 1))  # a per-channel offset is centred away
    projection = first_component_projection(features)[0].ravel()
    expected = (u - u.mean()).ravel() * np.linalg.norm(v)
    expected = expected if abs(expected.min()) <= abs(expected.max()) else -expected
    np.testing.assert_allclose(projection, expected, rtol=1e-4, atol=1e-4)
    a = sw.attribute(torch_cnn, images, "eigencam", target=[0, 1, 2, 3])
    b = sw.attribute(torch_cnn, images, "eigencam", target=[4, 4, 4, 4])
    assert a.layer == "3" and a.raw.shape == (4, 8, 8)
    np.testing.assert_array_equal(a.raw, b.raw)


def test_hirescam_on_a_pooled_linear_head_is_the_class_weighted_channel_sum(torch_cnn, images):
    """On GAP + linear the gradient is W_c / (h w) everywhere: HiResCAM equals Grad-CAM there."""
    a = sw.attribute(torch_cnn, images, "hirescam", layer="3")
    features = hooked_output(torch_cnn, "3", torch.as_tensor(images)).numpy()
    weights = torch_cnn[6].weight.detach().numpy()[a.target]
    close(a.raw, np.maximum(np.einsum("bc,bchw->bhw", weights, features), 0) / 64, rtol=1e-5)


@pytest.mark.parametrize("method", MORE_CAMS)
def test_more_cams_are_equal_in_torch_and_keras(images, method):
    torch_model = make_torch_cnn()
    keras_model = keras_twin(torch_model)
    a_torch = sw.attribute(torch_model, images, method, target=[0, 1, 2, 3])
    a_keras = sw.attribute(keras_model, images.transpose(0, 2, 3, 1), method, target=[0, 1, 2, 3])
    assert a_torch.raw.shape == a_keras.raw.shape == (4, 8, 8)
    scale = np.abs(a_torch.raw).max()
    np.testing.assert_allclose(a_keras.raw, a_torch.raw, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("method", MORE_CAMS)
def test_more_cams_give_the_same_maps_in_any_chunk_size(torch_cnn, images, method):
    whole = sw.attribute(torch_cnn, images, method, batch_size=4)
    chunks = sw.attribute(torch_cnn, images, method, batch_size=1)
    np.testing.assert_allclose(chunks.raw, whole.raw, rtol=1e-5, atol=1e-7)


def relu_cnn():
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 8, 3, padding=1, stride=2),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    ).eval()


@pytest.mark.parametrize("layer", ["1", "3"])
def test_ablationcam_equals_pytorch_grad_cam_after_a_relu(grad_cam_lib, images, layer):
    model, targets = relu_cnn(), [0, 1, 2, 3]
    ours = sw.attribute(model, images, "ablationcam", layer=layer, target=targets, batch_size=5)
    reference = grad_cam_reference(grad_cam_lib, grad_cam_lib.AblationCAM, model, layer, images, targets)
    assert ours.passes_total == 4 * (6 if layer == "1" else 8) and reference.max() > 0
    close(ours.raw, reference, rtol=1e-4)


def test_ablationcam_on_a_pooled_linear_head_weights_channels_by_their_share_of_the_score(images):
    """Analytic: ablating channel k of the last ReLU map removes W_ck mean(A_k) from the score."""
    model = relu_cnn()
    a = sw.attribute(model, images, "ablationcam", layer="3", target=[0, 1, 2, 3])
    features = hooked_output(model, "3", torch.as_tensor(images)).numpy()
    weight = model[6].weight.detach().numpy()[[0, 1, 2, 3]]
    with torch.no_grad():
        score = model(torch.as_tensor(images)).numpy()[range(4), [0, 1, 2, 3]]
    w = weight * features.mean(axis=(2, 3)) / score[:, None]
    close(a.raw, np.maximum(np.einsum("bc,bchw->bhw", w, features), 0), rtol=1e-4)


@pytest.mark.parametrize("activations", [("relu", "relu"), ("tanh", "softplus")])
@pytest.mark.parametrize("which", [0, 1])
def test_keras_ablationcam_equals_torch_on_the_twin(images, activations, which):
    """After a ReLU (ablated to 0) and after tanh/softplus (ablated to the minimum - 1e7), at either convolution:
    the float64 Keras twin gives the torch map."""
    torch_model = relu_cnn() if activations[0] == "relu" else make_torch_cnn()
    torch_model = torch_model.double()
    twin = keras_twin(torch_model, dtype="float64", activations=activations)
    x, targets = images.astype(np.float64), [0, 1, 2, 3]
    ours = sw.attribute(twin, x.transpose(0, 2, 3, 1), "ablationcam", layer=twin.layers[2 * which].name,
                        target=targets, batch_size=5)
    reference = sw.attribute(torch_model, x, "ablationcam", layer=str(2 * which + 1), target=targets, batch_size=5)
    assert ours.passes_total == reference.passes_total == 4 * (6, 8)[which] and reference.raw.max() > 0
    np.testing.assert_allclose(ours.raw, reference.raw, rtol=1e-6, atol=1e-6 * reference.raw.max())
