"""How a computation runs: seeds, chunking, progress, cancel, resume, the model left as found."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import salwidget as sw


@pytest.mark.parametrize("method", ["smoothgrad", "integrated", "smooth_integrated"])
def test_same_seed_same_result_and_other_seed_other_result(torch_cnn, images, method):
    a = sw.attribute(torch_cnn, images, method, nsamples=4, nintegration=3, seed=5)
    b = sw.attribute(torch_cnn, images, method, nsamples=4, nintegration=3, seed=5)
    c = sw.attribute(torch_cnn, images, method, nsamples=4, nintegration=3, seed=6)
    np.testing.assert_array_equal(a.raw, b.raw)
    assert not np.allclose(a.raw, c.raw)


def test_seed_none_is_drawn_and_recorded(torch_cnn, images):
    a = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=3)
    b = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=3, seed=a.seed)
    np.testing.assert_array_equal(a.raw, b.raw)


@pytest.mark.parametrize("method", sw.METHODS)
def test_results_do_not_depend_on_batch_size(torch_cnn, images, method):
    runs = [
        sw.attribute(torch_cnn, images, method, nsamples=5, nintegration=3, seed=2, batch_size=size)
        for size in (1, 3, 64, "auto")
    ]
    # Gradients of one float32 model differ in the last bits between batch sizes;
    # a variance of nearby gradients (VarGrad) magnifies that cancellation.
    rtol = 1e-3 if method == "vargrad" else 1e-5
    for run in runs[1:]:
        np.testing.assert_allclose(run.raw, runs[0].raw, rtol=rtol, atol=1e-6 * np.abs(runs[0].raw).max())


def test_chunks_bound_the_batch_the_model_sees(torch_cnn, images):
    seen = []
    handle = torch_cnn[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        a = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=20, batch_size=6, seed=0)
    finally:
        handle.remove()
    assert max(seen) <= 6 and min(seen[1:]) >= 5  # 80 passes as 14 even chunks, no small tail
    assert sum(seen) == 4 + 4 * 20  # the clean forward, then one pass per image and sample
    assert a.passes_total == 80 and a.nsamples == 20


def test_model_is_left_as_found(torch_cnn, images):
    torch_cnn.train()
    torch_cnn[0].weight.requires_grad_(True)
    torch_cnn[6].bias.requires_grad_(False)
    before = [p.detach().clone() for p in torch_cnn.parameters()]
    sw.attribute(torch_cnn, images, "smoothgrad", nsamples=3)
    assert torch_cnn.training and all(m.training for m in torch_cnn.modules())
    assert [p.requires_grad for p in torch_cnn.parameters()] == [True, True, True, True, True, False]
    assert all(p.grad is None for p in torch_cnn.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, torch_cnn.parameters()))


def test_eval_mode_is_used_during_the_computation(images):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.9), torch.nn.Linear(768, 3)).train()
    first = sw.attribute(model, images, "vanilla", target=0).raw
    second = sw.attribute(model, images, "vanilla", target=0).raw
    np.testing.assert_array_equal(first, second)  # dropout would make them differ


def test_progress_reports_partial_results_that_end_in_the_final_one(torch_cnn, images):
    calls = []
    final = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=10, batch_size=8, seed=0,
                         progress=lambda done, total, partial: calls.append((done, total, partial)))
    assert [c[0] for c in calls] == [8, 16, 24, 32, 40]
    assert all(c[1] == 40 for c in calls)
    first = calls[0][2]
    assert not first.complete and first.nsamples == 2 and first.raw.shape == images.shape
    np.testing.assert_allclose(calls[-1][2].raw, final.raw, rtol=1e-6)


def test_integrated_preview_is_a_coarse_path_estimate(torch_cnn, images):
    partials = []
    final = sw.attribute(torch_cnn, images, "integrated", nsamples=33, baseline=0.0, batch_size=12,
                         progress=lambda d, t, p: partials.append(p))
    # The first chunk holds three steps spread over the whole path (0, 1, 0.5),
    # so the preview is already close to the final map.
    first = partials[0].raw
    assert np.corrcoef(first.ravel(), final.raw.ravel())[0, 1] > 0.9


def test_cancel_stops_between_chunks(torch_cnn, images):
    calls = []
    with pytest.raises(sw.AttributionCancelled):
        sw.attribute(torch_cnn, images, "smoothgrad", nsamples=50, batch_size=4,
                     cancel=lambda: len(calls) >= 2, progress=lambda d, t, p: calls.append(d))
    assert calls == [4, 8]


@pytest.mark.parametrize("method", ["smoothgrad", "smooth_integrated"])
def test_resume_computes_only_the_new_samples_and_matches_a_fresh_run(torch_cnn, images, method):
    small = sw.attribute(torch_cnn, images, method, nsamples=4, nintegration=3, seed=1)
    seen = []
    handle = torch_cnn[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        more = sw.attribute(torch_cnn, images, method, nsamples=8, nintegration=3, seed=1, resume_from=small)
    finally:
        handle.remove()
    fresh = sw.attribute(torch_cnn, images, method, nsamples=8, nintegration=3, seed=1)
    assert sum(seen) == 4 + 4 * 4 * 3 ** (method == "smooth_integrated")
    np.testing.assert_allclose(more.raw, fresh.raw, rtol=1e-5, atol=1e-9)
    assert more.nsamples == 8


def test_resume_from_a_different_setting_starts_afresh(torch_cnn, images):
    small = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=4, seed=1, stdev_spread=0.1)
    more = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=8, seed=1, stdev_spread=0.3, resume_from=small)
    fresh = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=8, seed=1, stdev_spread=0.3)
    np.testing.assert_array_equal(more.raw, fresh.raw)


def test_torch_tensor_input_and_channels_last_torch_model(torch_cnn, images):
    a = sw.attribute(torch_cnn, torch.from_numpy(images), "vanilla")
    b = sw.attribute(torch_cnn, images, "vanilla")
    np.testing.assert_array_equal(a.raw, b.raw)

    class ChannelsLast(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2))

    c = sw.attribute(ChannelsLast(torch_cnn), images.transpose(0, 2, 3, 1), "vanilla", channels_last=True)
    np.testing.assert_allclose(c.raw.transpose(0, 3, 1, 2), b.raw, rtol=1e-5, atol=1e-8)
    assert c.grayscale().shape == (4, 16, 16)


def test_multi_output_model_needs_output_index(images):
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Flatten()
            self.a = torch.nn.Linear(768, 3)
            self.b = torch.nn.Linear(768, 5)

        def forward(self, x):
            z = self.body(x)
            return self.a(z), self.b(z)

    model = TwoHeads()
    with pytest.raises(sw.SaliencyError, match="returns 2 outputs; choose the one to explain with output_index"):
        sw.attribute(model, images, "vanilla")
    a = sw.attribute(model, images, "vanilla", output_index=1, target=4)
    np.testing.assert_allclose(a.raw.reshape(4, -1), np.tile(model.b.weight.detach().numpy()[4], (4, 1)), rtol=1e-6)
    assert a.scores.shape == (4, 5)


def test_importing_salwidget_imports_no_framework():
    code = "import sys, salwidget; print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'matplotlib', 'ipywidgets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_auto_batch_size_scales_with_input_size():
    big = [np.zeros((1, 3, 224, 224), np.float32)]
    small = [np.zeros((1, 1, 8, 8), np.float32)]
    assert sw.engine.auto_batch_size("cpu", big) == 8
    assert sw.engine.auto_batch_size("cpu", small) == 64
    assert sw.engine.auto_batch_size("cuda:0", big) > 8
