"""How a computation runs: seeds, chunking, progress, cancel, resume, the model left as found."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import salwidget as sw

from .helpers import Gate, keras_twin, make_torch_cnn, own_options


def layer_of(method: str) -> dict:
    """layer= for the methods that read a layer (sw.attribute refuses it for the others)."""
    return {"layer": "2"} if sw.get_method(method).reads == "layer" else {}


@pytest.mark.parametrize("method", ["smoothgrad", "integrated", "smooth_integrated"])
def test_same_seed_same_result_and_other_seed_other_result(torch_cnn, images, method):
    a = sw.attribute(torch_cnn, images, method, **own_options(method, nsamples=4, nintegration=3, seed=5))
    b = sw.attribute(torch_cnn, images, method, **own_options(method, nsamples=4, nintegration=3, seed=5))
    c = sw.attribute(torch_cnn, images, method, **own_options(method, nsamples=4, nintegration=3, seed=6))
    np.testing.assert_array_equal(a.raw, b.raw)
    assert not np.allclose(a.raw, c.raw)


def test_seed_none_is_drawn_and_recorded(torch_cnn, images):
    a = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=3)
    b = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=3, seed=a.seed)
    np.testing.assert_array_equal(a.raw, b.raw)


@pytest.mark.parametrize("method", sw.METHODS)
def test_results_do_not_depend_on_batch_size(torch_cnn, images, method):
    # In float64: a float32 model's gradients differ in the last bits between batch sizes, which a
    # discontinuous method (Guided IG's quantile selection, XRAI's region ranking, the argmax of the
    # prediction over near ties) can turn into a different map. What is pinned is the engine: how passes
    # are chunked never changes a result beyond rounding.
    model, x = copy.deepcopy(torch_cnn).double(), images.astype(np.float64)
    runs = [
        sw.attribute(model, x, method, **own_options(method, nsamples=5, nintegration=3), seed=2, batch_size=size)
        for size in (1, 3, 64, "auto")
    ]
    for run in runs[1:]:
        np.testing.assert_allclose(run.raw, runs[0].raw, rtol=1e-6, atol=1e-7 * np.abs(runs[0].raw).max())


def test_chunks_bound_the_batch_the_model_sees(torch_cnn, images):
    seen = []
    handle = torch_cnn[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        a = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=20, batch_size=6, seed=0)
    finally:
        handle.remove()
    # 80 passes in even chunks of at most 6, rounded to whole groups of 4 images near the end: no small tail.
    assert max(seen) <= 6 and min(seen[1:]) >= 4
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
    small = sw.attribute(torch_cnn, images, method, **own_options(method, nsamples=4, nintegration=3), seed=1)
    seen = []
    handle = torch_cnn[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        more = sw.attribute(torch_cnn, images, method, **own_options(method, nsamples=8, nintegration=3), seed=1,
                            resume_from=small)
    finally:
        handle.remove()
    fresh = sw.attribute(torch_cnn, images, method, **own_options(method, nsamples=8, nintegration=3), seed=1)
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


def test_the_users_model_is_untouched_while_another_thread_computes(images):
    model = Gate(make_torch_cnn()).train()
    worker = threading.Thread(target=lambda: sw.attribute(model, images, "smoothgrad", nsamples=3, seed=0))
    worker.start()
    try:
        assert model.entered.wait(30)
        # Mid-computation, from the user's thread: train mode, trainable, no hooks, and a training step works.
        assert model.training and all(m.training for m in model.modules())
        assert all(p.requires_grad for p in model.parameters())
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        loss = model(torch.from_numpy(images)).sum()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
    finally:
        model.release.set()
        worker.join(60)
    assert not worker.is_alive()


def test_device_and_dtype_are_read_at_each_call(torch_cnn, images):
    first = sw.attribute(torch_cnn, images, "vanilla", target=1)
    torch_cnn.double()
    second = sw.attribute(torch_cnn, images, "vanilla", target=1)
    assert second.raw.dtype == np.float32
    np.testing.assert_allclose(second.raw, first.raw, rtol=1e-4, atol=1e-7)


def test_out_of_memory_says_so_and_other_errors_get_no_layout_guess(images):
    class Fails(torch.nn.Module):
        def __init__(self, exc):
            super().__init__()
            self.exc = exc
            self.linear = torch.nn.Linear(1, 1)

        def forward(self, x):
            raise self.exc

    with pytest.raises(MemoryError, match=r"ran out of memory on a chunk of 4 passes.*smaller batch_size"):
        sw.attribute(Fails(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")), images, "vanilla")
    with pytest.raises(sw.SaliencyError, match=r"The model raised ValueError on input of shape \(4, 3, 16, 16\): boom\.$"):
        sw.attribute(Fails(ValueError("boom")), images, "vanilla")


def test_resume_from_another_model_or_changed_weights_starts_afresh(images):
    first, second = make_torch_cnn(seed=0), make_torch_cnn(seed=1)
    small = sw.attribute(first, images, "smoothgrad", nsamples=4, seed=1)
    mixed = sw.attribute(second, images, "smoothgrad", nsamples=8, seed=1, resume_from=small)
    np.testing.assert_array_equal(mixed.raw, sw.attribute(second, images, "smoothgrad", nsamples=8, seed=1).raw)
    with torch.no_grad():
        first[0].weight.mul_(2.0)  # an in-place update, as an optimiser step does
    changed = sw.attribute(first, images, "smoothgrad", nsamples=8, seed=1, resume_from=small)
    np.testing.assert_array_equal(changed.raw, sw.attribute(first, images, "smoothgrad", nsamples=8, seed=1).raw)


def test_a_given_target_holds_in_every_chunk():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    x = np.random.default_rng(0).normal(size=(3, 3, 2, 2)).astype(np.float32)
    a = sw.attribute(model, x, "smoothgrad", target=1, nsamples=7, stdev_spread=5.0, magnitude=False, batch_size=1)
    assert a.passes_total == 21  # 21 chunks of one pass each
    np.testing.assert_allclose(a.raw.reshape(3, -1), np.tile(model[1].weight.detach().numpy()[1], (3, 1)), rtol=1e-5)


class HalfSquaredNorm(torch.nn.Module):
    def forward(self, x):
        value = 0.5 * (x**2).flatten(1).sum(1, keepdim=True)
        return torch.cat([value, -value], dim=1)


def test_uniform_baselines_span_each_images_own_range():
    # For f = |x|^2 / 2 Riemann IG is (x - b)(x + b) / 2 exactly, so b^2 = x^2 - 2 raw.
    rng = np.random.default_rng(0)
    x = rng.uniform(10, 20, size=(2, 3, 16, 16)).astype(np.float32)
    x[1] = rng.uniform(-3, -1, size=(3, 16, 16))
    a = sw.attribute(HalfSquaredNorm(), x, "integrated", target=0, nsamples=5, baseline="uniform", seed=0)
    b = np.sqrt(np.maximum(x**2 - 2 * a.raw.astype(np.float64), 0))
    for i, (low, high) in enumerate([(10, 20), (1, 3)]):  # |b| in the image's own [min, max]
        lo, hi = np.abs(x[i]).min(), np.abs(x[i]).max()
        assert lo - 1e-2 <= b[i].min() < lo + 0.5 and hi - 0.5 < b[i].max() <= hi + 1e-2


def test_device_draws_are_fresh_per_sample_and_per_image():
    # SmoothGrad without squaring on |x|^2/2 averages x + noise: the noise itself is readable.
    x = np.zeros((2, 3, 8, 8), np.float32)
    x[:, :, 0, 0] = 1.0  # a range of 1 per image
    a = sw.attribute(HalfSquaredNorm(), x, "smoothgrad", target=0, nsamples=2, magnitude=False, stdev_spread=1.0, seed=4)
    noise = 2 * (a.raw - x)
    assert noise[0].std() == pytest.approx(1.0, rel=0.15) and noise[1].std() == pytest.approx(1.0, rel=0.15)
    assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.2


def test_auto_chunks_follow_what_the_backend_fits_after_the_first(torch_cnn, images, monkeypatch):
    from salwidget.backends.torch_backend import TorchBackend

    def fit(self, run, rows):
        run()
        return 3  # as if the measured memory allowed three passes per chunk

    monkeypatch.setattr(TorchBackend, "fit_chunk", fit)
    monkeypatch.setattr(sw.engine, "_tuner", lambda *args: None)  # as on a GPU: sized by memory, not tuned
    seen = []
    handle = torch_cnn[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        a = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=40, seed=0)
    finally:
        handle.remove()
    # 160 passes at up to 64 per chunk: 3 chunks whether even (54, in whole groups of 4 images: 52) or on the
    # noise blocks (4 clean passes, then blocks of 2 samples x 4 images): the first ends on a block, at 60
    assert seen[1] == 60
    assert max(seen[2:]) <= 3 and sum(seen[1:]) == 160
    np.testing.assert_allclose(a.raw, sw.attribute(torch_cnn, images, "smoothgrad", nsamples=40, seed=0,
                                                    batch_size=7).raw, rtol=1e-5, atol=1e-12)


def test_gpu_chunks_fill_half_the_free_memory(monkeypatch):
    from salwidget.backends import torch_backend

    backend = torch_backend.TorchBackend(make_torch_cnn())
    backend._device = torch.device("cuda", 0)
    fake = {"allocated": 1_000, "peak": 1_000}

    def run():
        fake["peak"] = 1_000 + 8 * 50_000_000  # 50 MB per pass for a chunk of 8

    for name, value in {
        "synchronize": lambda device=None: None,
        "memory_allocated": lambda device=None: fake["allocated"],
        "reset_peak_memory_stats": lambda device=None: None,
        "max_memory_allocated": lambda device=None: fake["peak"],
        "mem_get_info": lambda device=None: (10_000_000_000, 80_000_000_000),
        "memory_reserved": lambda device=None: 1_000 + 2_000_000_000,
    }.items():
        monkeypatch.setattr(torch.cuda, name, value)
    # Half of (10 GB free + 2 GB cached by torch) at 50 MB per pass.
    assert backend.fit_chunk(run, 8) == 120


def test_tensorflow_gpu_chunks_fill_half_the_free_memory(monkeypatch):
    import tensorflow as tf

    from salwidget.backends import tf_backend

    backend = tf_backend.TensorFlowBackend(keras_twin(make_torch_cnn()))
    ran = []
    assert backend.fit_chunk(lambda: ran.append(1), 8) is None and ran == [1]  # a CPU: run, nothing measured
    backend._gpu = "GPU:0"
    fake = {"current": 1_000_000_000, "peak": 1_000_000_000}

    def run():
        fake["peak"] = 1_000_000_000 + 8 * 50_000_000  # 50 MB per pass for a chunk of 8
        ran.append(2)

    monkeypatch.setattr(tf.config.experimental, "reset_memory_stats", lambda device: None)
    monkeypatch.setattr(tf.config.experimental, "get_memory_info", lambda device: dict(fake))
    monkeypatch.setattr(tf.test.experimental, "sync_devices", lambda: None)
    monkeypatch.setattr(tf_backend, "device_memory_bytes", lambda device: 11_000_000_000)
    # Half of (11 GB on the card - 1 GB in use) at 50 MB per pass.
    assert backend.fit_chunk(run, 8) == 100 and ran == [1, 2]
    monkeypatch.setattr(tf_backend, "device_memory_bytes", lambda device: None)  # the card's size unknown
    assert backend.fit_chunk(run, 8) is None


@pytest.mark.parametrize("method", ["vanilla", "gradient_x_input", "gradcam"])
def test_a_single_pass_method_explaining_the_prediction_runs_one_pass_per_image(torch_cnn, images, method):
    seen = []
    handle = torch_cnn[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        fused = sw.attribute(torch_cnn, images, method, **layer_of(method))
    finally:
        handle.remove()
    assert sum(seen) == 4  # no separate clean forward pass
    predicted = sw.predict(torch_cnn, images).argmax(1)
    # output_index=0 takes the other road: a clean forward first, then the method's passes.
    given = sw.attribute(torch_cnn, images, method, target=predicted, **layer_of(method), output_index=0)
    np.testing.assert_array_equal(fused.target, predicted)
    np.testing.assert_allclose(fused.scores, given.scores, rtol=1e-6)
    np.testing.assert_allclose(fused.raw, given.raw, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["vanilla", "gradcam"])
def test_a_single_pass_method_with_given_targets_runs_one_pass_per_image(torch_cnn, images, method):
    seen = []
    handle = torch_cnn[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    targets = [2, 0, 4, 1]
    try:
        fused = sw.attribute(torch_cnn, images, method, target=targets, **layer_of(method))
    finally:
        handle.remove()
    assert sum(seen) == 4
    separate = sw.attribute(torch_cnn, images, method, target=targets, **layer_of(method), output_index=0)
    np.testing.assert_array_equal(fused.target, targets)
    np.testing.assert_allclose(fused.scores, separate.scores, rtol=1e-6)
    np.testing.assert_allclose(fused.raw, separate.raw, rtol=1e-6, atol=1e-9)
    assert not np.allclose(fused.raw, sw.attribute(torch_cnn, images, method, target=0, **layer_of(method)).raw)


@pytest.mark.parametrize("method", ["vanilla", "gradcam"])
def test_a_given_target_out_of_range_fails_with_the_clean_forwards_message_in_a_single_pass(torch_cnn, images,
                                                                                           method):
    # The pass clamps its targets (an index out of range would be a CUDA device-side assert); the range is
    # checked against the first chunk's outputs, before any result.
    with pytest.raises(sw.SaliencyError, match=r"Target class 7 is out of range: the model has 5 classes \(0 to 4\)"):
        sw.attribute(torch_cnn, images, method, target=[0, 7, 1, 2], **layer_of(method), batch_size=1)


def test_a_single_pass_on_keras_picks_the_prediction_inside_the_traced_step(images):
    from .helpers import keras_twin

    model = keras_twin(make_torch_cnn())
    x = images.transpose(0, 2, 3, 1)
    fused = sw.attribute(model, x, "vanilla")
    given = sw.attribute(model, x, "vanilla", target=fused.scores.argmax(1), output_index=0)
    np.testing.assert_allclose(fused.raw, given.raw, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(fused.target, given.target)
    # Given targets in the single pass: the same maps as after a clean forward; one out of range is refused.
    targets = [1, 3, 0, 4]
    np.testing.assert_allclose(sw.attribute(model, x, "vanilla", target=targets).raw,
                               sw.attribute(model, x, "vanilla", target=targets, output_index=0).raw,
                               rtol=1e-6, atol=1e-9)
    with pytest.raises(sw.SaliencyError, match=r"Target class 5 is out of range: the model has 5 classes"):
        sw.attribute(model, x, "vanilla", target=[0, 1, 5, 2])


def test_a_compiled_model_in_train_mode_is_left_as_found_and_explained_in_eval_mode(images):
    # Module.compile() stores a compiled call of the module itself: the shadow copy must drop it (as copy.copy
    # does), or the user's own module would run, in train mode, updating its BatchNorm statistics.
    torch.manual_seed(0)

    def build():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                   torch.nn.Linear(4 * 16 * 16, 5))

    net = build().train()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    twin = build()
    twin.load_state_dict(net.state_dict())
    net.compile(backend="eager")
    running = net[1].running_mean.clone()
    compiled = sw.attribute(net, images, "vanilla", target=1)
    assert torch.equal(net[1].running_mean, running) and net.training
    np.testing.assert_allclose(compiled.raw, sw.attribute(twin, images, "vanilla", target=1).raw, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------- the weights identity behind every cache key
def test_the_torch_weights_identity_follows_every_change_of_the_weights(images):
    from salwidget.backends import get_backend

    model = make_torch_cnn()
    backend = get_backend(model)
    first = backend.identity()
    assert backend.identity() == first  # nothing changed: the same key
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.from_numpy(images)).sum().backward()
    optimizer.step()  # a training step: in place
    stepped = backend.identity()
    assert stepped != first
    model[6] = torch.nn.Linear(8, 5)  # a replaced submodule
    replaced = backend.identity()
    assert replaced not in (first, stepped)
    model.double()  # cast: new storage for every weight
    assert backend.identity() != replaced


def test_the_keras_weights_identity_follows_assign_and_training(images):
    import keras

    from salwidget.backends import get_backend

    from .helpers import keras_twin

    model = keras_twin(make_torch_cnn())
    backend = get_backend(model)
    first = backend.identity()
    assert backend.identity() == first
    kernel = model.layers[-1].kernel
    kernel.assign(kernel.numpy() * 1.0001)
    assigned = backend.identity()
    assert assigned != first
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(images.transpose(0, 2, 3, 1), np.zeros((4, 5), np.float32), epochs=1, verbose=0)
    assert backend.identity() not in (first, assigned)


@pytest.mark.parametrize("rng", ["device", "numpy"])
@pytest.mark.parametrize("method", ["smoothgrad", "integrated", "smooth_integrated", "expected_gradients"])
def test_image_ids_key_each_images_draws_so_any_batch_gives_its_map(images, method, rng):
    model, x = copy.deepcopy(make_torch_cnn()).double(), images.astype(np.float64)
    options = own_options(method, nsamples=4, nintegration=3, seed=5, rng=rng, target=[0, 1, 2, 3])
    if method == "expected_gradients":  # the default references are the batch's other images: give fixed ones
        options["references"] = x[::-1].copy()
    whole = sw.attribute(model, x, method, image_ids=[10, 11, 12, 13], **options).raw
    apart = sw.attribute(model, x[[2, 0]], method, image_ids=[12, 10], **{**options, "target": [2, 0]}).raw
    np.testing.assert_allclose(apart, whole[[2, 0]], rtol=1e-6, atol=1e-9)
    by_row = sw.attribute(model, x, method, **options).raw  # without ids: keyed by the row, other numbers
    assert not np.allclose(by_row, whole)


def test_cpu_chunks_tune_themselves_on_the_first_chunks_and_remember_the_fastest(images, monkeypatch):
    from salwidget import chunk_tuning as tuning

    model = make_torch_cnn()
    x = np.repeat(images, 4, axis=0)  # 16 images
    start = sw.engine.auto_batch_size("cpu", [x])
    assert start == 64
    now = [0.0]
    sizes = []

    def hook(module, inputs, output):
        n = len(inputs[0])
        sizes.append(n)
        # 128 is the fastest per pass; the first chunk of each size pays a one-time cost that is not counted
        now[0] += 0.001 * n * (0.5 if n == 128 else 1.0) + (1.0 if sizes.count(n) == 1 else 0.0)

    monkeypatch.setattr(tuning, "clock", lambda: now[0])
    handle = model[0].register_forward_hook(hook)
    first = sw.attribute(model, x, "smoothgrad", nsamples=60, seed=0)  # 960 passes
    # after the clean pass: each size three times, smallest first, on real work
    assert sizes[1:10] == [32] * 3 + [64] * 3 + [128] * 3
    assert sum(sizes[10:]) == 960 - 672 and max(sizes[10:]) <= 128  # the rest in chunks of the fastest
    assert first.batch_size == 128  # the fastest, kept for the rest of the run
    sizes.clear()
    second = sw.attribute(model, x, "smoothgrad", nsamples=30, seed=1)
    assert max(sizes[1:]) == 128 and sum(sizes[1:]) == 480 and len(sizes[1:]) == 4  # remembered: chunks of 128
    handle.remove()
    given = sw.attribute(model, x, "smoothgrad", nsamples=30, seed=1, batch_size=7)
    np.testing.assert_allclose(second.raw, given.raw, rtol=1e-5, atol=1e-12)  # the chunks never change a map
    assert given.batch_size == 7 and second.batch_size == 128


def test_a_run_too_short_to_finish_the_chunk_trials_leaves_them_to_the_next(images, monkeypatch):
    """Each size's fastest sample counts: one slow chunk of a size (a loaded moment) does not lose it."""
    from salwidget import chunk_tuning as tuning

    model = make_torch_cnn()
    x = np.repeat(images, 4, axis=0)  # 16 images: 64 passes per chunk to start with
    now, sizes = [0.0], []

    def hook(module, inputs, output):
        n = len(inputs[0])
        sizes.append(n)
        slow = 10.0 if n == 32 and sizes.count(32) == 2 else 1.0  # the second chunk of 32 meets a loaded moment
        now[0] += 0.001 * n * slow * (0.8 if n == 32 else 1.0)

    monkeypatch.setattr(tuning, "clock", lambda: now[0])
    model[0].register_forward_hook(hook)
    short = sw.attribute(model, x, "smoothgrad", nsamples=12, seed=0)  # 192 passes: 3 x 32 + 64, then 32 left
    assert sizes[1:] == [32, 32, 32, 64, 32] and short.batch_size == 64  # not tuned yet: the start size
    sizes.clear()
    longer = sw.attribute(model, x, "smoothgrad", nsamples=60, seed=0)
    assert sizes[1:6] == [64, 64, 128, 128, 128]  # the trials go on where the short run left them
    assert longer.batch_size == 32  # the fastest by its best sample, though its second was the slowest


