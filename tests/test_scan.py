"""sw.scan: every image's prediction, from every kind of source, against a plain prediction loop; the store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.dataset.pictures import THUMBNAIL_PX
from salwidget.dataset.store import CHUNK_ROWS
from salwidget.errors import SaliencyError

from .helpers import PassGate, keras_twin, make_torch_cnn

N = 300  # more than one block of CHUNK_ROWS rows


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, size=(N, 3, 16, 16)).astype(np.float32)
    x[::7] *= 0.3
    return x, rng.integers(0, 5, N)


def plain_loop(model, x, labels):
    """What one writes by hand: logits in batches, softmax, the columns."""
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i : i + 64])) for i in range(0, len(x), 64)])
    p = torch.softmax(logits.double(), 1).numpy()
    top = np.argsort(-p, 1, kind="stable")[:, :5]
    loss = torch.nn.functional.cross_entropy(logits.double(), torch.from_numpy(labels), reduction="none").numpy()
    return dict(predicted=p.argmax(1), probability=p.max(1), top=top, top_p=np.take_along_axis(p, top, 1),
                loss=loss, margin=np.sort(p, 1)[:, -1] - np.sort(p, 1)[:, -2], entropy=-(p * np.log(p)).sum(1))


def assert_matches_plain_loop(result, expected, labels):
    table = result.table
    assert list(table.index) == list(range(len(labels)))
    assert list(table.columns) == ["label", "label_name", "predicted", "predicted_name", "probability",
                                   "top5_classes", "top5_probabilities", "correct", "finite", "loss", "margin",
                                   "entropy"]
    assert table["finite"].all()
    np.testing.assert_array_equal(table["label"], labels)
    np.testing.assert_array_equal(table["predicted"], expected["predicted"])
    np.testing.assert_allclose(table["probability"], expected["probability"], rtol=1e-5)
    np.testing.assert_array_equal(np.stack(table["top5_classes"]), expected["top"])
    np.testing.assert_allclose(np.stack(table["top5_probabilities"]), expected["top_p"], rtol=1e-5)
    np.testing.assert_allclose(table["loss"], expected["loss"], rtol=1e-5)
    np.testing.assert_allclose(table["margin"], expected["margin"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(table["entropy"], expected["entropy"], rtol=1e-5)
    np.testing.assert_array_equal(table["correct"], expected["predicted"] == labels)
    assert result.accuracy == pytest.approx(np.mean(expected["predicted"] == labels))
    counts = np.zeros((5, 5), int)
    np.add.at(counts, (labels, expected["predicted"]), 1)
    np.testing.assert_array_equal(result.confusion(), counts)


# ----------------------------------------------------------------- sources
def test_an_array_scan_equals_a_plain_prediction_loop(data):
    x, labels = data
    model = make_torch_cnn()
    result = sw.scan(model, x, labels, class_names=list("abcde"), batch_size=32)
    assert_matches_plain_loop(result, plain_loop(model, x, labels), labels)
    assert list(result.table["predicted_name"][:3]) == ["abcde"[c] for c in result.table["predicted"][:3]]
    assert result.calls == -(-CHUNK_ROWS // 32) + -(-(N - CHUNK_ROWS) // 32) and result.errors == []
    np.testing.assert_array_equal(result.images([5, 299, 0]), x[[5, 299, 0]])
    thumbs = result.thumbnails([0, 7])
    assert thumbs.shape == (2, THUMBNAIL_PX, THUMBNAIL_PX, 3) and thumbs.dtype == np.uint8
    assert thumbs[1].mean() < thumbs[0].mean() + 80 and thumbs[0].std() > 10  # the pictures, not blank



def test_thumbnails_of_inputs_the_thumbnail_size_or_smaller_keep_every_pixel():
    """A 64 x 64 input is its own thumbnail (the display scaling only); a 32 x 32 one is enlarged by
    nearest neighbours (each pixel a 2 x 2 block); a 16 x 32 one is centred on white."""
    from salwidget.dataset.pictures import thumbnails
    from salwidget.arrays import to_display_image

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (3, THUMBNAIL_PX, THUMBNAIL_PX, 3)).astype(np.float32)
    expected = (to_display_image(x, channels_last=True) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(thumbnails(x, True), expected)
    small = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(thumbnails(small, True), small.repeat(2, axis=1).repeat(2, axis=2))
    wide = rng.integers(0, 256, (1, 16, 32, 3), dtype=np.uint8)
    fitted = thumbnails(wide, True)[0]
    np.testing.assert_array_equal(fitted[16:48], wide[0].repeat(2, axis=0).repeat(2, axis=1))
    assert (fitted[:16] == 255).all() and (fitted[48:] == 255).all()

class Items(torch.utils.data.Dataset):
    def __init__(self, x, labels=None):
        self.x, self.labels = x, labels

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        image = torch.from_numpy(self.x[i])
        return image if self.labels is None else (image, int(self.labels[i]))


def test_torch_datasets_and_loaders_equal_the_array_scan(data):
    x, labels = data
    model = make_torch_cnn()
    expected = plain_loop(model, x, labels)
    for source in (Items(x, labels), torch.utils.data.DataLoader(Items(x, labels), batch_size=17)):
        assert_matches_plain_loop(sw.scan(model, source), expected, labels)
    unlabelled = sw.scan(model, Items(x))
    assert (unlabelled.table["label"] == -1).all() and np.isnan(unlabelled.accuracy)
    assert unlabelled.confusion().sum() == 0 and unlabelled.table["loss"].isna().all()
    given = sw.scan(model, Items(x), labels)
    assert_matches_plain_loop(given, expected, labels)


@pytest.mark.parametrize("batched", [False, True])
def test_a_tf_data_dataset_with_a_keras_model_equals_the_torch_twins_scan(data, batched):
    import tensorflow as tf

    x, labels = data
    torch_model = make_torch_cnn()
    keras_model = keras_twin(torch_model)
    channels_last = x.transpose(0, 2, 3, 1)
    dataset = tf.data.Dataset.from_tensor_slices((channels_last, labels))
    result = sw.scan(keras_model, dataset.batch(40) if batched else dataset)
    assert_matches_plain_loop(result, plain_loop(torch_model, x, labels), labels)
    np.testing.assert_array_equal(result.images([3, 250]), channels_last[[3, 250]])


def write_folder(root, x, labels, names):
    """An ImageFolder of PNG files: root/<class>/<n>.png, pictures as uint8."""
    from PIL import Image

    pictures = (x.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    paths = []
    for i, (picture, label) in enumerate(zip(pictures, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:04d}.png"
        Image.fromarray(picture).save(path)
        paths.append(path)
    return pictures, paths


def test_a_folder_of_class_subfolders_equals_a_hand_written_reader(data, tmp_path):
    from PIL import Image

    x, labels = data
    x, labels = x[:60], labels[:60]
    names = ["ant", "bee", "cat", "dog", "eel"]
    write_folder(tmp_path, x, labels, names)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a picture")
    model = make_torch_cnn()
    result = sw.scan(model, tmp_path)
    # By hand: classes are the sorted subfolders, files in sorted order within each, read with Pillow.
    files = sorted(p for p in tmp_path.rglob("*.png"))
    files = sorted(files, key=lambda p: (p.parent.name, p.name))
    by_hand = [(names.index(p.parent.name), np.asarray(Image.open(p).convert("RGB"), np.float32) / 255)
               for p in files if p.name != "broken.png"]
    broken = next(i for i, p in enumerate(files) if p.name == "broken.png")
    assert [i for i, _ in result.errors] == [broken] and "broken.png" in result.errors[0][1]
    assert len(result.table) + len(result.errors) == len(result) == 61
    inputs = np.stack([image.transpose(2, 0, 1) for _, image in by_hand])
    hand_labels = np.array([label for label, _ in by_hand])
    expected = plain_loop(model, inputs, hand_labels)
    kept = [i for i in range(61) if i != broken]
    table = result.table
    assert list(table.index) == kept and result.class_names == names
    np.testing.assert_array_equal(table["label"], hand_labels)
    np.testing.assert_array_equal(table["predicted"], expected["predicted"])
    np.testing.assert_allclose(table["probability"], expected["probability"], rtol=1e-5)
    assert set(table["label_name"]) <= set(names)
    np.testing.assert_allclose(result.images(kept[:3]), inputs[:3])
    assert (result.thumbnails([broken]) == 255).all()  # no picture: a white thumbnail


def test_a_flat_folder_or_a_list_of_paths_has_no_labels_and_takes_a_preprocess(data, tmp_path):
    x, labels = data
    _, paths = write_folder(tmp_path / "a", x[:12], np.zeros(12, int), ["flat"])
    model = make_torch_cnn()
    calls = []

    def preprocess(picture):
        calls.append(picture.shape)
        return (np.asarray(picture, np.float32) / 255).transpose(2, 0, 1) * 0.5

    from_folder = sw.scan(model, tmp_path / "a" / "flat", preprocess=preprocess)
    from_paths = sw.scan(model, [str(p) for p in paths], labels[:12], preprocess=preprocess)
    assert (from_folder.table["label"] == -1).all() and calls and calls[0] == (16, 16, 3)
    np.testing.assert_array_equal(from_paths.table["label"], labels[:12])
    np.testing.assert_array_equal(from_folder.table["predicted"], from_paths.table["predicted"])
    expected = plain_loop(model, np.round(x[:12] * 255) / 255 * 0.5, labels[:12])
    np.testing.assert_allclose(from_paths.table["probability"], expected["probability"], rtol=1e-5)


def test_single_logit_and_softmax_outputs(data):
    x, labels = data
    torch.manual_seed(0)
    binary = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 1)).eval()
    result = sw.scan(binary, x, labels % 2)
    with torch.no_grad():
        p1 = torch.sigmoid(binary(torch.from_numpy(x)))[:, 0].double().numpy()
    np.testing.assert_array_equal(result.table["predicted"], (p1 > 0.5).astype(int))
    np.testing.assert_allclose(result.table["probability"], np.maximum(p1, 1 - p1), rtol=1e-5)
    softmax = torch.nn.Sequential(make_torch_cnn(), torch.nn.Softmax(1)).eval()
    as_probabilities = sw.scan(softmax, x, labels)
    assert_matches_plain_loop(as_probabilities, plain_loop(make_torch_cnn(), x, labels), labels)


# ------------------------------------------------------------------- store
def test_a_stored_scan_reopens_without_a_model_call_and_files_open_without_salwidget(data, tmp_path):
    import pandas as pd
    import zarr

    x, labels = data
    model = make_torch_cnn()
    first = sw.scan(model, x, labels, store=tmp_path)
    gate = PassGate(model[0], when=lambda calls, grad: False)
    again = sw.scan(model, x, labels, store=tmp_path)
    assert gate.calls == 0 and again.calls == 0 and again.key == first.key
    pd.testing.assert_frame_equal(again.table, first.table)
    folder = tmp_path / "scans" / first.key
    table = pd.read_parquet(folder / "table")  # pyarrow reads the parts as one dataset
    assert sorted(table["index"]) == list(range(N)) and set(table.columns) >= {"predicted", "loss"}
    thumbs = zarr.open_array(str(folder / "thumbnails.zarr"), mode="r")
    assert thumbs.shape == (N, THUMBNAIL_PX, THUMBNAIL_PX, 3)
    np.testing.assert_array_equal(thumbs[10:12], first.thumbnails([10, 11]))
    assert json.loads((tmp_path / "salwidget-store.json").read_text())["format"] == 1


def test_other_weights_never_mix_with_stored_rows(data, tmp_path):
    x, labels = data
    model = make_torch_cnn()
    first = sw.scan(model, x, labels, store=tmp_path)
    with torch.no_grad():
        model[6].bias += 1.0  # one training step, in effect
    with pytest.warns(UserWarning, match="other model weights"):
        second = sw.scan(model, x, labels, store=tmp_path)
    assert second.key != first.key and second.calls > 0
    assert_matches_plain_loop(second, plain_loop(model, x, labels), labels)


def test_a_cancelled_scan_resumes_with_only_the_missing_rows(data, tmp_path):
    x, labels = data
    model = make_torch_cnn()
    seen = []
    with pytest.raises(sw.AttributionCancelled):
        sw.scan(model, x, labels, store=tmp_path, batch_size=64,
                progress=lambda done, total: seen.append(done), cancel=lambda: len(seen) >= 1)
    assert seen == [CHUNK_ROWS]  # the first block was committed before the stop
    gate = PassGate(model[0], when=lambda calls, grad: False)
    resumed = sw.scan(model, x, labels, store=tmp_path, batch_size=64)
    assert gate.calls == resumed.calls == 1  # the 44 missing rows: one call of 64
    assert_matches_plain_loop(resumed, plain_loop(model, x, labels), labels)


KILLED = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import salwidget as sw
    from tests.helpers import make_torch_cnn
    x = np.load(sys.argv[2]); labels = np.load(sys.argv[3])
    model = make_torch_cnn()
    sw.scan(model, x, labels, store=sys.argv[4], batch_size=64,
            progress=lambda done, total: os.kill(os.getpid(), signal.SIGKILL))
""")


