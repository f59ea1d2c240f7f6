"""What a user meets in the panel: options from the registry, tooltips, layout, cost, downloads, search,
pages, uploads, notes."""

from __future__ import annotations

import base64
import datetime
import io
import re

import ipywidgets
import numpy as np
import pytest
import traitlets

import salwidget as sw
from salwidget.methods import base as registry
from salwidget.methods.gradients import Vanilla

from .helpers import PassGate, drain, make_torch_cnn, small_panel as make


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# ------------------------------------------------------------------ options and notes from the registry
class ScaledGradient(Vanilla):
    """A method registered by a test: the panel must show it and its option without any change."""

    name = "scaled_gradient_test"
    label = "Scaled gradient"
    summary = "The gradient times a constant (a test method)."
    order = 999
    fails_sanity_check = True
    options = (registry.Option("factor", 2.0, "What the gradient is multiplied by.", kind="float", minimum=0.0,
                               slider_max=10.0, step=0.5, label="factor"),)

    def group_map(self, ctx, m, summed, start, baseline):
        return summed * self_factor(ctx)


def self_factor(ctx):
    return ctx.options["factor"]


@pytest.fixture
def extra_method():
    method = registry.register(ScaledGradient())
    yield method
    del registry._REGISTRY[method.name]


def test_a_newly_registered_method_brings_its_button_options_and_note(images, extra_method):
    panel = make(images, methods=("vanilla",))
    assert "scaled_gradient_test" in panel.settings_view.method_buttons
    assert ("scaled_gradient_test", "factor") not in panel.settings_view.option_controls  # only selected methods' options
    panel.settings_view.method_buttons["scaled_gradient_test"].value = True
    assert panel.wait(60)
    slider = panel.settings_view.option_controls[("scaled_gradient_test", "factor")]
    assert slider.description == "factor" and slider.tooltip == "What the gradient is multiplied by."
    assert ('title="The gradient times a constant (a test method)."'
            in panel.settings_view.group_boxes["scaled_gradient_test"][1].children[0].value)
    headers = [w.value for w in walk(panel) if isinstance(w, ipywidgets.HTML) and "Scaled gradient" in w.value]
    assert headers and "sanity check" in headers[0]
    assert "sanity check" in panel.host.notes.value
    slider.value = 5.0
    assert panel.wait(60)
    np.testing.assert_allclose(panel.results["scaled_gradient_test"].raw, 5.0 * panel.results["vanilla"].raw,
                               rtol=1e-5)


def test_options_are_grouped_under_each_selected_method(images):
    panel = make(images, methods=("smoothgrad", "integrated"))
    def name(view):  # a slider's description, or the label beside a dropdown or checkbox
        return view.description if hasattr(view, "min") else re.sub("<[^>]+>", "", view.children[0].value)

    groups = [[name(v) for v in box.children[1].children] for box in panel.settings_view.groups.children]
    assert groups == [["samples", "noise", "squared"], ["steps", "baseline", "quadrature"]]
    assert ">SmoothGrad</b>" in panel.settings_view.groups.children[0].children[0].value
    panel.methods = ("integrated",)
    assert len(panel.settings_view.groups.children) == 1


def test_a_cam_gets_a_layer_control_and_its_column_names_the_layer(images):
    panel = make(images, methods=("vanilla",))
    assert panel.settings_view.layer_row not in panel.settings_view.groups.children
    panel.methods = ("vanilla", "gradcam")
    assert panel.settings_view.layer_row in panel.settings_view.groups.children
    choices = [value for _, value in panel.settings_view.layer.options]
    assert panel.settings_view.layer.label == "automatic" and choices[1:] == ["0", "1", "2", "3"]  # layers with a spatial output
    assert panel.wait(60) and panel.results["gradcam"].layer == "3"  # automatic: the last one
    panel.settings_view.layer.value = "1"
    assert panel.layer == "1" and panel.wait(60)
    assert panel.results["gradcam"].layer == "1"
    expected = sw.attribute(make_torch_cnn(), images, "gradcam", layer="1", seed=0)
    np.testing.assert_allclose(panel.results["gradcam"].raw, expected.raw, rtol=1e-5, atol=1e-7)


