"""The panel's Evaluate view: curves and sanity checks of the shown maps, computed in the worker, cached.

Driven headlessly with the small CNN of tests/helpers.py; every number the view shows is checked against a
direct call of the core (sw.deletion_insertion, sw.sanity_check).
"""

from __future__ import annotations

import html
import io
import re
import threading
import time

import ipywidgets
import numpy as np
import pytest

import salwidget as sw
from salwidget.panel.evaluate import depth_layers
from salwidget.panel.worker import Worker

from .helpers import PassGate, drain, keras_twin, make_torch_cnn, own_options


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


class PassCounter:
    """Counts images through the model's first layer."""

    def __init__(self, model):
        self.images = 0
        self.handle = model[0].register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.images += inputs[0].shape[0]


def make_panel(images, **options):
    model = make_torch_cnn()
    settings = dict(methods=("vanilla", "smoothgrad"), nsamples=4, nintegration=4)
    widget = sw.SaliencyWidget(model, images, **{**settings, **options})
    widget.curve_steps = 8
    assert widget.wait(60)
    widget.model = model
    widget.counter = PassCounter(model)
    return widget


@pytest.fixture
def panel(images):
    return make_panel(images)


def decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def watch_status(panel) -> list[str]:
    seen: list[str] = []
    panel.observe(lambda change: seen.append(change["new"]), names="status")
    return seen


