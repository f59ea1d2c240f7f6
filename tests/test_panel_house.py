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


def test_the_views_are_reached_by_public_paths_and_the_old_private_names_are_gone(images):
    panel = make(images)
    assert panel.host.maps_view.image.value[:8] == b"\x89PNG\r\n\x1a\n"  # the grid, where the tests read it
    assert panel.settings_view.target.value == "predicted" and len(panel.host.images) == 4
    for old in ("_worker", "_image", "_target", "_images"):  # the shim of old names (panel/legacy.py) is gone
        with pytest.raises(AttributeError, match=f"no attribute '{old}'"):
            getattr(panel, old)


def test_importing_salwidget_pulls_in_no_drawing_or_widgets():
    code = ("import sys, salwidget, salwidget.arrays, salwidget.drawing; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PIL', 'matplotlib', 'ipywidgets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout
    assert out.strip() == "[]"


def test_the_enlarged_cell_is_shown_at_a_sensible_size_under_its_choice(images):
    panel = make(images)
    panel.enlarged = (0, "smoothgrad")
    maps = panel.host.maps_view
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
    panel.host.maps_view.upload.value = ({"name": "red.png", "type": "image/png", "size": len(content),
                                 "content": memoryview(content), "last_modified": NOW},)
    assert panel.wait(60) and len(panel.host.images) == 5
    assert len(panel.host.maps_view.upload.value) == 1  # the browser shows "Add images (1)", not "(0)"


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
    rates = panel.host.evaluate_view.cache.rates
    assert rates.forward > 0  # measured by the curves just computed
    rates.forward = 0.5  # as if a forward pass took half a second: the next estimate says so
    panel.curve_steps = 16
    cost = panel.host.evaluate_view.cost.value
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
    link = panel.host.maps_view.downloads.value
    assert "salwidget-download-png" in link and "border:1px solid" in link and "Grid (PNG)" in link


def test_a_channels_last_batch_is_refused_with_the_layout_hint_alone():
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    with pytest.raises(sw.SaliencyError, match="pass channels_last=True") as caught:
        sw.SaliencyWidget(make_torch_cnn(), x)
    error = caught.value  # no chained tracebacks: raised alone, or with its context suppressed
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# ------------------------------------------------------------------ item 5, what a newcomer saw (continued)
def test_each_view_shows_its_own_status_when_shown_again(images):
    panel = make(images, methods=("vanilla",))
    maps_status = panel.status
    assert maps_status.startswith("Done")
    panel.curve_steps = 4
    panel.evaluate()
    assert panel.wait(180) and panel.status.startswith("Evaluated")
    panel.pane = "maps"  # back in Maps: not "Evaluated in 163.4 s" over the grid
    assert panel.status == maps_status
    assert f">{html.escape(maps_status)}</div>" in panel.host.status_line.value
    panel.pane = "evaluate"
    assert panel.wait(60) and panel.status.startswith("Evaluated")


def test_a_long_status_keeps_to_one_line_so_the_controls_below_stay_put(images):
    panel = make(images)
    panel.status = ("Done: Gradient, SmoothGrad (n=16), Integrated Gradients (n=16), Gradient x Input, "
                    "Guided Backprop, all from the cache.")
    line = panel.host.status_line
    assert "white-space:nowrap" in line.value and "text-overflow:ellipsis" in line.value  # cut, never wrapped
    assert f'title="{html.escape(panel.status)}"' in line.value  # the whole of it on hover
    assert line.layout.height == "28px" and line.layout.overflow == "hidden" and line.layout.min_width == "0"


def test_the_evaluate_legends_sit_outside_the_curves_data_area(images):
    panel = make(images, methods=("vanilla", "smoothgrad"))
    panel.curve_steps, panel.sanity_depths = 4, 2
    panel.evaluate(sanity_check=True)
    assert panel.wait(180) and set(panel.sanity) == {"vanilla", "smoothgrad"}
    figure = panel.figure()
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = [ax for ax in figure.axes if ax.get_legend() is not None]
    assert len(axes) == 3  # deletion, insertion, similarity
    for ax in axes:
        legend, data = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not legend.overlaps(data), ax.get_title()  # no curve runs under a legend
        assert legend.y1 < data.y0  # under the axes ...
        assert 0 <= legend.y0 and legend.x0 >= 0 and legend.x1 <= figure.bbox.width  # ... and inside the picture


def test_the_sanity_strip_titles_each_fit_their_cell():
    from salwidget.drawing.render import FONT_PX, load_font
    from salwidget.panel.evaluation_plot import STRIP_CELL_PX, strip_titles

    layers = ["features.denseblock4.denselayer16.conv2", "features.denseblock3.denselayer24.conv2",
              "classifier", "features.conv0"]
    titles = strip_titles(layers)
    font = load_font(FONT_PX)
    for title in titles:
        assert title.startswith("to\n") and all(font.getlength(line) <= STRIP_CELL_PX - 6 for line in title.split("\n"))
    assert titles[2] == "to\nclassifier" and titles[0].endswith("conv2")  # a layer's own name stays readable


def test_the_sanity_strip_calls_grey_pending_only_while_a_check_runs(monkeypatch):
    from salwidget.evaluation import SanityCheck
    from salwidget.panel import evaluation_plot

    captions = []
    draw = evaluation_plot._with_caption  # as the test above: the caption the strip is drawn with
    monkeypatch.setattr(evaluation_plot, "_with_caption", lambda picture, caption: captions.append(caption) or
                        draw(picture, caption))
    maps = np.random.default_rng(0).random((2, 1, 8, 8))
    maps[1] = np.nan  # a randomised map that cannot be drawn
    result = SanityCheck(layers=("a", "b"), similarity=np.ones((1, 2)), maps=maps, original=None,
                         original_mask=np.ones((1, 8, 8)), order="cascading", measure="spearman", method="vanilla",
                         target=np.zeros(1, int), seed=0)
    curves = {"vanilla": evaluation_plot.Shown("Gradient")}
    for state in ("done", "computing"):
        evaluation_plot.draw(curves, {"vanilla": evaluation_plot.Shown("Gradient", result, state)})
    assert captions == ["Randomised maps of image 1 (grey: no map)",
                        "Randomised maps of image 1 (grey: not computed yet)"]


# ------------------------------------------------------------------ the Dataset view, as a newcomer saw it
def decoded(png) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(bytes(png))).convert("RGB"))


