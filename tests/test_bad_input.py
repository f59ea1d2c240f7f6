"""Every bad input gets an error that names the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salwidget as sw


def check(match, *args, **kwargs):
    with pytest.raises(sw.SaliencyError, match=match):
        sw.attribute(*args, **kwargs)


def test_single_image_without_batch_axis(torch_cnn, images):
    check(r"shape \(3, 16, 16\) \(rank 3\)\. For one image add a batch axis: x\[None\]", torch_cnn, images[0], "vanilla")


def test_rank_five(torch_cnn, images):
    check(r"rank 5\); expected a batch of images of rank 4", torch_cnn, images[None], "vanilla")


def test_channels_last_batch_for_a_torch_model(torch_cnn, images):
    check(r"looks like \(B, H, W, C\), but this model takes \(B, C, H, W\).*x\.transpose\(0, 3, 1, 2\).*channels_last=True",
          torch_cnn, images.transpose(0, 2, 3, 1), "vanilla")


def test_channels_first_batch_for_a_keras_model(images):
    from .helpers import keras_twin, make_torch_cnn

    check(r"looks like \(B, C, H, W\), but this model takes \(B, H, W, C\).*x\.transpose\(0, 2, 3, 1\)",
          keras_twin(make_torch_cnn()), images, "vanilla")


def test_integer_images(torch_cnn, images):
    check(r"integer dtype uint8.*x\.astype\('float32'\) / 255", torch_cnn, (images * 255).astype(np.uint8), "vanilla")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(torch_cnn, images, bad):
    images[2, 0, 3, 3] = bad
    check(r"contains 1 NaN or infinite value\(s\) \(first in image 2\)", torch_cnn, images, "vanilla")


def test_target_out_of_range(torch_cnn, images):
    check(r"Target class 5 is out of range: the model has 5 classes \(0 to 4\)", torch_cnn, images, "vanilla", target=5)
    check(r"Target class -1 is out of range", torch_cnn, images, "vanilla", target=[0, 1, 2, -1])


def test_target_of_wrong_length(torch_cnn, images):
    check(r"Got 2 targets for 4 images", torch_cnn, images, "vanilla", target=[0, 1])


def test_target_not_an_integer(torch_cnn, images):
    check(r"target must be an int or one int per image", torch_cnn, images, "vanilla", target="cat")


def test_model_output_not_batch_by_classes(images):
    model = torch.nn.Conv2d(3, 2, 1)  # (B, 2, H, W): a segmentation-like output
    check(r"Model output 0 has shape \(4, 2, 16, 16\); salwidget needs \(batch, num_classes\)", model, images, "vanilla")


def test_model_that_is_not_differentiable(images):
    class Detached(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(768, 3)

        def forward(self, x):
            return self.linear(x.flatten(1).detach())

    with pytest.raises(sw.NotDifferentiableError, match=r"not differentiable with respect to its input.*Remove \.detach\(\)"):
        sw.attribute(Detached(), images, "vanilla")


def test_input_that_does_not_reach_the_output(images):
    class IgnoresSecond(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(768, 3)

        def forward(self, x, y):
            return self.linear(x.flatten(1))

    with pytest.raises(sw.NotDifferentiableError, match=r"input 1 does not reach the class score"):
        sw.attribute(IgnoresSecond(), (images, images), "vanilla")


def test_unknown_method_suggests_the_closest(torch_cnn, images):
    check(r"Unknown method 'smoothgrads'; choose one of vanilla, smoothgrad, integrated, smooth_integrated, .*Did you mean 'smoothgrad'\?",
          torch_cnn, images, "smoothgrads")


@pytest.mark.parametrize("nsamples", [0, -3, 2.5])
def test_nsamples_below_one(torch_cnn, images, nsamples):
    check(r"nsamples must be an integer >= 1", torch_cnn, images, "smoothgrad", nsamples=nsamples)


def test_integration_needs_two_steps(torch_cnn, images):
    check(r"path steps \(nintegration\) must be an integer >= 2", torch_cnn, images, "integrated", nsamples=1)


def test_unknown_baseline(torch_cnn, images):
    check(r"Unknown baseline 'black'.*0\.0 = black", torch_cnn, images, "integrated", baseline="black")


def test_baseline_of_wrong_shape(torch_cnn, images):
    check(r"baseline has shape \(2, 2\); it must match x \(4, 3, 16, 16\)", torch_cnn, images, "integrated", baseline=np.zeros((2, 2)))


def test_bad_batch_size(torch_cnn, images):
    check(r"batch_size must be 'auto' or an integer >= 1; got 0", torch_cnn, images, "vanilla", batch_size=0)


def test_inputs_of_different_batch_sizes(images):
    check(r"different batch sizes \[2, 4\]", torch.nn.Identity(), (images, images[:2]), "vanilla")


def test_unknown_model_type(images):
    check(r"Cannot tell which framework.*framework='tensorflow' or framework='torch'", lambda x: x, images, "vanilla")


def test_model_error_is_explained_with_the_shape(images):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10, 3))
    check(r"The model raised RuntimeError on input of shape \(4, 3, 16, 16\).*Check the layout", model, images, "vanilla")


def test_negative_noise(torch_cnn, images):
    check(r"stdev_spread must be >= 0", torch_cnn, images, "smoothgrad", stdev_spread=-0.1)


# ------------------------------------------------------- issue 25, item 7: refused before any work starts
def _no_pass(model):
    """A model wrapper that fails the test if the model is ever called."""

    class Watched(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            raise AssertionError("the model ran: the check came after the work started")

    return Watched()


def test_a_declared_channels_last_contradicted_by_the_shape_is_refused(torch_cnn, images):
    # (4, 3, 16, 16) with channels_last=True would be read as 16-channel 3 x 16 pictures: maps of the wrong size.
    check(r"shape \(4, 3, 16, 16\), which looks like \(B, C, H, W\), but channels_last=True says \(B, H, W, C\)"
          r".*channels_last=False \(or leave it out\).*x\.transpose\(0, 2, 3, 1\)",
          _no_pass(torch_cnn), images, "vanilla", channels_last=True)
    # The layout it does hold is still accepted when declared.
    assert sw.to_grayscale(sw.attribute(torch_cnn, images, "vanilla", channels_last=False)).shape == (4, 16, 16)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_a_seed_that_is_no_non_negative_integer_is_refused(torch_cnn, images, seed):
    check(r"seed must be a non-negative integer, e\.g\. seed=0; got", _no_pass(torch_cnn), images, "smoothgrad",
          seed=seed, nsamples=2)


def test_a_numpy_integer_seed_is_a_seed(torch_cnn, images):
    a = sw.attribute(torch_cnn, images, "smoothgrad", seed=np.int64(3), nsamples=2)
    np.testing.assert_array_equal(a.raw, sw.attribute(torch_cnn, images, "smoothgrad", seed=3, nsamples=2).raw)


def test_an_option_of_another_method_is_refused_naming_the_methods_that_take_it(torch_cnn, images):
    check(r"nsamples= is not an option of 'vanilla' \(Gradient\), which would ignore it; it is taken by "
          r"smoothgrad, integrated.*leave nsamples= out", _no_pass(torch_cnn), images, "vanilla", nsamples=8)
    check(r"baseline= is not an option of 'smoothgrad'.*taken by integrated, smooth_integrated",
          _no_pass(torch_cnn), images, "smoothgrad", baseline=0.0)
    check(r"nsamples= is not an option of 'gradcam'", _no_pass(torch_cnn), images, "gradcam", nsamples=8)
    with pytest.raises(sw.SaliencyError, match=r"nsamples= is not an option of 'vanilla'"):
        sw.sanity_check(_no_pass(torch_cnn), images, "vanilla", nsamples=8)
    with pytest.raises(sw.SaliencyError, match=r"nsamples= is not an option of 'vanilla'"):
        sw.SaliencyNet(_no_pass(torch_cnn), "x", "y").attribute({"x": images}, "vanilla", nsamples=8)


def test_layer_on_a_gradient_method_is_refused_naming_the_layer_methods(torch_cnn, images):
    check(r"layer= is read only by the methods that read a layer \(gradcam, gradcampp, layercam, scorecam.*\); "
          r"'smoothgrad' reads input gradients\. Leave layer= out", _no_pass(torch_cnn), images, "smoothgrad",
          layer="0", nsamples=2)
    assert sw.attribute(torch_cnn, images, "gradcam", layer="0").raw.shape == (4, 16, 16)  # a CAM takes it


def test_the_panel_refuses_a_channels_last_batch_with_the_one_line_hint_of_attribute(torch_cnn, images):
    # It printed ~130 lines of chained tracebacks before the hint; now it is sw.attribute's own error, alone.
    import traceback

    batch = images.transpose(0, 2, 3, 1)
    with pytest.raises(sw.SaliencyError) as direct:
        sw.attribute(torch_cnn, batch, "vanilla")
    with pytest.raises(sw.SaliencyError) as panel:
        sw.SaliencyWidget(torch_cnn, batch)
    assert str(panel.value) == str(direct.value) and "\n" not in str(panel.value)
    assert panel.value.__cause__ is None and panel.value.__context__ is None
    assert len("".join(traceback.format_exception(panel.value)).splitlines()) < 20


class _WritesIntoItsInput(torch.nn.Module):
    """Scales its input in place: with shared batches, later chunks would be built from what it wrote."""

    def __init__(self, in_place: bool):
        super().__init__()
        self.in_place = in_place
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        x = x.mul_(2.0) if self.in_place else x * 2.0
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("method", ["occlusion", "rise"])
def test_a_model_writing_into_its_input_is_refused_not_explained_wrongly(method):
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    options = dict(window=4, stride=2) if method == "occlusion" else dict(nmasks=8, grid=2)
    with pytest.raises(sw.SaliencyError, match=r"wrote into its input batch .* x = x\.clone\(\)"):
        sw.attribute(_WritesIntoItsInput(True).eval(), x.copy(), method, target=0, seed=0, **options)
    # the same network written out of place is explained as before
    fine = sw.attribute(_WritesIntoItsInput(False).eval(), x.copy(), method, target=0, seed=0, **options)
    assert np.isfinite(fine.raw).all() and np.abs(fine.raw).max() > 0
