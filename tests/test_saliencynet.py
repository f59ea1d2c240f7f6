"""The seed-compatible SaliencyNet facade."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salwidget as sw

from .test_visualize import seed_formula


def test_masks_equal_the_seed_formula_on_the_raw_gradient(torch_cnn, images):
    net = sw.SaliencyNet(torch_cnn, "x", "y_pred", outputs="saliency")
    result = net.get_masks({"x": images, "y": np.arange(4)})
    raw = sw.attribute(torch_cnn, images, "vanilla").raw
    np.testing.assert_allclose(result["saliency"], seed_formula(raw), rtol=1e-5)
    with torch.no_grad():
        predicted = torch_cnn(torch.from_numpy(images)).argmax(1).numpy()
    np.testing.assert_array_equal(result["y_pred"], predicted)
    assert result["x"] is images and "y" in result  # input entries are passed through


def test_target_batch_key_is_honoured(torch_cnn, images):
    net = sw.SaliencyNet(torch_cnn, "x", "y_pred")
    result = net.get_smoothed_masks({"x": images, "SaliencyNet_Target_Index_y_pred": [4, 3, 2, 1]}, nsamples=3, seed=0)
    np.testing.assert_array_equal(result["y_pred"], [4, 3, 2, 1])
    expected = sw.attribute(torch_cnn, images, "smoothgrad", target=[4, 3, 2, 1], nsamples=3, seed=0)
    np.testing.assert_allclose(result["saliency"], seed_formula(expected.raw), rtol=1e-5)
    # The seed's "no target" marker, an empty list, means the prediction.
    empty = net.get_masks({"x": images, "SaliencyNet_Target_Index_y_pred": []})
    np.testing.assert_array_equal(empty["y_pred"], net.get_masks({"x": images})["y_pred"])


def test_targets_keyword_overrides_the_batch_key(torch_cnn, images):
    net = sw.SaliencyNet(torch_cnn, "x", "y_pred")
    result = net.get_integrated_masks({"x": images, "SaliencyNet_Target_Index_y_pred": [0, 0, 0, 0]}, nsamples=4, targets=2, seed=0)
    np.testing.assert_array_equal(result["y_pred"], [2, 2, 2, 2])


def test_smoothed_masks_with_nintegration_are_smoothgrad_over_ig(torch_cnn, images):
    net = sw.SaliencyNet(torch_cnn, "x", "y_pred")
    result = net.get_smoothed_masks({"x": images}, nsamples=3, nintegration=4, seed=1)
    expected = sw.attribute(torch_cnn, images, "smooth_integrated", nsamples=3, nintegration=4, seed=1)
    np.testing.assert_allclose(result["saliency"], seed_formula(expected.raw), rtol=1e-5)


class TwoInTwoOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Linear(12, 3)
        self.side = torch.nn.Linear(12, 3)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, image, side):
        hidden = self.image(image.flatten(1)) + self.side(side.flatten(1))
        return hidden, self.head(hidden)


def test_multi_input_multi_output_pairs_input_i_with_output_i_as_fastestimator():
    model = TwoInTwoOut()
    rng = np.random.default_rng(0)
    batch = {"img": rng.normal(size=(2, 3, 2, 2)).astype(np.float32), "aux": rng.normal(size=(2, 3, 2, 2)).astype(np.float32)}
    net = sw.SaliencyNet(model, ["img", "aux"], ["cls", "head"], outputs=["sal_img", "sal_aux"])
    targets = {"cls": [0, 1], "head": [1, 1]}
    result = net.get_masks(batch, targets=targets)
    assert result["sal_img"].shape == (2, 2, 2) and result["sal_aux"].shape == (2, 2, 2)
    np.testing.assert_array_equal(result["cls"], [0, 1])
    raw = net.attribute(batch, "vanilla", targets=targets).raw
    w_img, w_side = model.image.weight.detach().numpy(), model.side.weight.detach().numpy()
    w_head = model.head.weight.detach().numpy()
    # img is differentiated through output 0 (cls[t]) only; aux through output 1 (head[t']) only.
    np.testing.assert_allclose(raw[0].reshape(2, -1), w_img[[0, 1]], rtol=1e-5)
    np.testing.assert_allclose(raw[1].reshape(2, -1), np.tile(w_head[1] @ w_side, (2, 1)), rtol=1e-5)
    # pairing="sum" keeps the sum of both scores for every input.
    summed = sw.SaliencyNet(model, ["img", "aux"], ["cls", "head"], outputs=["a", "b"], pairing="sum")
    raw_sum = summed.attribute(batch, "vanilla", targets=targets).raw
    np.testing.assert_allclose(raw_sum[0].reshape(2, -1), w_img[[0, 1]] + (w_head[1] @ w_img)[None], rtol=1e-5)


def test_one_input_gives_an_array_not_a_tuple(torch_cnn, images):
    raw = sw.SaliencyNet(torch_cnn, "x", "y").attribute({"x": images}, "vanilla").raw
    assert isinstance(raw, np.ndarray) and raw.shape == images.shape


def test_paired_needs_an_output_per_input_or_one_output(torch_cnn):
    with pytest.raises(sw.SaliencyError, match=r"3 inputs and only 2 outputs.*pairing='sum'"):
        sw.SaliencyNet(torch_cnn, ["a", "b", "c"], ["y1", "y2"], outputs=["s1", "s2", "s3"])


def test_missing_batch_key_and_mismatched_names(torch_cnn, images):
    net = sw.SaliencyNet(torch_cnn, "x", "y_pred")
    with pytest.raises(sw.SaliencyError, match=r"The batch has no key 'x' \(model_inputs\); it has \['image'\]"):
        net.get_masks({"image": images})
    with pytest.raises(sw.SaliencyError, match=r"give one mask key per input"):
        sw.SaliencyNet(torch_cnn, ["a", "b"], "y", outputs="saliency")
    with pytest.raises(sw.SaliencyError, match=r"model returns 1 output\(s\) but model_outputs names 2"):
        sw.SaliencyNet(torch_cnn, "x", ["y1", "y2"]).get_masks({"x": images})


def test_unknown_option_is_an_error_not_ignored(torch_cnn, images):
    net = sw.SaliencyNet(torch_cnn, "x", "y_pred")
    with pytest.raises(sw.SaliencyError, match=r"Unknown option\(s\) \['nsample'\] for method 'smoothgrad'; its options are nsamples, stdev_spread, magnitude\. Did you mean 'nsamples'\?"):
        net.attribute({"x": images}, "smoothgrad", nsample=5)