def test_an_ig_completeness_gap_is_noted_with_the_fix(images):
    import torch

    class Cubes(torch.nn.Module):  # f = sum(x^3): two IG steps from 0 give 1.5 f, a gap of 0.5 f
        def forward(self, x):
            total = (x ** 3).sum(dim=(1, 2, 3))
            return torch.stack([total, 0 * total], dim=1)  # the scores' range is f itself

    panel = sw.SaliencyWidget(Cubes(), images, methods=("integrated",), nintegration=2, baseline=0.0)
    assert panel.wait(60)
    assert "completeness gap reaches 50% of the scores' scale" in panel.host.notes.value
    assert "more path steps" in panel.host.notes.value
    panel.nintegration = 64
    assert panel.wait(60) and "completeness gap" not in panel.host.notes.value


def test_a_gap_is_judged_against_the_scores_scale_not_a_score_that_barely_moves():
    from salwidget.attribution import Attribution
    from salwidget.panel.notes import GAP_WARNING, completeness_gap

    raw = np.zeros((2, 1, 2, 2), np.float32)
    raw[0] = 1.0  # image 0: sum 4, gap 0.4: f(x) - f(b) = 3.6 on logits that span 10
    raw[1] = 0.0005  # image 1: sum 0.002, gap 0.001: a class the image does not show (its score barely moves)
    scores = np.array([[5.0, -5.0], [4.0, -6.0]], np.float32)
    result = Attribution(raw=raw, delta=np.array([0.4, 0.001]), scores=scores, method="integrated")
    share, image = completeness_gap(result)  # image 1's gap is 100% of its f(x) - f(b), but 0.01% of its scale
    assert image == 0 and share == pytest.approx(0.4 / 10)
    wide = Attribution(raw=raw * 10, delta=np.array([4.0, 0.001]), scores=scores, method="integrated")
    share, image = completeness_gap(wide)  # f(x) - f(b) = 36 is larger than the scores' range: it is the scale
    assert image == 0 and share == pytest.approx(4 / 36) and share > GAP_WARNING
    # The quickstart's "goldfish" for the espresso picture (EfficientNet-Lite0, 16 steps): the gap is 243% of
    # f(x) - f(b) = -0.295, a false alarm; against the logits' range of 14.6 it is 5%.
    goldfish = np.full((1, 1, 2, 2), (-0.295 - 0.716) / 4, np.float32)
    result = Attribution(raw=goldfish, delta=np.array([-0.716]), scores=np.array([[9.0, -5.6]]), method="integrated")
    share, _ = completeness_gap(result)
    assert share == pytest.approx(0.716 / 14.6, rel=1e-3) and share < GAP_WARNING


# ------------------------------------------------------------------ tooltips and layout
def test_every_control_has_a_tooltip_and_every_row_wraps(images):
    panel = make(images, methods=("smoothgrad", "integrated", "gradcam"))
    panel.wait(60)
    # Interactive controls; not Images (ipywidgets 8.1 cannot draw an Image with a tooltip), nor text.
    controls = [w for w in walk(panel) if isinstance(w, (ipywidgets.ValueWidget, ipywidgets.Button))
                and not isinstance(w, (ipywidgets.Image, ipywidgets.HTML, ipywidgets.Label))]
    assert len(controls) > 20
    missing = [w for w in controls if not w.tooltip or w.tooltip == "null"]
    assert not missing, missing
    unset = [w for w in walk(panel) if hasattr(w, "description") and w.tooltip is None]
    assert not unset, unset  # ipywidgets would write them as title="null"
    rows = [w for w in walk(panel) if type(w) is ipywidgets.HBox and "salwidget-field" not in w._dom_classes]
    assert rows and all(r.layout.flex_flow == "row wrap" for r in rows)
    labels = [w for w in walk(panel) if "salwidget-label" in getattr(w, "_dom_classes", ())]
    assert labels and all('title="' in label.value for label in labels)  # the label shows the tooltip too
    sliders = [w for w in controls if isinstance(w, (ipywidgets.IntSlider, ipywidgets.FloatSlider))]
    assert sliders and all(int(s.layout.min_width.rstrip("px")) >= 200 for s in sliders)


def test_the_grid_fills_the_width_up_to_its_natural_size_and_scales_down_below_it(images):
    panel = make(images)
    layout = panel.host.maps_view.image.layout
    columns = 1 + 2 + 1
    assert layout.width == "100%" and layout.height == "auto"
    assert int(layout.max_width.rstrip("px")) == columns * 208 + 8
    # A narrow notebook scales the grid down to 160 px a cell (issue 27: at 90 px nothing could be read), then its
    # box scrolls: never cut off.
    assert layout.min_width == f"{columns * 168 + 8}px" and panel.host.maps_view.grid_box.layout.overflow == "auto"
    panel.cell_size = 100
    assert panel.wait(60) and int(layout.max_width.rstrip("px")) == columns * 108 + 8


