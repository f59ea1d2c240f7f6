"""The panel, driven headlessly through its traits and controls (the small CNN of tests/helpers.py)."""

from __future__ import annotations

import io
import time

import ipywidgets
import numpy as np
import pytest
import traitlets

import salwidget as sw

from .helpers import PassGate, keras_twin, make_torch_cnn, own_options


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


def make_panel(images, **options):
    model = make_torch_cnn()
    settings = dict(class_names=[f"c{i}" for i in range(5)], labels=[0, 1, 2, 3],
                    methods=("vanilla", "smoothgrad"), nsamples=8, nintegration=4)
    widget = sw.SaliencyWidget(model, images, **{**settings, **options})
    assert widget.wait(60)
    widget.counter = PassCounter(model)
    widget.model = model
    return widget


@pytest.fixture
def panel(images):
    return make_panel(images)


def decode(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def test_first_render_has_masks_png_and_status(panel):
    assert set(panel.masks) == {"vanilla", "smoothgrad"}
    assert panel.masks["smoothgrad"].shape == (4, 16, 16)
    assert panel.results["smoothgrad"].nsamples == 8
    picture = decode(panel.to_png())
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.std() > 0.05
    assert bytes(panel.host.maps_view.image.value) == panel.to_png()
    assert panel.status.startswith("Done in") and "Gradient, SmoothGrad (n=8)" in panel.status
    assert panel.error == ""


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
    assert panel.to_png() != before and bytes(panel.host.maps_view.image.value) == panel.to_png()
    assert panel.settings_view.look["cmap"].value == "viridis"  # trait mirrored to the control


def test_adding_a_method_from_its_button_computes_only_that_method(panel):
    panel.settings_view.method_buttons["integrated"].value = True
    assert panel.methods == ("vanilla", "smoothgrad", "integrated")
    panel.wait(60)
    assert set(panel.masks) == {"vanilla", "smoothgrad", "integrated"}
    assert panel.counter.images == 4 + 4 * 4  # clean forward + 4 steps x 4 images


def test_raising_samples_reuses_the_earlier_ones(panel):
    panel.settings_view.option_controls[("smoothgrad", "nsamples")].value = 16  # the slider, as a user would
    panel.wait(60)
    assert panel.nsamples == 16 and panel.options["smoothgrad"]["nsamples"] == 16
    assert panel.counter.images == 4 + 4 * 8  # only the 8 new samples per image
    assert "resumed from n=8" in panel.status
    fresh = sw.attribute(make_torch_cnn(), panel.host.images, "smoothgrad", nsamples=16, seed=0)
    np.testing.assert_allclose(panel.results["smoothgrad"].raw, fresh.raw, rtol=1e-5, atol=1e-9)


def test_resume_starts_from_the_largest_cached_run(panel):
    panel.nsamples = 12  # cached runs with 8 and 12 samples now
    panel.wait(60)
    panel.counter.images = 0
    panel.nsamples = 14
    panel.wait(60)
    assert "resumed from n=12" in panel.status
    assert panel.counter.images == 4 + 4 * 2  # 2 new samples from the 12-sample run, not 6 from the 8
    fresh = sw.attribute(make_torch_cnn(), panel.host.images, "smoothgrad", nsamples=14, seed=0)
    np.testing.assert_allclose(panel.results["smoothgrad"].raw, fresh.raw, rtol=1e-5, atol=1e-9)


def test_going_back_to_an_earlier_setting_is_a_cache_hit_and_says_so(panel):
    panel.nsamples = 12
    panel.wait(60)
    calls = panel.counter.images
    panel.nsamples = 8
    panel.wait(60)
    assert panel.counter.images == calls
    assert panel.status == "Done: Gradient, SmoothGrad (n=8), all from the cache."


def test_a_fast_computation_is_not_called_cached(panel, monkeypatch):
    # The old status said "(cached)" whenever a run took under 0.05 s. Freeze the clock: 0 s runs.
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0)
    panel.target = 3
    panel.wait(60)
    assert panel.counter.images > 0  # really computed
    assert "cache" not in panel.status and "cached" not in panel.status


