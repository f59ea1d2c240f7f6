"""Deletion/insertion curves on EfficientNet-Lite0: salwidget against the same protocol as a plain torch loop.

    python benchmarks/evaluation.py [--rounds 3] [--steps 32]

Two saliency maps (Gradient and SmoothGrad, computed once beforehand) x two
images x ``steps`` steps, deletion and insertion. The plain loop is what one
writes by hand: per image and curve, every step's perturbed image in one
batch under ``torch.no_grad()``, the blur from scipy. Contenders run in turn
each round, in one process, after a check that both give the same curves
(which also warms them up); medians are reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

import salwidget as sw
from salwidget import models
from salwidget.evaluation import blur_sigma


DEVICE = "cpu"


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()}-core CPU ({cpu})"
    return f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def plain_loop(model, x: np.ndarray, maps: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The protocol by hand: (B, steps + 1) deletion and insertion probabilities."""
    batch, _, height, width = x.shape
    pixels = height * width
    sigma = blur_sigma(height, width)
    counts = torch.arange(steps + 1, device=DEVICE) * pixels // steps
    deletion, insertion = np.zeros((batch, steps + 1)), np.zeros((batch, steps + 1))
    with torch.no_grad():
        target = model(torch.from_numpy(x).to(DEVICE)).argmax(1)
        for b in range(batch):
            order = torch.from_numpy(np.argsort(-maps[b].ravel(), kind="stable")).to(DEVICE)
            ranks = torch.empty(pixels, dtype=torch.long, device=DEVICE)
            ranks[order] = torch.arange(pixels, device=DEVICE)
            chosen = (ranks[None] < counts[:, None]).reshape(steps + 1, 1, height, width)
            image = torch.from_numpy(x[b]).to(DEVICE)
            start = torch.from_numpy(gaussian_filter(x[b], (0, sigma, sigma))).to(DEVICE)
            for curve, batch_images in ((deletion, torch.where(chosen, 0.0, image)),
                                        (insertion, torch.where(chosen, image, start))):
                curve[b] = torch.softmax(model(batch_images), 1)[:, target[b]].cpu().numpy()
    return deletion, insertion


def alternate(contenders: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            sync()
            started = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="torch device for the model: cpu (default) or cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    model, _ = models.efficientnet_lite0()
    model = model.to(DEVICE)
    x = np.ascontiguousarray(models.sample_images(["chelsea", "coffee"]).transpose(0, 3, 1, 2))
    attributions = [sw.attribute(model, x, "vanilla"), sw.attribute(model, x, "smoothgrad", nsamples=8, seed=0)]
    maps = [np.abs(a.raw).sum(1) for a in attributions]

    # The two implementations agree before they are timed (this also warms both up), in float32 on a GPU too:
    # TF32 convolutions (PyTorch's CUDA default) round differently at different batch compositions.
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    sw.deletion_insertion(model, x, attributions[0], steps=args.steps, batch_size=args.steps + 1)
    for a, m in zip(attributions, maps):
        ours = sw.deletion_insertion(model, x, a, steps=args.steps)
        deletion, insertion = plain_loop(model, x, m, args.steps)
        np.testing.assert_allclose(ours.deletion, deletion, atol=2e-4)
        np.testing.assert_allclose(ours.insertion, insertion, atol=2e-4)
    torch.backends.cudnn.allow_tf32 = tf32

    def ours(batch_size="auto"):
        return lambda: [sw.deletion_insertion(model, x, a, steps=args.steps, batch_size=batch_size) for a in attributions]

    contenders = {
        "salwidget (auto chunks)": ours(),
        f"salwidget batch_size={args.steps + 1}": ours(args.steps + 1),
        f"plain torch loop (batch {args.steps + 1})": lambda: [plain_loop(model, x, m, args.steps) for m in maps],
    }
    medians = alternate(contenders, args.rounds)
    base = medians["salwidget (auto chunks)"]
    passes = 2 * 2 * 2 * (args.steps + 1)
    print(f"machine: {machine()}\n")
    print(f"2 maps x 2 images x {args.steps} steps, deletion + insertion (~{passes} forward passes), "
          f"median of {args.rounds} rounds\n")
    print("| contender | seconds | ms per pass | ratio |\n|---|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / passes:.1f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