def test_a_scan_killed_half_way_resumes_with_no_row_lost_or_duplicated(data, tmp_path):
    from pathlib import Path

    x, labels = data
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "labels.npy", labels)
    root = Path(__file__).resolve().parents[1]
    process = subprocess.run([sys.executable, "-c", KILLED, str(root), str(tmp_path / "x.npy"),
                              str(tmp_path / "labels.npy"), str(tmp_path / "store")], capture_output=True)
    assert process.returncode == -9  # SIGKILL, after the first block was committed
    model = make_torch_cnn()
    gate = PassGate(model[0], when=lambda calls, grad: False)
    resumed = sw.scan(model, x, labels, store=tmp_path / "store", batch_size=64)
    assert gate.calls == resumed.calls == 1
    parts = sorted((tmp_path / "store" / "scans" / resumed.key / "table").glob("part-*.parquet"))
    assert len(parts) == 2 and not list((tmp_path / "store").rglob("*.tmp"))
    assert_matches_plain_loop(resumed, plain_loop(model, x, labels), labels)


def test_a_store_from_a_newer_salwidget_is_refused(tmp_path):
    (tmp_path / "salwidget-store.json").write_text(json.dumps({"format": 99, "written_by": "salwidget 9.0"}))
    with pytest.raises(SaliencyError, match="written by salwidget 9.0 in format 99"):
        sw.scan(make_torch_cnn(), np.zeros((2, 3, 16, 16), np.float32), store=tmp_path)


