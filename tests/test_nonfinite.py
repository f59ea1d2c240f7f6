"""Non-finite is an error (issue 25, item 3): a NaN or infinite gradient or output raises an error naming the
method, the pass at fault and the way out, in torch and Keras; Gauss-Legendre IG (Captum's default) avoids
the path's ends."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import salwidget as sw

from .helpers import own_options
from salwidget.finite import NonFiniteError

KINDS = ("sqrt", "xlogx", "where_sqrt")


class _Torch(torch.nn.Module):
    """x -> f(x) -> per-channel mean -> linear; f undefined (or its gradient) at 0 or below."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.kind, self.linear = kind, torch.nn.Linear(3, 5)

    def forward(self, x):
        if self.kind == "sqrt":
            h = torch.sqrt(x)
        elif self.kind == "xlogx":
            h = x * torch.log(x)
        elif self.kind == "where_sqrt":  # the unused branch's gradient at 0 is inf * 0 = NaN
            h = torch.where(x > 0, torch.sqrt(x), torch.zeros_like(x))
        else:  # a model that outputs NaN
            return self.linear(x.mean((2, 3))) + float("nan")
        return self.linear(h.mean((2, 3)))


def _keras(kind: str):
    import keras

    inputs = keras.Input((8, 8, 3))
    ops = keras.ops
    f = {"sqrt": lambda t: ops.sqrt(t), "xlogx": lambda t: t * ops.log(t),
         "where_sqrt": lambda t: ops.where(t > 0, ops.sqrt(t), ops.zeros_like(t)), "nan": lambda t: t}[kind]
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(f)(inputs))
    h = keras.layers.Conv2D(4, 1)(keras.layers.Reshape((1, 1, 3))(h)) if kind == "nan" else h
    out = keras.layers.Dense(5)(keras.layers.Flatten()(h))
    if kind == "nan":
        out = keras.layers.Lambda(lambda t: t + float("nan"))(out)
    return keras.Model(inputs, out)


@pytest.fixture(scope="module")
def x():
    """Four images in (0.05, 1]: every function is defined at the images, not at a black baseline."""
    return (0.05 + 0.95 * np.random.default_rng(0).random((4, 3, 8, 8))).astype(np.float32)


def _model(framework: str, kind: str, x: np.ndarray):
    if framework == "torch":
        return _Torch(kind).eval(), x
    return _keras(kind), np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("kind", KINDS)
def test_ig_from_a_black_baseline_names_the_baseline_and_the_way_out(framework, kind, x):
    model, images = _model(framework, kind, x)
    if (framework, kind) == ("keras", "where_sqrt"):  # TensorFlow's where sends zeros, not inf * 0, to sqrt
        kept = sw.attribute(model, images, "integrated", baseline=0.0, nsamples=5, seed=0, target=1)
        assert np.isfinite(kept.raw).all()
        return
    with pytest.raises(NonFiniteError) as caught:
        sw.attribute(model, images, "integrated", baseline=0.0, nsamples=5, seed=0, target=1)
    text = str(caught.value)
    assert text.startswith("Integrated Gradients:")
    assert "alpha = 0 (the baseline)" in text
    assert "quadrature='gauss_legendre'" in text and "baseline=" in text
    # The way out works: Gauss-Legendre points never touch alpha = 0, and the maps are finite.
    fine = sw.attribute(model, images, "integrated", baseline=0.0, nsamples=5, seed=0, target=1,
                        quadrature="gausslegendre")
    assert np.isfinite(fine.raw).all() and np.abs(fine.raw).max() > 0


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("kind", KINDS)
def test_smoothgrad_whose_noise_leaves_the_domain_names_the_sample(framework, kind, x):
    model, images = _model(framework, kind, x)
    if (framework, kind) == ("keras", "where_sqrt"):  # TensorFlow's where sends zeros, not inf * 0, to sqrt
        kept = sw.attribute(model, images, "smoothgrad", nsamples=4, stdev_spread=1.0, seed=0, target=1)
        assert np.isfinite(kept.raw).all()
        return
    with pytest.raises(NonFiniteError, match=r"^SmoothGrad: .* at image \d+, sample [1-9].*stdev_spread"):
        sw.attribute(model, images, "smoothgrad", nsamples=4, stdev_spread=1.0, seed=0, target=1)
    # without noise the same model is fine at these images (the check does not cry wolf)
    assert np.isfinite(sw.attribute(model, images, "vanilla", target=1).raw).all()


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("method", ["vanilla", "integrated", "smoothgrad"])
def test_a_model_that_outputs_nan_is_an_error_before_any_map(framework, method, x):
    model, images = _model(framework, "nan", x)
    with pytest.raises(NonFiniteError, match=r"output is not finite .* image\(s\) 0, 1, 2, 3"):
        sw.attribute(model, images, method, **own_options(method, nsamples=3, seed=0))


