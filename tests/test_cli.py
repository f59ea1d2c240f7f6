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


# ----------------------------------------------------------------- issue 24, item 4: the shell, as a newcomer
PREPROCESS = '''
import numpy as np

seen = []

def preprocess(picture):
    seen.append((picture.shape, picture.dtype))
    return np.asarray(picture[:8, :8], np.float32).transpose(2, 0, 1) / 255
'''


def pictures_of_different_sizes(folder, sizes=((20, 30), (16, 16), (24, 18))):
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def test_preprocess_from_the_shell_is_called_on_each_picture(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinymodel.py").write_text(MODEL)
    (tmp_path / "mypre.py").write_text(PREPROCESS)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = pictures_of_different_sizes(tmp_path / "pictures")
    main(["scan", "--model", "tinymodel:make", "--data", str(data), "--store", str(tmp_path / "store"),
          "--preprocess", "mypre:preprocess"])
    import mypre

    assert sorted(mypre.seen) == sorted([((20, 30, 3), "uint8"), ((16, 16, 3), "uint8"), ((24, 18, 3), "uint8")])
    out = capsys.readouterr().out
    assert "scan: 3 images, no labels" in out and "nan" not in out


def test_the_demo_model_brings_its_own_preprocessing():
    import numpy as np

    factory = models.efficientnet_lite0
    assert factory.preprocess is models.efficientnet_lite0_preprocess
    picture = np.zeros((100, 300, 3), np.uint8)
    picture[:, 100:200] = 255  # the centre square is white; the sides, which the crop drops, black
    made = factory.preprocess(picture)
    assert made.shape == (3, 224, 224) and made.dtype == np.float32
    np.testing.assert_allclose(made, 1.0)
    assert factory.preprocess(np.zeros((7, 5, 3), np.uint8)).shape == (3, 224, 224)


@pytest.mark.parametrize("argv, message, status", [
    (["demo", "--images", "chelseaa"], r"invalid choice: 'chelseaa' \(choose from 'chelsea', 'coffee'", 2),
    (["scan", "--model", "no_such_module:make", "--data", ".", "--store", "s"], r"cannot import 'no_such_module'", 2),
    (["scan", "--model", "salwidget.models", "--data", ".", "--store", "s"], r"--model takes module:name", 2),
    (["attribute-dataset", "--model", "m:f", "--data", ".", "--store", "s", "--methods", "vanila"],
     r"invalid choice: 'vanila'", 2),
    (["attribute-dataset", "--model", "m:f", "--data", ".", "--store", "s", "--methods", "vanilla", "--target", "x"],
     r"'predicted', 'label' or a class index", 2),
])
def test_every_command_line_error_is_one_line_and_an_exit_status(argv, message, status, capsys):
    import re

    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == status
    assert len(err.strip().splitlines()) == 1 and re.search(message, err) and "Traceback" not in err, err


def test_an_error_of_the_run_is_one_line_too(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinymodel.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        main(["scan", "--model", "tinymodel:make", "--data", str(tmp_path / "missing"), "--store", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert exited.value.code == 1 and len(err.strip().splitlines()) == 1 and "missing" in err, err
    with pytest.raises(Exception):  # --traceback: the error itself
        main(["--traceback", "scan", "--model", "tinymodel:make", "--data", str(tmp_path / "missing"),
              "--store", str(tmp_path / "s")])


def test_the_help_keeps_its_example_commands_on_their_own_lines(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for command in ("demo --out grid.png", "scan --model M:F", "attribute-dataset --model M:F"):
        assert sum(f"python -m salwidget {command}" in line for line in lines) == 1, command


def test_the_bars_start_before_the_work_and_advance_per_block(tmp_path, monkeypatch):
    # A bar (progress=True) is made before any work: the rows a store holds are its initial count, not part of
    # its rate (it read 107546 image/s), and the maps bar shows 0/N first, then moves at each block.
    import numpy as np

    from salwidget.dataset import progress as bars

    calls = []

    def recorder(description):
        def progress(done, total):
            calls.append((description, done, total))
        progress.starts = True
        return progress

    monkeypatch.setattr(bars, "progress_bar", recorder)
    (tmp_path / "tinymodel.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tinymodel

    model, names = tinymodel.make()
    x = np.random.default_rng(0).uniform(0, 1, (300, 3, 8, 8)).astype(np.float32)
    with pytest.raises(sw.AttributionCancelled):  # stopped after its first block of 256 rows
        sw.scan(model, x, store=tmp_path / "first", progress=True, cancel=lambda: len(calls) >= 2)
    assert calls == [("scan", 0, 300), ("scan", 256, 300)]
    calls.clear()
    scanned = sw.scan(model, x, store=tmp_path / "first", progress=True)  # 256 rows stored: the bar's initial
    assert calls == [("scan", 256, 300), ("scan", 300, 300)]
    calls.clear()
    job = sw.attribute_dataset(model, scanned, ["vanilla"], curve_steps=2, progress=True)
    assert calls == [("maps", 0, 300), ("maps", 256, 300), ("maps", 300, 300)] and job.calls == 2
    calls.clear()
    sw.scan(model, x, store=tmp_path / "first", progress=True)  # all stored: no bar at all
    assert calls == []


def test_a_bar_counts_stored_rows_as_its_initial_not_in_its_rate():
    from salwidget.dataset.progress import progress_bar, start

    import tqdm.auto

    made = []
    original = tqdm.auto.tqdm
    try:
        tqdm.auto.tqdm = lambda **kwargs: made.append(kwargs) or original(**kwargs)
        bar = progress_bar("scan")
        start(bar, 256, 300)
    finally:
        tqdm.auto.tqdm = original
    bar(300, 300)
    assert made == [dict(total=300, initial=256, desc="scan", unit="image")]
