"""The panel with the propagation methods and the new CAMs: buttons and options from the registry, maps equal to
the core's, and the Evaluate view scoring them."""

from __future__ import annotations

import ipywidgets
import numpy as np
import pytest

import salwidget as sw
from salwidget.methods import get_method
from salwidget.panel.method_options import default_options, shown_options

from .helpers import make_torch_cnn

NEW = ("lrp", "deeplift", "deeplift_shap", "gradient_shap", "hirescam", "xgradcam", "eigencam", "ablationcam")
DETERMINISTIC = ("lrp", "deeplift", "deeplift_shap", "hirescam", "xgradcam", "eigencam", "ablationcam")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


def test_each_new_method_shows_its_options():
    values = default_options({})
    shown = {name: [o.name for o in shown_options(get_method(name), values[name])] for name in NEW}
    assert "composite" in shown["lrp"] and "baseline" in shown["deeplift"]
    assert {"nsamples", "stdev_spread"} <= set(shown["gradient_shap"])
    assert get_method("lrp").option("composite").choices == ("epsilon_plus_flat", "epsilon_gamma_box",
                                                             "epsilon_alpha2_beta1")


def test_a_panel_with_the_new_methods_computes_the_cores_maps_and_evaluates_them(images):
    model = make_torch_cnn()
    panel = sw.SaliencyWidget(model, images, methods=NEW, nsamples=4)
    panel.curve_steps = 6
    assert panel.wait(240) and panel.error == ""
    for method in DETERMINISTIC:
        expected = sw.attribute(make_torch_cnn(), images, method, target=panel.results[method].target,
                                **({"nsamples": 4} if method == "gradient_shap" else {}))
        np.testing.assert_allclose(panel.results[method].raw, expected.raw, rtol=1e-4,
                                   atol=1e-5 * np.abs(expected.raw).max())
    panel.evaluate()
    assert panel.wait(600) and panel.error == ""
    assert set(panel.curves) == set(NEW) | {"random"}
    for method in ("lrp", "deeplift", "eigencam"):
        expected = sw.deletion_insertion(make_torch_cnn(), images, panel.results[method], steps=6)
        np.testing.assert_allclose(panel.curves[method].deletion, expected.deletion, rtol=1e-5, atol=1e-7)
