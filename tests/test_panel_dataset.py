"""The panel's Dataset view: the scan in the worker, filters, sort, confusion clicks, picking and explaining."""

from __future__ import annotations

import ipywidgets
import numpy as np
import pandas as pd
import pytest
import torch

import salwidget as sw

from .helpers import PassGate, drain, keras_twin, make_torch_cnn

N = 300


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, size=(N, 3, 16, 16)).astype(np.float32)
    return x, rng.integers(0, 5, N)


class Items(torch.utils.data.Dataset):
    def __init__(self, x, labels):
        self.x, self.labels = x, labels

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), int(self.labels[i])


def panel_over(x, labels, **options):
    model = make_torch_cnn()
    panel = sw.SaliencyWidget(model, Items(x, labels), class_names=list("abcde"), methods=("vanilla",), **options)
    assert panel.wait(120)
    panel.model = model
    return panel


def centre(box):
    left, top, right, bottom = box
    return {"type": "click", "dataX": (left + right) / 2, "dataY": (top + bottom) / 2}


def test_a_dataset_opens_on_the_dataset_view_with_the_scans_table(data):
    x, labels = data
    panel = panel_over(x, labels)
    assert panel.pane == "dataset" and panel.host.dataset_view.box.layout.display == ""
    assert panel.host.maps_view.box.layout.display == "none" and all(r.layout.display == "none" for r in panel._maps_rows)
    expected = sw.scan(make_torch_cnn(), x, labels, class_names=list("abcde"))
    pd.testing.assert_frame_equal(panel.scan.table, expected.table)
    assert panel.status == f"Scanned {N} images."  # the accuracy is said once, in the view's summary
    assert f"accuracy <b>{expected.accuracy:.1%}</b> on {N} labelled" in panel.host.dataset_view.summary.value
    # the default order: highest loss first
    np.testing.assert_array_equal(panel.host.dataset_view.rows[:24],
                                  expected.table.sort_values("loss", ascending=False, kind="stable").index[:24])
    assert "accuracy" in panel.host.dataset_view.summary.value and panel.host.dataset_view.confusion.value


def test_filters_query_and_sort_select_the_rows_pandas_would(data):
    x, labels = data
    panel = panel_over(x, labels)
    table = panel.scan.table
    panel.filter_correct = "wrong"
    expected = table[~table["correct"]].sort_values("loss", ascending=False, kind="stable").index
    np.testing.assert_array_equal(panel.host.dataset_view.rows, expected)
    panel.filter_correct = "all"
    panel.query = "probability > 0.25 and predicted != 1"
    panel.sort_by, panel.sort_descending = "margin", False
    expected = table.query("probability > 0.25 and predicted != 1").sort_values("margin", kind="stable").index
    np.testing.assert_array_equal(panel.host.dataset_view.rows, expected)
    panel.filter_probability = (0.2, 0.3)
    kept = table.query("probability > 0.25 and predicted != 1")
    kept = kept[(kept["probability"] >= 0.2) & (kept["probability"] <= 0.3)].sort_values("margin", kind="stable")
    np.testing.assert_array_equal(panel.host.dataset_view.rows, kept.index)
    assert panel.host.dataset_view.query.value == panel.query and panel.host.dataset_view.sort.value == "margin"


def test_a_query_pandas_cannot_run_names_the_columns_and_the_view_keeps_working(data):
    x, labels = data
    panel = panel_over(x, labels)
    before = panel.host.dataset_view.rows.copy()
    panel.query = "confidence > 0.5"
    assert "The query 'confidence > 0.5' does not work" in panel.error and "probability" in panel.error
    np.testing.assert_array_equal(panel.host.dataset_view.rows, before)  # still the last rows
    panel.query = "probability > 0.3"
    assert panel.error == "" and (panel.scan.table.loc[panel.host.dataset_view.rows, "probability"] > 0.3).all()


def test_a_click_on_a_confusion_cell_filters_to_that_label_and_prediction(data):
    x, labels = data
    panel = panel_over(x, labels)
    boxes = panel.host.dataset_view.matrix.boxes
    box, (label, predicted) = next((b, v) for b, v in boxes if v[0] != v[1]
                                   and panel.scan.confusion()[v] > 0)
    panel.filter_correct = "correct"
    panel.host.dataset_view.on_confusion_event(centre(box))
    assert (panel.filter_label, panel.filter_predicted, panel.filter_correct) == (label, predicted, "all")
    table = panel.scan.table
    shown = table.loc[panel.host.dataset_view.rows]
    assert len(shown) == panel.scan.confusion()[label, predicted]
    assert (shown["label"] == label).all() and (shown["predicted"] == predicted).all()


def test_picked_thumbnails_are_explained_in_the_maps_view_as_any_images(data):
    x, labels = data
    panel = panel_over(x, labels)
    boxes = panel.host.dataset_view.thumbs.boxes
    for box, _ in boxes[:3]:
        panel.host.dataset_view.on_thumbnail_event(centre(box))
    panel.host.dataset_view.on_thumbnail_event(centre(boxes[1][0]))  # a second click unpicks
    picked = {boxes[0][1], boxes[2][1]}
    assert panel.host.dataset_view.picked == picked and "Explain selected (2)" == panel.host.dataset_view.explain.description
    panel.host.dataset_view.explain.click()
    assert panel.pane == "maps" and panel.selection == sorted(picked)
    assert panel.wait(60)
    rows = sorted(picked)
    expected = sw.attribute(panel.model, x[rows], "vanilla", seed=0)
    np.testing.assert_allclose(panel.results["vanilla"].raw, expected.raw, rtol=1e-5, atol=1e-8)
    titles = panel.host.maps_view.row_titles(panel.host.page_slice())
    assert titles[0].startswith(f"image 1 (#{rows[0]}), true: {'abcde'[labels[rows[0]]]}")


