"""The command line: `python -m salwidget demo` draws the quickstart's panel as it first shows."""

from __future__ import annotations

import ipywidgets
import pytest

import salwidget as sw
from salwidget import models
from salwidget.__main__ import main


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


def test_the_demo_renders_the_quickstarts_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    main(["demo", "--out", str(out), "--images", "chelsea"])
    printed = capsys.readouterr().out
    assert "chelsea: " in printed and f"wrote {out}" in printed
    # The quickstart's panel on the same picture, built as its cell builds it.
    model, class_names = models.efficientnet_lite0()
    pictures = models.sample_images(["chelsea"])
    panel = sw.SaliencyWidget(model, pictures.transpose(0, 3, 1, 2), class_names=class_names, display_images=pictures)
    assert panel.wait(300)
    assert panel.methods == ("vanilla", "smoothgrad", "integrated")
    assert out.read_bytes() == panel.to_png()