def test_chunk_sizes_nearly_as_fast_as_the_fastest_go_to_the_largest():
    from salwidget import chunk_tuning as tuning

    tuner = tuning.Tuner(object(), ("key",), 8)  # tries 4, 8, 16
    per_pass = {4: 1.00, 8: 1.03, 16: 1.04}  # within 5% of the fastest: the largest, fewer chunks
    for size in (4, 4, 4, 8, 8, 8, 16, 16, 16):
        assert tuner.size() == size
        tuner.done(size, size, size * per_pass[size])
    assert tuner.best == 16
    clear = tuning.Tuner(object(), ("key",), 8)
    for size in (4, 4, 4, 8, 8, 8, 16, 16, 16):
        clear.done(size, size, size * {4: 1.00, 8: 1.03, 16: 1.10}[size])
    assert clear.best == 8  # 16 is 10% slower: out of the tie


def test_chunk_trials_leave_out_noise_blocks_that_serve_later_chunks(images, monkeypatch):
    """A noise block is drawn by the first chunk that needs it and serves the chunks after it: a small chunk
    skips the draw in most of its trials, so with the draw counted it looked cheapest (Keras picked 4
    passes a chunk where 16 ran 1.4x faster). The draws' time is left out of the comparison."""
    from salwidget import chunk_tuning as tuning
    from salwidget import randomness
    from salwidget.backends.torch_backend import TorchOps

    # blocks of 128 passes: the counted trials of 32 never start one, those of 128 always do
    monkeypatch.setattr(randomness, "BLOCK_PASSES", 128)
    model = make_torch_cnn()
    x = images[:1]
    now = [0.0]
    sizes = []

    def hook(module, inputs, output):
        sizes.append(len(inputs[0]))
        now[0] += 0.001 * len(inputs[0]) + 0.050  # a fixed cost per chunk: the largest chunks are fastest

    original = TorchOps.normal

    def slow_draw(self, shape, key):
        now[0] += 5.0  # drawing a block: far more than any chunk's passes
        return original(self, shape, key)

    monkeypatch.setattr(tuning, "clock", lambda: now[0])
    monkeypatch.setattr(TorchOps, "normal", slow_draw)
    model[0].register_forward_hook(hook)
    result = sw.attribute(model, x, "smoothgrad", nsamples=900, seed=0)
    assert sizes[1:10] == [32] * 3 + [64] * 3 + [128] * 3
    assert result.batch_size == 128


@pytest.mark.parametrize("passes, per_chunk, grid, stops", [
    (25, 8, (1, 8), [1, 9, 17, 25]),  # SmoothGrad-25 of one image: the clean pass, then three noise blocks
    (50, 8, (1, 8), [8, 15, 22, 29, 36, 43, 50]),  # on the blocks would take 8 chunks: even ones (7)
    (20, 8, None, [7, 14, 20]),  # no grid: even chunks
    (20, 4, (1, 8), [4, 8, 12, 16, 20]),  # blocks larger than a chunk: even chunks
    (6, 8, (1, 8), [6]),  # one chunk
])
def test_chunks_keep_to_the_noise_blocks_when_that_costs_no_chunk(passes, per_chunk, grid, stops):
    from salwidget.methods.base import Stage

    seen = []
    stage = Stage(passes, lambda start, stop: seen.append(stop), grid=grid)
    ctx = type("Ctx", (), {"chunk": per_chunk})()
    request = type("Request", (), {"batch_size": per_chunk, "cancel": None})()
    sw.engine._schedule([stage], ctx, None, request, lambda done: None)
    assert seen == stops
