"""Forward-only methods against the same forward passes with nothing else, and against Captum.

    python benchmarks/perturbation.py                  # a small CNN at 224 x 224 (minutes on 2 cores)
    python benchmarks/perturbation.py --model lite0    # EfficientNet-Lite0 (the bench extra; much longer)
    python benchmarks/perturbation.py --rounds 3 --rise-masks 4000

Occlusion of one 224 x 224 image with 16 x 16 windows at stride 8 (27 x 27 = 729
windows, plus one clean pass) and RISE with 4,000 masks. "plain loop": the same
number of forward passes, in the same chunks as salwidget ran them, on a batch
made once (no masks, no scores kept): the machine's floor for this work. Captum's
``Occlusion`` runs at its default ``perturbations_per_eval=1`` and at the best
value of a small sweep. Contenders alternate round by round in one process;
medians are reported; ratio = plain-loop (or Captum) time / salwidget time
(>= 1: salwidget is as fast or faster).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from run import alternate, machine, table  # noqa: E402

import salwidget as sw  # noqa: E402


def small_cnn() -> torch.nn.Module:
    """A cheap 224 x 224 classifier: the library's own work shows beside its passes."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 5, stride=4, padding=2), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    ).eval()


def plain_loop(model, image: np.ndarray, passes: int, chunk: int):
    """``passes`` forward passes in chunks of ``chunk`` on one prepared batch."""
    batch = torch.tensor(np.repeat(image, chunk, axis=0))

    def run():
        with torch.no_grad():
            for start in range(0, passes, chunk):
                model(batch[: min(chunk, passes - start)])
    return run


def forward_chunk(result) -> int:
    """Forward passes per chunk salwidget ran: 'auto' fits 1 / FORWARD_COST as many as gradient passes."""
    from salwidget.methods.forward_only import FORWARD_COST

    return max(1, int(round(result.batch_size / FORWARD_COST)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("small", "lite0"), default="small")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rise-masks", type=int, default=4000)
    parser.add_argument("--captum-sweep", default="16,64,256", help="perturbations_per_eval values tried")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up run (long runs)")
    parser.add_argument("--no-captum-default", action="store_true", help="skip Captum at perturbations_per_eval=1")
    args = parser.parse_args()
    if args.model == "lite0":
        from salwidget import models

        model, _ = models.efficientnet_lite0()  # (model, class names)
    else:
        model = small_cnn()
    image = np.random.default_rng(0).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    print(f"Machine: {machine()}; model: {args.model}; rounds: {args.rounds}")

    from captum.attr import Occlusion

    occlusion = dict(window=16, stride=8, fill=0.0, target=0)
    probe = sw.attribute(model, image, "occlusion", **occlusion)
    passes, chunk = probe.passes_done, forward_chunk(probe)
    captum = Occlusion(model)
    x = torch.tensor(image)

    def captum_run(per_eval: int):
        return lambda: captum.attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=0.0,
                                        target=0, perturbations_per_eval=per_eval)

    tried = [int(n) for n in args.captum_sweep.split(",")]
    sweep = alternate({f"{n}": captum_run(n) for n in tried}, 1, warmup=False) if len(tried) > 1 else {tried[0]: 0}
    best = int(min(sweep, key=sweep.get))
    times = alternate({
        "salwidget": lambda: sw.attribute(model, image, "occlusion", **occlusion),
        "plain loop": plain_loop(model, image, passes, chunk),
        **({} if args.no_captum_default else {"captum default": captum_run(1)}),
        f"captum best ({best})": captum_run(best),
    }, args.rounds, warmup=not args.no_warmup)
    ours = times["salwidget"]
    table(f"Occlusion, 224 x 224, window 16, stride 8: {passes} passes, chunks of {chunk}",
          [(name, f"{seconds:.2f}", f"{seconds / ours:.2f}x") for name, seconds in times.items()],
          ("contender", "seconds (median)", "ratio to salwidget"))

    rise = dict(nmasks=args.rise_masks, grid=7, keep=0.5, seed=0, target=0)
    probe = sw.attribute(model, image, "rise", **rise)
    times = alternate({
        "salwidget": lambda: sw.attribute(model, image, "rise", **rise),
        "plain loop": plain_loop(model, image, probe.passes_done, forward_chunk(probe)),
    }, args.rounds, warmup=not args.no_warmup)
    ours = times["salwidget"]
    table(f"RISE, 224 x 224, {args.rise_masks} masks: chunks of {forward_chunk(probe)}",
          [(name, f"{seconds:.2f}", f"{seconds / ours:.2f}x") for name, seconds in times.items()],
          ("contender", "seconds (median)", "ratio to salwidget"))


if __name__ == "__main__":
    main()
