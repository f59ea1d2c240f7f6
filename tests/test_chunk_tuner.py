"""Chunks that tune themselves (batch_size='auto'), and chunks sized by a GPU's free memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget import chunk_tuner
from salwidget.chunk_tuner import SAMPLES, TUNER, Tuning, candidates

from .helpers import make_torch_cnn


@pytest.fixture(autouse=True)
def fresh_tuner():
    TUNER.forget()
    yield
    TUNER.forget()


@pytest.fixture
def small_chunks(monkeypatch):
    """'auto' starts at 8 passes per chunk for the 16 x 16 test images (as for 224 x 224 ones), so a
    few dozen passes of the small CNN tune."""
    monkeypatch.setattr(sw.engine, "_CPU_ELEMENTS_PER_CHUNK", 8 * 3 * 16 * 16)


class FakeClock:
    """Seconds that pass as the model runs: ``per_pass(size)`` for each row of each chunk it sees."""

    def __init__(self, model: torch.nn.Module, per_pass):
        self.now, self.per_pass, self.sizes = 0.0, per_pass, []
        self.handle = model[0].register_forward_pre_hook(lambda m, args: self.sizes.append(args[0].shape[0]))

    def __call__(self) -> float:
        self.now += sum(size * self.per_pass(size) for size in self.sizes)
        self.sizes.clear()
        return self.now


def chunks_seen(model, run) -> list[int]:
    seen = []
    handle = model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        run()
    finally:
        handle.remove()
    return seen


# ----------------------------------------------------------------- the tuning itself
def test_each_candidate_is_timed_in_turn_and_the_fastest_per_pass_is_kept():
    trials = Tuning(candidates(8, None))
    assert trials.candidates == (8, 16, 4)
    seconds = {8: 1.0, 16: 0.8, 4: 1.3}  # per pass
    order = []
    while trials.chosen is None:
        size, timed = trials.propose(remaining=1000)
        assert timed
        order.append(size)
        cold = 5.0 if order.count(size) == 1 else 1.0  # a first chunk of a new size pays one-time costs
        trials.record(size, size, size * seconds[size] * cold)
    assert order == [8, 16, 4] * SAMPLES
    assert trials.chosen == 16
    assert trials.propose(remaining=1000) == (16, False)  # settled: no more timing


def test_a_chunk_smaller_than_its_size_is_no_sample_and_sizes_that_do_not_fit_wait():
    trials = Tuning((8, 16, 4))
    assert trials.propose(remaining=10) == (8, True)
    trials.record(8, 3, 0.3)  # a stage's short tail: not a sample of 8
    assert trials.samples == {}
    trials.record(8, 8, 0.8)
    assert trials.propose(remaining=10) == (4, True)  # 16 does not fit in 10 passes: the next one that does
    assert trials.propose(remaining=2) == (8, False)  # nothing fits: the best so far, untimed


def test_candidates_stay_under_the_memory_cap():
    assert candidates(40, 40) == (40, 20)
    assert candidates(1, 1) == (1,)
    assert candidates(3, None) == (3, 6, 2)


# ----------------------------------------------------------------- in the engine
def test_a_run_that_switches_chunk_sizes_mid_run_gives_the_same_maps(images, small_chunks):
    model = make_torch_cnn()
    seen = chunks_seen(model, lambda: sw.attribute(model, images, "smoothgrad", nsamples=40, seed=3))
    assert {8, 16, 4} <= set(seen[2:])  # after the clean forward and the first chunk: every candidate, in one call
    tuned = sw.attribute(model, images, "smoothgrad", nsamples=40, seed=3)  # the size now chosen
    switched = sw.attribute(make_torch_cnn(), images, "smoothgrad", nsamples=40, seed=3)  # tunes again
    for other in [switched] + [sw.attribute(model, images, "smoothgrad", nsamples=40, seed=3, batch_size=size)
                               for size in (1, 7, 64)]:
        np.testing.assert_allclose(other.raw, tuned.raw, rtol=1e-5, atol=1e-6 * np.abs(tuned.raw).max())
    for method in ("integrated", "vargrad", "expected_gradients", "smooth_integrated"):
        runs = [sw.attribute(make_torch_cnn(), images, method, nsamples=30, nintegration=3, seed=1, batch_size=b)
                for b in ("auto", 5)]
        rtol = 1e-3 if method == "vargrad" else 1e-5  # a variance of nearby gradients magnifies the last bits
        np.testing.assert_allclose(runs[0].raw, runs[1].raw, rtol=rtol, atol=1e-6 * np.abs(runs[1].raw).max())


def test_the_fastest_size_is_remembered_per_model_input_shape_and_kind_of_work(images, small_chunks, monkeypatch):
    model = make_torch_cnn()
    clock = FakeClock(model, lambda size: 1.0 if size == 16 else 2.0)  # 16 passes per chunk: twice as fast
    monkeypatch.setattr(chunk_tuner, "clock", clock)
    try:
        sw.attribute(model, images, "smoothgrad", nsamples=40, seed=0)
    finally:
        clock.handle.remove()
    backend = sw.backends.get_backend(model)
    work = (((3, 16, 16),), "cpu", "torch.float32")
    assert TUNER.chosen(backend, (*work, "input_gradients")) == 16
    assert TUNER.chosen(backend, (*work, "forward")) is None  # forward-only passes are tuned on their own
    seen = chunks_seen(model, lambda: sw.attribute(model, images, "integrated", nsamples=96, seed=0))
    assert set(seen[1:]) == {16}  # 384 passes in chunks of 16, the first chunk too: no other size is tried
    other = sw.attribute(make_torch_cnn(), images, "smoothgrad", nsamples=4, seed=0)
    assert other.batch_size == 8  # another model starts from the engine's size
    smaller = images[:, :, :8, :8].copy()
    seen = chunks_seen(model, lambda: sw.attribute(model, smaller, "smoothgrad", nsamples=80, seed=0))
    assert len(set(seen[2:])) >= 2  # another input shape is tuned afresh


def test_a_given_batch_size_is_honoured_and_never_tuned(images, small_chunks):
    model = make_torch_cnn()
    seen = chunks_seen(model, lambda: sw.attribute(model, images, "smoothgrad", nsamples=50, seed=0, batch_size=12))
    assert max(seen) <= 12 and min(seen[1:-1]) >= 8  # even chunks of at most 12
    backend = sw.backends.get_backend(model)
    assert TUNER.chosen(backend, (((3, 16, 16),), "cpu", "torch.float32", "input_gradients")) is None


def test_memory_fitted_chunks_cap_every_size_tried(torch_cnn, images, monkeypatch):
    from salwidget.backends.torch_backend import TorchBackend

    def fit(self, run, rows):
        run()
        return 8  # as if the measured memory allowed eight passes per chunk

    monkeypatch.setattr(TorchBackend, "fit_chunk", fit)
    seen = chunks_seen(torch_cnn, lambda: sw.attribute(torch_cnn, images, "smoothgrad", nsamples=100, seed=0))
    assert seen[1] == 56  # the first chunk, measured: 400 passes at up to 64, evenly, in whole groups of 4
    assert max(seen[2:]) <= 8 and {8, 4} <= set(seen[2:])  # after it, the cap and half of it are both tried


def test_tensorflow_gpu_chunks_fill_half_the_memory_tensorflow_does_not_use(monkeypatch):
    import tensorflow as tf

    from salwidget.backends import tf_backend

    from .helpers import keras_twin

    backend = tf_backend.TensorFlowBackend(keras_twin(make_torch_cnn()))
    backend._gpu = "GPU:0"  # a GPU faked on the CPU, as the torch test does
    memory = {"current": 2_000_000_000, "peak": 0, "reset": 0, "synced": 0}

    def run():
        memory["peak"] = memory["current"] + 8 * 50_000_000  # 50 MB per pass for a chunk of 8

    def reset(device):
        assert device == "GPU:0"
        memory["reset"] += 1

    monkeypatch.setattr(tf.config.experimental, "reset_memory_stats", reset)
    monkeypatch.setattr(tf.config.experimental, "get_memory_info",
                        lambda device: {"current": memory["current"], "peak": memory["peak"]})
    monkeypatch.setattr(tf.test.experimental, "sync_devices", lambda: memory.update(synced=memory["synced"] + 1))
    monkeypatch.setattr(tf_backend, "device_memory_bytes", lambda device: 14_000_000_000)
    # Half of (14 GB on the card - 2 GB in use) at 50 MB per pass.
    assert backend.fit_chunk(run, 8) == 120
    assert memory["reset"] == 1 and memory["synced"] == 1
    monkeypatch.setattr(tf_backend, "device_memory_bytes", lambda device: None)
    assert backend.fit_chunk(run, 8) is None  # the card's memory unknown: the chunk stays as chosen
    backend._gpu = None
    ran = []
    assert backend.fit_chunk(lambda: ran.append(1), 8) is None and ran == [1]  # a CPU runs the chunk, no sizing


def test_tensorflow_card_memory_comes_from_a_configured_limit_first(monkeypatch):
    import tensorflow as tf

    from salwidget.backends import tf_backend

    config = tf.config.LogicalDeviceConfiguration(memory_limit=4096)
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu0"])
    monkeypatch.setattr(tf.config, "get_logical_device_configuration", lambda device: [config])
    monkeypatch.setattr(tf_backend, "_TOTALS", {})
    assert tf_backend.device_memory_bytes("GPU:0") == 4096 * 2**20
