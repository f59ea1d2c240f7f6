"""What a newcomer saw in the panel (issue 27 item 5), and the shape that keeps the views apart (items 1-4)."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

import ipywidgets
import numpy as np
import pytest
import traitlets

import salwidget as sw
from salwidget.drawing import figure, render
from salwidget.panel.status import device_label

from .helpers import PassGate, drain, make_torch_cnn, small_panel as make

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["cat", "dog", "bird", "fish", "frog"]


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


# ------------------------------------------------------------------ item 5: what a newcomer saw
def test_a_class_name_is_a_target_when_class_names_have_it(images):
    panel = make(images, class_names=NAMES)
    panel.target = "dog"
    assert panel.target == 1 and panel.settings_view.target.value == 1
    panel.target = ["cat", 2, "Fish", "dog"]  # names per image, any case, mixed with indices
    assert panel.target == (0, 2, 3, 1)
    with pytest.raises(traitlets.TraitError, match="'ca' is no class name; classes containing it: 'cat'"):
        panel.target = "ca"
    assert panel.target == (0, 2, 3, 1)  # refused: nothing changed


def test_a_name_of_several_classes_asks_for_an_index(images):
    panel = make(images, class_names=["cat", "cat"] + NAMES[2:])
    with pytest.raises(traitlets.TraitError, match=r"names several classes \[0, 1\]"):
        panel.target = "cat"


def test_without_class_names_a_name_is_refused_as_before(images):
    panel = make(images)
    with pytest.raises(traitlets.TraitError, match="target must be 'predicted', a class index"):
        panel.target = "cat"


@pytest.mark.parametrize("device, shown", [("cpu", "CPU"), ("CPU", "CPU"), ("cuda:1", "GPU 1"),
                                           ("/physical_device:GPU:0", "GPU 0"), ("mps", "MPS")])
def test_a_device_has_one_name_whatever_the_framework_calls_it(device, shown):
    assert device_label(device) == shown


def test_the_done_status_names_the_device_as_keras_does(images):
    panel = make(images)
    assert " on CPU: " in panel.status  # torch says 'cpu'


def test_a_cam_says_no_no_options_above_its_layer_control(images):
    panel = make(images, methods=("vanilla", "gradcam"))
    header = panel.settings_view.group_boxes["gradcam"][1].children[0].value
    assert "no options" not in header and "Grad-CAM" in header
    assert panel.settings_view.layer_row in panel.settings_view.groups.children
    assert "no options" in panel.settings_view.group_boxes["vanilla"][1].children[0].value  # a plain one still does


def test_the_progress_bar_is_empty_while_a_run_waits_for_compute(images):
    panel = make(images, confirm_seconds=0.0)
    assert panel.host.progress.value == 100  # the first grid is done
    panel.host.explorer().seconds_per_pass = 0.01
    panel.nsamples = 30
    drain(panel)
    assert panel.status.startswith("This needs") and panel.host.compute_button.layout.display == ""
    assert panel.host.progress.value == 0  # nothing runs: a full bar would say it is done
    panel.host.compute_button.click()
    assert panel.wait(60) and panel.host.progress.value == 100


def test_after_stop_compute_goes_on_with_the_current_settings(images):
    model = make_torch_cnn()
    panel = sw.SaliencyWidget(model, images, methods=("vanilla", "smoothgrad"), nsamples=4, nintegration=4,
                              batch_size=4, confirm_seconds=float("inf"))
    assert panel.wait(60)
    gate = PassGate(model[0], when=lambda calls, grad: calls == 3)
    panel.nsamples = 24
    assert gate.wait()
    panel.host.stop_button.click()
    gate.release()
    drain(panel)
    gate.remove()
    assert "Press Compute to go on" in panel.status and panel.host.compute_button.layout.display == ""
    assert panel.host.progress.value == 0 and panel.results["smoothgrad"].nsamples == 4
    assert panel.wait(5) and panel.results["smoothgrad"].nsamples == 4  # waiting does not restart a stopped run
    panel.host.compute_button.click()
    assert panel.wait(60) and panel.results["smoothgrad"].nsamples == 24
    assert panel.status.startswith("Done") and panel.host.compute_button.layout.display == "none"


def test_a_tiny_picture_keeps_square_pixels_and_a_larger_one_is_smooth():
    rng = np.random.default_rng(0)
    tiny = rng.random((8, 8, 3)).astype(np.float32)
    drawn = np.asarray(render.resample(tiny, True, (200, 200)))
    original = {tuple(c) for c in (np.clip(tiny, 0, 1) * 255).round().astype(np.uint8).reshape(-1, 3)}
    assert {tuple(c) for c in drawn.reshape(-1, 3)} == original  # no blended colour: nearest neighbours
    assert (drawn[:25, :25] == drawn[0, 0]).all()  # one source pixel fills a 25 x 25 block
    photo = rng.random((100, 100, 3)).astype(np.float32)
    smooth = np.asarray(render.resample(photo, True, (200, 200)))
    assert len({tuple(c) for c in smooth.reshape(-1, 3)}) > 2 * 100 * 100  # bilinear: colours in between
    assert figure.crisp is render.crisp  # the matplotlib figure follows the same rule


# ------------------------------------------------------------------ items 1-4: the shape
def test_the_house_numbers_hold():
    """No view reaches a private name of another module, no import loop, no private name imported across
    modules, the widget a shell (benchmarks/house.py counts them from the source)."""
    import json

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "house.py"), "--json"], capture_output=True,
                         text=True, check=True).stdout
    numbers = json.loads(out)
    assert numbers["private_reaches"] <= 5 and numbers["import_cycles"] == 0
    assert numbers["private_imports"] == 0 and numbers["modules_over_700_lines"] == 0
    assert len((ROOT / "salwidget" / "panel" / "widget.py").read_text().splitlines()) <= 450


def test_the_old_private_names_still_answer(images):
    panel = make(images)
    assert panel._worker is panel.host.worker and panel._image is panel._maps.image
    assert panel._target is panel.settings_view.target and panel._images is panel.host.images
    with pytest.raises(AttributeError, match="no attribute '_nothing'"):
        panel._nothing


def test_importing_salwidget_pulls_in_no_drawing_or_widgets():
    code = ("import sys, salwidget, salwidget.arrays, salwidget.drawing; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PIL', 'matplotlib', 'ipywidgets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout
    assert out.strip() == "[]"


def test_the_enlarged_cell_is_shown_at_a_sensible_size_under_its_choice(images):
    panel = make(images)
    panel.enlarged = (0, "smoothgrad")
    maps = panel._maps
    assert maps.cell_box.layout.display == "" and maps.cell.value[:8] == b"\x89PNG\r\n\x1a\n"
    layout = maps.cell.layout
    assert layout.width == "auto" and layout.align_self == "flex-start"  # not stretched to the panel's width
    assert layout.max_width == "min(100%, 480px)"
    extras = maps.extras.children
    assert extras.index(maps.cell_box) == 1 and maps.enlarge_view in extras[0].children  # right under its choice


def test_an_upload_button_counts_the_pictures_its_last_upload_added(images):
    from .test_panel_features import NOW, png_bytes, small_preprocess

    panel = make(images, preprocess=small_preprocess, methods=("vanilla",))
    content = png_bytes((250, 10, 10))
    panel._maps.upload.value = ({"name": "red.png", "type": "image/png", "size": len(content),
                                 "content": memoryview(content), "last_modified": NOW},)
    assert panel.wait(60) and len(panel.host.images) == 5
    assert len(panel._maps.upload.value) == 1  # the browser shows "Add images (1)", not "(0)"


def test_an_evaluation_estimate_uses_the_seconds_per_pass_its_own_work_measured():
    from salwidget.panel.evaluate import Cost, PassRates

    rates = PassRates()
    curves = Cost(forward=200, gradient=40)  # curves of a map not computed yet: its 40 passes first
    assert curves.seconds(0.01) == pytest.approx(200 * 0.01 / 3 + 40 * 0.01)  # before any evaluation ran
    rates.record(curves, 6.4, maps_rate=0.01)  # it took 6.4 s: 0.4 s for the map, 6 s for 200 forward passes
    assert rates.forward == pytest.approx(0.03)
    assert Cost(forward=400).seconds(0.01, rates) == pytest.approx(12.0)
    sanity = Cost(gradient=120, sanity_gradient=120)
    assert sanity.seconds(0.01, rates) == pytest.approx(1.2)  # not measured yet: the maps' rate
    rates.record(sanity, 36.0, maps_rate=0.01)
    assert rates.sanity == pytest.approx(0.3) and sanity.seconds(0.01, rates) == pytest.approx(36.0)
    assert Cost(forward=10).seconds(None) is None  # nothing measured: no estimate


def test_the_evaluate_view_estimates_from_the_evaluation_it_ran(images):
    panel = make(images)
    panel.curve_steps = 8
    panel.evaluate()
    assert panel.wait(180) and set(panel.curves) == {"vanilla", "smoothgrad", "random"}
    rates = panel._evaluate.cache.rates
    assert rates.forward > 0  # measured by the curves just computed
    rates.forward = 0.5  # as if a forward pass took half a second: the next estimate says so
    panel.curve_steps = 16
    cost = panel._evaluate.cost.value
    passes = 3 * 2 * 16 * 4  # vanilla, smoothgrad and the random order, 2 curves, 16 steps, 4 images
    assert f"= {passes:,} forward passes, about {passes * 0.5:.0f} s" in html.unescape(cost)


def test_the_sanity_strip_says_grey_is_pending_only_while_something_is(images, monkeypatch):
    from salwidget.panel import evaluation_plot

    captions = []
    draw = evaluation_plot._with_caption
    monkeypatch.setattr(evaluation_plot, "_with_caption", lambda picture, caption: captions.append(caption) or
                        draw(picture, caption))
    panel = make(images, methods=("vanilla",))
    panel.curve_steps, panel.sanity_depths = 4, 2
    panel.evaluate(sanity_check=True)
    assert panel.wait(180) and set(panel.sanity) == {"vanilla"}
    assert captions and captions[-1] == "Randomised maps of image 1"  # everything computed: no grey legend


def test_a_download_link_looks_like_a_button(images):
    panel = make(images)
    link = panel._maps.downloads.value
    assert "salwidget-download-png" in link and "border:1px solid" in link and "Grid (PNG)" in link


def test_a_channels_last_batch_is_refused_with_the_layout_hint_alone():
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    with pytest.raises(sw.SaliencyError, match="pass channels_last=True") as caught:
        sw.SaliencyWidget(make_torch_cnn(), x)
    error = caught.value  # no chained tracebacks: raised alone, or with its context suppressed
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
