"""Guided IG, Blur IG and XRAI: salwidget against PAIR saliency on EfficientNet-Lite0 (224 x 224).

    python benchmarks/pair_methods.py                      # 2 images, 3 rounds (about 5 minutes on 2 CPU cores)
    python benchmarks/pair_methods.py --images 1 --rounds 1 --threads 1

Both tools get the same model, images, targets and settings. PAIR runs as its
documented API does: one image at a time, one sample per model call
(``batch_size=1``), numpy in and out. The contenders alternate round by round
in one process; the table reports median times and the median over rounds of
the ratio PAIR time / salwidget time (> 1: salwidget is faster; a ratio within
a round is robust to a machine whose load drifts), and how far apart the maps are
(||salwidget - PAIR|| / ||PAIR||) as a check that both computed the same thing.
"passes" is the floor: the same number of bare forward+backward passes (one
image each, input gradient only) with nothing else; on a CPU that gains
nothing from batching, both tools can only save the work around the passes.
Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

import salwidget as sw
from salwidget import models

IMAGES = ["chelsea", "coffee", "astronaut", "rocket"]
DEVICE = "cpu"


def sync() -> None:
    """Wait for queued GPU work, so that a timing covers it."""
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def quantile_shim() -> None:
    """PAIR's Guided IG calls np.quantile(..., interpolation=), gone in numpy 2.4: route it to method=."""
    original = np.quantile
    if getattr(original, "_shim", False):
        return

    def quantile(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return original(a, q, *args, **kwargs)

    quantile._shim = True
    np.quantile = quantile


def pair_model(model, channels_last: bool = True):
    """PAIR's model interface: numpy batches in, input gradients of the target out (same layout)."""
    import saliency.core as pair

    def call_model(batch, call_model_args=None, expected_keys=None):
        x = torch.from_numpy(np.asarray(batch, np.float32)).to(DEVICE)
        x = (x.permute(0, 3, 1, 2) if channels_last else x).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[:, call_model_args].sum(), x)
        return {pair.INPUT_OUTPUT_GRADIENTS: (grad.permute(0, 2, 3, 1) if channels_last else grad).cpu().numpy()}

    return call_model


def bare_passes(model, x, count: int):
    """``count`` forward+backward passes, one image each, cycling through ``x``: the work every tool must do."""
    def run():
        for k in range(count):
            xi = torch.from_numpy(x[k % len(x)][None]).to(DEVICE).requires_grad_(True)
            torch.autograd.grad(model(xi)[:, 0].sum(), xi)
    return run


def cases(model, steps_blur: int, steps_guided: int, steps_xrai: int):
    """(name, settings, salwidget options, PAIR call(image CHW float32, target) -> map CHW or HW).

    Each PAIR call gets the image as that method needs it: Guided IG in the model's own channels-first
    order (its feature selection is order-sensitive: PAIR on HWC and on CHW images differ by tens of
    percent), Blur IG as float64 HWC (it blurs the first two axes; float32 would lose its sigma
    derivative to rounding), XRAI as HWC (its segmentation).
    """
    import saliency.core as pair

    hwc, chw = pair_model(model, True), pair_model(model, False)
    to_hwc = lambda image: image.transpose(1, 2, 0)
    return [
        ("guided_ig", f"{steps_guided} steps, fraction 0.25, max_dist 0.02, black baseline",
         dict(nsamples=steps_guided, fraction=0.25, max_dist=0.02, baseline=0.0),
         lambda image, t: pair.GuidedIG().GetMask(image, chw, t, x_baseline=np.zeros_like(image),
                                                 x_steps=steps_guided, fraction=0.25, max_dist=0.02)),
        ("blur_ig", f"{steps_blur} steps, max_sigma 50, grad_step 0.01",
         dict(nsamples=steps_blur, max_sigma=50.0, grad_step=0.01),
         lambda image, t: pair.BlurIG().GetMask(to_hwc(image).astype(np.float64), hwc, t, max_sigma=50,
                                               steps=steps_blur, grad_step=0.01, batch_size=1).transpose(2, 0, 1)),
        ("xrai", f"IG {steps_xrai} steps x black and white baselines, full algorithm",
         dict(nsamples=steps_xrai),
         lambda image, t: pair.XRAI().GetMask(to_hwc(image), hwc, t, batch_size=1,
                                             extra_parameters=pair.XRAIParameters(steps=steps_xrai))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2, choices=range(1, len(IMAGES) + 1))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blur-steps", type=int, default=20)
    parser.add_argument("--guided-steps", type=int, default=20)
    parser.add_argument("--xrai-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 keeps timings stable on a shared machine)")
    parser.add_argument("--device", default="cpu", help="torch device for the model: cpu (default) or cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    quantile_shim()

    model, _ = models.efficientnet_lite0()
    model = model.to(DEVICE)
    pictures = models.sample_images(IMAGES[: args.images])
    x = np.ascontiguousarray(pictures.transpose(0, 3, 1, 2))
    with torch.no_grad():
        targets = model(torch.from_numpy(x).to(DEVICE)).argmax(1).cpu().numpy()
    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else f"{os.cpu_count()}-core CPU ({cpu})"
    print(f"EfficientNet-Lite0, {args.images} image(s) 224 x 224, {args.rounds} rounds after a warm-up; "
          f"{where}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    rows = []
    passes = {"guided_ig": args.guided_steps, "blur_ig": args.blur_steps, "xrai": 2 * args.xrai_steps}
    for name, settings, options, pair_mask in cases(model, args.blur_steps, args.guided_steps, args.xrai_steps):
        outputs = {}
        floor = bare_passes(model, x, passes[name] * len(x))

        def ours():
            outputs["salwidget"] = sw.attribute(model, x, name, target=targets, seed=0, **options).raw

        def theirs():
            outputs["PAIR"] = np.stack([pair_mask(image, int(t)) for image, t in zip(x, targets)])

        times = {"salwidget": [], "PAIR": [], "passes": []}
        for round_ in range(args.rounds + 1):  # round 0 warms up (allocator, caches, first calls)
            for label, run in (("salwidget", ours), ("PAIR", theirs), ("passes", floor)):
                sync()
                start = time.perf_counter()
                run()
                sync()
                if round_:
                    times[label].append(time.perf_counter() - start)
        medians = {label: statistics.median(ts) for label, ts in times.items()}
        ratio = statistics.median(p / o for p, o in zip(times["PAIR"], times["salwidget"]))
        floor_ratio = statistics.median(o / f for o, f in zip(times["salwidget"], times["passes"]))
        gap = np.linalg.norm(outputs["salwidget"] - outputs["PAIR"]) / np.linalg.norm(outputs["PAIR"])
        rows.append((name, settings, f"{medians['PAIR']:.1f}", f"{medians['salwidget']:.1f}",
                     f"{ratio:.2f}x", f"{medians['passes']:.1f}", f"{floor_ratio:.2f}x", f"{gap:.1e}"))
        print(f"{name}: seconds per round: PAIR {[round(t, 1) for t in times['PAIR']]}, salwidget "
              f"{[round(t, 1) for t in times['salwidget']]}, passes {[round(t, 1) for t in times['passes']]}",
              flush=True)

    header = ("method", "settings", "PAIR (s)", "salwidget (s)", "PAIR / salwidget", "passes (s)",
              "salwidget / passes", "map difference")
    print(f"\n### Time per call for {args.images} image(s) (median of {args.rounds})\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
