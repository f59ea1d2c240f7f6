"""sw.scan against a plain inference loop, its memory over 50,000 images, and a killed scan resumed.

    python benchmarks/scan.py                    # everything (a few minutes on 2 CPU cores)
    python benchmarks/scan.py --only speed       # or: proxy, memory, resume
    python benchmarks/scan.py --only proxy       # the near-free model: the scan's own work (issue 26)
    python benchmarks/scan.py --device cuda      # torch on a GPU (the Keras row needs TensorFlow's GPU)

Speed: the same images at the same batch size, contenders alternating round by
round in one process, medians. "plain loop" is what one writes by hand: the
model on each batch under ``torch.no_grad()`` (Keras: ``model(x,
training=False)``), outputs to numpy, nothing else; salwidget's scan also
computes every column, the thumbnails, and commits Parquet and zarr to a
store (a fresh temporary one each round, so it really computes). Ratio =
plain / scan (>= 0.95 is the target).

Memory: peak resident memory (VmHWM) above the loaded model of a scan of N
64 x 64 images made on the fly by a torch Dataset, each N in a fresh process.

Resume: a scan killed (SIGKILL) after its first block, then run again: the
model calls of the second run and whether its table equals an uninterrupted scan's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import salwidget as sw  # noqa: E402

import run as common  # noqa: E402 (same folder: the timing helpers)

alternate = common.alternate_rounds
DEVICE = "cpu"


def report(title: str, times: dict[str, list[float]], images: int) -> None:
    scan, plain = times["salwidget scan"], times["plain loop"]
    ratio = statistics.median(p / s for p, s in zip(plain, scan))
    print(f"\n### {title}\n\n| contender | seconds (median) | images per second |\n|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.2f} | {images / statistics.median(ts):.0f} |")
    print(f"\nplain / scan (median of per-round ratios) = **{ratio:.2f}x**", flush=True)


def torch_speed(rounds: int, images: int, batch: int) -> None:
    import torch

    from salwidget import models

    model, names = models.efficientnet_lite0()
    model = model.to(DEVICE).eval()
    pictures = models.sample_images(["chelsea", "coffee", "astronaut", "rocket"])
    x = np.ascontiguousarray(np.resize(pictures.transpose(0, 3, 1, 2), (images, 3, 224, 224)).astype(np.float32))

    def plain():
        with torch.no_grad():
            return [model(torch.from_numpy(x[i : i + batch]).to(DEVICE)).cpu().numpy()
                    for i in range(0, len(x), batch)]

    def scan():
        with tempfile.TemporaryDirectory() as store:
            sw.scan(model, x, class_names=names, batch_size=batch, store=store)

    report(f"torch EfficientNet-Lite0, {images} images 224 x 224, batch {batch}, {DEVICE}",
           alternate({"salwidget scan": scan, "plain loop": plain}, rounds), images)


def near_free_model(classes: int = 1000):
    """Adaptive pooling and a linear layer: the model's work is almost nothing, so what shows is the
    scan's own work per image (the GPU regime, where a model's pass takes microseconds)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(48, classes)).eval()


def proxy_speed(rounds: int, images: int = 1024, batch: int = 64) -> None:
    """The GPU-regime proxy (issue 26): a near-free model, 1,024 images 224 x 224 at batch 64; the scan's
    time over the plain loop's is its own overhead (target: at most 2.0x)."""
    import torch

    model = near_free_model()
    x = np.random.default_rng(0).uniform(0, 1, (images, 3, 224, 224)).astype(np.float32)
    labels = np.arange(images) % 1000

    def plain():
        with torch.no_grad():
            return [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]

    def scan():
        with tempfile.TemporaryDirectory() as store:
            sw.scan(model, x, labels, batch_size=batch, store=store)

    times = alternate({"salwidget scan": scan, "plain loop": plain}, rounds)
    report(f"near-free model (pooling + linear), {images} images 224 x 224, batch {batch}, {DEVICE}", times, images)
    ratio = statistics.median(s / p for p, s in zip(times["plain loop"], times["salwidget scan"]))
    per_image = (statistics.median(times["salwidget scan"]) - statistics.median(times["plain loop"])) / images
    print(f"scan / plain = **{ratio:.2f}x** (target <= 2.0x); host work per image {per_image * 1e3:.3f} ms",
          flush=True)


def keras_speed(rounds: int, images: int, batch: int) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64, 64, 3)),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    x = np.random.default_rng(0).uniform(0, 1, (images, 64, 64, 3)).astype(np.float32)

    def plain():
        return [np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]

    def scan():
        with tempfile.TemporaryDirectory() as store:
            sw.scan(model, x, batch_size=batch, store=store)

    report(f"Keras CNN (3 convolutions), {images} images 64 x 64, batch {batch}",
           alternate({"salwidget scan": scan, "plain loop": plain}, rounds), images)


MEMORY = """
sw.scan(model, OnTheFly(300))  # warm-up: imports, first calls
base = status("VmRSS")
with tempfile.TemporaryDirectory() as store:
    assert len(sw.scan(model, OnTheFly(n), store=store).table) == n
print(status("VmHWM") - base)
"""


def memory(sizes: list[int]) -> None:
    from memory_probe import peak_table

    peak_table(MEMORY, sizes, "Peak memory of a scan above the loaded model, 64 x 64 images made on the fly")


KILLED = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, salwidget as sw
from tests.helpers import make_torch_cnn
x = np.random.default_rng(0).uniform(0, 1, (2000, 3, 32, 32)).astype(np.float32)
sw.scan(make_torch_cnn(), x, np.arange(2000) % 5, store=sys.argv[2], batch_size=64,
        progress=lambda done, total: done >= 1024 and os.kill(os.getpid(), signal.SIGKILL))
"""


def resume() -> None:
    from tests.helpers import make_torch_cnn

    x = np.random.default_rng(0).uniform(0, 1, (2000, 3, 32, 32)).astype(np.float32)
    labels = np.arange(2000) % 5
    with tempfile.TemporaryDirectory() as killed, tempfile.TemporaryDirectory() as whole:
        code = subprocess.run([sys.executable, "-c", KILLED, os.path.dirname(HERE), killed]).returncode
        model = make_torch_cnn()
        resumed = sw.scan(model, x, labels, store=killed, batch_size=64)
        full = sw.scan(model, x, labels, store=whole, batch_size=64)
        equal = resumed.table.equals(full.table)
    print("\n### A scan killed half way (SIGKILL after 1,024 of 2,000 rows), then run again\n")
    print(f"exit status of the killed run: {code}; model calls when run again: {resumed.calls} "
          f"(an uninterrupted scan: {full.calls}); tables equal: {equal}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=("speed", "proxy", "memory", "resume"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=256, help="EfficientNet images (Keras: 16x as many)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    global DEVICE
    DEVICE = common.DEVICE = args.device
    only = set(args.only or ("speed", "proxy", "memory", "resume"))
    import torch

    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {DEVICE}")
    if "speed" in only:
        torch_speed(args.rounds, args.images, args.batch)
        if DEVICE == "cpu":
            keras_speed(args.rounds, 16 * args.images, 4 * args.batch)
    if "proxy" in only:
        proxy_speed(args.rounds)
    if "memory" in only and DEVICE == "cpu":
        memory([1_000, 50_000])
    if "resume" in only:
        resume()


if __name__ == "__main__":
    main()
