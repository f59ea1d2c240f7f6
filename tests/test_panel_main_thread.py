"""The panel's kernel thread does no work that grows with the model on a settings change.

Reading the weights' version walks a torch model's modules and checksums every weight of a Keras
model; the kernel's thread looks up with the version last read and leaves reading to the worker, and
a hidden Evaluate view is restaged only when shown (or read). Counted here, never timed.
"""

from __future__ import annotations

import threading

import ipywidgets
import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.backends.torch_backend import TorchBackend
from salwidget.panel import evaluate_pane
from salwidget.panel.evaluate import estimate

from .helpers import keras_twin, make_torch_cnn, own_options


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


def count_on_threads(monkeypatch, owner, name: str) -> list[bool]:
    """Calls of ``owner.name`` from now on: True for each made on the main thread, False in another."""
    calls: list[bool] = []
    original = getattr(owner, name)

    def counting(self, *args, **kwargs):
        calls.append(threading.current_thread() is threading.main_thread())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


CHANGES = (dict(nsamples=6), dict(target=2), dict(methods=("vanilla", "smoothgrad", "integrated")),
           dict(options={"integrated": {"nsamples": 5}}), dict(methods=("vanilla", "smoothgrad")),
           dict(curve_steps=16))
NOTHING_TO_REUSE = 1  # CHANGES[1], another target: no map of it was computed before


def settings_changes(panel, calls: list[bool], changes) -> list[int]:
    """Make each change after the last is done; how many ``calls`` each made on the main thread."""
    made = []
    for change in changes:
        before = sum(calls)
        for name, value in change.items():
            setattr(panel, name, value)
        assert panel.wait(120) and panel.error == ""
        made.append(sum(calls) - before)
    return made


def test_settings_changes_read_no_weights_on_the_kernels_thread_while_evaluate_is_hidden(images, monkeypatch):
    panel = sw.SaliencyWidget(make_torch_cnn(), images, methods=("vanilla", "smoothgrad"), nsamples=4)
    assert panel.wait(60)
    reads = count_on_threads(monkeypatch, TorchBackend, "identity")
    estimates = []  # the Evaluate view's cost estimates (its cost line, its Compute hold)
    monkeypatch.setattr(evaluate_pane, "estimate", lambda *args: estimates.append(args) or estimate(*args))
    made = settings_changes(panel, reads, CHANGES)
    # A change that reuses maps (cached, or resumed with more samples) reads the weights once on the kernel's
    # thread, as they may have changed since those maps; one with nothing to reuse leaves it to the worker.
    assert made[NOTHING_TO_REUSE] == 0 and max(made) == 1
    assert not all(reads)  # the worker read the weights before computing
    assert not estimates  # nothing of the hidden view was restaged
    before = sum(reads)
    panel.cmap, panel.scaling = "viridis", "method"  # look-only changes
    assert sum(reads) == before


def test_a_keras_models_weights_are_checksummed_on_the_kernels_thread_only_to_reuse_maps(images, monkeypatch):
    from salwidget.backends.tf_backend import TensorFlowBackend

    model = keras_twin(make_torch_cnn())
    panel = sw.SaliencyWidget(model, images.transpose(0, 2, 3, 1), methods=("vanilla", "smoothgrad"), nsamples=4)
    assert panel.wait(120)
    hashes = count_on_threads(monkeypatch, TensorFlowBackend, "identity")  # the weights' checksum
    made = settings_changes(panel, hashes, CHANGES)
    assert made[NOTHING_TO_REUSE] == 0 and max(made) == 1
    before = sum(hashes)
    panel.cmap = "viridis"
    panel.pane = "evaluate"  # shown: nothing evaluated yet, so nothing to check; curves computed in the worker
    assert panel.wait(120) and panel.error == ""
    assert set(panel.curves) == {"vanilla", "smoothgrad", "random"}
    assert sum(hashes) == before and not all(hashes)


