"""What the grid shows: scalings, signed views, colour bars, smooth resampling, stable columns, the overlay."""

from __future__ import annotations

import io

import ipywidgets
import numpy as np
import pytest

import salwidget as sw
from salwidget.drawing.scaling import shown_maps
from salwidget.drawing.render import Column, ColorBar, GridRenderer, colorize
from salwidget.drawing.masks import plane_maps as _maps

from .helpers import make_torch_cnn, own_options


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


def decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(4, 3, 16, 16)).astype(np.float32)
    x[1] *= 0.2
    model = make_torch_cnn()
    return {m: sw.attribute(model, x, m, seed=0, **own_options(m, nsamples=4, nintegration=4))
            for m in ("vanilla", "smoothgrad", "integrated")}


def test_per_image_scaling_is_the_core_visualisation(results):
    masks, scales = shown_maps(results, 97.0, "image", "signed")
    np.testing.assert_array_equal(masks["vanilla"], sw.to_grayscale(results["vanilla"], 97.0))
    np.testing.assert_array_equal(masks["integrated"], sw.to_diverging(results["integrated"], 97.0))
    assert scales["integrated"].signed and scales["integrated"].vmin == -1
    assert scales["vanilla"].caption == "per image: 0 = min, 1 = p97 (clipped)"
    magnitude, _ = shown_maps(results, 97.0, "image", "magnitude")
    np.testing.assert_array_equal(magnitude["integrated"], sw.to_grayscale(results["integrated"], 97.0))


def test_per_method_scaling_keeps_the_images_comparable(results):
    masks, scales = shown_maps(results, 99.0, "method", "magnitude")
    raw = _maps(results["vanilla"], False, False)
    low, high = raw.min(), np.percentile(raw, 99, method="lower")
    np.testing.assert_allclose(masks["vanilla"], np.clip((raw - low) / (high - low), 0, 1), atol=1e-6)
    per_image, _ = shown_maps(results, 99.0, "image", "magnitude")
    # IG scales with the image: the dim image (x[1] = 0.2 x) stays dim under one scale, not under four.
    assert per_image["integrated"][1].max() == 1 and masks["integrated"][1].max() < 0.5
    assert scales["vanilla"].caption.startswith("all images: 1 = p99 = ")


def test_shared_scaling_uses_one_scale_for_every_magnitude_map(results):
    masks, scales = shown_maps(results, 99.0, "shared", "magnitude")
    pooled = np.concatenate([_maps(a, False, False).ravel() for a in results.values()])
    low, high = pooled.min(), np.percentile(pooled, 99, method="lower")
    for method, result in results.items():
        expected = np.clip((_maps(result, False, False) - low) / (high - low), 0, 1)
        np.testing.assert_allclose(masks[method], expected, atol=1e-6)
    assert len({s.caption for s in scales.values()}) == 1 and "shared by all maps" in scales["vanilla"].caption


def test_signed_shared_scaling_is_symmetric_around_zero(results):
    masks, scales = shown_maps(results, 99.0, "shared", "signed")
    signed = _maps(results["integrated"], False, True)
    bound = np.percentile(np.abs(signed), 99, method="lower")
    np.testing.assert_allclose(masks["integrated"], np.clip(signed / bound, -1, 1), atol=1e-6)
    assert [label for _, label in scales["integrated"].ticks][1] == "0"


def test_colour_bars_are_drawn_under_the_columns_that_have_one():
    maps = np.random.default_rng(0).uniform(0, 1, (2, 16, 16)).astype(np.float32)
    images = np.zeros((2, 16, 16, 3), np.float32)
    bar = ColorBar("viridis", 0.0, 1.0, "per image: 0 = min, 1 = p99 (clipped)", [(0, "min"), (1, "p99")])
    plain = decode(GridRenderer(160).render([Column("image", images), Column("map", maps, "viridis")]))
    barred = decode(GridRenderer(160).render([Column("image", images), Column("map", maps, "viridis", colorbar=bar)]))
    assert barred.shape[0] > plain.shape[0] + 20  # a band for the bar and its caption
    band = barred[plain.shape[0] - 8:]
    strip = colorize(np.linspace(0, 1, 144), "viridis")
    rows = [r for r in band if np.abs(r[8 + 160 + 8 + 8 : 8 + 160 + 8 + 8 + 144].astype(int) - strip).max() <= 2]
    assert rows, "no row of the colour map's gradient under the map column"


def test_maps_are_resampled_smoothly_when_enlarged_and_when_reduced():
    checker = (np.indices((4, 4)).sum(0) % 2).astype(np.float32)[None]  # 4 x 4 -> 160 px: enlarged
    cell = decode(GridRenderer(160).render([Column("m", checker, "gray")]))
    middle = cell[cell.shape[0] - 8 - 160 : cell.shape[0] - 8, 8:168, 0]
    assert len(np.unique(middle)) > 20  # bilinear ramps, not two flat colours
    fine = (np.indices((640, 640)).sum(0) % 2).astype(np.float32)[None]  # 640 px -> 160 px: reduced
    cell = decode(GridRenderer(160).render([Column("m", fine, "gray")]))
    middle = cell[cell.shape[0] - 8 - 160 + 20 : cell.shape[0] - 8 - 20, 28:148, 0].astype(int)
    assert abs(middle.mean() - 128) < 10 and middle.std() < 10  # averaged to grey, no aliasing pattern