@pytest.mark.parametrize("name, value", [("stdev_spread", 0.3), ("baseline", 0.0)])
def test_changing_an_option_that_shapes_the_map_recomputes_it(images, name, value):
    method = "smoothgrad" if name == "stdev_spread" else "integrated"
    panel = make_panel(images, methods=(method,))
    before = panel.masks[method]
    setattr(panel, name, value)
    panel.wait(60)
    assert panel.counter.images > 0
    expected = sw.attribute(make_torch_cnn(), images, method, seed=0,
                            **own_options(method, nsamples=8, nintegration=4, **{name: value}))
    np.testing.assert_allclose(panel.masks[method], expected.grayscale(), atol=1e-6)
    assert not np.allclose(panel.masks[method], before)


def test_burst_of_changes_settles_on_the_last(panel):
    for n in range(9, 30):
        panel.nsamples = n
    panel.stdev_spread = 0.3
    assert panel.wait(120)
    assert panel.results["smoothgrad"].nsamples == 29
    assert panel.results["smoothgrad"].stdev_spread == pytest.approx(0.3)
    # Stale work was dropped: far fewer passes than the 21 requests would need.
    assert panel.counter.images < 4 * sum(range(9, 30)) / 3
    expected = sw.attribute(make_torch_cnn(), panel.host.images, "smoothgrad", nsamples=29, stdev_spread=0.3, seed=0)
    np.testing.assert_allclose(panel.masks["smoothgrad"], expected.grayscale(), atol=1e-6)


def test_a_superseded_computation_stops_at_its_next_chunk(images, monkeypatch):
    model = make_torch_cnn()
    panel = sw.SaliencyWidget(model, images, methods=("smoothgrad",), nsamples=2, batch_size=4,
                              confirm_seconds=float("inf"))  # never held for the Compute button
    assert panel.wait(60)
    # Driven by the chunks, not the clock: the 5th model call of the long run (a chunk of its samples)
    # holds the worker until the settings have changed, so "during a chunk" is certain on any machine.
    gate = PassGate(model[0], when=lambda calls, grad: calls == 5)
    chunks = []  # (generation, after the change): the engine reports every chunk, stale ones too
    publish = panel.host.worker.publish
    monkeypatch.setattr(panel.host.worker, "publish", lambda generation, draw: (
        chunks.append((generation, gate._go.is_set())), publish(generation, draw))[1])
    panel.nsamples = 400  # 1,600 passes in chunks of 4
    long_run = panel.host.worker.generation
    assert gate.wait()
    panel.nsamples = 3
    gate.release()
    assert panel.wait(60)
    late = [g for g, after in chunks if g == long_run and after]
    assert len(late) <= 1  # only the chunk under way when the settings changed: none after it
    assert gate.calls < 50  # and the 1,600-pass run was far from finished
    assert panel.results["smoothgrad"].nsamples == 3


def test_target_from_the_dropdown_changes_titles_and_maps(panel):
    before_png, before = panel.to_png(), panel.masks["vanilla"]
    labels = [label for label, value in panel.settings_view.target.options]
    assert labels[0].startswith("Predicted") and len(labels) > 1
    other = next(v for _, v in panel.settings_view.target.options if v != "predicted" and v != panel.results["vanilla"].target[0])
    panel.settings_view.target.value = other
    assert panel.target == other
    panel.wait(60)
    np.testing.assert_array_equal(panel.results["vanilla"].target, [other] * 4)
    assert not np.allclose(panel.masks["vanilla"], before)
    assert panel.to_png() != before_png


def test_error_shows_in_the_panel_with_its_traceback_and_clears_when_fixed(panel, caplog, monkeypatch):
    from salwidget.panel.map_cache import Explorer

    def broken(*args, **kwargs):
        raise ValueError("the model broke")

    working = Explorer.compute
    monkeypatch.setattr(Explorer, "compute", broken)
    panel.nsamples = 9
    panel.wait(60)
    assert panel.error == "ValueError: the model broke"
    assert "the model broke" in panel.host.error_line.value and panel.host.error_line.layout.display == ""
    assert "Traceback" in panel.last_traceback and "in broken" in panel.last_traceback
    assert any("in broken" in r.getMessage() for r in caplog.records if r.name == "salwidget")
    monkeypatch.setattr(Explorer, "compute", working)
    panel.nsamples = 10
    panel.wait(60)
    assert panel.error == "" and panel.host.error_line.layout.display == "none"
    assert panel.status.startswith("Done")


