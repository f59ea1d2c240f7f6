"""Cells of notebooks/evaluate.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# How much to trust a map\n\n"
        "Two checks that do not need ground truth, on the demo **EfficientNet-Lite0**:\n\n"
        "- **Deletion and insertion curves** (Petsiuk et al. 2018): does the map rank first the pixels the model "
        "needs? Remove the most salient pixels first and the target's probability should fall fast; reveal them "
        "first on a blurred image and it should rise fast. A random pixel order is the chance level.\n"
        "- **The model-randomisation sanity check** (Adebayo et al. 2018): re-draw the weights from the output "
        "layer down. A map that explains the *model* must change; one that stays the same explains the image.\n\n"
        "Both are forward/backward passes run by the same scheduler as `sw.attribute` (chunked, with `progress=` "
        "and `cancel=`), and neither changes the model."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model, class_names = models.efficientnet_lite0()\n"
        "pictures = models.sample_images([\"chelsea\", \"coffee\"])\n"
        "images = pictures.transpose(0, 3, 1, 2)\n"
        "maps = {\"vanilla\": sw.attribute(model, images, \"vanilla\", seed=0),\n"
        "        \"smoothgrad\": sw.attribute(model, images, \"smoothgrad\", nsamples=8, seed=0),\n"
        "        \"gradcam\": sw.attribute(model, images, \"gradcam\", seed=0)}\n"
        "maps[\"random\"] = \"random\"   # a seeded random pixel order: the chance level"
    ),
    new_markdown_cell(
        "## Deletion and insertion\n\n"
        "32 steps of 1/32 of the pixels each (all channels of a pixel at once). Deleted pixels become 0.0 (black "
        "for this model, which takes [0, 1] RGB); insertion starts from a Gaussian blur with sigma = 5% of the "
        "image side (11 pixels here), which leaves the model no cat and no espresso. Scores are the softmax "
        "probability of the class each map explains. Lower deletion and higher insertion areas are better."
    ),
    new_code_cell(
        "curves = {name: sw.deletion_insertion(model, images, saliency, steps=32) for name, saliency in maps.items()}\n"
        "for name, c in curves.items():\n"
        "    print(f\"{name:10s}  deletion AUC {np.round(c.auc_deletion, 2)}   insertion AUC {np.round(c.auc_insertion, 2)}\")"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "c = curves[\"random\"]\n"
        "print(\"fractions\", c.fractions.shape, \"from\", c.fractions[0], \"to\", c.fractions[-1], \"| curves\", c.deletion.shape)\n"
        "print(\"explained:\", [class_names[t] for t in c.target])\n"
        "for name in (\"smoothgrad\", \"gradcam\"):\n"
        "    beats = curves[name].auc_insertion > curves[\"random\"].auc_insertion\n"
        "    print(f\"{name}: insertion above chance on both images: {bool(beats.all())}\")"
    ),
    new_code_cell(
        "fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)\n"
        "for col in range(2):\n"
        "    for row, kind in enumerate((\"deletion\", \"insertion\")):\n"
        "        ax = axes[row, col]\n"
        "        for name, c in curves.items():\n"
        "            ax.plot(c.fractions, getattr(c, kind)[col], \"k--\" if name == \"random\" else \"-\",\n"
        "                    label=f\"{name} ({getattr(c, 'auc_' + kind)[col]:.2f})\")\n"
        "        ax.set_title(f\"{kind}: {class_names[c.target[col]]}\", fontsize=10)\n"
        "        ax.set_ylabel(\"probability\")\n"
        "        ax.legend(fontsize=8)\n"
        "    axes[1, col].set_xlabel(\"share of pixels replaced\")\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "Read deletion with care: black pixels scattered at random are themselves a strong perturbation, so the "
        "random order often destroys the prediction *faster* than a map that removes one coherent region "
        "(Grad-CAM above). Insertion from a blur is the fairer of the two here. `deletion_value='blur'` or a "
        "neutral value of your own changes what \"removed\" means; `score='logit'` avoids the softmax saturating."
    ),
    new_markdown_cell(
        "## The randomisation sanity check\n\n"
        "Cascading randomisation of eight depths, from the classifier down to the stem (every layer with "
        "weights above a depth is re-drawn too; the model has 99 such layers and `layers=None` reports all of "
        "them). The class explained stays the trained model's prediction. Similarity is the Spearman rank "
        "correlation of the greyscale masks."
    ),
    new_code_cell(
        "depths = [\"net._fc\", \"net._conv_head\"] + [f\"net._blocks.{i}._project_conv\" for i in (15, 12, 8, 4, 1)] \\\n"
        "    + [\"net._conv_stem\"]\n"
        "checks = {method: sw.sanity_check(model, images, method, order=\"cascading\", layers=depths)\n"
        "          for method in (\"vanilla\", \"guided_backprop\")}"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "r = checks[\"vanilla\"]\n"
        "print(len(r.layers), \"depths; similarity\", r.similarity.shape, \"maps\", r.maps.shape)\n"
        "print(\"Gradient, fully randomised: similarity below 0.5 on both images:\", bool(np.all(r.similarity[:, -1] < 0.5)))\n"
        "g = checks[\"guided_backprop\"]\n"
        "print(\"Guided Backprop, classifier re-drawn: similarity above 0.9 on both images:\", bool(np.all(g.similarity[:, 0] > 0.9)))"
    ),
    new_code_cell(
        "fig, ax = plt.subplots(figsize=(8, 3.5))\n"
        "for (method, r), colour in zip(checks.items(), (\"tab:blue\", \"tab:orange\")):\n"
        "    for image in range(2):\n"
        "        ax.plot(r.similarity[image], \"o-\", color=colour, alpha=1 if image == 0 else 0.5,\n"
        "                label=f\"{method}, {['chelsea', 'coffee'][image]}\")\n"
        "ax.set_xticks(range(len(depths)), [d.replace(\"net.\", \"\").replace(\"_blocks.\", \"b\") for d in depths],\n"
        "              rotation=30, fontsize=8)\n"
        "ax.axhline(0, color=\"grey\", lw=0.5)\n"
        "ax.set_ylabel(\"Spearman vs trained\")\n"
        "ax.set_xlabel(\"randomised down to (output end first)\")\n"
        "ax.legend(fontsize=8)\n"
        "fig.tight_layout()"
    ),
    new_code_cell(
        "shown = [0, 2, 4, 6, 7]   # five of the eight depths, first picture\n"
        "fig, axes = plt.subplots(2, 1 + len(shown), figsize=(1.5 * (1 + len(shown)), 3.6))\n"
        "for row, (method, r) in enumerate(checks.items()):\n"
        "    axes[row, 0].imshow(r.original_mask[0], cmap=\"inferno\")\n"
        "    axes[row, 0].set_title(f\"{method}: trained\", fontsize=7)\n"
        "    for col, index in enumerate(shown, start=1):\n"
        "        axes[row, col].imshow(r.maps[index, 0], cmap=\"inferno\")\n"
        "        axes[row, col].set_title(depths[index].replace(\"net.\", \"\").replace(\"_blocks.\", \"b\"), fontsize=7)\n"
        "for ax in axes.ravel():\n"
        "    ax.axis(\"off\")\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "Gradient maps correlate only weakly with the trained model's once the classifier is re-drawn, and not at "
        "all once the whole network is; Guided Backprop keeps nearly the same picture until the middle of the "
        "network: it shows the image's edges more than what the model learned (Adebayo et al.'s finding). `order='independent'` re-draws one layer at a time; "
        "`similarity='ssim'` compares structure instead of ranks."
    ),
    new_markdown_cell(
        "## In the panel\n\n"
        "The panel's *Evaluate* toggle (or `w.evaluate()`) computes the same curves for the maps it shows, in its "
        "worker thread, and caches them; *Sanity check* (or `w.evaluate(sanity_check=True)`) adds the cascading "
        "test at `w.sanity_depths` depths. `w.curves`, `w.sanity` and `w.evaluation_png()` read the results back."
    ),
    new_code_cell(
        "from IPython.display import Image\n\n"
        "w = sw.SaliencyWidget(model, images, class_names=class_names, methods=(\"vanilla\", \"smoothgrad\"), nsamples=8)\n"
        "w.curve_steps = 8\n"
        "w.evaluate()\n"
        "w.wait()\n"
        "Image(w.evaluation_png(), width=760)"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "print(sorted(w.curves), w.error == \"\")\n"
        "panel_curve = w.curves[\"smoothgrad\"]\n"
        "same = sw.deletion_insertion(model, images, w.results[\"smoothgrad\"], steps=8)\n"
        "print(\"the panel's curves are the core's:\", bool(np.allclose(panel_curve.insertion, same.insertion, atol=1e-6)))"
    ),
]
