"""Choosing the output to explain (by position or name, torch and Keras), and reading what an output is:
dense maps, multi-label heads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.errors import SaliencyError
from salwidget.outputs import flatten_outputs, is_dense, is_multilabel, labels_above, predicted_masks, probabilities, region_at

from .helpers import keras_twin, make_torch_cnn, make_torch_segnet


class Heads(torch.nn.Module):
    """One CNN body, two heads, returned as ``kind``: a dict, a tuple, an object with .logits, a dataclass."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.cnn, self.aux = make_torch_cnn(), torch.nn.Linear(768, 3)

    def forward(self, x):
        logits, aux = self.cnn(x), self.aux(x.flatten(1))
        if self.kind == "dict":
            return {"logits": logits, "aux": aux, "unused": None}
        if self.kind == "tuple":
            return logits, (aux, aux * 2)
        if self.kind == "object":
            return Returned(logits, aux)
        return Fields(logits=logits, aux=aux)


class Returned:
    def __init__(self, logits, aux):
        self.logits, self.aux = logits, aux


@dataclass
class Fields:
    logits: torch.Tensor
    aux: torch.Tensor


@pytest.mark.parametrize("kind", ["dict", "object", "dataclass"])
def test_an_output_is_chosen_by_name(images, kind):
    model = Heads(kind).eval()
    a = sw.attribute(model, images, "vanilla", output="logits")
    np.testing.assert_array_equal(a.raw, sw.attribute(model.cnn, images, "vanilla").raw)
    b = sw.attribute(model, images, "vanilla", output="aux", target=2)
    np.testing.assert_allclose(b.raw.reshape(4, -1), np.tile(model.aux.weight.detach().numpy()[2], (4, 1)), rtol=1e-6)
    assert (a.output_name, a.output_index, b.output_name, b.output_index) == ("logits", 0, "aux", 1)
    np.testing.assert_array_equal(sw.predict(model, images, output="aux"), b.scores)


def test_nested_outputs_are_chosen_by_position_or_dotted_name(images):
    model = Heads("tuple").eval()
    tensors, names = flatten_outputs(model(torch.from_numpy(images)), lambda v: isinstance(v, torch.Tensor))
    assert names == [None, "1.0", "1.1"] and len(tensors) == 3
    by_name = sw.attribute(model, images, "vanilla", output="1.1", target=0)
    by_position = sw.attribute(model, images, "vanilla", output=2, target=0)
    np.testing.assert_array_equal(by_name.raw, by_position.raw)
    np.testing.assert_allclose(by_name.raw, 2 * sw.attribute(model, images, "vanilla", output=1, target=0).raw, rtol=1e-6)


def test_output_errors_list_every_output_and_suggest_a_close_name(images):
    model = Heads("dict").eval()
    listed = r"0: 'logits' \(4, 5\), 1: 'aux' \(4, 3\)"
    with pytest.raises(SaliencyError, match=rf"returns 2 outputs; choose the one to explain with output_index.*"
                                            rf"output='logits'.*{listed}"):
        sw.attribute(model, images, "vanilla")
    with pytest.raises(SaliencyError, match=rf"no output named 'logit'. Did you mean output='logits'\? .*{listed}"):
        sw.attribute(model, images, "vanilla", output="logit")
    with pytest.raises(SaliencyError, match=rf"output_index=2 but the model returns 2 output\(s\): {listed}"):
        sw.predict(model, images, output=2)
    with pytest.raises(SaliencyError, match="output=0 and output_index=1 disagree"):
        sw.attribute(model, images, "vanilla", output=0, output_index=1)
    with pytest.raises(SaliencyError, match="no tensor in it"):
        sw.attribute(torch.nn.Sequential(_ReturnsText()), images, "vanilla")


class _ReturnsText(torch.nn.Module):
    def forward(self, x):
        return "no scores"


def test_every_entry_point_takes_output(images):
    model = Heads("dict").eval()
    chosen = sw.attribute(model, images, "gradcam", output="logits", target=1)
    np.testing.assert_allclose(chosen.raw, sw.attribute(model.cnn, images, "gradcam", target=1).raw, rtol=1e-6)
    with pytest.raises(sw.NotDifferentiableError, match="does not depend on layer 'cnn.3'"):
        sw.attribute(model, images, "gradcam", output="aux", target=1)  # the aux head reads the pixels
    curves = sw.deletion_insertion(model, images, sw.attribute(model, images, "vanilla", output="aux"), steps=4)
    again = sw.deletion_insertion(model, images, "random", output="aux", target=curves.target, steps=4)
    np.testing.assert_allclose(curves.deletion[:, 0], again.deletion[:, 0], rtol=1e-6)  # the same clean score
    r = sw.sanity_check(model, images[:2], "vanilla", output="logits", layers=["cnn.6"])
    assert r.original.output_name == "logits"
    panel = sw.SaliencyWidget(model, images, methods=("vanilla",), output="aux")
    panel.wait()
    assert panel.error == "" and panel.results["vanilla"].output_name == "aux"
    panel.close()


