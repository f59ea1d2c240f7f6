"""The panel in a real browser: the quickstart in JupyterLab, the app under Voila, at 900 and 1900 px.

Checked as a user meets it: every control wide enough to use, no "null" tooltip, colour bars in the
grid, the Stop button cancelling a long run, the PNG download, the class search, the Evaluate view's
curves, an uploaded picture in the grid. Screenshots of every step go to artifacts/ui/ (docs/panel.png is one of them).
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest

from salwidget.drawing.render import colorize

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PANEL = ".salwidget-panel"
GRID = "img.salwidget-grid"
EVALUATION = "img.salwidget-evaluation"
LONG = 240_000  # ms: the demo model computes on two CPU cores
WIDTHS = (900, 1900)


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def wait_until(predicate, timeout_s: float = 120, interval_s: float = 0.2, page=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    seen = f"; status: {status(page)!r}" if page is not None else ""
    raise AssertionError(f"condition not met in {timeout_s} s{seen}")


def status(page) -> str:
    return page.locator(".salwidget-status").first.inner_text()


def grid_png(page, selector: str = GRID) -> bytes:
    """The bitmap the grid's (or another) <img> shows (its blob URL read back)."""
    encoded = page.evaluate(
        """async (selector) => {
            const blob = await (await fetch(document.querySelector(selector).src)).blob();
            return await new Promise(done => {
                const reader = new FileReader();
                reader.onload = () => done(reader.result.split(',')[1]);
                reader.readAsDataURL(blob);
            });
        }""",
        selector,
    )
    return base64.b64decode(encoded)


def colour_bars(picture: np.ndarray, cmap: str) -> int:
    """How many colour bars of ``cmap`` one row of the grid's bottom band crosses."""
    lut = colorize(np.linspace(0, 1, 256), cmap).astype(int)
    best = 0
    for row in picture[-90:].astype(int):
        distance = ((row[:, None, :] - lut[None]) ** 2).sum(-1)
        index, close = distance.argmin(1), distance.min(1) < 40
        count, start = 0, None
        for x in range(len(row) + 1):
            inside = x < len(row) and close[x] and (start is None or index[x] >= index[x - 1] - 3)
            if inside:
                start = x if start is None else start
                continue
            if start is not None and x - start >= 100 and index[x - 1] - index[start] > 200:
                count += 1
            start = x if x < len(row) and close[x] else None
        best = max(best, count)
    return best


def check_panel_at(page, width: int, screenshot) -> None:
    """At this width: every control usable, nothing sticking out, no 'null' tooltip, a title on each control."""
    page.set_viewport_size({"width": width, "height": 1600})  # the whole panel in view for its screenshot
    page.wait_for_timeout(600)
    problems = page.evaluate(
        """(selector) => {
            const panel = document.querySelector(selector);
            const right = panel.getBoundingClientRect().right + 1;
            const shown = e => e.offsetParent !== null && e.getBoundingClientRect().width > 0;
            const out = [];
            const named = e => [...e.classList].find(c => c.startsWith('salwidget-')) || e.className;
            for (const e of panel.querySelectorAll('.slider-container')) {
                if (shown(e) && e.getBoundingClientRect().width < 100)
                    out.push(`slider track ${Math.round(e.getBoundingClientRect().width)} px in ${named(e.closest('.widget-slider'))}`);
            }
            for (const e of panel.querySelectorAll('select, input[type=text], .widget-button, .widget-toggle-button')) {
                const w = e.getBoundingClientRect().width;
                if (shown(e) && w < 40) out.push(`${e.tagName} ${Math.round(w)} px wide`);
            }
            const textWidth = e => { const r = document.createRange(); r.selectNodeContents(e); return r.getBoundingClientRect().width; };
            for (const e of panel.querySelectorAll('.widget-label, .widget-button, .widget-toggle-button, .widget-upload')) {
                const style = getComputedStyle(e);
                const room = e.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
                if (shown(e) && e.innerText && (e.scrollWidth > e.clientWidth + 1 || textWidth(e) > room + 1))
                    out.push(`text cut in ${named(e.closest('[class*=salwidget-]') || e)}: ${e.innerText}`);
            }
            for (const e of panel.querySelectorAll('[class*="salwidget-"]')) {
                if (!shown(e) || e.closest('.salwidget-grid') || e.classList.contains('salwidget-grid')) continue;
                if (e.getBoundingClientRect().right > right) out.push(`${named(e)} sticks out of the panel`);
            }
            // Every control shows a tooltip: on itself, or on its label (a slider's description, a field's label).
            for (const e of panel.querySelectorAll('select, input, button, .slider-container')) {
                if (!shown(e) || e.type === 'file') continue;
                const owner = e.closest('.salwidget-field') || e.closest('.widget-inline-hbox') || e;
                const titled = e.title || owner.title || owner.querySelector('[title]:not([title=""])');
                if (!titled) out.push(`${named(owner)} has no tooltip`);
            }
            if (document.querySelectorAll('[title="null"]').length) out.push('a "null" tooltip');
            return out;
        }""",
        PANEL,
    )
    page.locator(PANEL).first.screenshot(path=str(screenshot))
    assert not problems, problems


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


