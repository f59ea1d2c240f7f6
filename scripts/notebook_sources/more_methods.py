"""Cells of notebooks/more_methods.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# More attribution methods\n\n"
        "Beside the gradient, SmoothGrad and Integrated Gradients, `sw.attribute` offers:\n\n"
        "- **Guided Backprop**: ReLUs pass only positive gradients where their input is positive "
        "(also ReLU6, as in EfficientNet-Lite). Sharp, but it fails the model-randomisation sanity check "
        "(below).\n"
        "- **Gradient x Input** (signed), and **VarGrad**: the variance of the noisy gradients SmoothGrad draws.\n"
        "- **Expected Gradients** (signed): IG averaged over reference images and random path positions.\n"
        "- **Blur IG** (signed): IG along a path of Gaussian blurs, from a heavy blur down to the image.\n"
        "- **Guided IG** (signed): IG along a path that first moves the features with the smallest gradients.\n"
        "- **XRAI**: image regions (segments at six scales) ranked by the IG they hold; one value per pixel.\n\n"
        "Blur IG, Guided IG and XRAI follow PAIR saliency's implementations (and are tested against them). "
        "Signed maps are drawn with a diverging colour map (red: evidence for the class, blue: against). "
        "The sample counts are small here to keep the notebook quick."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model, class_names = models.efficientnet_lite0()\n"
        "pictures = models.sample_images([\"chelsea\", \"coffee\"])\n"
        "images = pictures.transpose(0, 3, 1, 2)\n"
        "references = models.sample_images([\"astronaut\", \"rocket\", \"camera\", \"cat\"]).transpose(0, 3, 1, 2)\n"
        "methods = {\n"
        "    \"vanilla\": {},\n"
        "    \"guided_backprop\": {},\n"
        "    \"gradient_x_input\": {},\n"
        "    \"vargrad\": dict(nsamples=8),\n"
        "    \"integrated\": dict(nsamples=16, baseline=0.0),\n"
        "    \"expected_gradients\": dict(nsamples=8, references=references),\n"
        "    \"blur_ig\": dict(nsamples=12),\n"
        "    \"guided_ig\": dict(nsamples=12),\n"
        "    \"xrai\": dict(nsamples=8),\n"
        "}\n"
        "results = {method: sw.attribute(model, images, method, seed=0, **options) for method, options in methods.items()}"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "for method, a in results.items():\n"
        "    print(f\"{a.label:22s} {'signed  ' if a.signed else 'unsigned'} raw {str(a.raw.shape):18s} \"\n"
        "          f\"passes {a.passes_total:3d}  targets {[class_names[t] for t in a.target]}\")"
    ),
    new_code_cell(
        "fig, axes = plt.subplots(2, 1 + len(results), figsize=(1.9 * (1 + len(results)), 4.3), dpi=72)\n"
        "for row in range(2):\n"
        "    axes[row, 0].imshow(pictures[row])\n"
        "    axes[row, 0].set_title(class_names[results[\"vanilla\"].target[row]], fontsize=8)\n"
        "    for col, a in enumerate(results.values(), start=1):\n"
        "        if a.signed:\n"
        "            axes[row, col].imshow(sw.to_diverging(a)[row], cmap=\"RdBu_r\", vmin=-1, vmax=1)\n"
        "        else:\n"
        "            axes[row, col].imshow(sw.to_grayscale(a)[row], cmap=\"inferno\", vmin=0, vmax=1)\n"
        "        axes[row, col].set_title(a.label, fontsize=8)\n"
        "for ax in axes.ravel():\n"
        "    ax.axis(\"off\")\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "## XRAI's regions\n\n"
        "XRAI adds regions greedily, the one with the highest mean attribution first (here the attribution "
        "is IG from a black and a white baseline, as PAIR computes it); `Attribution.extras['region_ranks']` "
        "numbers the regions (1 = most important). The most important regions covering a fifth of each "
        "picture:"
    ),
    new_code_cell(
        "xrai = results[\"xrai\"]\n"
        "fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))\n"
        "for ax, picture, heat in zip(axes, pictures, xrai.raw):\n"
        "    top = heat >= np.quantile(heat, 0.8)\n"
        "    ax.imshow(picture * np.where(top, 1.0, 0.25)[..., None])\n"
        "    ax.axis(\"off\")\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "`base_attribution=` ranks the regions by an attribution you already have instead (the panel reuses "
        "its cached IG this way): no passes through the model, only the segmentation."
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "reused = sw.attribute(model, images, \"xrai\", base_attribution=results[\"integrated\"])\n"
        "print(reused.label, reused.raw.shape, \"passes\", reused.passes_total)"
    ),
    new_markdown_cell(
        "## The sanity check Guided Backprop fails\n\n"
        "Adebayo et al. (2018): a map that explains the model should change when the model's upper layers "
        "are replaced by random weights. Here the classifier, the last convolution and its batch norm are "
        "re-initialised in a copy of the model, and each map of the copy is compared with the original's "
        "(Spearman rank correlation of the greyscale maps). The gradient changes; Guided Backprop hardly does: "
        "it shows edges of the picture more than the model's reasons. Its `fails_sanity_check` flag says so."
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "import copy\n"
        "import torch\n\n"
        "randomized = copy.deepcopy(model)\n"
        "torch.manual_seed(0)\n"
        "for layer in (randomized.net._fc, randomized.net._conv_head, randomized.net._bn1):\n"
        "    layer.reset_parameters()\n\n"
        "def rank_correlation(a, b):\n"
        "    ranks = lambda v: np.argsort(np.argsort(v.ravel()))\n"
        "    return np.corrcoef(ranks(a), ranks(b))[0, 1]\n\n"
        "targets = results[\"vanilla\"].target\n"
        "for method in (\"vanilla\", \"guided_backprop\"):\n"
        "    before = sw.to_grayscale(results[method])\n"
        "    after = sw.to_grayscale(sw.attribute(randomized, images, method, target=targets))\n"
        "    kept = [bool(rank_correlation(a, b) > 0.9) for a, b in zip(before, after)]\n"
        "    print(f\"{results[method].label:16s} fails_sanity_check={sw.get_method(method).fails_sanity_check!s:5s}  \"\n"
        "          f\"map kept under random upper layers (rank correlation > 0.9): {kept}\")"
    ),
    new_markdown_cell(
        "## What the options cost\n\n"
        "- `nsamples` is the number of passes per image for every method here (path steps for Blur IG and "
        "Guided IG, samples for Expected Gradients and VarGrad; XRAI computes IG from a black and a white "
        "baseline, 2 x `nsamples` passes per image, unless `base_attribution=` is given).\n"
        "- Guided IG's steps run one after another (each needs the previous gradient); the images of a batch "
        "share each step's pass. Its feature selection between passes is host numpy work.\n"
        "- Blur IG's `max_sigma` sets the strongest blur; the blurs are matrix products on the model's device.\n"
        "- XRAI's segmentation (Felzenszwalb at six scales) and ranking are host work, about 1.5 s per "
        "224 x 224 picture.\n"
        "- Expected Gradients draws each sample's reference from `references=` (default: the other images of "
        "the batch), every reference once per round, so `nsamples` a multiple of the number of references "
        "uses them evenly."
    ),
]