def test_an_array_panel_scans_its_images_when_the_dataset_view_is_shown(data):
    x, labels = data
    model = make_torch_cnn()
    panel = sw.SaliencyWidget(model, x[:40], labels=labels[:40], methods=("vanilla",), page_size=4)
    assert panel.wait(60) and panel.pane == "maps" and panel.selection == list(range(40))
    panel.pane = "dataset"
    assert panel.wait(60) and len(panel.scan.table) == 40
    panel.selection = [39, 3]
    panel.pane = "maps"
    assert panel.wait(60)
    expected = sw.attribute(model, x[[39, 3]], "vanilla", seed=0)
    np.testing.assert_allclose(panel.results["vanilla"].raw, expected.raw, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(panel.host.labels, labels[[39, 3]])


def test_stop_keeps_the_committed_rows_and_showing_the_view_again_goes_on(data, tmp_path):
    x, labels = data
    model = make_torch_cnn()
    gate = PassGate(model[0], when=lambda calls, grad: calls == 2)  # during the scan's second block
    panel = sw.SaliencyWidget(model, Items(x, labels), methods=("vanilla",), store=tmp_path, batch_size=256)
    assert gate.wait()
    panel.host.stop_button.click()
    gate.release()
    drain(panel)
    assert panel.scan.missing == N - 256 and len(panel.scan.table) == 256  # the first block stays
    assert panel.host.dataset_view.summary.value.startswith("<b>256</b> of 300 images scanned")
    panel.pane = "maps"
    assert panel.wait(60)
    panel.pane = "dataset"
    assert panel.wait(60) and panel.scan.missing == 0
    expected = sw.scan(make_torch_cnn(), x, labels)
    pd.testing.assert_frame_equal(panel.scan.table, expected.table)


def test_a_keras_model_over_a_tf_data_dataset(data):
    import tensorflow as tf

    x, labels = data
    torch_model = make_torch_cnn()
    dataset = tf.data.Dataset.from_tensor_slices((x[:60].transpose(0, 2, 3, 1), labels[:60])).batch(16)
    panel = sw.SaliencyWidget(keras_twin(torch_model), dataset, methods=("vanilla",))
    assert panel.wait(120)
    expected = sw.scan(torch_model, x[:60], labels[:60])
    np.testing.assert_array_equal(panel.scan.table["predicted"], expected.table["predicted"])
    panel.selection = [5, 50]
    panel.pane = "maps"
    assert panel.wait(60)
    ours = sw.attribute(torch_model, x[[5, 50]], "vanilla", seed=0).raw
    np.testing.assert_allclose(panel.results["vanilla"].raw.transpose(0, 3, 1, 2), ours, rtol=1e-3, atol=1e-5)


def test_selection_out_of_range_is_refused(data):
    import traitlets

    x, labels = data
    panel = panel_over(x[:20], labels[:20])
    with pytest.raises(traitlets.TraitError, match="selection must be dataset indices from 0 to 19"):
        panel.selection = [3, 25]


def test_stored_maps_of_the_same_settings_are_shown_without_computing(data, tmp_path):
    x, labels = data
    model = make_torch_cnn()
    scan = sw.scan(model, x, labels, store=tmp_path)
    job = sw.attribute_dataset(model, scan, ["smoothgrad"], options={"smoothgrad": {"nsamples": 5}}, metrics=(),
                               seed=0)
    panel = sw.SaliencyWidget(model, scan, methods=("smoothgrad",), nsamples=5)
    assert panel.wait(120)
    gradient_passes = []
    PassGate(model[0], when=lambda calls, grad: gradient_passes.append(grad) and False)
    panel.selection = [7, 250, 3]
    panel.pane = "maps"
    assert panel.wait(60)
    result = panel.results["smoothgrad"]
    assert "stored" in result.extras and not any(gradient_passes)  # read from the store (a forward for titles)
    assert "SmoothGrad (n=5) from the dataset store" in panel.status
    np.testing.assert_array_equal(result.raw, job.maps("smoothgrad", [7, 250, 3]))
    # Other settings: computed, with the rows' draws keyed by their dataset index (the job's maps, unrounded)
    panel.nsamples = 6
    assert panel.wait(60) and any(gradient_passes) and "stored" not in panel.results["smoothgrad"].extras
    expected = sw.attribute(model, x[[7, 250, 3]], "smoothgrad", nsamples=6, seed=0, image_ids=[7, 250, 3])
    np.testing.assert_allclose(panel.results["smoothgrad"].raw, expected.raw, rtol=1e-5, atol=1e-9)
    panel.nsamples = 5  # back: the stored maps again
    assert panel.wait(60)
    np.testing.assert_array_equal(panel.results["smoothgrad"].raw, job.maps("smoothgrad", [7, 250, 3]))
