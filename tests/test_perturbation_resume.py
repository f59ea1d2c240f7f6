"""The sampling perturbation methods resume (``resume_from=``) as SmoothGrad does: a resumed result equals a
fresh call with the larger count, runs only the new passes, and leaves the earlier result as it was."""

from __future__ import annotations

import numpy as np
import pytest

import salwidget as sw
from salwidget.methods.random_masks import RISE_MASKS, rise_draws, sobol_design
from salwidget.methods.surrogates import coalitions_of

from .helpers import make_torch_cnn

# (method, the resumable option, a smaller and a larger count, other options, runs of passes per image)
CASES = [
    ("rise", "nmasks", 40, 90, dict(grid=4, keep=0.5, fill="mean"), 1),
    ("sobol", "nmasks", 4, 8, dict(grid=3), 3 * 3 + 2),
    ("lime", "nsamples", 30, 70, dict(segments="slic"), 1),
    ("kernel_shap", "nsamples", 30, 70, dict(segments="slic", fill="blur"), 1),
]


@pytest.fixture(scope="module")
def model():
    return make_torch_cnn()


@pytest.fixture(scope="module")
def pictures():
    return np.random.default_rng(8).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)


def _close(got, want):
    scale = float(np.abs(want).max())
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("method, count, small, large, options, blocks", CASES)
def test_a_resumed_result_equals_a_fresh_one_and_runs_only_the_new_passes(model, pictures, method, count, small,
                                                                          large, options, blocks):
    f = lambda n, **kw: sw.attribute(model, pictures, method, seed=3, **{count: n}, **options, **kw)
    earlier = f(small)
    kept = earlier.raw.copy()
    resumed = f(large, resume_from=earlier)
    fresh = f(large)
    _close(resumed.raw, fresh.raw)
    assert resumed.nsamples == fresh.nsamples == large
    assert resumed.passes_done == len(pictures) * blocks * (large - small)
    assert fresh.passes_done == len(pictures) * blocks * large
    # far from the smaller count's map: the new passes were used, not just the old ones
    assert np.abs(resumed.raw - earlier.raw).max() > 1e-3 * np.abs(fresh.raw).max()
    np.testing.assert_array_equal(earlier.raw, kept)  # the earlier result is a value
    assert not earlier._state.scores.flags.writeable


@pytest.mark.parametrize("method, count, small, large, options, blocks", CASES[:1] + CASES[3:])
def test_chains_of_resumes_and_resumes_from_one_result_twice(model, pictures, method, count, small, large, options,
                                                             blocks):
    f = lambda n, **kw: sw.attribute(model, pictures, method, seed=5, **{count: n}, **options, **kw)
    first = f(small)
    middle = f(small + 10, resume_from=first)
    last = f(large, resume_from=middle)
    _close(last.raw, f(large).raw)
    again = f(small + 20, resume_from=first)  # the first result once more: its sums were not extended in place
    _close(again.raw, f(small + 20).raw)
    kept = first.raw.copy()
    f(large, resume_from=first)
    np.testing.assert_array_equal(first.raw, kept)


def test_resuming_to_fewer_samples_or_other_settings_recomputes(model, pictures):
    f = lambda n, **kw: sw.attribute(model, pictures, "rise", nmasks=n, grid=4, seed=3, **kw)
    larger = f(60)
    fewer = f(30, resume_from=larger)
    assert fewer.passes_done == 30 * len(pictures)
    _close(fewer.raw, f(30).raw)
    other = sw.attribute(model, pictures, "rise", nmasks=60, grid=4, seed=4, resume_from=f(30))  # another seed
    assert other.passes_done == 60 * len(pictures)
    _close(other.raw, sw.attribute(model, pictures, "rise", nmasks=60, grid=4, seed=4).raw)


def test_a_numpy_callable_resumes_too(model, pictures):
    import torch

    def scores(batch):
        with torch.no_grad():
            return model(torch.tensor(batch)).numpy()

    f = lambda n, **kw: sw.attribute(scores, pictures, "rise", nmasks=n, grid=4, seed=2, framework="numpy", **kw)
    resumed = f(70, resume_from=f(35))
    assert resumed.passes_done == 35 * len(pictures)
    _close(resumed.raw, f(70).raw)
    _close(resumed.raw, sw.attribute(model, pictures, "rise", nmasks=70, grid=4, seed=2).raw)


def test_draws_of_fewer_samples_are_the_first_of_more():
    def rise(n):
        return rise_draws(n, 5, 0.4, (4, 4), np.random.default_rng([7, RISE_MASKS, 1]))

    (few_grids, few_shifts), (grids, shifts) = rise(50), rise(120)
    np.testing.assert_array_equal(few_grids, grids[:50])
    np.testing.assert_array_equal(few_shifts, shifts[:50])
    for method in ("lime", "kernel_shap"):
        few = coalitions_of(method, 9, dict(nsamples=40), seed=5, image_id=3)
        many = coalitions_of(method, 9, dict(nsamples=100), seed=5, image_id=3)
        np.testing.assert_array_equal(few, many[:40])
    few, many = sobol_design(4, 8).reshape(6, 8, 4), sobol_design(4, 16).reshape(6, 16, 4)
    np.testing.assert_array_equal(few, many[:, :8])  # A, B and each C_i: the first points of the longer run
