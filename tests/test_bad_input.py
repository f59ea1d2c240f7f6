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