def dataset_panel(labelled: bool):
    from .test_panel_dataset import panel_over

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(40, 3, 16, 16)).astype(np.float32)
    return panel_over(x, rng.integers(0, 5, 40) if labelled else np.full(40, -1))


def test_an_empty_page_says_so_whole_and_without_labels_says_no_labels():
    from salwidget.drawing.render import FONT_PX, load_font
    from salwidget.panel.dataset_pane import NO_LABELS
    from salwidget.panel.dataset_plot import NO_MATCH

    font = load_font(FONT_PX + 1)
    panel = dataset_panel(labelled=False)
    view = panel.host.dataset_view
    assert "no labels" in view.summary.value and "accuracy <b>" not in view.summary.value
    assert panel.status.endswith("; no labels.")
    panel.filter_correct = "wrong"  # was an empty page saying "No image matche"
    assert view.thumbs.boxes == [] and view.thumbs.width >= font.getlength(NO_LABELS) + 12
    assert decoded(view.thumbnails.value).shape[1] == view.thumbs.width
    panel.filter_correct, panel.query = "all", "probability > 2"
    assert view.thumbs.boxes == [] and view.thumbs.width >= font.getlength(NO_MATCH) + 12


def test_the_accuracy_is_said_once_and_sort_choices_read_as_words():
    from salwidget.panel.dataset_pane import sort_label

    panel = dataset_panel(labelled=True)
    view = panel.host.dataset_view
    assert "accuracy" in view.summary.value and "accuracy" not in panel.status
    assert ("dataset order", "index") in view.sort.options and ("loss", "loss") in view.sort.options
    panel.sort_by = "index"
    assert view.sort.value == "index" and view.sort.label == "dataset order"  # the value stays the column
    assert sort_label("integrated_vs_vanilla_spearman") == "Integrated Gradients vs Gradient agreement"
    assert sort_label("smoothgrad_auc_deletion") == "smoothgrad auc deletion"


def test_the_clicked_confusion_cell_is_framed():
    from salwidget.panel.dataset_plot import PICKED

    panel = dataset_panel(labelled=True)
    view = panel.host.dataset_view
    box, pair = next((b, v) for b, v in view.matrix.boxes if v[0] != v[1] and panel.scan.confusion()[v] > 0)
    left, top = int(box[0]), int(box[1])
    assert tuple(decoded(view.confusion.value)[top + 1, left + 1]) != PICKED
    view.on_confusion_event({"type": "click", "dataX": (box[0] + box[2]) / 2, "dataY": (box[1] + box[3]) / 2})
    assert (panel.filter_label, panel.filter_predicted) == pair
    framed = decoded(view.confusion.value)
    assert tuple(framed[top + 1, left + 1]) == PICKED and tuple(framed[(top + box[3]) // 2, left]) == PICKED


def test_the_grid_never_shrinks_below_160_px_a_cell_and_the_controls_stay_compact(images):
    from salwidget.panel.maps_pane import MIN_CELL_PX

    panel = make(images)
    columns = 1 + len(panel.methods) + (panel.overlay_method is not None)
    layout = panel.host.maps_view.image.layout
    assert layout.width == "100%" and layout.max_width == f"{columns * (panel.cell_size + 8) + 8}px"
    assert layout.min_width == f"{columns * (MIN_CELL_PX + 8) + 8}px"  # then its box scrolls, as the tooltip says
    assert panel.host.maps_view.grid_box.layout.overflow == "auto"
    assert "down to 160 px per cell, then scrolls" in panel.settings_view.look["cell_size"].tooltip
    panel.cell_size = 100  # asked smaller than that: its own size is the least
    assert layout.min_width == layout.max_width == f"{columns * 108 + 8}px"
    methods_row = next(row for row in panel.settings_view.rows()
                       if panel.settings_view.method_buttons["vanilla"] in row.children)
    assert methods_row.layout.max_height == "98px" and methods_row.layout.overflow == "hidden auto"
    assert all(b.layout.min_width == "0" for b in panel.settings_view.method_buttons.values())


def test_the_look_sits_below_the_grid_and_hides_with_the_maps_rows(images):
    """At 1000 px the look's six controls took six lines between the settings and the grid (issue 27): they
    come after the grid now, still hidden in the Dataset view with the rows that set up the maps."""
    panel = make(images)
    children = list(panel.children)
    look, grid = panel.settings_view.look_row, panel.host.maps_view.grid_box
    grid_at = next(i for i, child in enumerate(children) if child is grid or grid in getattr(child, "children", ()))
    assert children.index(look) > grid_at
    assert all(control in look.children for control in panel.settings_view.look_views)
    assert look not in panel.settings_view.rows()
    panel.pane = "dataset"
    assert look.layout.display == "none"
    panel.pane = "maps"
    assert look.layout.display == ""
