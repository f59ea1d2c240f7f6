"""What a newcomer meets first: clear refusals at construction, nothing printed by garbage collection."""

from __future__ import annotations

import gc
import sys

import ipywidgets
import numpy as np
import pytest
import traitlets

import salwidget as sw
from salwidget.errors import SaliencyError

from .helpers import make_torch_cnn


@pytest.fixture(autouse=True)
def close_widgets():
    yield
    ipywidgets.Widget.close_all()


@pytest.fixture
def unraisable(monkeypatch):
    """Exceptions raised where nobody can catch them (``__del__`` during garbage collection)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: seen.append(info))
    return seen


@pytest.mark.parametrize("bad, error, words", [
    (dict(images=np.zeros((4, 16, 16), np.float32)), SaliencyError, "rank"),  # refused by the input checks
    (dict(target=9), (SaliencyError, traitlets.TraitError), "Target class 9 is out of range"),
    (dict(labels=[0, 1, 2]), SaliencyError, "labels has 3 entries for 4 images"),
    (dict(labels=[0, 1, 2, 7]), SaliencyError, "labels holds 7, outside the model's 5 classes"),
    (dict(class_names=["a", "b", "c"]), SaliencyError, "class_names has 3 names but the model has 5 classes"),
])
def test_a_panel_that_cannot_be_built_says_why_and_nothing_else(images, unraisable, bad, error, words):
    bad = dict(bad)
    with pytest.raises(error, match=words):
        sw.SaliencyWidget(make_torch_cnn(), bad.pop("images", images), **bad)
    gc.collect()
    assert unraisable == [], [f"{u.exc_type.__name__}: {u.exc_value}" for u in unraisable]


def test_labels_and_class_names_of_the_right_length_are_taken(images):
    panel = sw.SaliencyWidget(make_torch_cnn(), images, labels=np.array([0, 1, -1, 4]),
                              class_names=[f"c{i}" for i in range(5)], methods=("vanilla",))
    assert panel.wait(60)
    titles = [t.get_text() for t in panel.figure().texts]
    assert any(t.startswith("image 4, true: c4") for t in titles)
    assert any(t.startswith("image 3\n") for t in titles)  # -1: no true class known
