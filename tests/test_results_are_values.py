"""Results are values (issue 25, item 1): a result handed back, cached or resumed from never changes, and a
resumed result equals the uninterrupted one for any sequence of resumes, in the engine and in the panel."""

from __future__ import annotations

import numpy as np
import pytest

import salwidget as sw

from .helpers import own_options


def _tiny_model():
    """Two 3x3 convs with ReLU, pooling and a 5-way linear layer (the issue's model)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5),
    ).eval()


@pytest.fixture(scope="module")
def tiny():
    x = np.random.default_rng(0).random((6, 3, 16, 16)).astype(np.float32)
    return _tiny_model(), x


def _close(got: np.ndarray, want: np.ndarray) -> None:
    scale = float(np.abs(want).max())
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)


def test_the_issues_resume_twice_from_one_result(tiny):
    m, x = tiny
    f = lambda k, **kw: sw.attribute(m, x, "smoothgrad", nsamples=k, seed=0, target=4, **kw)
    p3 = f(3)
    kept = p3.raw.copy()
    _close(f(5, resume_from=p3).raw, f(5).raw)
    _close(f(7, resume_from=p3).raw, f(7).raw)  # was 25% off: the first resume had added into p3's sums
    np.testing.assert_array_equal(p3.raw, kept)
    _close(f(9, resume_from=p3).raw, f(9).raw)


@pytest.mark.parametrize("method", ["smoothgrad", "vargrad", "smooth_integrated"])
def test_random_sequences_of_resumes_equal_fresh_calls_and_leave_earlier_results_alone(tiny, method):
    m, x = tiny
    f = lambda k, **kw: sw.attribute(m, x, method, **own_options(method, nsamples=k, nintegration=2, seed=0,
                                                                   target=4), **kw)
    fresh = {}
    rng = np.random.default_rng(7)
    for trial in range(2):
        results = []  # (count, result, its raw at the time)
        for _ in range(5):
            k = int(rng.integers(2, 7))
            previous = None if not results or rng.random() < 0.2 else results[int(rng.integers(len(results)))][1]
            got = f(k, resume_from=previous)
            if k not in fresh:
                fresh[k] = f(k).raw
            assert got.nsamples == k
            _close(got.raw, fresh[k])
            results.append((k, got, got.raw.copy()))
        for k, got, raw in results:  # nothing handed back earlier changed afterwards
            np.testing.assert_array_equal(got.raw, raw)
        k, got, _ = results[int(rng.integers(len(results)))]
        _close(f(k + 1, resume_from=got).raw, fresh.get(k + 1, f(k + 1).raw))  # and each still resumes exactly


def test_resuming_to_fewer_samples_than_stored_recomputes(tiny):
    m, x = tiny
    f = lambda k, **kw: sw.attribute(m, x, "smoothgrad", nsamples=k, seed=0, target=4, **kw)
    p5 = f(5)
    p4 = f(4, resume_from=p5)
    assert p4.nsamples == 4 and p4.passes_done == 4 * len(x)
    _close(p4.raw, f(4).raw)


def test_a_saved_resume_point_is_read_only(tiny):
    """A resume copies what it extends; the saved sums cannot be written through the result."""
    m, x = tiny
    p3 = sw.attribute(m, x, "smoothgrad", nsamples=3, seed=0, target=4)
    saved = p3._state
    assert all(not s.flags.writeable for s in saved.sums)
    with pytest.raises(ValueError):
        saved.sums[0][...] = 0


def test_the_panel_after_a_storm_of_trait_changes_shows_the_maps_of_its_final_settings(tiny):
    m, x = tiny
    methods = ("smoothgrad", "vargrad", "vanilla")
    panel = sw.SaliencyWidget(m, x, methods=("smoothgrad",), nsamples=3, batch_size=4, seed=0,
                              confirm_seconds=float("inf"))
    try:
        assert panel.wait(60)
        rng = np.random.default_rng(3)
        for step in range(60):
            if rng.random() < 0.2:
                chosen = [name for name in methods if rng.random() < 0.6] or ["smoothgrad"]
                panel.methods = tuple(chosen)
            else:
                panel.nsamples = int(rng.integers(2, 9))
            if step % 10 == 9:
                assert panel.wait(60)  # some settings finish, are cached and later resumed from
        panel.methods = ("smoothgrad", "vargrad")  # finish on the resumable ones
        panel.nsamples = int(rng.integers(2, 9))
        assert panel.wait(60)
        assert panel.error == ""
        for name in panel.methods:
            shown = panel.results[name]
            assert shown.nsamples == panel.nsamples and shown.options["nsamples"] == panel.nsamples
            _close(shown.raw, sw.attribute(m, x, name, nsamples=panel.nsamples, seed=0).raw)
    finally:
        panel.stop()
        panel.wait(10)


# ------------------------------------------------------------- operations per chunk (issue 26)
def _torch_calls(run) -> int:
    """torch functions and methods called by ``run`` (each at least one operation, a launch on a GPU)."""
    import torch
    from torch.overrides import TorchFunctionMode

    calls = [0]

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls[0] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        run()
    return calls[0]


@pytest.mark.parametrize("method", ["smoothgrad", "vargrad", "integrated"])
def test_a_chunks_operations_do_not_grow_with_its_samples(tiny, method):
    """One chunk of 32 passes costs about what one chunk of 8 does: noise drawn per block of samples,
    squares and sums over the chunk at once (before: several operations per sample)."""
    m, x = tiny
    one = x[:1]
    extra = {"baseline": 0.0} if method == "integrated" else {}
    run = lambda k: sw.attribute(m, one, method, nsamples=k, seed=0, target=4, batch_size=k, **extra)
    small, large = _torch_calls(lambda: run(8)), _torch_calls(lambda: run(32))
    assert large - small <= 8, (small, large)  # 24 more samples: three more noise blocks at most


@pytest.mark.parametrize("block", [8, 3, 128])  # 8: a CPU's blocks; 128: a GPU's (same code, larger blocks)
@pytest.mark.parametrize("batch", [1, 3])
def test_blocked_noise_keeps_maps_independent_of_the_chunk(tiny, batch, block, monkeypatch):
    from salwidget import randomness

    monkeypatch.setattr(randomness, "BLOCK_PASSES", block)
    m, x = tiny
    runs = [sw.attribute(m, x[:batch], "smoothgrad", nsamples=13, seed=5, target=4, batch_size=size).raw
            for size in (1, 5, 7, 64)]
    for other in runs[1:]:
        _close(other, runs[0])