def test_no_method_selected_is_refused_at_assignment(panel):
    with pytest.raises(traitlets.TraitError, match="at least one method"):
        panel.methods = ()
    panel.methods = ("vanilla",)
    panel.wait(10)
    assert panel.error == "" and set(panel.masks) == {"vanilla"}


def test_progress_previews_arrive_before_the_full_count(images, monkeypatch):
    import re
    import time

    import salwidget.panel.worker as worker

    from .helpers import PassGate

    monkeypatch.setattr(worker, "PREVIEW_INTERVAL_S", 0.0)
    model = make_torch_cnn()
    shown = []
    panel = sw.SaliencyWidget(model, images, methods=("smoothgrad",), nsamples=2, batch_size=8)
    assert panel.wait(600)
    panel.host.maps_view.image.observe(lambda change: shown.append(panel.status), names="value")

    def counts():
        return [tuple(int(g.replace(",", "")) for g in m.groups())
                for s in list(shown) for m in [re.search(r"([\d,]+)/([\d,]+) passes", s)] if m]

    # Previews are drawn between chunks once 3x the last draw's time has passed since the run began (the whole
    # run takes 0.1 s here, less than that): hold the second chunk that long, so the first chunk's preview is
    # due on any machine, however fast.
    gate = PassGate(model[0], when=lambda calls, grad: calls == 2)
    panel.nsamples = 64
    try:
        assert gate.wait()
        time.sleep(3 * panel.host.maps_view.draw_seconds + 0.05)  # makes the next preview due; no pass/fail by a clock
    finally:
        gate.remove()
    assert panel.wait(600)
    assert any(done < total for done, total in counts()), shown  # a preview before the end
    assert all(re.search(r"n=[1-9]", s) for s in shown if "passes" in s)  # never "0 samples"
    assert panel.host.progress.value == 100


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


def test_output_index_picks_the_explained_output(images):
    import torch

    base = make_torch_cnn()

    class LogitsAndFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = base

        def forward(self, x):
            return self.net(x), self.net[:4](x).mean(dim=(2, 3))  # (B, 5) logits, (B, 8) features

    model = LogitsAndFeatures()
    panel = sw.SaliencyWidget(model, images, methods=("vanilla", "smoothgrad"), nsamples=4, output_index=0,
                              class_names=[f"c{i}" for i in range(5)])
    assert panel.wait(60) and panel.error == ""
    expected = sw.attribute(model, images, "smoothgrad", nsamples=4, seed=0, output_index=0)
    np.testing.assert_allclose(panel.masks["smoothgrad"], expected.grayscale(), atol=1e-6)
    panel.target = 4
    panel.wait(60)
    np.testing.assert_array_equal(panel.results["vanilla"].target, [4] * 4)
    with pytest.raises(traitlets.TraitError, match="out of range"):
        panel.target = 7  # 8 features, but the explained output has 5 classes


def test_refresh_after_the_weights_change(panel, images):
    import torch

    with torch.no_grad():
        panel.model[6].weight.mul_(-1)  # in place: the same tensors, new values
        panel.model[6].bias.mul_(-1)
    panel.target = 2
    panel.wait(60)
    assert "weights changed" in panel.host.notes.value
    old_predicted = panel.host.explorer().predicted.copy()
    panel.refresh()
    panel.wait(60)
    assert "weights changed" not in panel.host.notes.value
    new_scores = sw.predict(panel.model, images)
    np.testing.assert_array_equal(panel.host.explorer().predicted, new_scores.argmax(1))
    assert not np.array_equal(old_predicted, new_scores.argmax(1))
    expected = sw.attribute(panel.model, images, "smoothgrad", nsamples=8, seed=0, target=2)
    np.testing.assert_allclose(panel.masks["smoothgrad"], expected.grayscale(), atol=1e-6)
