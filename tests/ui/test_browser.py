"""The panel in a real browser: the quickstart in JupyterLab, then under Voila.

Screenshots of every step go to artifacts/ui/ (docs/panel.png is one of them).
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GRID = "img.salwidget-grid"
LONG = 240_000  # ms: the quickstart computes on two CPU cores


def pixels(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def grid_src(page) -> str:
    return page.locator(GRID).first.get_attribute("src") or ""


def wait_until(predicate, timeout_s: float = 120, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError("condition not met in time")


def status(page) -> str:
    return page.locator(".salwidget-status").first.inner_text()


def assert_grid_not_blank(page, path) -> np.ndarray:
    png = page.locator(GRID).first.screenshot(path=str(path))
    picture = pixels(png)
    assert picture.shape[0] > 200 and picture.shape[1] > 600, picture.shape
    assert picture[..., :3].std() > 0.1  # heatmaps and photos, not a flat box
    return picture


def type_into_slider(page, control: str, value: int) -> None:
    """Type a value into a slider's readout, as a user would, and press Enter."""
    page.locator(f".salwidget-{control} .widget-readout").first.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")


def run_cell(page, source: str) -> None:
    page.evaluate(
        """async (source) => {
            const app = window.jupyterapp;
            const panel = app.shell.currentWidget;
            panel.content.activeCellIndex = panel.content.widgets.length - 1;
            await app.commands.execute('notebook:insert-cell-below');
            panel.content.activeCell.model.sharedModel.setSource(source);
            await app.commands.execute('notebook:run-cell');
        }""",
        source,
    )


def test_quickstart_panel_in_jupyterlab(page, lab_url, screenshots):
    page.goto(f"{lab_url}/lab/tree/quickstart.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=LONG)
    page.wait_for_function(
        """() => {
            const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const kernel = widget && widget.sessionContext && widget.sessionContext.session
                && widget.sessionContext.session.kernel;
            return kernel && kernel.status === 'idle';
        }""",
        timeout=LONG,
    )
    # The saved outputs (static snapshot included) go first, so what follows is live.
    page.evaluate("window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    last_output = page.locator(".jp-OutputArea-output pre", has_text="kernel peak memory")
    wait_until(lambda: last_output.count() == 0, 60)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    last_output.first.wait_for(timeout=LONG)
    no_news = page.get_by_role("button", name="No")
    if no_news.count():
        no_news.first.click()
    page.locator(".salwidget-panel").first.scroll_into_view_if_needed()

    # 1. The grid appears and is not blank.
    page.wait_for_selector(GRID, timeout=LONG)
    wait_until(lambda: status(page).startswith("done"))
    assert_grid_not_blank(page, screenshots / "01-lab-panel-grid.png")
    page.locator(".salwidget-panel").first.screenshot(path=str(screenshots / "01-lab-panel.png"))

    # 2. Another method: toggle SmoothGrad + IG on; the image changes, the status names it.
    before = grid_src(page)
    type_into_slider(page, "nintegration", 4)
    wait_until(lambda: status(page).startswith("done") and grid_src(page) != before)
    before = grid_src(page)
    page.locator(".salwidget-method-smooth_integrated").first.click()
    wait_until(lambda: "smooth_integrated" in status(page) and status(page).startswith("done"), 180)
    assert grid_src(page) != before
    page.locator(".salwidget-panel").first.screenshot(path=str(screenshots / "02-lab-another-method.png"))

    # 3. More SmoothGrad samples: the progress bar moves and previews refine the image.
    before = grid_src(page)
    type_into_slider(page, "nsamples", 40)
    widths, sources = set(), set()

    def watch(until):
        def poll():
            widths.add(page.locator(".salwidget-progress .progress-bar").first.evaluate("e => e.style.width"))
            sources.add(grid_src(page))
            return until()
        return poll

    wait_until(watch(lambda: "passes" in status(page)), 60, 0.05)  # computing: "smoothgrad: 20 samples, ..."
    wait_until(watch(lambda: status(page).startswith("done")), 240, 0.05)
    partial = {w for w in widths if w not in ("0%", "100%", "")}
    assert partial, f"no intermediate progress seen: {widths}"
    assert len(sources - {before}) >= 2, "no preview before the final image"
    page.locator(".salwidget-panel").first.screenshot(path=str(screenshots / "03-lab-more-samples.png"))

    # 4. Another target class from the dropdown: the titles (in the image) change.
    before = grid_src(page)
    select = page.locator(".salwidget-target select").first
    options = select.locator("option").all_inner_texts()
    current = select.evaluate("e => e.selectedIndex")
    choice = next(i for i in range(1, len(options)) if i != current)
    select.select_option(index=choice)
    wait_until(lambda: status(page).startswith("done") and grid_src(page) != before, 240)
    page.locator(".salwidget-panel").first.screenshot(path=str(screenshots / "04-lab-other-target.png"))

    # 5. An error from Python shows in the panel; the panel recovers.
    run_cell(page, "w.target = 5000")
    error = page.locator(".salwidget-error").first
    wait_until(lambda: "out of range" in error.inner_text(), 60)
    page.locator(".salwidget-panel").first.screenshot(path=str(screenshots / "05-lab-error.png"))
    run_cell(page, "w.target = 'predicted'")
    wait_until(lambda: not error.is_visible() and status(page).startswith("done"), 120)
    page.locator(".salwidget-panel").first.screenshot(path=str(screenshots / "06-lab-recovered.png"))


def test_quickstart_panel_under_voila(page, voila_url, screenshots):
    page.goto(voila_url, timeout=LONG)
    page.wait_for_selector(GRID, timeout=LONG)
    wait_until(lambda: status(page).startswith("done"), 240)
    assert_grid_not_blank(page, screenshots / "07-voila-grid.png")
    # The notebook's own cells ran: the panel explains "tiger cat".
    selected = page.locator(".salwidget-target select").first.evaluate("e => e.options[e.selectedIndex].text")
    assert "tiger cat" in selected.replace("\xa0", " ")  # the browser pads option labels with nbsp
    before = grid_src(page)
    page.locator(".salwidget-method-vanilla").first.click()  # one method fewer: redrawn from cache
    wait_until(lambda: grid_src(page) != before and status(page).startswith("done"), 120)
    assert "vanilla" not in status(page)
    page.screenshot(path=str(screenshots / "08-voila-page.png"), full_page=True)
