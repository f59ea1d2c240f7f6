"""Cells of notebooks/keras_digits.ipynb (written by scripts/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
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