def open_quickstart(page, lab_url) -> None:
    open_notebook(page, lab_url, "quickstart.ipynb")
    # The saved outputs (static snapshot included) go first, so what follows is live.
    page.evaluate("window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    last_output = page.locator(".jp-OutputArea-output pre", has_text="kernel peak memory")
    wait_until(lambda: last_output.count() == 0, 60)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    last_output.first.wait_for(timeout=LONG)
    no_news = page.get_by_role("button", name="No")
    if no_news.count():
        no_news.first.click()


def test_quickstart_panel_in_jupyterlab(page, lab_url, screenshots, tmp_path):
    open_quickstart(page, lab_url)
    page.locator(PANEL).first.scroll_into_view_if_needed()
    wait_until(lambda: status(page).startswith("Done"), 240)

    # 1. Usable at both widths; the grid carries a colour bar per method column.
    for width in WIDTHS:
        check_panel_at(page, width, screenshots / f"01-lab-panel-{width}.png")
    picture = pixels(grid_png(page))
    assert picture.shape[0] > 400 and picture[..., :3].std() > 20
    assert colour_bars(picture, "viridis") == 2  # Gradient, SmoothGrad (IG is signed: a diverging bar)
    assert colour_bars(picture, "RdBu_r") == 1
    # At 1000 px with the file browser open the notebook is ~570 px wide: the grid shrinks to 160 px a cell, never
    # less (at ~90 px its titles and colour-bar labels could not be read), and its box scrolls sideways.
    page.set_viewport_size({"width": 1000, "height": 1400})
    page.evaluate("window.jupyterapp.commands.execute('filebrowser:activate')")
    page.wait_for_timeout(800)
    fit = page.evaluate(
        """(selector) => {
            const img = document.querySelector(selector), r = img.getBoundingClientRect();
            const scroller = img.parentElement, box = scroller.getBoundingClientRect();
            const output = img.closest('.jp-OutputArea-output').getBoundingClientRect();
            const panel = img.closest('.salwidget-panel').getBoundingClientRect();
            return {width: r.width, natural: img.naturalWidth, boxLeft: box.left, boxRight: box.right,
                    outLeft: output.left, outRight: output.right, above: r.top - panel.top,
                    scrolls: scroller.scrollWidth > scroller.clientWidth + 1};
        }""",
        GRID,
    )
    assert fit["outLeft"] - 1 <= fit["boxLeft"] and fit["boxRight"] <= fit["outRight"] + 1, fit  # the box fits
    assert fit["width"] >= 0.8 * fit["natural"] - 2, fit  # 160 of the quickstart's 200 px per cell at least
    assert fit["width"] < fit["natural"] and fit["scrolls"], fit  # shrunk as far as that, then scrolled
    # The controls above the grid: the methods, their options, the target and the run's row; the look is below
    # the grid (above it, its six lines pushed the grid's top to about 670 px below the panel's).
    print("grid top below the panel's top at 1000 px:", fit["above"])
    assert fit["above"] < 560, fit
    page.screenshot(path=str(screenshots / "01-lab-sidebar-1000.png"))
    page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")

    # 2. A long run waits for Compute with its estimate; Stop cancels it.
    run_cell(page, "w.confirm_seconds = 1.0")  # 'long' on any machine
    type_into_slider(page, "option-smoothgrad-nsamples", 200)
    wait_until(lambda: "press Compute" in status(page), 60)
    page.locator(PANEL).first.screenshot(path=str(screenshots / "02-lab-estimate.png"))
    page.locator(".salwidget-compute").first.click()
    wait_until(lambda: status(page).startswith("Computing SmoothGrad"), 60)
    page.locator(".salwidget-stop").first.click()
    wait_until(lambda: status(page).startswith("Stopped"), 30)
    page.locator(PANEL).first.screenshot(path=str(screenshots / "03-lab-stopped.png"))
    type_into_slider(page, "option-smoothgrad-nsamples", 16)  # back to the cached maps
    wait_until(lambda: status(page).startswith("Done"), 120, page=page)
    run_cell(page, "w.confirm_seconds = 600.0")

    # 3. The PNG download is the grid.
    with page.expect_download() as download:
        page.locator("a.salwidget-download-png").first.click()
    saved = download.value.path().read_bytes()
    assert saved[:8] == b"\x89PNG\r\n\x1a\n" and pixels(saved).shape == picture.shape

    # 4. The class search: Enter on a full name explains that class; the target list follows.
    before = grid_png(page)
    search = page.locator(".salwidget-class-search input").first
    search.fill("goldfish")
    search.press("Enter")
    search.press("Tab")  # leaving the box commits too, should the suggestion list have taken the Enter
    target = page.locator(".salwidget-target select").first
    wait_until(lambda: "goldfish" in target.evaluate("e => e.options[e.selectedIndex].text"), 30, page=page)
    wait_until(lambda: status(page).startswith("Done") and grid_png(page) != before, 240, page=page)
    page.locator(PANEL).first.screenshot(path=str(screenshots / "04-lab-search.png"))

    # 5. A value the panel cannot honour, from Python: refused in the cell, the panel goes on.
    run_cell(page, "w.target = 5000")
    page.locator(".jp-OutputArea-output", has_text="TraitError").first.wait_for(timeout=60_000)
    assert status(page).startswith("Done")

    # 6. The Evaluate view takes the grid's place: the shown maps' curves (8 steps keep it short) in a
    #    non-blank picture, usable at both widths.
    run_cell(page, "w.curve_steps = 8")
    page.locator(".salwidget-pane button", has_text="Evaluate").first.click()
    wait_until(lambda: status(page).startswith("Evaluated"), 120, page=page)
    assert page.locator(GRID).first.is_hidden()
    evaluation = pixels(grid_png(page, EVALUATION))
    assert evaluation.shape[1] >= 800 and evaluation.std() > 20
    for width in WIDTHS:
        check_panel_at(page, width, screenshots / f"07-lab-evaluate-{width}.png")


def test_app_under_voila(page, voila_url, screenshots, tmp_path):
    page.goto(voila_url, timeout=LONG)
    page.wait_for_selector(GRID, timeout=LONG)
    wait_until(lambda: status(page).startswith("Done"), 240)
    for width in WIDTHS:
        check_panel_at(page, width, screenshots / f"05-voila-panel-{width}.png")
    picture = pixels(grid_png(page))
    assert colour_bars(picture, "inferno") == 3  # Gradient, SmoothGrad, Integrated Gradients (magnitude view)

    # An uploaded picture appears in the grid, as a third row.
    from PIL import Image

    upload = tmp_path / "red-square.png"
    Image.new("RGB", (300, 200), (220, 30, 30)).save(upload)
    with page.expect_file_chooser() as chooser:  # the button opens a file chooser, as for a user
        page.locator(".salwidget-upload").first.click()
    chooser.value.set_files(str(upload))
    wait_until(lambda: status(page).startswith("Computing") or status(page).startswith("Done"), 60)
    wait_until(lambda: status(page).startswith("Done") and pixels(grid_png(page)).shape[0] > picture.shape[0], 240)
    grown = pixels(grid_png(page))
    assert colour_bars(grown, "inferno") == 3  # the finished grid: its colour bars (pending columns have none)
    rows = grown.shape[0] - picture.shape[0]
    assert 200 < rows < 300  # one more row of 200 px cells and its titles
    red = grown[picture.shape[0] - 60 : picture.shape[0] + rows - 60, 8:208]
    assert ((red[..., 0] > 180) & (red[..., 1] < 80)).mean() > 0.5  # the uploaded picture, in the image column
    page.screenshot(path=str(screenshots / "06-voila-upload.png"), full_page=True)


def click_in_picture(page, panel, selector: str, box) -> None:
    """Click the centre of ``box`` (left, top, right, bottom in the picture's own pixels) on a scaled <img>."""
    image = panel.locator(selector).first
    # A redrawn picture is a new blob: until it has loaded its natural width reads 0.
    natural = wait_until(lambda: image.evaluate("e => e.complete && e.naturalWidth"), 60, page=page)
    rect = image.bounding_box()
    scale = rect["width"] / natural
    left, top, right, bottom = box
    page.mouse.click(rect["x"] + (left + right) / 2 * scale, rect["y"] + (top + bottom) / 2 * scale)


def open_notebook(page, lab_url: str, name: str) -> None:
    """Open a notebook of the lab's copy and wait until it is the current tab and its kernel is idle.

    The lab restores the tabs an earlier test opened, so waiting for "a cell" could find a hidden
    notebook's cells: the wait names the notebook.
    """
    page.goto(f"{lab_url}/lab/tree/{name}")
    page.wait_for_function(
        """(name) => {
            const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const opened = widget && widget.context && widget.context.path === name
                && widget.content && widget.content.widgets && widget.content.widgets.length > 0;
            const kernel = opened && widget.sessionContext && widget.sessionContext.session
                && widget.sessionContext.session.kernel;
            return kernel && kernel.status === 'idle';
        }""",
        arg=name,
        timeout=LONG,
    )


def printed(page, marker: str) -> str:
    """The text a cell printed after ``marker`` (the cell prints ``marker`` then JSON)."""
    output = page.locator(".jp-OutputArea-output pre", has_text=marker).last
    output.wait_for(timeout=60_000)
    return output.inner_text().split(marker, 1)[1].strip()


def test_dataset_view_in_jupyterlab(page, lab_url, screenshots):
    """Filter, click a confusion cell, pick thumbnails, explain them: the digits of notebooks/dataset.ipynb."""
    import json

    open_notebook(page, lab_url, "dataset.ipynb")
    page.evaluate("window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.locator(".jp-OutputArea-output pre", has_text="golf ball").first.wait_for(timeout=LONG)
    no_news = page.get_by_role("button", name="No")
    if no_news.count():
        no_news.first.click()
    run_cell(page, "t = sw.SaliencyWidget(model, scan, methods=('vanilla',))\nt")
    panel = page.locator(PANEL).last
    panel.scroll_into_view_if_needed()
    page_label = panel.locator(".salwidget-dataset-page").first
    wait_until(lambda: "of 1,797 images shown" in page_label.inner_text(), 120, page=page)

    # 1. A filter: the wrong predictions only.
    panel.locator(".salwidget-filter-correct button", has_text="wrong").first.click()
    wait_until(lambda: page_label.inner_text().startswith("20 of 1,797 images shown"), 60, page=page)
    panel.screenshot(path=str(screenshots / "08-lab-dataset-wrong.png"))

    # 2. A confusion cell: true 8, predicted 1 (3 digits in the notebook's scan).
    run_cell(page, "import json\nprint('CELL', json.dumps([b for b, v in t.host.dataset_view.matrix.boxes if v == (8, 1)][0]))")
    click_in_picture(page, panel, "img.salwidget-confusion", json.loads(printed(page, "CELL")))
    wait_until(lambda: page_label.inner_text().startswith("3 of 1,797 images shown"), 60, page=page)

    # 3. Pick two thumbnails by clicking them, then explain them in the Maps view.
    run_cell(page, "print('THUMBS', json.dumps(t.host.dataset_view.thumbs.boxes[:2]))")
    thumbs = json.loads(printed(page, "THUMBS"))
    for box, _ in thumbs:
        click_in_picture(page, panel, "img.salwidget-thumbnails", box)
    explain = panel.locator(".salwidget-explain-selected").first
    wait_until(lambda: "Explain selected (2)" in explain.inner_text(), 30, page=page)
    panel.screenshot(path=str(screenshots / "09-lab-dataset-picked.png"))
    explain.click()
    own_status = panel.locator(".salwidget-status").first
    wait_until(lambda: panel.locator(GRID).first.is_visible() and own_status.inner_text().startswith("Done"), 240,
               page=page)
    run_cell(page, "print('SELECTED', json.dumps(t.selection))")
    assert json.loads(printed(page, "SELECTED")) == sorted(row for _, row in thumbs)
    panel.screenshot(path=str(screenshots / "10-lab-dataset-explained.png"))


SEGMENTATION_PANEL = '''
import json
import numpy as np, torch
import salwidget as sw
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)).eval()  # each pixel's class: its strongest colour
with torch.no_grad():
    net[0].weight.copy_(torch.eye(3)[:, :, None, None]); net[0].bias.zero_()
x = np.zeros((2, 3, 32, 32), np.float32)
x[:, 0, :, :16] = 0.9   # left half red (class 0)
x[:, 1, :, 16:] = 0.9   # right half green (class 1)
x[1, 1, :, 8:16] = 0.9; x[1, 0, :, 8:16] = 0.0   # image 2: mostly green
seg = sw.SaliencyWidget(net, x, methods=("vanilla",), class_names=["red", "green", "blue"])
seg
'''


def test_a_click_on_a_segmentation_picture_explains_that_region(page, lab_url, screenshots):
    """Dense outputs: clicking the green half of image 1 sets its region (class green), and the maps follow."""
    import json

    open_notebook(page, lab_url, "saliencynet_api.ipynb")
    no_news = page.get_by_role("button", name="No")
    if no_news.count():
        no_news.first.click()
    run_cell(page, SEGMENTATION_PANEL)
    panel = page.locator(PANEL).last
    own_status = panel.locator(".salwidget-status").first
    wait_until(lambda: own_status.inner_text().startswith("Done"), 120, page=page)
    run_cell(page, "cell = next(i for i in seg.host.maps_view.view.layout.items if i.kind == 'cell' and i.column == 0 and i.row == 0)\n"
                   "print('CELL', json.dumps([cell.left + 0.8 * cell.width, cell.top + 0.5 * cell.height]))")
    x, y = json.loads(printed(page, "CELL"))
    image = panel.locator(GRID).first
    image.scroll_into_view_if_needed()
    rect = image.bounding_box()
    scale = rect["width"] / image.evaluate("e => e.naturalWidth")
    page.mouse.click(rect["x"] + x * scale, rect["y"] + y * scale)
    run_cell(page, "seg.wait()\nprint('REGION', json.dumps({i: [k, int(m.sum())] for i, (k, m) in seg.regions.items()}))")
    assert json.loads(printed(page, "REGION")) == {"0": [1, 512]}  # green, its 32 x 16 pixels
    wait_until(lambda: own_status.inner_text().startswith("Done"), 120, page=page)
    panel.screenshot(path=str(screenshots / "11-lab-segmentation-click.png"))
