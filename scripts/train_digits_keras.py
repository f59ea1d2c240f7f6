"""Train the Keras digits demo model and write its weights into salwidget/data.

    python scripts/train_digits_keras.py

Deterministic on CPU (seeded); prints the test accuracy quoted in the README.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from salwidget.models import DIGITS_WEIGHTS, build_digits_cnn, digits_data  # noqa: E402


def main() -> None:
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = digits_data()
    model = build_digits_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=30, batch_size=32, verbose=0, validation_split=0.1)
    logits = model.predict(x_test, verbose=0)
    accuracy = float(np.mean(logits.argmax(1) == y_test))
    out = Path(__file__).resolve().parents[1] / "salwidget" / "data" / DIGITS_WEIGHTS
    model.save_weights(out)
    print(f"test accuracy on {len(y_test)} held-out digits: {accuracy:.4f}; weights -> {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
