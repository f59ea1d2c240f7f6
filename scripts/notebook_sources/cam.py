"""Cells of notebooks/cam.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# Class activation maps\n\n"
        "Gradient maps ask *which pixels* move the class score; class activation maps ask *which places in a "
        "layer's feature map* do. salwidget has four: **Grad-CAM** (channels weighted by their mean gradient), "
        "**Grad-CAM++** (weights from positive gradients, pytorch-grad-cam's closed form), **LayerCAM** (each "
        "position weighted by its own positive gradient) and **Score-CAM** (channels weighted by the score of "
        "the input masked by each channel: no gradients, one forward pass per channel).\n\n"
        "`layer=None` picks the last layer whose output is still a spatial feature map. `Attribution.raw` is "
        "the map at that layer's resolution, (B, h, w), ReLU applied, not normalised; `sw.to_grayscale` "
        "upsamples it bilinearly to the input's size."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model, class_names = models.efficientnet_lite0()\n"
        "pictures = models.sample_images([\"chelsea\", \"coffee\"])\n"
        "images = pictures.transpose(0, 3, 1, 2)\n"
        "methods = {\"gradcam\": {}, \"gradcampp\": {}, \"layercam\": {},\n"
        "           \"smoothgrad\": dict(nsamples=12), \"integrated\": dict(nsamples=16, baseline=0.0)}\n"
        "results = {method: sw.attribute(model, images, method, seed=0, **options) for method, options in methods.items()}"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "for method, a in results.items():\n"
        "    print(f\"{a.label:20s} layer {str(a.layer):10s} raw {str(a.raw.shape):18s} \"\n"
        "          f\"targets {[class_names[t] for t in a.target]}\")"
    ),
    new_markdown_cell(
        "The CAMs are drawn over the pictures (upsampled from 7 x 7); the gradient maps beside them are "
        "per pixel."
    ),
    new_code_cell(
        "fig, axes = plt.subplots(2, 1 + len(results), figsize=(2.3 * (1 + len(results)), 4.8))\n"
        "for row in range(2):\n"
        "    axes[row, 0].imshow(pictures[row])\n"
        "    axes[row, 0].set_title(class_names[results[\"gradcam\"].target[row]], fontsize=9)\n"
        "    for col, a in enumerate(results.values(), start=1):\n"
        "        mask = sw.to_grayscale(a)[row]\n"
        "        if a.kind == \"layer\":\n"
        "            axes[row, col].imshow(pictures[row])\n"
        "            axes[row, col].imshow(mask, cmap=\"jet\", alpha=0.5, vmin=0, vmax=1)\n"
        "        else:\n"
        "            axes[row, col].imshow(mask, cmap=\"inferno\", vmin=0, vmax=1)\n"
        "        axes[row, col].set_title(a.label, fontsize=9)\n"
        "for ax in axes.ravel():\n"
        "    ax.axis(\"off\")\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "EfficientNet-Lite0 ends in global average pooling and one linear layer, so its Grad-CAM at the last "
        "feature map is the original CAM of Zhou et al.: the class's weights times the channels, divided by "
        "the number of positions (the gradient of a mean is 1 / (h w))."
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "import torch\n\n"
        "a = results[\"gradcam\"]\n"
        "features = {}\n"
        "hook = model.net._swish.register_forward_hook(lambda module, inputs, output: features.update(last=output))\n"
        "with torch.no_grad():\n"
        "    model(torch.from_numpy(images))\n"
        "hook.remove()\n"
        "weights = model.net._fc.weight.detach().numpy()[a.target]          # (B, C)\n"
        "cam = np.einsum(\"bc,bchw->bhw\", weights, features[\"last\"].numpy())\n"
        "print(\"Grad-CAM == ReLU(class weights . channels) / 49:\",\n"
        "      np.allclose(a.raw, np.maximum(cam, 0) / 49, rtol=1e-4, atol=1e-6))"
    ),
    new_markdown_cell(
        "An earlier layer gives a finer map (14 x 14 here) from less abstract features; `layer=` takes a "
        "`named_modules` name or the module itself."
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "finer = sw.attribute(model, images, \"gradcam\", layer=model.net._blocks[10])\n"
        "print(finer.layer, finer.raw.shape)\n"
        "fig, axes = plt.subplots(1, 2, figsize=(4.6, 2.4))\n"
        "for ax, picture, mask in zip(axes, pictures, sw.to_grayscale(finer)):\n"
        "    ax.imshow(picture)\n"
        "    ax.imshow(mask, cmap=\"jet\", alpha=0.5, vmin=0, vmax=1)\n"
        "    ax.axis(\"off\")\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "## Keras\n\n"
        "The same calls on the Keras digits model (a Sequential model: a layer's output is read through a "
        "sub-model over the same layers). Its 32 channels make Score-CAM cheap here: 32 forward passes per "
        "digit. On EfficientNet's last feature map (1,280 channels) about half the channels are constant (a "
        "dead ReLU) on a picture and share one pass, which leaves some 640 passes per picture.\n\n"
        "This model flattens its last feature map into a dense layer instead of averaging it, so Grad-CAM's "
        "spatially averaged gradients can cancel: three of the six Grad-CAM maps have no positive part. Such "
        "maps are results, not errors: `Attribution.extras['zero_maps']` lists them (and a warning says so). "
        "Grad-CAM++, LayerCAM and Score-CAM keep the positive evidence per position or per channel."
    ),
    new_code_cell(
        "# NBVAL_IGNORE_OUTPUT\n"
        "import os\n"
        "os.environ.setdefault(\"TF_CPP_MIN_LOG_LEVEL\", \"2\")  # quiet TensorFlow's start-up logs\n"
        "digits_model = models.digits_cnn()\n"
        "_, _, x_test, y_test = models.digits_data()\n"
        "digits = x_test[:6]\n"
        "sw.predict(digits_model, digits[:1]);  # TensorFlow starts here (its logs go to this cell)"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "import warnings\n\n"
        "digit_methods = {\"gradcam\": {}, \"gradcampp\": {}, \"layercam\": {}, \"scorecam\": {},\n"
        "                 \"smoothgrad\": dict(nsamples=16), \"integrated\": dict(nsamples=32, baseline=0.0)}\n"
        "with warnings.catch_warnings():  # zero maps are listed below instead\n"
        "    warnings.simplefilter(\"ignore\")\n"
        "    digit_results = {method: sw.attribute(digits_model, digits, method, target=y_test[:6], seed=0, **options)\n"
        "                     for method, options in digit_methods.items()}\n"
        "for method, a in digit_results.items():\n"
        "    print(f\"{a.label:20s} layer {str(a.layer):14s} raw {str(a.raw.shape):16s} passes {a.passes_total:3d}  \"\n"
        "          f\"zero maps {a.extras.get('zero_maps', [])}\")"
    ),
    new_code_cell(
        "fig, axes = plt.subplots(len(digits), 1 + len(digit_results), figsize=(1.6 * (1 + len(digit_results)), 9.5))\n"
        "for row in range(len(digits)):\n"
        "    axes[row, 0].imshow(digits[row, ..., 0], cmap=\"gray\")\n"
        "    axes[row, 0].set_title(f\"digit {y_test[row]}\", fontsize=9)\n"
        "    for col, a in enumerate(digit_results.values(), start=1):\n"
        "        axes[row, col].imshow(sw.to_grayscale(a)[row], cmap=\"inferno\", vmin=0, vmax=1)\n"
        "        axes[row, col].set_title(a.label, fontsize=9)\n"
        "for ax in axes.ravel():\n"
        "    ax.axis(\"off\")\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "## Vision Transformers\n\n"
        "A transformer layer's output (B, N, C) is folded into a grid: the leading class token(s) are dropped "
        "(`prefix_tokens`, by default the fewest of 0, 1 or 2 that leave a grid with the image's aspect ratio) "
        "and the rest is laid out row by row. Other layouts (Swin) take `reshape=f`, a function from the "
        "layer's output to (B, C, h, w) in torch, so pytorch-grad-cam's `reshape_transform` functions work "
        "as they are. A layer whose patch tokens do not reach the score (the last block, when the head reads "
        "only the class token) gets an error naming an earlier layer instead of a blank map:"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "class TinyViT(torch.nn.Module):\n"
        "    \"\"\"4 x 4 patches, a class token, two encoder layers; the head reads the class token.\"\"\"\n\n"
        "    def __init__(self, dim=16):\n"
        "        super().__init__()\n"
        "        torch.manual_seed(0)\n"
        "        self.patch = torch.nn.Conv2d(3, dim, 4, stride=4)\n"
        "        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim))\n"
        "        self.blocks = torch.nn.Sequential(*[torch.nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0,\n"
        "                                                                            batch_first=True) for _ in range(2)])\n"
        "        self.head = torch.nn.Linear(dim, 10)\n\n"
        "    def forward(self, x):\n"
        "        tokens = self.patch(x).flatten(2).transpose(1, 2)\n"
        "        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)\n"
        "        return self.head(self.blocks(tokens)[:, 0])\n\n"
        "vit = TinyViT().eval()\n"
        "small = images[:, :, ::7, ::7][:, :, :32, :32].copy()   # 32 x 32: an 8 x 8 grid of patches\n"
        "print(sw.attribute(vit, small, \"gradcam\", layer=\"blocks.0\").raw.shape)\n"
        "try:\n"
        "    sw.attribute(vit, small, \"gradcam\", layer=\"blocks.1\")\n"
        "except sw.SaliencyError as error:\n"
        "    print(error)"
    ),
]