def test_keras_outputs_are_chosen_by_dict_key_or_output_layer_name(images):
    import keras

    torch_model = make_torch_cnn()
    body = keras_twin(torch_model)
    inputs = keras.Input((16, 16, 3))
    logits = body(inputs)
    aux = keras.layers.Dense(3, name="aux_head")(keras.layers.Flatten()(inputs))
    as_dict = keras.Model(inputs, {"logits": logits, "aux": aux})
    as_list = keras.Model(inputs, [aux, logits])
    x = images.transpose(0, 2, 3, 1)
    reference = sw.attribute(body, x, "vanilla").raw
    np.testing.assert_allclose(sw.attribute(as_dict, x, "vanilla", output="logits").raw, reference, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(sw.attribute(as_list, x, "vanilla", output=1).raw, reference, rtol=1e-5, atol=1e-9)
    aux_scores = sw.predict(as_list, x, output="aux_head")
    assert aux_scores.shape == (4, 3)
    np.testing.assert_array_equal(sw.predict(as_dict, x, output="aux"), aux_scores)
    with pytest.raises(SaliencyError, match=r"no output named 'logit'. Did you mean output='logits'\?"):
        sw.attribute(as_dict, x, "vanilla", output="logit")


def test_keras_cam_of_a_dict_output_reads_the_chosen_head(images):
    """A tapped model returns the heads in the model's own order, so output='aux' is the aux head for a CAM too."""
    import keras

    inputs = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    heads = {"logits": keras.layers.Dense(5, name="cls")(pooled), "aux": keras.layers.Dense(3, name="reg")(pooled)}
    model = keras.Model(inputs, heads)
    aux_only = keras.Model(inputs, heads["aux"])
    x = images.transpose(0, 2, 3, 1)
    for target in (0, 2):
        np.testing.assert_allclose(sw.attribute(model, x, "gradcam", output="aux", target=target).raw,
                                   sw.attribute(aux_only, x, "gradcam", target=target).raw, rtol=1e-5, atol=1e-9)


# ----------------------------------------------------------------- dense outputs
def test_dense_outputs_their_predicted_masks_and_a_region_under_a_click(images):
    model = make_torch_segnet()
    scores = sw.predict(model, images)
    assert scores.shape == (4, 3, 16, 16) and is_dense(scores) and not is_dense(scores[:, :, 0, 0])
    masks = predicted_masks(scores)
    np.testing.assert_array_equal(masks, scores.argmax(1))
    np.testing.assert_array_equal(predicted_masks(scores.transpose(0, 2, 3, 1), channels_last=True), masks)
    k, mask = region_at(scores, 1, 5, 7)
    assert k == masks[1, 5, 7] and mask[5, 7] and (mask == (masks[1] == k)).all()
    k, boxed = region_at(scores, 1, 5, 7, box=(2, 3, 9, 12))
    assert boxed[5, 7] and not boxed[:2].any() and not boxed[:, 12:].any() and (boxed <= mask).all()
    a = sw.attribute(model, images[1:2], "gradcam", target=sw.targets.Region(k, boxed))
    assert a.raw.shape[0] == 1
    binary = np.array([[[[2.0, -1.0], [-3.0, 0.5]]]])  # one channel: logits above 0 are the class
    np.testing.assert_array_equal(predicted_masks(binary), [[[1, 0], [0, 1]]])
    with pytest.raises(SaliencyError, match=r"outside the output's 16 x 16 map"):
        region_at(scores, 0, 16, 0)


# ----------------------------------------------------------------- multi-label
def test_multilabel_is_detected_only_where_unambiguous():
    assert is_multilabel(np.array([[0.3], [-2.0]]))  # one logit: a binary head
    assert is_multilabel(np.array([[0.9, 0.8, 0.1], [0.2, 0.1, 0.05]]))  # probabilities that do not sum to 1
    assert not is_multilabel(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))  # a softmax head
    assert not is_multilabel(np.array([[2.0, -1.0, 0.5]]))  # logits: a softmax or a sigmoid head alike


def test_multilabel_probabilities_and_the_labels_above_a_threshold(torch_cnn, images):
    logits = np.array([[2.0, -1.0, 0.5, 3.0], [-2.0, -0.5, -1.0, -3.0]])
    sigmoid = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(probabilities(logits, multilabel=True), sigmoid)
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probabilities(logits), softmax)
    above = labels_above(logits, 0.5, multilabel=True)
    assert [a.tolist() for a in above] == [[3, 0, 2], []]
    model = torch.nn.Sequential(torch_cnn, torch.nn.Sigmoid()).eval()  # an independent-sigmoid head
    a = sw.attribute(model, images, "vanilla")
    assert a.multilabel and a.target.tolist() == a.scores.argmax(1).tolist()  # "predicted": each top label
    np.testing.assert_allclose(a.probabilities, a.scores, rtol=1e-6)  # already probabilities
    assert [x.tolist() for x in a.labels_above(0.5)] == [np.nonzero(row > 0.5)[0][np.argsort(-row[row > 0.5])].tolist()
                                                         for row in a.scores]
    given = sw.attribute(torch_cnn, images, "vanilla", multilabel=True)
    np.testing.assert_allclose(given.probabilities, 1 / (1 + np.exp(-given.scores.astype(np.float64))), rtol=1e-6)
    assert not sw.attribute(torch_cnn, images, "vanilla").multilabel


def test_multilabel_deletion_scores_are_sigmoids(torch_cnn, images):
    a = sw.attribute(torch_cnn, images, "vanilla", target=1, multilabel=True)
    curves = sw.deletion_insertion(torch_cnn, images, a, steps=2)
    np.testing.assert_allclose(curves.deletion[:, 0], 1 / (1 + np.exp(-a.scores[:, 1].astype(np.float64))), rtol=1e-5)
    plain = sw.deletion_insertion(torch_cnn, images, sw.attribute(torch_cnn, images, "vanilla", target=1), steps=2)
    probs = probabilities(a.scores, multilabel=False)[:, 1]
    np.testing.assert_allclose(plain.deletion[:, 0], probs, rtol=1e-5)
