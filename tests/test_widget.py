"""The panel, driven headlessly through its traits and controls."""

from __future__ import annotations

import io

import ipywidgets
import numpy as np
import pytest

import salwidget as sw

from .helpers import keras_twin, make_torch_cnn


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


class PassCounter:
    """Counts images that go through the model's first layer."""

    def __init__(self, model):
        self.images = 0
        self.handle = model[0].register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.images += inputs[0].shape[0]


@pytest.fixture
def panel(images):
    model = make_torch_cnn()
    widget = sw.SaliencyWidget(model, images, class_names=[f"c{i}" for i in range(5)], labels=[0, 1, 2, 3],
                               methods=("vanilla", "smoothgrad"), nsamples=8, nintegration=4)
    assert widget.wait(60)
    widget.counter = PassCounter(model)
    return widget


def decode(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def test_first_render_has_masks_png_and_status(panel, images):
    assert set(panel.masks) == {"vanilla", "smoothgrad"}
    assert panel.masks["smoothgrad"].shape == (4, 16, 16)
    assert panel.results["smoothgrad"].nsamples == 8
    picture = decode(panel.to_png())
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.std() > 0.05
    assert bytes(panel._image.value) == panel.to_png()
    assert panel.status.startswith("done: vanilla, smoothgrad") and panel.error == ""


def test_masks_match_the_core(panel, images):
    expected = sw.attribute(make_torch_cnn(), images, "smoothgrad", nsamples=8, seed=0)
    np.testing.assert_allclose(panel.masks["smoothgrad"], expected.grayscale(), atol=1e-6)


def test_look_only_change_makes_no_model_call_but_changes_the_png(panel):
    before = panel.to_png()
    panel.cmap = "viridis"
    panel.percentile = 95.0
    panel.overlay_alpha = 0.9
    panel.wait(10)
    assert panel.counter.images == 0
    assert panel.to_png() != before
    assert panel._cmap.value == "viridis"  # trait mirrored to the control


def test_adding_a_method_from_its_button_computes_only_that_method(panel):
    panel._method_buttons["integrated"].value = True
    assert panel.methods == ("vanilla", "smoothgrad", "integrated")
    panel.wait(60)
    assert set(panel.masks) == {"vanilla", "smoothgrad", "integrated"}
    assert panel.counter.images == 4 + 4 * 4  # clean forward + 4 steps x 4 images


def test_raising_samples_reuses_the_earlier_ones(panel):
    panel._nsamples.value = 16  # the slider, as a user would
    panel.wait(60)
    assert panel.nsamples == 16
    assert panel.counter.images == 4 + 4 * 8  # only the 8 new samples per image
    fresh = sw.attribute(make_torch_cnn(), panel._explorer.images, "smoothgrad", nsamples=16, seed=0)
    np.testing.assert_allclose(panel.results["smoothgrad"].raw, fresh.raw, rtol=1e-5, atol=1e-9)


def test_going_back_to_an_earlier_setting_is_a_cache_hit(panel):
    panel.nsamples = 12
    panel.wait(60)
    calls = panel.counter.images
    panel.nsamples = 8
    panel.wait(60)
    assert panel.counter.images == calls


def test_burst_of_changes_settles_on_the_last(panel):
    for n in range(9, 30):
        panel.nsamples = n
    panel.stdev_spread = 0.3
    assert panel.wait(120)
    assert panel.results["smoothgrad"].nsamples == 29
    assert panel.results["smoothgrad"].stdev_spread == pytest.approx(0.3)
    # Stale work was dropped: far fewer passes than the 21 requests would need.
    assert panel.counter.images < 4 * sum(range(9, 30)) / 3


def test_target_from_the_dropdown_changes_titles_and_maps(panel):
    before_png, before = panel.to_png(), panel.masks["vanilla"]
    labels = [label for label, value in panel._target.options]
    assert labels[0].startswith("Predicted") and len(labels) > 1
    other = next(v for _, v in panel._target.options if v != "predicted" and v != panel.results["vanilla"].target[0])
    panel._target.value = other
    assert panel.target == other
    panel.wait(60)
    np.testing.assert_array_equal(panel.results["vanilla"].target, [other] * 4)
    assert not np.allclose(panel.masks["vanilla"], before)
    assert panel.to_png() != before_png
    assert any("explains: c" in t for t in panel._row_titles(panel.results["vanilla"].target))


def test_class_search_sets_the_target(panel):
    panel._class_search.value = "c3"
    panel.wait(60)
    assert panel.target == 3
    np.testing.assert_array_equal(panel.results["smoothgrad"].target, [3, 3, 3, 3])


def test_error_shows_in_the_panel_and_clears_when_fixed(panel):
    panel.target = 7
    panel.wait(60)
    assert "Target class 7 is out of range" in panel.error
    assert "out of range" in panel._error.value and panel._error.layout.display == ""
    panel.target = "predicted"
    panel.wait(60)
    assert panel.error == "" and panel._error.layout.display == "none"
    assert panel.status.startswith("done")


def test_no_method_selected_is_an_error_not_a_crash(panel):
    panel.methods = ()
    panel.wait(10)
    assert "No method selected" in panel.error
    panel.methods = ("vanilla",)
    panel.wait(10)
    assert panel.error == "" and set(panel.masks) == {"vanilla"}


def test_progress_previews_arrive_before_the_full_count(images, monkeypatch):
    import salwidget.widget as widget_module

    monkeypatch.setattr(widget_module, "PREVIEW_INTERVAL_S", 0.0)
    model = make_torch_cnn()
    shown = []
    panel = sw.SaliencyWidget(model, images, methods=("smoothgrad",), nsamples=40, batch_size=8)
    panel._image.observe(lambda change: shown.append(panel.status), names="value")
    panel.wait(60)
    previews = [s for s in shown if "passes" in s]
    assert previews and previews[0].startswith("smoothgrad: 2 samples, 8/160 passes")
    assert panel._progress.value == 100


def test_png_snapshot_in_the_mime_bundle_decodes(panel):
    import base64

    bundle = panel._repr_mimebundle_()
    assert "text/html" not in bundle
    picture = decode(base64.b64decode(bundle["image/png"]))
    assert picture.shape[:2] == decode(panel.to_png()).shape[:2]


def test_save_writes_the_png(panel, tmp_path):
    path = tmp_path / "grid.png"
    panel.save(path)
    assert path.read_bytes() == panel.to_png()


def test_torch_and_keras_twins_give_the_same_masks(images):
    model = make_torch_cnn()
    options = dict(methods=("vanilla", "smoothgrad", "integrated"), nsamples=5, nintegration=4, rng="numpy")
    torch_panel = sw.SaliencyWidget(model, images, **options)
    keras_panel = sw.SaliencyWidget(keras_twin(model), images.transpose(0, 2, 3, 1), **options)
    assert torch_panel.wait(60) and keras_panel.wait(120)
    for method in options["methods"]:
        np.testing.assert_allclose(keras_panel.masks[method], torch_panel.masks[method], atol=2e-3)


def test_one_target_per_image_from_python(panel):
    panel.target = [4, 3, 2, 1]
    panel.wait(60)
    np.testing.assert_array_equal(panel.results["vanilla"].target, [4, 3, 2, 1])
    assert panel._target.value == (4, 3, 2, 1)  # shown in the dropdown as its own entry
    assert panel.error == ""
