"""No silent wrong answer in the dataset layer (issue 25): stored maps keep their information, NaN outputs are
never correct, one writer per store key, a damaged store heals, errors name the row, the file and the store."""

from __future__ import annotations

import errno
import threading
import warnings

import ipywidgets
import numpy as np
import pandas as pd
import pytest
import torch

import salwidget as sw
from salwidget.dataset.store import DamagedStoreWarning
from salwidget.errors import SaliencyError
from salwidget.evaluation.similarity import spearman

from .helpers import make_torch_cnn

N = 300  # two blocks of the store's 256-row grid


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(25)
    return rng.uniform(0, 1, size=(N, 3, 16, 16)).astype(np.float32), rng.integers(0, 5, N)


def tiny_gradients_cnn():
    """The test CNN with its last layer scaled down: SmoothGrad's mean squared gradients are near 1e-10,
    far below float16's smallest number (6e-8)."""
    model = make_torch_cnn()
    with torch.no_grad():
        model[6].weight.mul_(1e-4)
    return model


# ------------------------------------------------------------ stored maps
@pytest.mark.parametrize("dtype", [None, "float16"])
def test_stored_maps_keep_each_maps_relative_precision(data, tmp_path, dtype):
    x, _ = data
    model, rows = tiny_gradients_cnn(), np.arange(0, 40)
    options = {"smoothgrad": {"nsamples": 4}}
    given = {} if dtype is None else {"dtype": dtype}
    stored = sw.attribute_dataset(model, x[:40], ["smoothgrad", "vanilla"], store=tmp_path, options=options,
                                  metrics=(), **given)
    expected = {m: sw.attribute(model, x[:40], m, seed=0, image_ids=rows, **options.get(m, {})).raw
                for m in ("smoothgrad", "vanilla")}
    assert np.abs(expected["smoothgrad"]).max() < 1e-8  # the regime where a plain float16 copy is all zeros
    bound = 1e-6 if dtype is None else 2.0 ** -10  # float32: every bit; float16: ~2**-11 of the map's range
    for method, maps in expected.items():
        got = stored.maps(method, rows)
        span = np.abs(maps).reshape(len(maps), -1).max(axis=1)
        error = np.abs(got - maps).reshape(len(maps), -1).max(axis=1)
        assert (error <= bound * span).all(), (method, (error / span).max())
    masks = {m: np.abs(v).sum(1) for m, v in expected.items()}
    reference = spearman(masks["smoothgrad"], masks["vanilla"])
    column = stored.table.loc[rows, "smoothgrad_vs_vanilla_spearman"].to_numpy()
    if dtype is None:  # the default's columns equal those of the float32 maps in memory
        np.testing.assert_allclose(column, reference, rtol=1e-5, atol=1e-6)
    else:  # scaled float16: rounding can only swap near-equal neighbours in the ranking
        np.testing.assert_allclose(column, reference, atol=0.02)


@pytest.mark.parametrize("dtype", ["int8", "foo", "uint16", "bool"])
def test_only_float_storage_dtypes_are_accepted(data, tmp_path, dtype):
    x, _ = data
    with pytest.raises(SaliencyError, match=f"dtype={dtype!r} cannot store saliency maps.*float32"):
        sw.attribute_dataset(make_torch_cnn(), x[:8], "vanilla", store=tmp_path, dtype=dtype)


# -------------------------------------------------------- non-finite outputs
class NaNOnMarked(torch.nn.Module):
    """The test CNN, whose scores are NaN (or +inf) for images whose first pixel is marked."""

    def __init__(self):
        super().__init__()
        self.net = make_torch_cnn()

    def forward(self, images):
        scores = self.net(images)
        marked = images[:, 0, 0, 0]
        scores = torch.where((marked == 2.0)[:, None], torch.full_like(scores, float("nan")), scores)
        return torch.where((marked == 3.0)[:, None], torch.full_like(scores, float("inf")), scores)


def test_nan_outputs_are_a_column_and_never_count_as_correct(data):
    x, _ = data
    x = x[:40].copy()
    x[[3, 17], 0, 0, 0] = 2.0
    x[21, 0, 0, 0] = 3.0
    model = NaNOnMarked().eval()
    with torch.no_grad():
        predicted = model.net(torch.from_numpy(x)).argmax(1).numpy()
    labels = predicted.copy()
    labels[[3, 17, 21]] = 0  # the class a NaN row would be read as (argmax of NaN)
    result = sw.scan(model, x, labels)
    table = result.table
    assert table["finite"].tolist() == [i not in (3, 17, 21) for i in range(40)]
    odd = table.loc[[3, 17, 21]]
    assert not odd["correct"].any() and (odd["predicted"] == -1).all() and odd["probability"].isna().all()
    assert (odd["predicted_name"] == "non-finite output").all()
    assert result.accuracy == pytest.approx(37 / 40)  # a NaN output is a wrong prediction, not a right one
    assert result.non_finite == 3 and result.confusion().sum() == 37
    assert "3 with non-finite scores" in repr(result)


