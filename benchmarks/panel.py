"""The panel's kernel thread: how long a change keeps the notebook busy.

    python benchmarks/panel.py                 # torch EfficientNet-Lite0 and a Keras EfficientNet-B0, 4 images
    python benchmarks/panel.py --rounds 20 --only keras

Three timings, each the median over rounds of the assignment on the kernel's
(main) thread, the way a control's change arrives there:

- look-only change (colour map, scaling): the grid of 4 images x 5 columns
  (the image, Gradient, SmoothGrad, Integrated Gradients, the overlay) is
  re-rendered on the kernel's thread;
- settings change to settings already computed: the assignment returns once
  the request is with the worker (which then serves the cached maps);
- settings change that starts a computation (a new sample count): the same,
  with the worker then computing (stopped and drained before the next round).

The Keras model is keras.applications.EfficientNetB0 with random weights (no
download): 5.3M weights in 314 variables, which a weights check reads (a checksum).
The Evaluate view stays hidden (its work is deferred until shown). The
machine's load moves these by tens of percent; compare the targets (look-only
under 100 ms, a settings change under 20 ms) with that in mind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from run import table  # noqa: E402 (same folder)
import salwidget as sw  # noqa: E402
from salwidget import models  # noqa: E402


def drained(panel) -> None:
    """Wait until the panel's worker thread is idle (a stopped computation ends at its next chunk)."""
    panel.host.worker._executor.submit(lambda: None).result()


def median_ms(times: list[float]) -> str:
    return f"{1000 * statistics.median(times):.1f}"


def measure(panel, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"look": [], "cached": [], "compute": []}
    looks = [("cmap", "viridis"), ("scaling", "method"), ("cmap", "inferno"), ("scaling", "image")]
    for i in range(rounds):
        name, value = looks[i % len(looks)]
        start = time.perf_counter()
        setattr(panel, name, value)  # look-only: re-rendered here, on the kernel's thread
        out["look"].append(time.perf_counter() - start)
    for i in range(rounds):  # two sample counts, both computed already: the worker serves them from the cache
        start = time.perf_counter()
        panel.nsamples = (4, 5)[i % 2]
        out["cached"].append(time.perf_counter() - start)
        panel.wait(600)
    for i in range(rounds):  # a new count each round: the worker starts computing
        start = time.perf_counter()
        panel.nsamples = 6 + i
        out["compute"].append(time.perf_counter() - start)
        panel.stop()
        drained(panel)
    return out


def torch_panel(images: np.ndarray):
    model, names = models.efficientnet_lite0()
    x = images.transpose(0, 3, 1, 2).copy()
    return sw.SaliencyWidget(model, x, display_images=images, class_names=names, nsamples=4, nintegration=4,
                             methods=("vanilla", "smoothgrad", "integrated"))


def keras_panel(images: np.ndarray):
    import keras

    model = keras.applications.EfficientNetB0(weights=None)
    return sw.SaliencyWidget(model, images * 255.0, display_images=images, nsamples=4, nintegration=4,
                             methods=("vanilla", "smoothgrad", "integrated"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", choices=["torch", "keras"])
    args = parser.parse_args()
    images = models.sample_images(["chelsea", "coffee", "astronaut", "rocket"])
    rows = []
    for kind, make in (("torch EfficientNet-Lite0", torch_panel), ("Keras EfficientNet-B0", keras_panel)):
        if args.only and not kind.lower().startswith(args.only):
            continue
        panel = make(images)
        assert panel.wait(1800) and panel.error == "", panel.error
        panel.nsamples = 5
        assert panel.wait(1800) and panel.error == "", panel.error  # both counts cached from here on
        panel.cmap = "viridis"  # a first render of a look pays nothing later rounds do not
        times = measure(panel, args.rounds)
        rows.append((kind, median_ms(times["look"]), median_ms(times["cached"]), median_ms(times["compute"])))
        panel.close()
    table(f"The kernel's thread per change, median of {args.rounds} (ms); 4 images, 5 columns, Evaluate hidden",
          rows, ("model", "look-only re-render", "settings change (cached)", "settings change (computes)"))


if __name__ == "__main__":
    main()
