"""Cells of notebooks/compare_methods.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# The classic methods, one static grid\n\n"
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
        "options = {\"vanilla\": {}, \"smoothgrad\": dict(nsamples=12), \"integrated\": dict(nsamples=12, nintegration=8),\n"
        "           \"smooth_integrated\": dict(nsamples=12, nintegration=8)}   # each method's own (others are refused)\n"
        "results = {method: sw.attribute(model, images, method, seed=0, **options[method])\n"
        "           for method in sw.CLASSIC}   # the four of the reference design; sw.METHODS lists all"
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
        "        axes[row, col].imshow(sw.to_grayscale(a)[row], cmap=\"inferno\", vmin=0, vmax=1)\n"
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
        "gaps = {}\n"
        "for steps in (16, 128):\n"
        "    a = sw.attribute(model, images, \"integrated\", nsamples=steps, baseline=0.0, quadrature=\"trapezoid\")\n"
        "    gain = a.raw.reshape(2, -1).sum(1) - a.delta\n"
        "    gaps[steps] = np.abs(a.delta / gain)\n"
        "    # Not compared by nbval: the last digit moves with a CPU's arithmetic.\n"
        "    print(f\"{steps:3d} steps: |gap| / (f(x) - f(0)) = {', '.join(f'{g:.0%}' for g in gaps[steps])}\")"
    ),
    new_code_cell(
        "# NBVAL_CHECK_OUTPUT\n"
        "print(\"16 steps leave a gap above 30% of f(x) - f(0) for an image:\", bool(gaps[16].max() > 0.3))\n"
        "print(\"128 steps close every gap to below 20%:\", bool(gaps[128].max() < 0.2))"
    ),
]