# ------------------------------------------------------------------ cost: estimate, confirm, stop
def test_a_long_run_waits_for_the_compute_button_with_its_estimate(images):
    panel = make(images, confirm_seconds=0.0)
    panel.host.explorer().seconds_per_pass = 0.01
    panel.nsamples = 30
    drain(panel)
    assert not panel.host.worker.busy  # nothing was started: the run waits
    assert panel.status.startswith("This needs 104 passes (SmoothGrad 104)")  # 26 new samples x 4 images
    assert "about 1 s" in panel.status and "press Compute" in panel.status
    assert panel.host.compute_button.layout.display == "" and panel.results["smoothgrad"].nsamples == 4
    panel.host.compute_button.click()
    assert panel.wait(60) and panel.results["smoothgrad"].nsamples == 30
    assert panel.host.compute_button.layout.display == "none"


def test_the_seconds_per_pass_come_from_the_last_result(images):
    panel = make(images)
    result = panel.results["smoothgrad"]
    assert panel.host.explorer().seconds_per_pass == pytest.approx(result.seconds / result.passes_done)


def test_the_stop_button_cancels_and_keeps_the_finished_maps(images):
    model = make_torch_cnn()
    panel = sw.SaliencyWidget(model, images, methods=("vanilla", "smoothgrad"), nsamples=4, nintegration=4,
                              batch_size=4, confirm_seconds=float("inf"))  # never held for the Compute button
    assert panel.wait(60)
    gate = PassGate(model[0], when=lambda calls, grad: calls == 3)  # a chunk of the long run is under way
    panel.nsamples = 2000
    assert gate.wait()
    assert not panel.host.stop_button.disabled
    panel.host.stop_button.click()
    assert panel.wait(1)  # Stop settles at once, even with the chunk still under way
    gate.release()
    drain(panel)
    assert gate.after_release == 0  # the chunk under way ends; no chunk after it
    assert panel.status.startswith("Stopped")
    assert panel.host.stop_button.disabled
    assert panel.results["smoothgrad"].nsamples == 4  # the last complete grid stays
    panel.nsamples = 5
    assert panel.wait(60) and panel.results["smoothgrad"].nsamples == 5


# ------------------------------------------------------------------ downloads
def links(html: str) -> dict:
    return {name: base64.b64decode(data)
            for name, data in re.findall(r"download='([^']+)' href='data:[^;]+;base64,([^']+)'", html)}


def test_the_download_links_hold_the_grid_png_and_the_maps(images):
    panel = make(images)
    assert links(panel.host.maps_view.downloads.value)["saliency_grid.png"] == panel.to_png()
    assert panel.host.maps_view.npz_link.value == "" and panel.host.maps_view.npz_button.layout.display == ""  # megabytes: only when asked
    panel.host.maps_view.npz_button.click()
    maps = np.load(io.BytesIO(links(panel.host.maps_view.npz_link.value)["saliency_maps.npz"]))
    np.testing.assert_array_equal(maps["raw_smoothgrad"], panel.results["smoothgrad"].raw)
    np.testing.assert_array_equal(maps["mask_vanilla"], panel.masks["vanilla"])
    np.testing.assert_array_equal(maps["target_vanilla"], panel.results["vanilla"].target)
    assert panel.host.maps_view.npz_button.layout.display == "none"
    panel.cmap = "viridis"
    assert links(panel.host.maps_view.downloads.value)["saliency_grid.png"] == panel.to_png()  # rebuilt with the grid
    assert panel.host.maps_view.npz_link.value != ""  # same maps: the archive stays
    panel.nsamples = 5
    assert panel.wait(60)
    assert panel.host.maps_view.npz_link.value == "" and panel.host.maps_view.npz_button.layout.display == ""  # new maps: asked again
    np.testing.assert_array_equal(np.load(io.BytesIO(panel.to_npz()))["raw_smoothgrad"],
                                  panel.results["smoothgrad"].raw)


# ------------------------------------------------------------------ classes
@pytest.fixture
def named(images):
    names = ["crane", "tiger cat", "crane", "tiger", "cat"]
    return make(images, class_names=names, methods=("vanilla",))


