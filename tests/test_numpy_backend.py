"""Any model: a numpy callable or an ONNX Runtime session gives the forward-only maps of its torch original."""

from __future__ import annotations

import io

import numpy as np
import pytest

import salwidget as sw
from salwidget.errors import SaliencyError

from .helpers import make_torch_cnn

FORWARD_ONLY = [
    ("occlusion", dict(window=4, stride=3, fill="blur")),
    ("feature_ablation", dict(segments="slic", fill="mean")),
    ("lime", dict(nsamples=40)),
    ("kernel_shap", dict(nsamples=40)),
    ("rise", dict(nmasks=60, grid=4)),
    ("sobol", dict(grid=4, nmasks=8)),
]


@pytest.fixture(scope="module")
def torch_model():
    return make_torch_cnn()


@pytest.fixture(scope="module")
def onnx_session(torch_model):
    """The torch model exported to ONNX (TorchScript exporter: no onnxscript needed), run by ONNX Runtime."""
    import onnxruntime
    import torch

    buffer = io.BytesIO()
    torch.onnx.export(torch_model, (torch.zeros(2, 3, 16, 16),), buffer, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      dynamo=False)
    return onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])


@pytest.fixture
def pictures():
    return np.random.default_rng(6).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)


def _close(ours, theirs):
    np.testing.assert_allclose(ours.raw, theirs.raw, rtol=1e-3, atol=1e-4 * np.abs(theirs.raw).max())
    assert np.abs(theirs.raw).max() > 0


@pytest.mark.parametrize("method, kwargs", FORWARD_ONLY)
def test_an_onnx_export_gives_the_torch_models_maps(torch_model, onnx_session, pictures, method, kwargs):
    theirs = sw.attribute(torch_model, pictures, method, seed=4, **kwargs)
    ours = sw.attribute(onnx_session, pictures, method, seed=4, **kwargs)
    assert ours.framework == "numpy" and ours.kind == theirs.kind
    np.testing.assert_array_equal(ours.target, theirs.target)
    _close(ours, theirs)


@pytest.mark.parametrize("method, kwargs", FORWARD_ONLY[:1] + FORWARD_ONLY[4:5])
def test_a_numpy_callable_in_channels_last_layout(torch_model, pictures, method, kwargs):
    import torch

    def scores(batch):  # (B, H, W, C) numpy in, numpy out
        with torch.no_grad():
            return torch_model(torch.tensor(batch).permute(0, 3, 1, 2)).numpy()

    theirs = sw.attribute(torch_model, pictures, method, seed=4, **kwargs)
    ours = sw.attribute(scores, pictures.transpose(0, 2, 3, 1), method, seed=4, framework="numpy",
                        channels_last=True, **kwargs)
    _close(ours, theirs)


@pytest.mark.parametrize("method", ["vanilla", "integrated", "gradcam"])
def test_a_gradient_method_is_refused_naming_the_forward_only_ones(onnx_session, pictures, method):
    with pytest.raises(SaliencyError, match="forward passes only.*occlusion.*rise.*sobol"):
        sw.attribute(onnx_session, pictures, method)


def test_an_undetectable_callable_is_told_about_framework_numpy(pictures):
    with pytest.raises(SaliencyError, match="framework='numpy'"):
        sw.attribute(lambda batch: batch.sum(axis=(2, 3)), pictures, "occlusion")


def test_predict_scan_and_deletion_insertion_accept_an_onnx_session(torch_model, onnx_session, pictures, tmp_path):
    import torch

    with torch.no_grad():
        expected = torch_model(torch.tensor(pictures)).numpy()
    np.testing.assert_allclose(sw.predict(onnx_session, pictures), expected, rtol=1e-4, atol=1e-5)
    scanned = sw.scan(onnx_session, pictures, labels=[0, 1], store=tmp_path / "store")
    assert len(scanned.table) == 2
    np.testing.assert_array_equal(scanned.table["predicted"].to_numpy(), expected.argmax(axis=1))
    maps = sw.attribute(onnx_session, pictures, "occlusion", window=4, stride=4)
    curves = sw.deletion_insertion(onnx_session, pictures, maps, steps=4)
    reference = sw.deletion_insertion(torch_model, pictures, maps, steps=4)
    np.testing.assert_allclose(curves.deletion, reference.deletion, rtol=1e-4, atol=1e-5)


def test_attribute_dataset_accepts_an_onnx_session(torch_model, onnx_session, pictures, tmp_path):
    result = sw.attribute_dataset(onnx_session, pictures, "occlusion", options={"occlusion": dict(window=4, stride=4)},
                                  store=tmp_path / "store", metrics=())
    reference = sw.attribute(torch_model, pictures, "occlusion", window=4, stride=4)
    stored = result.maps("occlusion", [0, 1])
    np.testing.assert_allclose(stored, reference.raw, rtol=2e-3, atol=2e-3 * np.abs(reference.raw).max())


def test_the_panel_offers_an_onnx_session_only_forward_only_methods(torch_model, onnx_session, pictures):
    from salwidget.methods.forward_only import forward_only_methods

    panel = sw.SaliencyWidget(onnx_session, pictures, options={"occlusion": dict(window=4, stride=4),
                                                               "rise": dict(nmasks=40, grid=4)})
    try:
        assert panel.wait(120)
        assert panel.methods == ("occlusion", "rise") and not panel.error
        assert sorted(panel.settings_view.method_buttons) == sorted(forward_only_methods())
        reference = sw.attribute(torch_model, pictures, "occlusion", window=4, stride=4)
        np.testing.assert_allclose(panel.results["occlusion"].raw, reference.raw, rtol=1e-3,
                                   atol=1e-4 * np.abs(reference.raw).max())
        with pytest.raises(SaliencyError, match="forward passes only"):
            sw.SaliencyWidget(onnx_session, pictures, methods=("vanilla",))
    finally:
        panel.close()
