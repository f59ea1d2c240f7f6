"""Any model everywhere: a plain numpy callable (``framework='numpy'``, channels last) through ``sw.scan``,
``sw.attribute_dataset``, ``sw.deletion_insertion`` and the panel gives what its torch original gives.

The callable is an object that cannot be weakly referenced, so the backend cache (keyed weakly by model)
cannot remember it: every entry point must pass ``framework=`` on to every call it makes.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest

import salwidget as sw
from salwidget.errors import SaliencyError

from .helpers import make_torch_cnn

OCCLUSION = dict(window=4, stride=4)


class ChannelsLastScores:
    """``f(batch (B, H, W, C) numpy) -> (B, K) numpy`` of a torch model; no ``__weakref__`` slot."""

    __slots__ = ("model", "sign")

    def __init__(self, model, sign: float = 1.0):
        self.model, self.sign = model, sign

    def __call__(self, batch):
        import torch

        with torch.no_grad():
            return self.sign * self.model(torch.tensor(batch).permute(0, 3, 1, 2)).numpy()


@pytest.fixture(scope="module")
def torch_model():
    return make_torch_cnn()


@pytest.fixture
def pictures():
    return np.random.default_rng(6).uniform(0, 1, (3, 3, 16, 16)).astype(np.float32)


@pytest.fixture
def scores(torch_model):
    f = ChannelsLastScores(torch_model)
    with pytest.raises(TypeError):
        weakref.ref(f)  # the point of the fixture: no cache can stand in for framework=
    return f


def _last(images):
    return images.transpose(0, 2, 3, 1)


def test_scan_of_a_numpy_callable_predicts_as_the_torch_model(torch_model, scores, pictures, tmp_path):
    import torch

    with torch.no_grad():
        expected = torch_model(torch.tensor(pictures)).numpy()
    scanned = sw.scan(scores, _last(pictures), labels=[0, 1, 2], store=tmp_path, framework="numpy", channels_last=True)
    np.testing.assert_array_equal(scanned.table["predicted"].to_numpy(), expected.argmax(axis=1))


def test_two_callables_never_share_a_stores_rows(torch_model, scores, pictures, tmp_path):
    # A callable's weights cannot be read: a second function in the same store must scan for itself.
    first = sw.scan(scores, _last(pictures), store=tmp_path, framework="numpy", channels_last=True)
    negated = ChannelsLastScores(torch_model, sign=-1.0)
    with pytest.warns(UserWarning, match="other model weights"):
        second = sw.scan(negated, _last(pictures), store=tmp_path, framework="numpy", channels_last=True)
    assert first.key != second.key
    expected = -negated.sign * scores(_last(pictures))
    np.testing.assert_array_equal(second.table["predicted"].to_numpy(), (-expected).argmax(axis=1))


def test_deletion_insertion_of_a_numpy_callable_takes_the_maps_layout(torch_model, scores, pictures):
    ours = sw.attribute(scores, _last(pictures), "occlusion", framework="numpy", channels_last=True, **OCCLUSION)
    theirs = sw.attribute(torch_model, pictures, "occlusion", **OCCLUSION)
    np.testing.assert_allclose(ours.raw, theirs.raw, rtol=1e-3, atol=1e-3 * np.abs(theirs.raw).max())
    # channels_last left out: the Attribution's own layout is used
    curves = sw.deletion_insertion(scores, _last(pictures), ours, steps=4, framework="numpy")
    reference = sw.deletion_insertion(torch_model, pictures, theirs, steps=4)
    np.testing.assert_allclose(curves.deletion, reference.deletion, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(curves.insertion, reference.insertion, rtol=1e-4, atol=1e-6)


def test_attribute_dataset_of_a_numpy_callable(torch_model, scores, pictures, tmp_path):
    result = sw.attribute_dataset(scores, _last(pictures), ["occlusion", "rise"],
                                  options={"occlusion": OCCLUSION, "rise": dict(nmasks=30, grid=4)},
                                  store=tmp_path, metrics=("deletion",), curve_steps=4, framework="numpy",
                                  channels_last=True)
    rows = [0, 1, 2]
    for method, options in (("occlusion", OCCLUSION), ("rise", dict(nmasks=30, grid=4))):
        reference = sw.attribute(torch_model, pictures, method, seed=0, image_ids=rows, **options)
        np.testing.assert_allclose(result.maps(method, rows), reference.raw, rtol=1e-3,
                                   atol=1e-4 * np.abs(reference.raw).max())
        curves = sw.deletion_insertion(torch_model, pictures, reference, steps=4)
        np.testing.assert_allclose(result.table[f"{method}_deletion_auc"].to_numpy(), curves.auc_deletion,
                                   rtol=1e-3, atol=1e-5)


def test_the_panel_on_a_numpy_callable(torch_model, scores, pictures):
    from salwidget.methods.forward_only import forward_only_methods

    panel = sw.SaliencyWidget(scores, _last(pictures), framework="numpy", channels_last=True,
                              options={"occlusion": OCCLUSION, "rise": dict(nmasks=30, grid=4)})
    try:
        assert panel.wait(120) and not panel.error
        assert panel.methods == ("occlusion", "rise")  # the defaults a forward-only model can run
        assert sorted(panel.settings_view.method_buttons) == sorted(forward_only_methods())
        reference = sw.attribute(torch_model, pictures, "occlusion", **OCCLUSION)
        np.testing.assert_allclose(panel.results["occlusion"].raw, reference.raw, rtol=1e-3,
                                   atol=1e-4 * np.abs(reference.raw).max())
        panel.evaluate()
        assert panel.wait(120) and not panel.error
        expected = sw.deletion_insertion(torch_model, pictures, reference, steps=panel.curve_steps)
        np.testing.assert_allclose(panel.curves["occlusion"].deletion, expected.deletion, rtol=1e-3, atol=1e-5)
        with pytest.raises(SaliencyError, match="sanity check re-draws the model's weights"):
            panel.evaluate(sanity_check=True)
        assert panel._evaluate.sanity_button.disabled
        with pytest.raises(SaliencyError, match="forward passes only.*occlusion.*rise"):
            sw.SaliencyWidget(scores, _last(pictures), framework="numpy", channels_last=True, methods=("smoothgrad",))
    finally:
        panel.close()