class Listed(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_the_dataset_view_filters_the_non_finite_rows(data):
    x, labels = data
    x = x[:40].copy()
    x[[5, 9], 0, 0, 0] = 2.0
    model = NaNOnMarked().eval()
    items = [(torch.from_numpy(image), int(label)) for image, label in zip(x, labels[:40])]
    panel = sw.SaliencyWidget(model, Listed(items), methods=("vanilla",))
    try:
        assert panel.wait(120) and panel.pane == "dataset", panel.error
        assert set(panel.dataset_rows) == set(range(40))  # shown by default (NaN probabilities are not hidden)
        panel.filter_correct = "non-finite"
        assert sorted(panel.dataset_rows) == [5, 9]
        panel.filter_correct = "correct"
        assert not {5, 9} & set(panel.dataset_rows)
    finally:
        ipywidgets.Widget.close_all()


# ------------------------------------------------------------ one writer
GATE = {}  # module state, not the module's attributes: the backend computes with a copy of the model


class CountingGate(torch.nn.Module):
    """The test CNN; its first call waits (up to 20 s) for another call to start, so two scans overlap
    whenever both would compute. Calls are counted."""

    def __init__(self):
        super().__init__()
        self.net = make_torch_cnn()
        GATE.update(calls=0, lock=threading.Lock(), second=threading.Event())

    def forward(self, images):
        with GATE["lock"]:
            GATE["calls"] += 1
            first = GATE["calls"] == 1
        if first:
            GATE["second"].wait(20)  # with one writer the other scan waits on the store, never calls: time out
        else:
            GATE["second"].set()
        return self.net(images)


def test_two_scans_of_one_store_at_once_compute_each_row_once(data, tmp_path):
    x, labels = data
    model = CountingGate().eval()
    results, errors = [], []

    def run():
        try:
            results.append(sw.scan(model, x, labels, store=tmp_path, batch_size=64))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(results) == 2
    assert GATE["calls"] == -(-256 // 64) + -(-(N - 256) // 64)  # every row computed once, by one of the two
    assert sorted(r.calls for r in results)[0] == 0
    parts = pd.read_parquet(next(tmp_path.glob("scans/*/table")))  # the table as pandas alone reads it
    assert len(parts) == N and parts["index"].is_unique
    pd.testing.assert_frame_equal(results[0].table, results[1].table)


# --------------------------------------------------------- a damaged store
def fresh_table(x, labels, tmp_path):
    return sw.scan(make_torch_cnn(), x, labels, store=tmp_path / "fresh").table


@pytest.mark.parametrize("damage", ["truncated part", "empty part", "bad meta.json", "corrupt thumbnail chunk"])
def test_a_damaged_scan_store_is_named_and_its_rows_computed_again(data, tmp_path, damage):
    x, labels = data
    store = tmp_path / "s"
    first = sw.scan(make_torch_cnn(), x, labels, store=store)
    folder = next(store.glob("scans/*"))
    if damage == "truncated part":
        part = sorted((folder / "table").glob("part-*.parquet"))[0]
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
        named = part
    elif damage == "empty part":
        part = sorted((folder / "table").glob("part-*.parquet"))[1]
        part.write_bytes(b"")
        named = part
    elif damage == "bad meta.json":
        named = folder / "meta.json"
        named.write_text('{"model": ')
    else:
        named = folder / "thumbnails.zarr" / "0.0.0.0"
        named.write_bytes(b"not zstd at all")
        with pytest.warns(DamagedStoreWarning, match=str(named)):
            thumbs = first.thumbnails([0, 1, 20])
        assert (thumbs[:2] == 255).all()  # white: lost, said so, computed again below
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        again = sw.scan(make_torch_cnn(), x, labels, store=store)
    if damage != "corrupt thumbnail chunk":
        assert any(str(named) in str(w.message) for w in seen if issubclass(w.category, DamagedStoreWarning))
    assert again.calls > 0  # the lost rows were computed again
    pd.testing.assert_frame_equal(again.table, fresh_table(x, labels, tmp_path))
    np.testing.assert_array_equal(again.thumbnails(range(N)), sw.scan(make_torch_cnn(), x, labels,
                                                                    store=tmp_path / "fresh").thumbnails(range(N)))
    table = pd.read_parquet(folder / "table")
    assert len(table) == N and table["index"].is_unique


def test_a_damaged_maps_chunk_is_named_and_its_rows_computed_again(data, tmp_path):
    x, labels = data
    options = {"vanilla": {}}
    first = sw.attribute_dataset(make_torch_cnn(), x[:40], "vanilla", store=tmp_path, metrics=(), options=options)
    chunk = next(tmp_path.glob("scans/*/jobs/*/maps.zarr")) / "c" / "1" / "0" / "0" / "0"
    chunk.write_bytes(b"short")
    with pytest.warns(DamagedStoreWarning, match=str(chunk)), pytest.raises(SaliencyError, match="run attribute_"):
        first.maps("vanilla", range(40))
    again = sw.attribute_dataset(make_torch_cnn(), x[:40], "vanilla", store=tmp_path, metrics=(), options=options)
    assert again.calls == 1
    np.testing.assert_array_equal(again.maps("vanilla", range(40)), sw.attribute(make_torch_cnn(), x[:40], "vanilla",
                                                                                 image_ids=range(40)).raw)


# ------------------------------------------------- errors that name things
def test_job_targets_are_checked_before_any_block(data, tmp_path):
    x, _ = data
    scanned = sw.scan(make_torch_cnn(), x[:20], store=tmp_path)
    with pytest.raises(SaliencyError, match="target='predictd' is not understood"):
        sw.attribute_dataset(make_torch_cnn(), scanned, "vanilla", target="predictd")
    with pytest.raises(SaliencyError, match="target has 7 classes for a dataset of 20 images"):
        sw.attribute_dataset(make_torch_cnn(), scanned, "vanilla", target=np.zeros(7, int))
    with pytest.raises(SaliencyError, match="class 9, outside the model's 5 classes"):
        sw.attribute_dataset(make_torch_cnn(), scanned, "vanilla", target=9)
    assert not list(tmp_path.glob("scans/*/jobs/*/table/part-*"))


class RaisesAt(torch.utils.data.Dataset):
    def __init__(self, x, bad):
        self.x, self.bad = x, bad

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == self.bad:
            raise KeyError("broken record")
        return torch.from_numpy(self.x[i])


def test_a_raising_getitem_or_preprocess_names_the_item_and_the_file(data, tmp_path):
    from PIL import Image

    x, _ = data
    with pytest.raises(SaliencyError, match=r"item 277 of the dataset raised KeyError.*dataset\[277\]"):
        sw.scan(make_torch_cnn(), RaisesAt(x, 277))
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray((x[i].transpose(1, 2, 0) * 255).astype(np.uint8)).save(paths[-1])

    def preprocess(picture):
        if picture[0, 0, 0] == np.asarray(Image.open(paths[1]))[0, 0, 0]:
            raise ValueError("cannot normalise")
        return picture.transpose(2, 0, 1) / 255.0

    with pytest.raises(SaliencyError, match=rf"preprocess raised ValueError on row 1, the file {paths[1]}"):
        sw.scan(make_torch_cnn(), [str(p) for p in paths], preprocess=preprocess)


@pytest.mark.parametrize("size, value", [(16, np.nan), (200, np.nan), (200, np.inf), (200, -np.inf)])
def test_a_nan_image_is_named_by_its_dataset_index(size, value, tmp_path):
    """The scan checks inputs through their thumbnails (16 px: the inputs themselves; 200 px: area averages
    that cover every pixel, the last row and column included): one bad value anywhere is found and named,
    and the block holding it is not committed."""
    x = np.random.default_rng(3).uniform(0, 1, (300, 3, size, size)).astype(np.float32)
    x[290, 1, size - 1, size - 1] = value  # index 34 of the second block, in the last row and column
    with pytest.raises(SaliencyError, match="Image 290 of the dataset contains NaN or infinite values"):
        sw.scan(make_torch_cnn(), x, store=tmp_path)
    from salwidget.dataset.scan import open_scan
    from salwidget.dataset.store import CHUNK_ROWS

    assert open_scan(make_torch_cnn(), x, store=tmp_path).missing == 300 - CHUNK_ROWS  # the first block only


def test_huge_finite_images_whose_thumbnails_overflow_are_scanned(tmp_path):
    """Values near float32's largest overflow the thumbnails' sums: the exact check finds every value finite."""
    x = np.full((4, 3, 100, 100), 3e38, np.float32)
    result = sw.scan(make_torch_cnn(), x, store=tmp_path)
    assert len(result.table) == 4


def test_store_paths_that_cannot_be_written_name_the_path_and_the_fix(data, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    x, _ = data
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(SaliencyError, match=f"store='{a_file}' is a file, not a folder"):
        sw.scan(make_torch_cnn(), x[:8], store=a_file)
    for code, words in ((errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                        (errno.EACCES, "may not write there")):
        def refuse(table, where, *args, **kwargs):
            raise OSError(code, "refused here", str(where))

        monkeypatch.setattr(pq, "write_table", refuse)
        store = tmp_path / f"s{code}"
        with pytest.raises(SaliencyError, match=f"The store at {store}.*{words}"):
            sw.scan(make_torch_cnn(), x[:8], store=store)


def test_class_names_of_the_wrong_length_are_refused_at_the_first_model_call(data, tmp_path):
    x, _ = data
    model = make_torch_cnn()
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(SaliencyError, match="class_names has 3 names but the model has 5 classes"):
            sw.scan(model, x, class_names=list("abc"), store=tmp_path, batch_size=16)
    finally:
        handle.remove()
    assert len(calls) <= 256 // 16  # at most the first block's calls, not the whole scan's
    assert not list(tmp_path.glob("scans/*/table/part-*"))  # nothing committed
