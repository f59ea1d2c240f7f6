"""On a CUDA machine: the maps computed on the GPU equal the CPU's, method by method.

    python benchmarks/gpu_check.py [--device cuda]

EfficientNet-Lite0 on two pictures, the same weights on both devices. Noise-free methods are compared
directly; noisy ones with ``rng="numpy"`` (host draws: the same numbers on both devices). PyTorch runs CUDA
convolutions in TF32 by default (10 mantissa bits), which moves input-gradient maps by several percent: the
checks run with TF32 off (``--tf32`` keeps PyTorch's default), and a first row reports the TF32 default's gap. Prints one row per
method with the relative difference ||gpu - cpu|| / ||cpu|| and exits 1 if any is above its tolerance
(float32 convolutions round differently on the two devices; Guided IG's and XRAI's selections can flip on a
last-bit difference, so they get a loose tolerance and are reported, not judged).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import salwidget as sw
from salwidget import models

CASES = [  # (method, options, tolerance or None to report only)
    ("vanilla", {}, 1e-3),
    ("gradient_x_input", {}, 1e-3),
    ("smoothgrad", dict(nsamples=8, rng="numpy"), 1e-2),  # sums of passes: float32 rounding adds up
    ("integrated", dict(nsamples=16, baseline=0.0), 1e-2),
    ("smooth_integrated", dict(nsamples=3, nintegration=4, rng="numpy"), 1e-3),
    ("vargrad", dict(nsamples=8, rng="numpy"), 1e-2),
    ("guided_backprop", {}, 1e-3),
    ("expected_gradients", dict(nsamples=8, rng="numpy"), 1e-2),
    ("blur_ig", dict(nsamples=8), 1e-2),
    ("gradcam", {}, 1e-3),
    ("gradcampp", {}, 1e-3),
    ("layercam", {}, 1e-3),
    ("scorecam", {}, 1e-3),
    ("guided_ig", dict(nsamples=8, baseline=0.0), None),
    ("xrai", dict(nsamples=4), None),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tf32", action="store_true", help="keep PyTorch's TF32 default for convolutions")
    args = parser.parse_args()
    cpu_model, _ = models.efficientnet_lite0()
    gpu_model, _ = models.efficientnet_lite0()
    gpu_model = gpu_model.to(args.device)
    x = np.ascontiguousarray(models.sample_images(["chelsea", "coffee"]).transpose(0, 3, 1, 2))
    targets = sw.predict(cpu_model, x).argmax(1)
    assert (sw.predict(gpu_model, x).argmax(1) == targets).all(), "the devices predict different classes"
    print(f"{torch.cuda.get_device_name(0) if args.device.startswith('cuda') else args.device}, torch {torch.__version__}\n")
    print("| method | device | relative difference GPU vs CPU | tolerance | ok |\n|---|---|---|---|---|")
    failed = []
    if args.device.startswith("cuda"):
        default = sw.attribute(gpu_model, x, "vanilla", target=targets).raw
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
        exact = sw.attribute(gpu_model, x, "vanilla", target=targets).raw
        gap = float(np.linalg.norm(default - exact) / np.linalg.norm(exact))
        print(f"| vanilla, PyTorch's TF32 default vs TF32 off (both GPU) | {args.device} | {gap:.1e} | - | report only |")
    for method, options, tolerance in CASES:
        cpu = sw.attribute(cpu_model, x, method, target=targets, seed=0, **options)
        gpu = sw.attribute(gpu_model, x, method, target=targets, seed=0, **options)
        gap = float(np.linalg.norm(gpu.raw - cpu.raw) / max(np.linalg.norm(cpu.raw), 1e-30))
        ok = "report only" if tolerance is None else ("yes" if gap <= tolerance else "NO")
        if ok == "NO":
            failed.append(method)
        print(f"| {method} | {gpu.device} | {gap:.1e} | {tolerance if tolerance is not None else '-'} | {ok} |", flush=True)
    a = sw.attribute(cpu_model, x, "smoothgrad", target=targets, nsamples=8, seed=0)
    cpu_curves = sw.deletion_insertion(cpu_model, x, a, steps=16)
    gpu_curves = sw.deletion_insertion(gpu_model, x, a, steps=16)
    gap = float(np.abs(gpu_curves.deletion - cpu_curves.deletion).max()
                + np.abs(gpu_curves.insertion - cpu_curves.insertion).max())
    print(f"| deletion/insertion curves (max abs difference) | {args.device} | {gap:.1e} | 1e-3 | {'yes' if gap <= 1e-3 else 'NO'} |")
    if gap > 1e-3:
        failed.append("deletion_insertion")
    device_draws = [sw.attribute(gpu_model, x, "smoothgrad", target=targets, nsamples=8, seed=0, batch_size=b).raw
                    for b in (3, 16)]
    gap = float(np.linalg.norm(device_draws[0] - device_draws[1]) / np.linalg.norm(device_draws[1]))
    print(f"| smoothgrad, device draws, chunk 3 vs 16 | {args.device} | {gap:.1e} | 1e-4 | {'yes' if gap <= 1e-4 else 'NO'} |")
    if gap > 1e-4:
        failed.append("chunk independence")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