def test_class_search_acts_on_a_unique_match(named):
    named.settings_view.search.value = "tiger c"  # Enter: one class contains it
    assert named.target == 1 and "Explaining tiger cat (#1)" in named.settings_view.search_hint.value
    assert named.settings_view.target.value == 1 and named.settings_view.search.value == "tiger cat"
    assert named.wait(60)
    np.testing.assert_array_equal(named.results["vanilla"].target, [1] * 4)


def test_class_search_says_when_several_or_none_match(named):
    named.settings_view.search.value = "tig"
    assert "2 classes contain 'tig'" in named.settings_view.search_hint.value and named.target == "predicted"
    named.settings_view.search.value = "zebra"
    assert named.settings_view.search_hint.value == "No class matches 'zebra'."
    named.settings_view.search.value = "tiger"  # a full name wins over the names containing it
    assert named.target == 3


def test_duplicate_names_show_their_indices_and_stay_apart(named):
    assert "crane (#0)" in named.settings_view.search.options and "crane (#2)" in named.settings_view.search.options
    named.settings_view.search.value = "crane"
    assert "2 classes are called 'crane': crane (#0), crane (#2)" in named.settings_view.search_hint.value
    assert named.target == "predicted"
    labels = [label for label, _ in named.settings_view.target.options]
    assert any(l.startswith("crane (#0)") for l in labels) and any(l.startswith("crane (#2)") for l in labels)
    named.settings_view.search.value = "crane (#2)"
    assert named.target == 2


def test_a_duplicated_name_keeps_the_search_box_and_its_note_goes_once_one_is_picked(named):
    named.target = 3  # an earlier choice: the box shows "tiger"
    assert named.settings_view.search.value == "tiger"
    named.settings_view.search.value = "crane"
    assert named.settings_view.search.value == "crane"  # not back to "tiger"
    assert "Pick one in the target list" in named.settings_view.search_hint.value
    named.settings_view.target.value = 2  # picked in the list
    assert named.target == 2 and named.settings_view.search.value == "crane (#2)" and named.settings_view.search_hint.value == ""
    named.settings_view.search.value = "crane"
    assert "Pick one" in named.settings_view.search_hint.value
    named.nsamples = 5  # any later change: the note no longer describes what is shown
    assert named.settings_view.search_hint.value == ""


def test_the_search_box_follows_the_target_dropdown(named):
    named.settings_view.target.value = next(v for _, v in named.settings_view.target.options if v == 4 or v == 0)
    expected = "cat" if named.target == 4 else "crane (#0)"
    assert named.settings_view.search.value == expected
    named.target = "predicted"
    assert named.settings_view.search.value == ""


# ------------------------------------------------------------------ pages and uploads
def test_only_the_visible_page_is_computed_and_each_page_keeps_its_cache(images):
    five = np.concatenate([images, images[:1] * 0.5])
    panel = make(five, page_size=2)
    assert panel.num_pages == 3 and panel.host.maps_view.pager.layout.display == ""
    assert panel.results["smoothgrad"].raw.shape[0] == 2
    assert panel.host.maps_view.page_label.value == "images 1-2 of 5"
    panel.host.maps_view.next.click()
    assert panel.page == 1 and panel.wait(60)
    expected = sw.attribute(make_torch_cnn(), five[2:4], "smoothgrad", nsamples=4, seed=0)
    np.testing.assert_allclose(panel.results["smoothgrad"].raw, expected.raw, rtol=1e-5, atol=1e-8)
    panel.page = 2
    assert panel.wait(60) and panel.results["smoothgrad"].raw.shape[0] == 1
    assert panel.host.maps_view.next.disabled
    panel.page = 0
    assert panel.wait(60) and panel.status.endswith("all from the cache. (page 1 of 3: images 1-2 of 5)")
    with pytest.raises(traitlets.TraitError):
        panel.page = 3


def test_maps_and_results_name_their_page(images):
    five = np.concatenate([images, images[:1] * 0.5])
    panel = make(five, page_size=2)
    panel.page = 1
    assert panel.wait(60)
    masks, results = panel.masks, panel.results
    assert (masks.page, masks.pages, masks.rows) == (1, 3, slice(2, 4)) and results.rows == slice(2, 4)
    assert repr(masks).startswith("# page 2 of 3: images 3-4\n{")
    assert panel.status.endswith("(page 2 of 3: images 3-4 of 5)")
    assert set(masks) == {"vanilla", "smoothgrad"} and masks["vanilla"].shape[0] == 2
    single = make(images)
    assert single.masks.pages == 1 and "page" not in single.status



