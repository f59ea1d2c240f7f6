"""No fixed cost per call on an unchanged model: the shadow copy, the weights' version and the result key
are reused, and never served stale when the model, its hooks or the input change."""

from __future__ import annotations

import copy
import gc
import threading
import weakref

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.backends import get_backend
from salwidget.backends import torch_backend

from .helpers import Gate, make_torch_cnn, own_options


@pytest.fixture
def shadows(monkeypatch):
    """Counts the shadow copies made."""
    made = []
    original = torch_backend.shadow_copy

    def counting(module, memo=None):
        if memo is None:  # a copy of a whole model, not its recursion into submodules
            made.append(threading.current_thread().name)
        return original(module, memo)

    monkeypatch.setattr(torch_backend, "shadow_copy", counting)
    monkeypatch.setattr("salwidget.backends.torch_shadow.shadow_copy", counting)
    return made


def reference(model, images, method="vanilla", **options):
    """The same call on a deep copy of the model (its own backend, shadow and version)."""
    return sw.attribute(copy.deepcopy(model), images, method, **options).raw


def test_a_repeated_call_on_an_unchanged_model_reuses_the_shadow_and_the_version(torch_cnn, images, shadows):
    first = sw.attribute(torch_cnn, images, "gradcam", target=1)
    backend = get_backend(torch_cnn)
    version = backend.identity()
    for method in ("gradcam", "vanilla", "smoothgrad", "guided_backprop"):
        sw.attribute(torch_cnn, images, method, target=1, seed=0, **own_options(method, nsamples=3))
    assert len(shadows) == 1  # made by the first call only
    assert backend.identity() == version
    np.testing.assert_array_equal(sw.attribute(torch_cnn, images, "gradcam", target=1).raw, first.raw)


def test_a_training_step_in_between_is_seen_and_changes_the_version(torch_cnn, images, shadows):
    before = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=4, seed=0)
    version = get_backend(torch_cnn).identity()
    optimiser = torch.optim.SGD(torch_cnn.parameters(), lr=0.5)
    torch_cnn(torch.from_numpy(images)).sum().backward()
    optimiser.step()  # in place: the cached shadow shares these tensors
    assert get_backend(torch_cnn).identity() != version
    after = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=4, seed=0)
    np.testing.assert_allclose(after.raw, reference(torch_cnn, images, "smoothgrad", nsamples=4, seed=0), rtol=1e-6)
    assert not np.allclose(after.raw, before.raw)
    more = sw.attribute(torch_cnn, images, "smoothgrad", nsamples=8, seed=0, resume_from=before)  # other weights
    np.testing.assert_allclose(more.raw, reference(torch_cnn, images, "smoothgrad", nsamples=8, seed=0), rtol=1e-6)
    assert len(shadows) == 1 + 2  # one per deep copy: the model's own shadow stayed valid


@pytest.mark.parametrize("change", ["double", "to_float64", "half_then_float"])
def test_moving_or_casting_the_model_makes_a_new_shadow(torch_cnn, images, shadows, change):
    before = sw.attribute(torch_cnn, images, "vanilla", target=2)
    version = get_backend(torch_cnn).identity()
    if change == "double":
        torch_cnn.double()
    elif change == "to_float64":
        torch_cnn.to(torch.float64)
    else:  # back to float32: new storage, the same dtype as before
        torch_cnn.half().float()
    after = sw.attribute(torch_cnn, images, "vanilla", target=2)
    assert get_backend(torch_cnn).identity() != version
    assert len(shadows) == 2
    torch_cnn.to("cpu")  # already there: nothing changes
    sw.attribute(torch_cnn, images, "vanilla", target=2)
    assert len(shadows) == 2
    np.testing.assert_allclose(after.raw, reference(torch_cnn, images, target=2), rtol=1e-6)
    if change != "half_then_float":
        np.testing.assert_allclose(after.raw, before.raw, rtol=1e-4, atol=1e-7)


def test_replacing_a_submodule_without_weights_is_seen(torch_cnn, images, shadows):
    before = sw.attribute(torch_cnn, images, "vanilla", target=0)
    version = get_backend(torch_cnn).identity()
    modules = len(list(torch_cnn.modules()))
    torch_cnn[1] = torch.nn.ReLU()  # was Tanh: the same count of modules, the same weights
    assert len(list(torch_cnn.modules())) == modules
    after = sw.attribute(torch_cnn, images, "vanilla", target=0)
    assert get_backend(torch_cnn).identity() != version
    np.testing.assert_allclose(after.raw, reference(torch_cnn, images, target=0), rtol=1e-6)
    assert not np.allclose(after.raw, before.raw)


