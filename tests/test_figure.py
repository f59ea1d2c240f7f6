"""The grid as a matplotlib figure: the same layout as the panel's picture, the same maps, savefig to PDF/SVG."""

from __future__ import annotations

import io

import ipywidgets
import numpy as np
import pytest

import salwidget as sw
from salwidget.errors import SaliencyError
from salwidget.drawing.figure import grid_figure
from salwidget.drawing.render import ColorBar, Column, GridRenderer, grid_layout

from .helpers import make_torch_cnn


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(3, 3, 16, 16)).astype(np.float32)
    model = make_torch_cnn()
    results = {m: sw.attribute(model, x, m, seed=0, nsamples=4) for m in ("vanilla", "integrated")}
    return model, x, results


def raster(figure) -> np.ndarray:
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(np.int16)


def shown_arrays(figure) -> list[np.ndarray]:
    """The arrays the figure's cells show, in drawing order."""
    return [np.asarray(ax.images[0].get_array()) for ax in figure.axes if ax.images]


def test_plot_grid_shows_the_panels_maps_and_titles(case):
    _, x, results = case
    figure = sw.plot_grid(results, x, row_titles=["a", "b", "c"])
    arrays = shown_arrays(figure)
    # image column (3 rows), then each method's 3 maps, column by column (the layout's order)
    assert len(arrays) == 9
    np.testing.assert_allclose(arrays[0], x[0].transpose(1, 2, 0))
    for k, method in enumerate(results):
        expected = sw.to_grayscale(results[method])
        for row in range(3):
            np.testing.assert_array_equal(arrays[3 + 3 * k + row], expected[row])
    texts = [t.get_text() for t in figure.texts]
    assert {"a", "b", "c", "vanilla", "integrated"} <= set(texts)
    assert "per image: 0 = min, 1 = p99 (clipped)" in [t.replace("\n", " ") for t in texts]  # wrapped as the panel wraps


def test_the_figure_and_the_panel_picture_put_every_cell_in_the_same_place():
    rng = np.random.default_rng(0)
    cell = 40
    maps = rng.random((2, cell, cell)).astype(np.float32)  # one map pixel per layout pixel: no resampling
    bar = ColorBar("viridis", 0, 1, "caption", [(0, "0"), (1, "1")])
    columns = [Column("first", maps, "viridis", colorbar=bar), Column("second", maps[::-1].copy(), "gray")]
    layout = grid_layout(columns, None, cell)
    pillow = np.asarray(GridRenderer(cell).paint(layout)).astype(np.int16)
    drawn = raster(grid_figure(layout, dpi=100))
    assert drawn.shape == pillow.shape
    for item in (i for i in layout.items if i.kind == "cell"):
        top, left = int(item.top), int(item.left)
        inner = (slice(top + 2, top + cell - 2), slice(left + 2, left + cell - 2))  # edges may round apart
        assert np.abs(drawn[inner] - pillow[inner]).mean() < 6
        # and a map drawn one row lower would not match: the comparison can fail
        shifted = (slice(top + 6, top + cell + 2), slice(left + 2, left + cell - 2))
        assert np.abs(drawn[shifted] - pillow[inner]).mean() > 20


def test_signed_view_overlay_and_savefig(case, tmp_path):
    _, x, results = case
    figure = sw.plot_grid(list(results.values()), x, view="signed", overlay=1)
    arrays = shown_arrays(figure)
    np.testing.assert_array_equal(arrays[6], sw.to_diverging(results["integrated"])[0])
    texts = [t.get_text() for t in figure.texts]
    assert any(t.startswith("overlay: Integrated Gradients") for t in texts)
    for suffix in ("pdf", "svg"):
        figure.savefig(tmp_path / f"grid.{suffix}")
        assert (tmp_path / f"grid.{suffix}").stat().st_size > 1000


def test_plot_grid_without_images_draws_only_the_maps(case):
    _, _, results = case
    arrays = shown_arrays(sw.plot_grid(results["vanilla"]))
    assert len(arrays) == 3
    np.testing.assert_array_equal(arrays[0], sw.to_grayscale(results["vanilla"])[0])


@pytest.mark.parametrize("call, words", [
    (lambda r, x: sw.plot_grid({"a": r["vanilla"]}, x[:2]), "must be 3 pictures"),
    (lambda r, x: sw.plot_grid(r, x, overlay="smoothgrad"), "names no column"),
    (lambda r, x: sw.plot_grid(r, x, row_titles=["one"]), "1 titles for 3 images"),
    (lambda r, x: sw.plot_grid([r["vanilla"], "not a result"], x), "takes an Attribution"),
])
def test_plot_grid_bad_input_says_what_to_pass(case, call, words):
    _, x, results = case
    with pytest.raises(SaliencyError, match=words):
        call(results, x)


def test_the_panels_figure_is_its_grid_and_its_evaluate_view(case):
    model, x, _ = case
    panel = sw.SaliencyWidget(model, x, methods=("vanilla", "smoothgrad"), nsamples=3, seed=0)
    assert panel.wait(60)
    figure = panel.figure()
    arrays = shown_arrays(figure)
    np.testing.assert_array_equal(arrays[3], panel.masks["vanilla"][0])
    np.testing.assert_array_equal(arrays[6], panel.masks["smoothgrad"][0])
    titles = {t.get_text() for t in figure.texts}
    assert "Gradient" in titles and "SmoothGrad (n=3)" in titles
    panel.curve_steps = 4
    panel.evaluate()
    assert panel.wait(120)
    plots = panel.figure()
    axes = {ax.get_title().split(":")[0].lower(): ax for ax in plots.axes if ax.get_title()}
    deletion = panel.curves["vanilla"].deletion.mean(axis=0)
    assert any(np.allclose(line.get_ydata(), deletion) for line in axes["deletion"].lines)
    assert "insertion" in axes
    buffer = io.BytesIO()
    plots.savefig(buffer, format="svg")
    assert b"<svg" in buffer.getvalue()[:500]
