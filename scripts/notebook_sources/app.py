"""Cells of notebooks/app.ipynb: the panel as a Voila app (written by scripts/make_notebooks.py).

Voila shows the markdown and the outputs, never the code: keep the cells quiet (no prints, no
wait(), which would hold the page until the maps are done).
"""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# Where does the model look?\n\n"
        "A pretrained ImageNet **EfficientNet-Lite0** explains its prediction for each picture with saliency "
        "maps. Pick methods at the top, tune their options, pick the class to explain (or search one by name), "
        "and add your own pictures with *Add images*. Hover over any control to see what it does and what "
        "it costs."
    ),
    new_code_cell(
        "import numpy as np\n"
        "from PIL import Image\n\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model, class_names = models.efficientnet_lite0()\n"
        "pictures = models.sample_images([\"chelsea\", \"coffee\"])\n\n\n"
        "def preprocess(picture):\n"
        "    side = min(picture.shape[:2])\n"
        "    top, left = (picture.shape[0] - side) // 2, (picture.shape[1] - side) // 2\n"
        "    square = Image.fromarray(picture[top : top + side, left : left + side]).resize((224, 224), Image.BILINEAR)\n"
        "    return np.asarray(square, np.float32).transpose(2, 0, 1) / 255\n\n\n"
        "sw.SaliencyWidget(model, pictures.transpose(0, 3, 1, 2), class_names=class_names, display_images=pictures,\n"
        "                  preprocess=preprocess)"
    ),
]