def test_a_changed_attribute_and_a_replaced_parameter_are_seen(torch_cnn, images, shadows):
    sw.attribute(torch_cnn, images, "vanilla", target=0)
    torch_cnn[3].beta = 4.0  # Softplus's sharpness: a plain attribute the shadow copied
    np.testing.assert_allclose(sw.attribute(torch_cnn, images, "vanilla", target=0).raw,
                               reference(torch_cnn, images, target=0), rtol=1e-6)
    torch_cnn[6].weight = torch.nn.Parameter(torch.randn_like(torch_cnn[6].weight))
    np.testing.assert_allclose(sw.attribute(torch_cnn, images, "vanilla", target=0).raw,
                               reference(torch_cnn, images, target=0), rtol=1e-6)
    assert len(shadows) == 3 + 2  # a new shadow for each change (and one per reference copy)


def test_a_data_swap_to_another_view_of_the_same_memory_is_seen(images):
    """``p.data = p.data.t()`` keeps the parameter object and its storage pointer; its shape and strides change."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 768), torch.nn.Tanh(),
                                torch.nn.Linear(768, 3)).eval()
    sw.attribute(model, images, "vanilla", target=0)
    version = get_backend(model).identity()
    pointer = model[1].weight.data_ptr()
    model[1].weight.data = model[1].weight.data.t()
    assert model[1].weight.data_ptr() == pointer
    assert get_backend(model).identity() != version
    np.testing.assert_allclose(sw.attribute(model, images, "vanilla", target=0).raw,
                               reference(model, images, target=0), rtol=1e-6)


def test_a_hook_added_by_the_user_runs_but_leaves_the_version(torch_cnn, images, shadows):
    sw.attribute(torch_cnn, images, "vanilla", target=3)
    version = get_backend(torch_cnn).identity()
    calls = []
    handle = torch_cnn[2].register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    sw.attribute(torch_cnn, images, "vanilla", target=3)
    assert calls == [4]  # the new shadow copied the hook: it ran, as it would in the model
    assert get_backend(torch_cnn).identity() == version  # hooks observe: caches keyed by the weights stay
    handle.remove()
    sw.attribute(torch_cnn, images, "vanilla", target=3)
    assert calls == [4] and len(shadows) == 3
    doubled = torch_cnn[6].register_forward_hook(lambda module, inputs, output: 2 * output)
    try:
        np.testing.assert_allclose(sw.attribute(torch_cnn, images, "vanilla", target=3).raw,
                                   2 * sw.attribute(make_torch_cnn(), images, "vanilla", target=3).raw, rtol=1e-6)
    finally:
        doubled.remove()


def test_another_thread_gets_its_own_shadow_while_one_is_in_use(images, shadows):
    inner = make_torch_cnn()
    model = Gate(inner)
    expected_cam = sw.attribute(make_torch_cnn(), images, "gradcam", target=1, layer="2").raw
    expected_vanilla = sw.attribute(make_torch_cnn(), images, "vanilla", target=1).raw
    sw.attribute(model, images, "vanilla", target=1)  # the cached shadow exists
    shadows.clear()
    result = {}
    worker = threading.Thread(target=lambda: result.update(cam=sw.attribute(model, images, "gradcam", target=1,
                                                                            layer="inner.2").raw))
    worker.start()
    try:
        assert model.entered.wait(30)  # the worker's Grad-CAM holds the cached shadow, its layer tapped
        mine = sw.attribute(model, images, "vanilla", target=1).raw
    finally:
        model.release.set()
        worker.join(60)
    assert not worker.is_alive()
    assert shadows == ["MainThread"]  # a private shadow for the main thread; the worker used the cached one
    np.testing.assert_allclose(mine, expected_vanilla, rtol=1e-6)
    np.testing.assert_allclose(result["cam"], expected_cam, rtol=1e-6)


def test_an_input_changed_in_place_is_never_served_a_stale_key(torch_cnn, images):
    x = images.copy()
    small = sw.attribute(torch_cnn, x, "smoothgrad", nsamples=4, seed=1)
    x[0] += 0.25  # the caller's own array, changed in place
    more = sw.attribute(torch_cnn, x, "smoothgrad", nsamples=8, seed=1, resume_from=small)
    np.testing.assert_array_equal(more.raw, sw.attribute(torch_cnn, x.copy(), "smoothgrad", nsamples=8, seed=1).raw)
    same = sw.attribute(torch_cnn, x, "smoothgrad", nsamples=12, seed=1, resume_from=more)  # unchanged: resumes
    assert same.passes_done == 4 * 4


def test_the_watch_does_not_keep_the_model_alive(images):
    model = make_torch_cnn()
    sw.attribute(model, images, "smoothgrad", nsamples=3, seed=0)
    get_backend(model).identity()
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_a_keras_models_version_follows_its_weights(images):
    import keras

    from .helpers import keras_twin

    model = keras_twin(make_torch_cnn())
    backend = get_backend(model)
    version = backend.identity()
    x = images.transpose(0, 2, 3, 1)
    sw.attribute(model, x, "vanilla", target=1)
    assert backend.identity() == version
    kernel = model.layers[-1].kernel
    kernel.assign(kernel * 2.0)
    assert backend.identity() != version
    kernel.assign(kernel / 2.0)
    assert backend.identity() == version  # the same values again
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.train_on_batch(x, np.ones((4, 5), np.float32))  # a compiled training step
    assert backend.identity() != version