def test_gradcam_on_nan_outputs_says_so_not_that_the_layer_is_unreachable(x):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 5))

    class NaNHead(torch.nn.Module):
        def forward(self, t):
            return t + float("nan")

    with pytest.raises(NonFiniteError) as caught:
        sw.attribute(torch.nn.Sequential(model, NaNHead()).eval(), x, "gradcam")
    assert "Grad-CAM" in str(caught.value) and "output is not finite" in str(caught.value)
    assert "ViT" not in str(caught.value) and "zero for every image" not in str(caught.value)


@pytest.mark.parametrize("method, options, flags", [
    # gradients only summed into the maps: no flag at all, the finished maps are checked on the host
    ("smoothgrad", dict(nsamples=12, stdev_spread=0.01), []),
    # IG's path ends' scores are watched (the completeness gap reads them): one read of 4 x 12 flags
    ("integrated", dict(nsamples=12, baseline=0.5), [(12 * 4,)]),
    # LRP's relevance is not a plain sum of gradients: every pass's flag, one read
    ("lrp", {}, [(4,)]),
])
def test_the_check_is_at_most_one_flag_read_per_run_not_a_sync_per_chunk(x, monkeypatch, method, options, flags):
    """Flags stay on the device; the run reads them once at its end (here: ops.numpy of booleans)."""
    from salwidget.backends.torch_backend import TorchOps

    reads = []
    original = TorchOps.numpy

    def counting(self, tensor):
        if tensor.dtype == torch.bool:
            reads.append(tuple(tensor.shape))
        return original(self, tensor)

    monkeypatch.setattr(TorchOps, "numpy", counting)
    model = _Torch("sqrt").eval()
    sw.attribute(model, x, method, seed=0, batch_size=4, target=1, **options)
    assert reads == flags


@pytest.mark.parametrize("method, options, where", [
    ("smoothgrad", dict(nsamples=12, stdev_spread=0.01), "image 2, sample 0 (the clean image)"),
    ("integrated", dict(nsamples=6, baseline=0.0), "image 0's path point at alpha = 0 (the baseline)"),
])
def test_a_nan_in_gradients_summed_unwatched_is_named_by_a_second_run(x, method, options, where):
    """The gradients a map only sums are not watched while the run goes well; a NaN reaches the map, and the
    run is done again with every pass watched to name the first one at fault."""
    images = x.copy()
    if method == "smoothgrad":
        images[2, 0, 0, 0] = 0.0  # sqrt's gradient at 0 is infinite: image 2's clean pass
    with pytest.raises(NonFiniteError, match=re.escape(where)):
        sw.attribute(_Torch("sqrt").eval(), images, method, seed=0, batch_size=4, target=1, **options)


def test_a_preview_read_checks_the_flags_so_far(x):
    model = _Torch("sqrt").eval()
    seen = []

    def progress(done, total, partial):
        try:
            partial.raw
        except NonFiniteError as exc:
            seen.append(str(exc))

    with pytest.raises(NonFiniteError, match="alpha = 0"):  # the end names the pass
        sw.attribute(model, x, "integrated", baseline=0.0, nsamples=6, seed=0, batch_size=4, progress=progress)
    # a preview's maps hold the NaN already: it names the image (the pass is named when the run ends)
    assert seen and "the map of image(s) [0, 1, 2, 3] is not finite" in seen[0]


def test_to_grayscale_refuses_nan_maps():
    maps = np.ones((2, 3, 4, 4), np.float32)
    maps[1, 0, 2, 2] = np.nan
    with pytest.raises(sw.SaliencyError, match=r"image\(s\) \[1\] hold NaN"):
        sw.to_grayscale(maps)
    with pytest.raises(sw.SaliencyError, match="NaN"):
        sw.to_diverging(maps)


def test_the_panel_shows_the_error_not_done(x):
    panel = sw.SaliencyWidget(_Torch("sqrt").eval(), x, methods=("integrated",), baseline=0.0, nsamples=4,
                              nintegration=4, confirm_seconds=float("inf"))
    try:
        panel.wait(60)
        assert "alpha = 0 (the baseline)" in panel.error
        assert "Done" not in panel.status
    finally:
        panel.stop()
        panel.wait(10)


@pytest.mark.parametrize("steps", [4, 17])
def test_gauss_legendre_matches_captum(torch_cnn, images, steps):
    import captum.attr as captum_attr

    ours = sw.attribute(torch_cnn, images, "integrated", target=2, nsamples=steps, baseline=0.25,
                        quadrature="gauss_legendre", batch_size=5)
    theirs = captum_attr.IntegratedGradients(torch_cnn).attribute(
        torch.from_numpy(images), baselines=0.25, target=2, n_steps=steps, method="gausslegendre")
    np.testing.assert_allclose(ours.raw, theirs.numpy(), rtol=1e-4, atol=1e-6 * np.abs(theirs.numpy()).max())
    assert ours.delta is None  # no path ends evaluated: no completeness gap
