"""The panel's controls of the perturbation methods: fill and segments dropdowns (with their help and cost),
fill_sigma only while the fill is a blur, and RISE resumed from the map it shows when masks are added."""

from __future__ import annotations

import numpy as np
import pytest

import salwidget as sw
from salwidget.panel.method_options import shown_options

from .helpers import make_torch_cnn

OCCLUSION = dict(window=4, stride=4)


@pytest.fixture(scope="module")
def model():
    return make_torch_cnn()


@pytest.fixture(scope="module")
def pictures():
    return np.random.default_rng(2).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)


def _shown(method, values):
    return [o.name for o in shown_options(sw.get_method(method), values)]


def test_fill_sigma_changes_a_map_only_when_the_fill_is_a_blur():
    occlusion = sw.get_method("occlusion")
    key = lambda **kw: occlusion.key(occlusion.resolve({**OCCLUSION, **kw}))
    assert key(fill=0.0, fill_sigma=2.0) == key(fill=0.0, fill_sigma=7.0)
    assert key(fill="blur", fill_sigma=2.0) != key(fill="blur", fill_sigma=7.0)
    assert "fill_sigma" not in _shown("occlusion", occlusion.resolve({}))
    assert "fill_sigma" in _shown("occlusion", occlusion.resolve({"fill": "blur"}))


def test_the_fill_and_segments_dropdowns_compute_what_they_say(model, pictures):
    panel = sw.SaliencyWidget(model, pictures, methods=("occlusion", "lime"),
                              options={"occlusion": OCCLUSION, "lime": dict(nsamples=20)})
    try:
        assert panel.wait(120) and not panel.error
        controls = panel.settings_view.option_controls
        fill, segments = controls[("occlusion", "fill")], controls[("lime", "segments")]
        assert [v for _, v in fill.options] == [0.0, "mean", "blur"]
        assert [v for _, v in segments.options] == ["slic", "quickshift", "felzenszwalb"]
        assert "blur" in fill.tooltip and "once per image" in segments.tooltip  # help says what each costs
        fill.value = "blur"
        segments.value = "felzenszwalb"
        assert panel.wait(120) and not panel.error
        assert panel.options["occlusion"]["fill"] == "blur" and panel.options["lime"]["segments"] == "felzenszwalb"
        np.testing.assert_allclose(panel.results["occlusion"].raw,
                                   sw.attribute(model, pictures, "occlusion", seed=0, fill="blur", **OCCLUSION).raw,
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(panel.results["lime"].raw,
                                   sw.attribute(model, pictures, "lime", seed=0, nsamples=20,
                                                segments="felzenszwalb").raw, rtol=1e-5, atol=1e-7)
        assert ("occlusion", "fill_sigma") in panel.settings_view.option_controls
        panel.options = {"occlusion": {"fill": -0.5}}  # a number of one's own joins the dropdown
        assert fill.value == -0.5 and (("constant -0.5", -0.5) in fill.options)
    finally:
        panel.close()


def test_the_panel_resumes_rise_from_the_map_it_shows(model, pictures):
    panel = sw.SaliencyWidget(model, pictures, methods=("rise",), options={"rise": dict(nmasks=20, grid=4)})
    try:
        assert panel.wait(120) and not panel.error
        panel.options = {"rise": {"nmasks": 50}}
        assert panel.wait(120) and not panel.error
        result = panel.results["rise"]
        assert result.nsamples == 50 and result.passes_done == 30 * len(pictures)
        fresh = sw.attribute(model, pictures, "rise", seed=0, nmasks=50, grid=4)
        np.testing.assert_allclose(result.raw, fresh.raw, rtol=0, atol=1e-5 * np.abs(fresh.raw).max())
    finally:
        panel.close()
