"""Cells of notebooks/perturbation.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# Forward-only methods, and any model\n\n"
        "Gradient methods ask how the score *changes* under an infinitesimal nudge; perturbation methods ask "
        "what the score *is* when parts of the picture are hidden. They need nothing but forward passes, so "
        "they explain any model: a torch or Keras model, a plain function of numpy batches, an ONNX Runtime "
        "session.\n\n"
        "- **Occlusion**: a sliding window; each pixel gets the mean score lost over the windows covering it.\n"
        "- **Feature ablation**: the score lost when one superpixel (SLIC) alone is hidden.\n"
        "- **LIME** and **KernelSHAP**: a weighted linear fit of the score on which superpixels are shown.\n"
        "- **RISE**: the score under random soft masks, averaged with the masks as weights.\n"
        "- **Sobol**: the share of the score's variance each grid cell takes part in.\n\n"
        "One picture, one pretrained ImageNet EfficientNet-Lite0, every family side by side."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "import salwidget as sw\n"
        "from salwidget import models\n\n"
        "model, class_names = models.efficientnet_lite0()\n"
        "picture = models.sample_images([\"chelsea\"])\n"
        "image = picture.transpose(0, 3, 1, 2)\n"
        "methods = {\n"
        "    \"smoothgrad\": dict(nsamples=12),                       # gradients\n"
        "    \"integrated\": dict(nsamples=16, baseline=0.0),\n"
        "    \"gradcam\": {},                                         # a layer's activations\n"
        "    \"occlusion\": dict(window=32, stride=16, fill=0.0),     # forward passes only\n"
        "    \"feature_ablation\": dict(segments=\"slic\"),\n"
        "    \"lime\": dict(segments=\"slic\", nsamples=200),\n"
        "    \"kernel_shap\": dict(segments=\"slic\", nsamples=200),\n"
        "    \"rise\": dict(nmasks=500, grid=7, keep=0.5),\n"
        "    \"sobol\": dict(grid=6, nmasks=16),\n"
        "}\n"
        "results = {method: sw.attribute(model, image, method, seed=0, **options) for method, options in methods.items()}"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "for method, a in results.items():\n"
        "    passes = \"\" if method == \"feature_ablation\" else f\" passes {a.passes_done}\"  # SLIC's count: not checked\n"
        "    print(f\"{a.label:18s} kind {a.kind:6s} raw {str(a.raw.shape):18s}{passes}\")"
    ),
    new_code_cell(
        "fig, axes = plt.subplots(2, 5, figsize=(12, 5))\n"
        "axes = axes.ravel()\n"
        "axes[0].imshow(picture[0])\n"
        "axes[0].set_title(class_names[results[\"occlusion\"].target[0]], fontsize=9)\n"
        "for ax, a in zip(axes[1:], results.values()):\n"
        "    ax.imshow(picture[0])\n"
        "    ax.imshow(sw.to_grayscale(a)[0], cmap=\"jet\", alpha=0.5, vmin=0, vmax=1)\n"
        "    ax.set_title(a.label, fontsize=9)\n"
        "for ax in axes:\n"
        "    ax.axis(\"off\")\n"
        "fig.tight_layout()"
    ),
    new_markdown_cell(
        "The segment methods share one SLIC segmentation (computed once, kept for the next call): each of "
        "their maps is constant on a superpixel. KernelSHAP's values add up to the score of the picture minus "
        "the score with every superpixel hidden (its two end coalitions carry a weight of a million)."
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "import torch\n\n"
        "segments = results[\"kernel_shap\"].extras[\"segments\"][0]\n"
        "shap = results[\"kernel_shap\"].raw[0]\n"
        "values = np.array([shap[segments == s][0] for s in range(segments.max() + 1)])\n"
        "target = results[\"kernel_shap\"].target[0]\n"
        "with torch.no_grad():\n"
        "    gap = (model(torch.from_numpy(image)) - model(torch.zeros_like(torch.from_numpy(image))))[0, target].item()\n"
        "print(\"constant on every superpixel:\", all(np.ptp(shap[segments == s]) == 0 for s in range(segments.max() + 1)))\n"
        "print(\"values add up to f(x) - f(hidden):\", bool(np.isclose(values.sum(), gap, rtol=1e-2, atol=1e-2)))"
    ),
    new_markdown_cell(
        "## Any model: an ONNX Runtime session\n\n"
        "The same network exported to ONNX and run by ONNX Runtime is detected as a forward-only model. It "
        "gives the same perturbation maps as the torch model; a gradient method asked of it is refused with "
        "the names of the methods it can use. (A plain function works too: "
        "`sw.attribute(f, x, \"occlusion\", framework=\"numpy\", channels_last=...)`.)"
    ),
    new_code_cell(
        "# NBVAL_IGNORE_OUTPUT\n"
        "import io\n"
        "import warnings\n\n"
        "import onnxruntime\n\n"
        "buffer = io.BytesIO()\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter(\"ignore\")  # the TorchScript exporter's deprecation notice\n"
        "    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), buffer, input_names=[\"image\"],\n"
        "                      output_names=[\"logits\"], dynamic_axes={\"image\": {0: \"batch\"}, \"logits\": {0: \"batch\"}},\n"
        "                      dynamo=False)\n"
        "session = onnxruntime.InferenceSession(buffer.getvalue(), providers=[\"CPUExecutionProvider\"])"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "onnx_maps = sw.attribute(session, image, \"occlusion\", **methods[\"occlusion\"])\n"
        "torch_maps = results[\"occlusion\"]\n"
        "scale = np.abs(torch_maps.raw).max()\n"
        "print(onnx_maps.framework, onnx_maps.raw.shape)\n"
        "print(\"same map as torch:\", np.allclose(onnx_maps.raw, torch_maps.raw, atol=1e-2 * scale))\n"
        "try:\n"
        "    sw.attribute(session, image, \"integrated\")\n"
        "except sw.SaliencyError as error:\n"
        "    print(error)"
    ),
    new_markdown_cell(
        "In the panel, an ONNX session is offered the forward-only methods only (occlusion and RISE to start "
        "with); the Dataset and Evaluate views work on it as on any model."
    ),
    new_code_cell(
        "panel = sw.SaliencyWidget(session, image, class_names=class_names, display_images=picture,\n"
        "                          options={\"occlusion\": dict(window=32, stride=16), \"rise\": dict(nmasks=300)})\n"
        "panel"
    ),
]