# --------------------------------------------------------------- bad input
class Odd(torch.utils.data.Dataset):
    def __init__(self, item):
        self.item = item

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return self.item


@pytest.mark.parametrize("source, labels, words", [
    (Odd({"image": 1}), None, "is a dict with keys \\['image'\\]"),
    (Odd((np.zeros((3, 16, 16)), 1, 2)), None, "a tuple of 3 values"),
    (Odd("text"), None, "not an image"),
    (np.zeros((4, 3, 16, 16), np.float32), [0, 1], "labels has 2 entries for 4 images"),
    (np.zeros((4, 3, 16, 16), np.float32), [0, 1, 2, 9], "label of row 3 is 9, outside the model's 5 classes"),
    ({"a": 1}, None, "cannot read a dict as a dataset"),
])
def test_bad_sources_say_what_to_pass(source, labels, words):
    with pytest.raises(SaliencyError, match=words):
        sw.scan(make_torch_cnn(), source, labels)


def test_images_of_different_sizes_name_the_rows_and_point_at_preprocess(tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    Image.new("RGB", (20, 16)).save(tmp_path / "b.png")
    with pytest.raises(SaliencyError, match=r"row 0 is \(3, 16, 16\), row 1 is \(3, 16, 20\)\. Pass preprocess="):
        sw.scan(make_torch_cnn(), tmp_path)


def test_class_names_of_the_wrong_length_are_refused(data):
    x, labels = data
    with pytest.raises(SaliencyError, match="class_names has 3 names but the model has 5 classes"):
        sw.scan(make_torch_cnn(), x[:4], labels[:4], class_names=["a", "b", "c"])


def test_import_salwidget_stays_light():
    code = "import sys, salwidget; print(any(m in sys.modules for m in ('pandas', 'pyarrow', 'zarr', 'torch')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"




def test_progress_true_draws_a_bar_that_counts_images(data, capsys):
    x, labels = data
    sw.scan(make_torch_cnn(), x, labels, progress=True)
    err = capsys.readouterr().err
    assert "scan: 100%" in err and f"{N}/{N}" in err


@pytest.mark.parametrize("already, classes", [(False, 7), (True, 7), (False, 1), (False, 300)])
def test_the_columns_computed_on_the_device_equal_numpys(already, classes):
    """The torch path of the per-image columns (used on an accelerator) against numpy's, on a CPU tensor;
    NaN and infinite rows included, a tie included."""
    from salwidget.dataset.predictions import columns, columns_torch

    rng = np.random.default_rng(classes)
    scores = rng.normal(size=(40, classes)).astype(np.float32)
    if already:
        scores = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    if classes > 2:
        scores[5, 2] = scores[5, 1] = scores[5].max() + 1  # a tie at the top: the lower class first
    scores[7] = np.nan
    scores[9, 0] = np.inf
    labels = rng.integers(-1, max(classes, 2), 40)
    expected, got = columns(scores, labels, already), columns_torch(torch.from_numpy(scores), labels, already)
    assert set(got) == set(expected)
    finite = expected["finite"]
    for name, values in expected.items():
        if name in ("top5_classes", "top5_probabilities"):  # a non-finite row's top-5 means nothing
            values, other = values[finite], got[name][finite]
        else:
            other = got[name]
        if values.dtype.kind in "biu":
            np.testing.assert_array_equal(other, values, err_msg=name)
        else:
            np.testing.assert_allclose(other, values, rtol=1e-6, atol=1e-7, err_msg=name)


def test_top_classes_order_as_a_stable_sort_with_ties_and_nan_rows():
    """The scan's top-5 comes from a partition, not a sort of every class: it must equal a stable sort's
    first five (ties: the lower class first), also where ties straddle the fifth place and in NaN rows."""
    from salwidget.dataset.predictions import top_classes

    rng = np.random.default_rng(0)
    for classes in (3, 5, 6, 40, 1000):
        p = rng.integers(0, 4, (64, classes)).astype(np.float64)  # values 0-3: ties everywhere
        p[::7] = np.nan
        p[1] = rng.uniform(size=classes)  # a row without ties
        expected = np.argsort(-p, axis=1, kind="stable")[:, :5]
        np.testing.assert_array_equal(top_classes(p, 5), expected)