def test_the_curves_shown_are_those_of_the_core_for_every_method_and_the_random_order(panel, images):
    panel.evaluate()
    assert panel.wait(120)
    assert panel.error == "" and panel.pane == "evaluate"
    assert set(panel.curves) == {"vanilla", "smoothgrad", "random"}
    for method in ("vanilla", "smoothgrad"):
        expected = sw.deletion_insertion(make_torch_cnn(), images, panel.results[method], steps=8)
        shown = panel.curves[method]
        np.testing.assert_allclose(shown.deletion, expected.deletion, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(shown.insertion, expected.insertion, rtol=1e-5, atol=1e-7)
        assert shown.saliency == method and shown.complete
    chance = sw.deletion_insertion(make_torch_cnn(), images, "random", steps=8, seed=0)
    np.testing.assert_allclose(panel.curves["random"].deletion, chance.deletion, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(panel.curves["random"].insertion, chance.insertion, rtol=1e-5, atol=1e-7)
    assert panel.status.startswith("Evaluated in") and "the random order" in panel.status


def test_the_view_shows_a_picture_with_the_curves_and_a_download(panel):
    panel.evaluate()
    assert panel.wait(120)
    png = panel.evaluation_png()
    assert bytes(panel.host.evaluate_view.image.value) == png
    picture = decode(png)
    assert picture.shape[1] >= 800 and picture.std() > 20
    coloured = (np.abs(picture.astype(int) - picture.mean(-1, keepdims=True)) > 60).any(-1)
    assert coloured.sum() > 200  # the methods' coloured lines, not only black axes
    assert "saliency_evaluation.png" in panel.host.evaluate_view.download.value
    # The view takes the grid's place.
    assert panel.host.evaluate_view.box.layout.display == "" and panel.host.maps_view.box.layout.display == "none"
    panel.pane = "maps"
    assert panel.host.evaluate_view.box.layout.display == "none" and panel.host.maps_view.box.layout.display == ""


def table_rows(panel) -> dict[str, tuple[str, str, str, str]]:
    """method -> (deletion mean, insertion mean, deletion per image, insertion per image), as shown."""
    rows = {}
    for method, row in re.findall(r"<tr class='salwidget-auc-([\w]+)'>(.*?)</tr>", panel.host.evaluate_view.table.value):
        cells = re.findall(r"title='([^']*)'>(?:<b>)?([-\d.na]+)", row)
        rows[method] = (cells[0][1], cells[1][1], html.unescape(cells[0][0]), html.unescape(cells[1][0]))
    return rows


def test_the_auc_table_holds_the_curves_areas_mean_over_the_page_and_per_image(panel):
    panel.evaluate()
    assert panel.wait(120)
    rows = table_rows(panel)
    assert set(rows) == {"vanilla", "smoothgrad", "random"}
    for method, curves in panel.curves.items():
        deletion, insertion, each_deletion, each_insertion = rows[method]
        assert deletion == f"{np.mean(curves.auc_deletion):.3f}"
        assert insertion == f"{np.mean(curves.auc_insertion):.3f}"
        assert each_deletion == ", ".join(f"image {i + 1}: {v:.3f}" for i, v in enumerate(curves.auc_deletion))
        assert each_insertion == ", ".join(f"image {i + 1}: {v:.3f}" for i, v in enumerate(curves.auc_insertion))


def test_the_sanity_check_shown_is_that_of_the_core(panel, images):
    panel.evaluate(sanity_check=True)
    assert panel.wait(180)
    assert panel.error == ""
    assert set(panel.sanity) == {"vanilla", "smoothgrad"}
    layers = depth_layers(panel.model, panel.sanity_depths)
    assert layers == ["6", "2", "0"]  # the small CNN has three layers with weights: all of them
    for method in ("vanilla", "smoothgrad"):
        expected = sw.sanity_check(make_torch_cnn(), images, method, order="cascading", layers=layers,
                                   **own_options(method, seed=0, nsamples=4))
        shown = panel.sanity[method]
        assert shown.layers == expected.layers and shown.order == "cascading"
        np.testing.assert_allclose(shown.similarity, expected.similarity, atol=1e-6)
        np.testing.assert_allclose(shown.maps, expected.maps, atol=1e-6)
    assert "sanity check of Gradient, SmoothGrad" in panel.status
    picture = decode(panel.evaluation_png())
    assert picture.shape[0] > 600  # curves, similarity and the strip of randomised maps


def test_depths_are_evenly_spaced_kernel_layers_from_the_output_to_the_first():
    import torch

    model = torch.nn.Sequential(*[m for _ in range(6) for m in (torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))])
    names = depth_layers(model, 4)
    kernels = [str(i) for i in range(10, -1, -2)]  # the Linear layers, output end first
    assert names[0] == kernels[0] and names[-1] == kernels[-1] and len(names) == 4
    assert set(names) <= set(kernels)


def test_a_second_request_for_the_same_settings_makes_no_model_call(panel):
    panel.evaluate(sanity_check=True)
    assert panel.wait(180)
    first = panel.evaluation_png()
    panel.counter.images = 0
    panel.pane = "maps"
    panel.evaluate(sanity_check=True)
    assert panel.wait(60)
    assert panel.counter.images == 0
    assert panel.status.endswith("all from the cache.")
    assert panel.evaluation_png() == first
    # Another page of settings and back: still the cache.
    panel.nsamples = 6
    assert panel.wait(120)
    computed = panel.counter.images
    # A new SmoothGrad setting: its curves, no sanity check unless asked; the Gradient's check does not depend
    # on nsamples, so it stays (from the cache).
    assert computed > 0 and set(panel.sanity) == {"vanilla"}
    panel.nsamples = 4
    assert panel.wait(60)
    assert panel.counter.images == computed
    assert set(panel.sanity) == {"vanilla", "smoothgrad"}


def test_showing_the_view_asks_for_the_curves_and_the_settings_follow(panel, images):
    panel.pane = "evaluate"
    assert panel.wait(120)
    assert set(panel.curves) == {"vanilla", "smoothgrad", "random"} and panel.sanity == {}
    panel.host.evaluate_view.steps.value = 16  # the dropdown, as a user would
    assert panel.curve_steps == 16
    assert panel.wait(120)
    assert panel.curves["vanilla"].deletion.shape == (4, 17)
    panel.settings_view.method_buttons["integrated"].value = True
    assert panel.wait(120)
    expected = sw.deletion_insertion(make_torch_cnn(), images, panel.results["integrated"], steps=16)
    np.testing.assert_allclose(panel.curves["integrated"].insertion, expected.insertion, rtol=1e-5, atol=1e-7)


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    raise AssertionError("condition not met")


def sanity_gate(panel, chunk: int = 2) -> PassGate:
    """Holds the sanity check's ``chunk``-th gradient pass (the grid's maps are cached: the evaluation's
    only gradient passes are the sanity check's; the curves are forward passes)."""
    grads = []
    return PassGate(panel.model[0], when=lambda calls, grad: grad and (grads.append(1) or len(grads) == chunk))


def test_stop_stops_a_sanity_check_and_the_panel_goes_on(images):
    panel = make_panel(images)
    gate = sanity_gate(panel)
    panel.evaluate(sanity_check=True)  # returns at once: the evaluation waits in the worker at the gate
    assert gate.wait()
    assert threading.main_thread() not in gate.threads  # computed in the worker: the kernel stays free
    assert "sanity check" in panel.status  # its first chunk reported
    panel.host.stop_button.click()
    assert panel.wait(5)
    gate.release()
    drain(panel)
    assert gate.after_release == 0  # the chunk under way ended; nothing after it
    assert panel.status.startswith("Stopped") and panel.sanity == {}
    assert set(panel.curves) == {"vanilla", "smoothgrad", "random"}  # finished before the stop: they stay
    gate.remove()
    panel.evaluate(sanity_check=True)
    assert panel.wait(180)
    assert set(panel.sanity) == {"vanilla", "smoothgrad"} and panel.error == ""


def test_a_settings_change_while_evaluating_drops_the_stale_evaluation(images):
    panel = make_panel(images)
    gate = sanity_gate(panel)
    panel.evaluate(sanity_check=True)
    assert gate.wait() and "sanity check" in panel.status
    seen = watch_status(panel)
    panel.nsamples = 6
    gate.release()
    assert panel.wait(120)
    assert not any("sanity check" in s for s in seen), seen  # nothing of the old evaluation after the change
    assert panel.sanity == {}
    expected = sw.deletion_insertion(make_torch_cnn(), images, panel.results["smoothgrad"], steps=8)
    assert panel.results["smoothgrad"].nsamples == 6
    np.testing.assert_allclose(panel.curves["smoothgrad"].deletion, expected.deletion, rtol=1e-5, atol=1e-7)


def test_an_error_shows_in_the_panel_and_the_panel_keeps_working(panel):
    panel.curve_steps = 512  # more steps than the 16 x 16 images have pixels
    panel.evaluate()
    assert panel.wait(60)
    assert "steps must be an integer from 1 to the number of pixels (256)" in panel.error
    assert panel.status.startswith("Evaluation failed") and panel.curves == {}
    assert panel.host.error_line.layout.display == ""
    panel.curve_steps = 8
    assert panel.wait(120)
    assert panel.error == "" and set(panel.curves) == {"vanilla", "smoothgrad", "random"}


def test_a_long_evaluation_waits_for_compute(panel):
    panel.confirm_seconds = 0.0  # anything measured is 'long'
    panel.pane = "evaluate"
    wait_for(lambda: "press Compute" in panel.status, 10)  # after the grid's own report
    drain(panel)
    assert not panel.host.worker.busy  # nothing was started: the evaluation waits
    assert panel.counter.images == 0 and panel.curves == {} and panel.host.compute_button.layout.display == ""
    assert "Curves (8 steps)" in panel.host.evaluate_view.cost.value and "forward passes" in panel.host.evaluate_view.cost.value
    panel.host.compute_button.click()
    assert panel.wait(120)
    assert set(panel.curves) == {"vanilla", "smoothgrad", "random"}


def test_curves_of_a_keras_model(images):
    model = keras_twin(make_torch_cnn())
    x = images.transpose(0, 2, 3, 1)
    panel = sw.SaliencyWidget(model, x, methods=("vanilla",))
    panel.curve_steps = 8
    panel.evaluate()
    assert panel.wait(180)
    assert panel.error == ""
    expected = sw.deletion_insertion(model, x, panel.results["vanilla"], steps=8)
    np.testing.assert_allclose(panel.curves["vanilla"].insertion, expected.insertion, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ the worker's follow-up tasks
def test_a_follow_up_task_runs_after_the_request_and_goes_stale_with_it():
    worker = Worker()
    release, ran = threading.Event(), []
    first = worker.submit(lambda generation: release.wait(5))
    follow = worker.submit(lambda generation: ran.append(("follow", generation)), follow=True)
    assert follow == first and worker.busy
    assert worker.wait(0.05) is False  # the follow-up is part of the request
    release.set()
    assert worker.wait(5) and ran == [("follow", first)]

    release.clear()
    worker.submit(lambda generation: release.wait(5))
    worker.submit(lambda generation: ran.append("stale"), follow=True)
    worker.submit(lambda generation: None)  # a new request: the follow-up above is stale before it starts
    release.set()
    assert worker.wait(5) and "stale" not in ran
    worker.shutdown()


def test_a_method_keeps_its_colour_in_the_curves_and_the_sanity_check():
    from salwidget.panel.evaluation_plot import colours

    picked = colours(["vanilla", "smoothgrad", "random", "vanilla", "smoothgrad"])
    assert picked == {"vanilla": "tab:blue", "smoothgrad": "tab:orange", "random": "black"}


@pytest.mark.parametrize("trait, value, message", [
    ("curve_steps", 0, "curve_steps must be an integer >= 1; got 0."),
    ("curve_steps", 2000, "curve_steps must be at most 1024; got 2000."),
    ("sanity_depths", 65, "sanity_depths must be at most 64; got 65."),
    ("pane", "curves", "pane must be one of 'maps', 'evaluate', 'dataset'; got 'curves'."),
])
def test_evaluation_settings_the_panel_cannot_honour_are_refused_before_anything_changes(panel, trait, value,
                                                                                         message):
    import traitlets

    before = getattr(panel, trait)
    with pytest.raises(traitlets.TraitError) as error:
        setattr(panel, trait, value)
    assert str(error.value) == message
    assert getattr(panel, trait) == before
