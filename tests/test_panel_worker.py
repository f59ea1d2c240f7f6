"""The panel's worker: generations, cancel, atomic publishing, errors. Driven with a fake explorer and sink."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import ipywidgets
import pytest

import salwidget as sw
from salwidget.errors import AttributionCancelled
from salwidget.panel.worker import MapsJob, Worker, run_job

from .helpers import make_torch_cnn


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


class FakeExplorer:
    """compute(method, settings, ...) runs ``settings.compute`` (a test's function); nothing is cached."""

    def cached(self, method, settings):
        return None

    def resume_point(self, method, settings):
        return None

    def compute(self, method, settings, progress, cancel):
        return settings.compute(method, progress, cancel)


class RecordingSink:
    """Records what the worker publishes, as (event, payload)."""

    def __init__(self):
        self.events = []

    def begin(self, job):
        self.events.append(("begin", job.settings.name))

    def progress(self, method, partial, done, total, draw):
        self.events.append(("progress", partial))

    def column_done(self, outcome):
        self.events.append(("column", outcome.result))

    def finish(self, outcomes, seconds):
        self.events.append(("finish", [o.result for o in outcomes]))

    def fail(self, exc, details):
        self.events.append(("fail", (str(exc), details)))

    def payloads(self):
        """What was drawn (begin only clears the stage)."""
        return [str(payload) for event, payload in self.events if event != "begin"]


def settings(name, compute, methods=("m",)):
    return SimpleNamespace(name=name, methods=methods, compute=compute)


def submit(worker, sink, request):
    return worker.submit(lambda generation: run_job(worker, generation, MapsJob(FakeExplorer(), request), sink, 0.0))


def test_a_stale_computation_that_finishes_anyway_is_never_drawn():
    worker, sink = Worker(), RecordingSink()
    started, release = threading.Event(), threading.Event()

    def old(method, progress, cancel):  # ignores cancel, as a computation between two chunks would
        started.set()
        release.wait(5)
        progress(1, 2, "old-preview")
        return "old-result"

    submit(worker, sink, settings("old", old))
    assert started.wait(5)
    submit(worker, sink, settings("new", lambda method, progress, cancel: "new-result"))
    release.set()
    assert worker.wait(5)
    assert not any("old" in p for p in sink.payloads()), sink.events
    assert ("finish", ["new-result"]) in sink.events


def test_a_preview_from_a_stale_computation_is_never_drawn():
    worker, sink = Worker(), RecordingSink()
    started, release = threading.Event(), threading.Event()

    def old(method, progress, cancel):
        started.set()
        release.wait(5)
        progress(1, 2, "old-preview")  # after the newer request
        raise AttributionCancelled("stopped")

    submit(worker, sink, settings("old", old))
    assert started.wait(5)
    submit(worker, sink, settings("new", lambda method, progress, cancel: "new-result"))
    release.set()
    assert worker.wait(5)
    assert "old-preview" not in sink.payloads()
    assert [e for e, _ in sink.events if e in ("finish", "fail")] == ["finish"]


def test_the_engine_gets_a_cancel_hook_that_turns_true_when_superseded():
    worker, sink = Worker(), RecordingSink()
    started, superseded, seen = threading.Event(), threading.Event(), []

    def old(method, progress, cancel):
        seen.append(cancel())  # before the new request: go on
        started.set()
        assert superseded.wait(5)
        seen.append(cancel())  # after it: the next chunk check stops
        raise AttributionCancelled("superseded")

    submit(worker, sink, settings("old", old))
    assert started.wait(5)
    submit(worker, sink, settings("new", lambda method, progress, cancel: "new-result"))
    superseded.set()
    assert worker.wait(10)
    assert seen == [False, True]
    assert ("finish", ["new-result"]) in sink.events


def test_stop_settles_at_once_and_nothing_of_the_stopped_run_is_drawn():
    worker, sink = Worker(), RecordingSink()
    started, release = threading.Event(), threading.Event()

    def slow(method, progress, cancel):
        started.set()
        release.wait(5)
        return "stopped-result"

    submit(worker, sink, settings("slow", slow))
    assert started.wait(5)
    worker.cancel()
    assert worker.wait(0.1)  # the Stop button: nothing left to wait for
    release.set()
    worker._executor.submit(lambda: None).result(5)  # the stopped run has ended (one thread, first in first out)
    assert "stopped-result" not in sink.payloads()


def test_an_error_goes_to_the_sink_with_its_traceback_and_to_the_log(caplog):
    worker, sink = Worker(), RecordingSink()

    def deep_inside_the_model():
        raise ValueError("shape mismatch in layer 3")

    def failing(method, progress, cancel):
        deep_inside_the_model()

    with caplog.at_level(logging.ERROR, logger="salwidget"):
        submit(worker, sink, settings("bad", failing))
        assert worker.wait(5)
    (message, details), = [payload for event, payload in sink.events if event == "fail"]
    assert message == "shape mismatch in layer 3"
    assert "Traceback" in details and "deep_inside_the_model" in details
    assert any("deep_inside_the_model" in record.getMessage() for record in caplog.records)


def test_an_error_of_a_stale_computation_is_not_shown():
    worker, sink = Worker(), RecordingSink()
    started, release = threading.Event(), threading.Event()

    def old(method, progress, cancel):
        started.set()
        release.wait(5)
        raise ValueError("old failure")

    submit(worker, sink, settings("old", old))
    assert started.wait(5)
    submit(worker, sink, settings("new", lambda method, progress, cancel: "new-result"))
    release.set()
    assert worker.wait(5)
    assert "old failure" not in " ".join(sink.payloads())


def test_no_method_is_an_error_in_the_sink():
    worker, sink = Worker(), RecordingSink()
    submit(worker, sink, settings("none", None, methods=()))
    assert worker.wait(5)
    assert any(e == "fail" and "No method selected" in p[0] for e, p in sink.events)


def test_each_column_is_published_as_it_finishes_and_previews_in_between():
    worker, sink = Worker(), RecordingSink()

    def compute(method, progress, cancel):
        progress(1, 2, f"{method}-half")
        return f"{method}-done"

    submit(worker, sink, settings("two", compute, methods=("a", "b")))
    assert worker.wait(5)
    assert [e for e in sink.events if e[0] != "begin"] == [
        ("progress", "a-half"), ("column", "a-done"), ("progress", "b-half"), ("column", "b-done"),
        ("finish", ["a-done", "b-done"])]


def test_a_look_change_is_never_overwritten_by_an_older_preview(images, monkeypatch):
    """The stale check, the draw and setting the image happen under one lock: a preview drawn before a
    colour change cannot land on screen after it, however slowly the worker sets it."""
    import salwidget.panel.worker as worker_module
    from salwidget.drawing import render

    monkeypatch.setattr(worker_module, "PREVIEW_INTERVAL_S", 0.0)
    panel = sw.SaliencyWidget(make_torch_cnn(), images, methods=("smoothgrad",), nsamples=2, batch_size=4,
                              confirm_seconds=float("inf"))  # never held for the Compute button
    assert panel.wait(60)
    drawn_with, setting = {}, threading.Event()
    original = render.GridRenderer.render

    def recording_render(self, columns, row_titles=None):
        png = original(self, columns, row_titles)
        drawn_with[png] = columns[1].cmap
        return png

    def slow_worker_set(owner, proposal):  # the worker puts a preview on screen, slowly
        if threading.current_thread() is not threading.main_thread() and not setting.is_set():
            setting.set()
            time.sleep(0.3)
        return proposal["value"]

    monkeypatch.setattr(render.GridRenderer, "render", recording_render)
    panel.host.maps_view.image._register_validator(slow_worker_set, ["value"])
    shown = []
    panel.host.maps_view.image.observe(lambda change: shown.append(drawn_with.get(bytes(change["new"]))), names="value")
    panel.nsamples = 300  # many chunks, a preview after each
    assert setting.wait(30)
    panel.cmap = "viridis"  # while a preview with the old colours is on its way to the screen
    after_change = len(shown)
    deadline = time.monotonic() + 60
    while len(shown) < after_change + 3 and time.monotonic() < deadline:  # a few more previews land
        time.sleep(0.01)
    panel.stop()
    assert panel.wait(10)
    assert shown[after_change - 1:] and set(shown[after_change - 1:]) == {"viridis"}, shown
    assert drawn_with[bytes(panel.host.maps_view.image.value)] == "viridis"