def test_a_larger_page_size_shows_every_image_of_the_new_page(images):
    panel = make(images, page_size=2, methods=("vanilla",))
    panel.page_size = 4  # the old page's 2-row maps must not be drawn beside 4 rows
    assert panel.wait(60) and panel.error == ""
    expected = sw.attribute(make_torch_cnn(), images, "vanilla")
    np.testing.assert_allclose(panel.results["vanilla"].raw, expected.raw, rtol=1e-5, atol=1e-8)
    assert panel.masks["vanilla"].shape[0] == 4


NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def small_preprocess(picture: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(picture).resize((16, 16)), np.float32).transpose(2, 0, 1) / 255


def png_bytes(colour) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="png")
    return buffer.getvalue()


def test_an_uploaded_picture_joins_the_grid(images):
    panel = make(images, preprocess=small_preprocess, page_size=6, methods=("vanilla",))
    assert panel.host.maps_view.upload.layout.display == ""
    before = decode(panel.to_png())
    content = png_bytes((250, 10, 10))
    panel.host.maps_view.upload.value = ({"name": "red.png", "type": "image/png", "size": len(content),
                            "content": memoryview(content), "last_modified": NOW},)
    assert panel.wait(60) and panel.error == ""
    assert panel.results["vanilla"].raw.shape[0] == 5
    assert len(panel.host.maps_view.upload.value) == 1  # the button says "Add images (1)": the upload added one (not "(0)")
    after = decode(panel.to_png())
    assert after.shape[0] > before.shape[0]  # a fifth row
    np.testing.assert_allclose(panel.host.display[4], np.full((16, 16, 3), [250, 10, 10]) / 255, atol=0.01)
    expected = sw.attribute(make_torch_cnn(), panel.host.images, "vanilla", seed=0)
    np.testing.assert_allclose(panel.results["vanilla"].raw[4], expected.raw[4], rtol=1e-5, atol=1e-8)


def test_an_upload_the_preprocess_cannot_take_is_an_error_in_the_panel(images):
    panel = make(images, preprocess=lambda picture: np.zeros((3, 8, 8), np.float32), methods=("vanilla",))
    content = png_bytes((0, 0, 0))
    panel.host.maps_view.upload.value = ({"name": "x.png", "type": "image/png", "size": len(content),
                            "content": memoryview(content), "last_modified": NOW},)
    assert "preprocess returned shape (3, 8, 8)" in panel.error
    panel.host.maps_view.upload.value = ({"name": "x.txt", "type": "text/plain", "size": 3, "content": memoryview(b"abc"),
                            "last_modified": NOW},)
    assert "cannot identify image file" in panel.error
    assert len(panel.host.images) == 4 and panel.host.maps_view.upload.value == ()  # "Add images (0)": nothing was added


def test_without_preprocess_there_is_no_upload_button(images):
    panel = make(images)
    assert panel.host.maps_view.upload.layout.display == "none"


# ------------------------------------------------------------------ titles
def test_a_single_logit_model_is_shown_with_its_sigmoid(images, monkeypatch):
    import torch
    from salwidget.drawing import render

    model = make_torch_cnn(num_classes=1)
    with torch.no_grad():
        model[6].bias += 2.0  # a logit outside [0, 1], which would read as a probability
    titles = []
    original = render.GridRenderer.render
    monkeypatch.setattr(render.GridRenderer, "render",
                        lambda self, columns, row_titles=None: titles.append(row_titles) or original(self, columns,
                                                                                                     row_titles))
    panel = sw.SaliencyWidget(model, images, methods=("vanilla",), class_names=["defect"])
    assert panel.wait(60) and panel.error == ""
    logit = model(torch.as_tensor(images)).detach().numpy()[0, 0]
    assert f"p(defect) = {1 / (1 + np.exp(-logit)):.2f} (sigmoid)" in titles[-1][0]


def test_status_uses_labels_and_no_zero_counts(images):
    panel = make(images, methods=("vanilla", "gradcam", "integrated"))
    assert "Gradient, Grad-CAM @ 3, Integrated Gradients (4 steps)" in panel.status
    assert "vanilla" not in panel.status and "0 samples" not in panel.status and "n=0" not in panel.status
