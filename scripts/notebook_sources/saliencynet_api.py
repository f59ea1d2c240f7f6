"""Cells of notebooks/saliencynet_api.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
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
        "outputs, input i is differentiated through output i's target score, as FastEstimator pairs them "
        "(`pairing=\"sum\"` differentiates the sum of every output's score instead)."
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
