"""Dense outputs in the panel: each image explains a region, picked by a click or a dragged box; multi-label heads."""

from __future__ import annotations

import ipywidgets
import numpy as np
import pytest
import torch

import salwidget as sw

from .helpers import keras_segnet_twin


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


def colour_net():
    """(B, 3, H, W) -> (B, 3, H, W): each pixel's class is its strongest colour channel (plus a little mixing,
    so that the gradients are not trivial)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(3, 3, 1))
    with torch.no_grad():
        net[0].weight.mul_(0.05)
        net[0].weight[:, :, 1, 1] += torch.eye(3)
        net[0].bias.zero_()
        net[2].weight.copy_(torch.eye(3)[:, :, None, None] * 2)
        net[2].bias.zero_()
    return net.eval()


@pytest.fixture
def halves():
    """Two 16 x 16 images: left half red (class 0) and right half green (class 1); the second is mostly green."""
    x = np.zeros((2, 3, 16, 16), np.float32)
    x[:, 0, :, :8] = 0.9
    x[:, 1, :, 8:] = 0.9
    x[1, 1, :, 4:8] = 0.9  # image 2: green wins the most pixels
    x[1, 0, :, 4:8] = 0.0
    return x


def press(panel, row: int, fx: float, fy: float, kind: str) -> None:
    """A mouse event at a fraction (fx, fy) of the picture of grid row ``row`` (grid pixels, as ipyevents)."""
    cell = next(i for i in panel.host.maps_view.view.layout.items if i.kind == "cell" and i.column == 0 and i.row == row)
    panel.host.maps_view.on_grid_event({"type": kind, "dataX": cell.left + fx * cell.width, "dataY": cell.top + fy * cell.height})


def test_each_image_explains_its_largest_region_until_a_click_picks_another(halves):
    model = colour_net()
    panel = sw.SaliencyWidget(model, halves, methods=("vanilla",), class_names=["red", "green", "blue"])
    assert panel.wait(60) and panel.error == ""
    titles = panel.host.maps_view.row_titles(panel.host.page_slice())
    assert "explains: red\nlargest region, 128 px" in titles[0] and "explains: green\nlargest region, 192 px" in titles[1]
    press(panel, 0, 0.8, 0.5, "mousedown")  # a click on the green half of image 1
    press(panel, 0, 0.8, 0.5, "mouseup")
    assert set(panel.regions) == {0} and panel.regions[0][0] == 1
    assert panel.wait(60)
    green = np.zeros((16, 16), bool)
    green[:, 8:] = True
    np.testing.assert_array_equal(panel.regions[0][1], green)
    expected = sw.attribute(model, halves[:1], "vanilla", target=sw.targets.Region(1, green)).raw
    np.testing.assert_allclose(panel.results["vanilla"].raw[:1], expected, rtol=1e-5, atol=1e-8)
    assert "explains: green\nclicked region, 128 px" in panel.host.maps_view.row_titles(panel.host.page_slice())[0]
    # image 2 still explains its own largest region, alongside
    second = panel.results["vanilla"].explained
    assert isinstance(second, sw.targets.Region) and list(second.k) == [1, 1]


def test_a_dragged_box_explains_the_part_of_the_region_inside_it(halves):
    model = colour_net()
    panel = sw.SaliencyWidget(model, halves, methods=("vanilla",))
    assert panel.wait(60)
    press(panel, 1, 0.1, 0.1, "mousedown")  # on image 2's red stripe ... dragged to its middle
    press(panel, 1, 0.45, 0.45, "mouseup")
    assert panel.wait(60)
    k, mask = panel.regions[1]
    assert k == 0 and mask.any() and not mask[8:].any() and not mask[:, 8:].any()  # red, inside the box only
    expected = sw.attribute(model, halves[1:], "vanilla", target=sw.targets.Region(0, mask)).raw
    np.testing.assert_allclose(panel.results["vanilla"].raw[1:], expected, rtol=1e-5, atol=1e-8)
    panel.set_region(1, 1, ~mask)  # from Python too: any class and mask
    assert panel.wait(60) and panel.regions[1][0] == 1


def test_a_keras_segmentation_net_explains_the_same_region():
    from .helpers import make_torch_segnet

    torch_model = make_torch_segnet()
    x = np.random.default_rng(3).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)
    keras_model = keras_segnet_twin(torch_model)
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    ours = sw.SaliencyWidget(torch_model, x, methods=("vanilla",))
    theirs = sw.SaliencyWidget(keras_model, x.transpose(0, 2, 3, 1), methods=("vanilla",))
    for panel in (ours, theirs):
        panel.set_region(0, 2, mask)
        assert panel.wait(60) and panel.error == ""
    np.testing.assert_allclose(theirs.results["vanilla"].raw[0].transpose(2, 0, 1), ours.results["vanilla"].raw[0],
                               rtol=1e-3, atol=1e-5)


def test_a_multi_label_head_lists_every_label_above_one_half():
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 6), torch.nn.Sigmoid()).eval()
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)
    panel = sw.SaliencyWidget(head, x, methods=("vanilla",))
    assert panel.wait(60)
    with torch.no_grad():
        p = head(torch.from_numpy(x)).numpy()
    offered = [(v, label) for label, v in panel.settings_view.target.options if v != "predicted"]
    expected = {(int(c), i) for i in range(2) for c in np.nonzero(p[i] > 0.5)[0]}
    assert {(v, int(label.split("image ")[1].split(":")[0]) - 1) for v, label in offered} == expected
    assert expected  # the test has labels to list