def test_a_hidden_evaluate_view_is_restaged_when_read_or_shown(images):
    model = make_torch_cnn()
    panel = sw.SaliencyWidget(model, images, methods=("vanilla", "smoothgrad"), nsamples=4)
    panel.curve_steps = 8
    panel.evaluate()
    assert panel.wait(120) and set(panel.curves) == {"vanilla", "smoothgrad", "random"}
    old = panel.curves["smoothgrad"]
    panel.pane = "maps"
    panel.nsamples = 6  # while hidden: SmoothGrad's curves are those of another map now
    assert panel.wait(120)
    assert set(panel.curves) == {"vanilla", "random"}  # read while hidden: the current settings' (cached ones)
    panel.pane = "evaluate"
    assert panel.wait(120)
    shown = panel.curves["smoothgrad"]
    expected = sw.deletion_insertion(make_torch_cnn(), images, panel.results["smoothgrad"], steps=8)
    np.testing.assert_allclose(shown.insertion, expected.insertion, rtol=1e-5, atol=1e-6)
    assert not np.allclose(shown.insertion, old.insertion)


def trained_behind_the_panels_back(images):
    """A panel with the maps of the prediction and of class 2 cached, then its model's weights changed in place
    (a training step in another cell: the kernel's thread still knows the old version)."""
    model = make_torch_cnn()
    panel = sw.SaliencyWidget(model, images, methods=("vanilla", "smoothgrad"), nsamples=4)
    assert panel.wait(60)
    panel.target = 2
    assert panel.wait(60)
    with torch.no_grad():
        model[6].weight.mul_(2.0)
    return model, panel


def test_a_map_cached_before_the_weights_changed_is_never_served_after(images):
    model, panel = trained_behind_the_panels_back(images)
    panel.target = "predicted"  # cached under the old weights
    assert panel.wait(60) and panel.error == ""
    for method in ("vanilla", "smoothgrad"):
        fresh = sw.attribute(make_torch_cnn(), images, method, **own_options(method, nsamples=4), seed=0,
                             target=panel.results[method].target)
        assert not np.allclose(fresh.raw, 0)
        expected = sw.attribute(model, images, method, **own_options(method, nsamples=4), seed=0,
                                target=panel.results[method].target)
        np.testing.assert_allclose(panel.results[method].raw, expected.raw, rtol=1e-5, atol=1e-7)
        assert not np.allclose(panel.results[method].raw, fresh.raw)
    assert "weights changed" in panel.host.notes.value


def test_after_a_training_step_cached_maps_wait_for_compute_and_are_not_shown_done(images):
    """A settings change back to maps cached before the weights changed: they are not free, so a long run
    still waits for Compute, and the held grid shows them pending, not done."""
    model, panel = trained_behind_the_panels_back(images)
    panel.confirm_seconds = 0.0
    panel.target = "predicted"  # cached, but under the old weights
    assert panel.host.held is not None and "press Compute" in panel.status
    assert "Gradient 4" in panel.status  # every method counted, none taken as cached
    assert all(column.state != "done" for column in panel.host.maps_view.view.columns.values())


def test_a_hidden_evaluate_view_read_after_a_training_step_serves_no_old_curves(images):
    model = make_torch_cnn()
    panel = sw.SaliencyWidget(model, images, methods=("vanilla",))
    panel.curve_steps = 8
    panel.evaluate()
    assert panel.wait(120) and set(panel.curves) == {"vanilla", "random"}
    panel.pane = "maps"
    assert panel.wait(60)
    with torch.no_grad():
        model[6].weight.mul_(3.0)
    panel.curve_steps = 12  # while hidden, and back: the basis of the old curves, but not their weights
    panel.curve_steps = 8
    assert panel.curves == {}
    panel.pane = "evaluate"
    assert panel.wait(120)
    expected = sw.deletion_insertion(model, images, sw.attribute(model, images, "vanilla"), steps=8)
    np.testing.assert_allclose(panel.curves["vanilla"].insertion, expected.insertion, rtol=1e-5, atol=1e-6)


def test_curves_read_while_the_dataset_view_is_shown_follow_the_settings(images):
    panel = sw.SaliencyWidget(make_torch_cnn(), images, methods=("vanilla", "smoothgrad"), nsamples=4)
    panel.curve_steps = 8
    panel.evaluate()
    assert panel.wait(120) and set(panel.curves) == {"vanilla", "smoothgrad", "random"}
    panel.pane = "dataset"
    assert panel.wait(60)
    panel.nsamples = 6  # SmoothGrad's curves were those of 4 samples
    assert panel.wait(60)
    assert set(panel.curves) == {"vanilla", "random"}
