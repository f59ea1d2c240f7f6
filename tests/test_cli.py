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


MODEL = '''
import torch

def make():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    return net, ["cat", "dog"]
'''


def test_a_dataset_job_from_the_shell_stores_what_the_python_call_would(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image

    (tmp_path / "tinymodel.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    for i in range(6):
        folder = tmp_path / "data" / ["cat", "dog"][i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    main(["attribute-dataset", "--model", "tinymodel:make", "--data", str(tmp_path / "data"), "--store",
          str(tmp_path / "store"), "--methods", "vanilla", "gradcam", "--option", "gradcam.layer=0",
          "--curve-steps", "4"])
    out = capsys.readouterr()
    assert "scan: 6 images" in out.out and "vanilla, gradcam: 2 blocks computed" in out.out
    import tinymodel

    model, names = tinymodel.make()
    expected = sw.attribute_dataset(model, str(tmp_path / "data"), ["vanilla", "gradcam"], store=tmp_path / "again",
                                    class_names=names, options={"gradcam": {"layer": "0"}}, curve_steps=4)
    stored = sw.scan(model, str(tmp_path / "data"), class_names=names, store=tmp_path / "store")
    assert stored.calls == 0  # the shell's scan is in the store
    columns = ["vanilla_deletion_auc", "gradcam_insertion_auc", "gradcam_vs_vanilla_spearman"]
    np.testing.assert_allclose(stored.table[columns].to_numpy(), expected.table[columns].to_numpy(), rtol=1e-5)
