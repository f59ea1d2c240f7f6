"""A focused A/B for SmoothGrad-50 on one image: salwidget's chunk choice against
Captum's hand-tuned batches and bare forward+backward passes, interleaved.

    python benchmarks/ab_smoothgrad.py [--rounds 4]

Run it next to run.py's tables to see how much of a gap is this machine's noise.
"""

from __future__ import annotations

import argparse

import torch

from run import alternate, captum_run, machine, passes_at_chunk, salwidget_run  # noqa: I001 (same folder)
from salwidget import models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    rounds = parser.parse_args().rounds
    model, _ = models.efficientnet_lite0()
    x = torch.from_numpy(models.sample_images(["chelsea"]).transpose(0, 3, 1, 2).copy())
    noise = torch.rand(32, 3, 224, 224)
    contenders = {
        "salwidget auto (8)": salwidget_run(model, x, "smoothgrad", 50),
        "salwidget batch 16": salwidget_run(model, x, "smoothgrad", 50, batch_size=16),
        "Captum batch 8": captum_run(model, x, "smoothgrad", 50, 8),
        "Captum batch 16": captum_run(model, x, "smoothgrad", 50, 16),
        "bare passes, chunk 8": passes_at_chunk(model, noise, 50, 8),
        "bare passes, chunk 16": passes_at_chunk(model, noise, 50, 16),
    }
    print(f"machine: {machine()}\n\n| contender | seconds (median of {rounds}) |\n|---|---|")
    for name, seconds in alternate(contenders, rounds).items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