def test_pending_columns_show_a_placeholder_or_their_dimmed_last_map():
    maps = np.ones((1, 8, 8), np.float32)
    images = np.zeros((1, 8, 8, 3), np.float32)
    grid = decode(GridRenderer(80).render([Column("image", images), Column("new", None, placeholder="pending"),
                                           Column("old", maps, "gray", faded=True)]))
    bottom = grid.shape[0] - 8 - 40
    assert tuple(grid[bottom, 8 + 80 + 8 + 4]) == (0xEC, 0xEC, 0xEC)  # the placeholder's grey
    dark = decode(GridRenderer(80).render([Column("old", np.zeros((1, 8, 8), np.float32), "gray", faded=True)]))
    assert 150 < dark[dark.shape[0] - 48, 48, 0] < 200  # black at 35 % opacity over white


def test_columns_stay_put_while_a_new_method_computes(images, monkeypatch):
    import salwidget.panel.worker as worker_module
    from salwidget.drawing import render

    monkeypatch.setattr(worker_module, "PREVIEW_INTERVAL_S", 0.0)
    panel = sw.SaliencyWidget(make_torch_cnn(), images, methods=("vanilla", "smoothgrad"), nsamples=4,
                              batch_size=4, confirm_seconds=float("inf"))  # never held for the Compute button
    assert panel.wait(60)
    overlay = panel.overlay_method
    drawn = []
    original = render.GridRenderer.render

    def recording(self, columns, row_titles=None):
        drawn.append([(c.title, c.data is None, c.faded) for c in columns])
        return original(self, columns, row_titles)

    monkeypatch.setattr(render.GridRenderer, "render", recording)
    panel.methods = ("vanilla", "smoothgrad", "integrated")
    panel.nintegration = 64
    assert panel.wait(60)
    assert panel.overlay_method == overlay == "smoothgrad"  # the user's overlay stays put
    while_computing = [d for d in drawn if any("computing" in t or "pending" in t for t, _, _ in d)]
    assert while_computing
    for columns in while_computing:
        titles = [t.split("\n")[0] for t, _, _ in columns]
        assert titles[:3] == ["image", "Gradient", "SmoothGrad (n=4)"] and titles[-1] == "overlay: SmoothGrad"
        assert titles[3].startswith("Integrated Gradients")
    first = while_computing[0]
    assert first[3][1] or "computing" in first[3][0]  # a placeholder or a preview, never missing
    panel.methods = ("vanilla", "integrated")  # the overlay's method went: the last one takes over
    assert panel.overlay_method == "integrated"


def test_signed_view_shows_signed_methods_in_a_diverging_map(images):
    panel = sw.SaliencyWidget(make_torch_cnn(), images, methods=("smoothgrad", "integrated"), nsamples=4,
                              nintegration=4)
    assert panel.wait(60)
    panel.view = "signed"
    assert panel.masks["integrated"].min() < 0 and panel.masks["smoothgrad"].min() >= 0
    np.testing.assert_allclose(panel.masks["integrated"], sw.to_diverging(panel.results["integrated"]), atol=1e-6)
    np.testing.assert_allclose(panel.masks["smoothgrad"], sw.to_grayscale(panel.results["smoothgrad"]), atol=1e-6)


def test_a_cell_can_be_enlarged_at_full_resolution(images):
    panel = sw.SaliencyWidget(make_torch_cnn(), images, methods=("smoothgrad",), nsamples=4)
    assert panel.wait(60)
    assert panel.host.maps_view.cell_box.layout.display == "none"
    labels = [label for label, _ in panel.host.maps_view.enlarge.options]
    assert "image 2: SmoothGrad" in labels
    panel.host.maps_view.enlarge.value = (1, "smoothgrad")
    assert panel.enlarged == (1, "smoothgrad") and panel.host.maps_view.cell_box.layout.display == ""
    cell = decode(bytes(panel.host.maps_view.cell.value))
    assert cell.shape[:2] == (448, 448)  # 16 x 16 map, every pixel enlarged 28 times
    expected = colorize(panel.masks["smoothgrad"][1], "inferno")
    sampled = cell[14::28, 14::28].astype(int)  # the middle of each source pixel
    assert np.abs(sampled - expected).mean() < 6 and np.corrcoef(sampled.ravel(), expected.ravel())[0, 1] > 0.99
    assert "image 2" in panel.host.maps_view.cell_caption.value and "SmoothGrad" in panel.host.maps_view.cell_caption.value
    panel.enlarged = None
    assert panel.host.maps_view.cell_box.layout.display == "none"
