"""Framework operations per call: salwidget against a hand-written loop, on a near-free model.

    python benchmarks/ops.py                     # CPU
    python benchmarks/ops.py --device cuda       # the same on a GPU (each operation a kernel launch)

A model whose passes cost almost nothing (a 4x4 stride-4 convolution, adaptive pooling, a linear layer) on
one 224x224 image, so that only the library's own work shows. Per call of SmoothGrad-25, IG-25 (black
baseline) and Grad-CAM: the ``aten::`` operations ``torch.profiler`` records (each one a kernel launch on a
GPU) and the median time, against a hand-written torch loop doing the same work at the same passes per
chunk (noise or path points for the chunk, one batched forward and backward, the sum of squares or of
gradients). Targets (issue 26): operations at most 1.5x the loop's, time at most the loop's + 1 ms.
Contenders alternate round by round; the profile is taken after a warm-up call.

Page faults per call are printed beside the times: glibc's allocator returns large freed blocks to the
system and faults them in again, and on a CPU that swings a call's time by more than the 1 ms asked
(the same code measured 45 to 128 ms a call for SmoothGrad-25). For a steady allocator, as a long-lived
kernel tends to reach, run with ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4000000000``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import alternate  # noqa: E402 (same folder: contenders alternate round by round, medians)

SIZE, SAMPLES, SPREAD = 224, 25, 0.15


def count_ops(run) -> tuple[int, collections.Counter]:
    """aten operations of one call (top-level and nested: each is dispatched, so each costs)."""
    from torch.profiler import ProfilerActivity, profile

    run()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    names = collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))
    return sum(names.values()), names


def faults_per_call(run, calls: int = 5) -> float:
    """Minor page faults of the process per call (memory the allocator had to map in again)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--detail", action="store_true", help="print salwidget's operations by name")
    args = parser.parse_args()
    import torch

    import salwidget as sw

    device = args.device
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
    ).to(device).eval()
    x_np = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    x = torch.from_numpy(x_np).to(device)
    target = int(model(x).argmax(1))
    chunk = sw.engine.auto_batch_size(str(device), [x_np])

    def gradient(points):
        points = points.detach().requires_grad_(True)
        return torch.autograd.grad(model(points)[:, target].sum(), points)[0]

    def loop_smoothgrad():
        sigma = SPREAD * (x.amax() - x.amin())
        total = torch.zeros_like(x)
        for start in range(0, SAMPLES, chunk):
            n = min(chunk, SAMPLES - start)
            noise = torch.randn((n, 3, SIZE, SIZE), device=device) * sigma
            g = gradient(x + noise)
            total += (g * g).sum(0, keepdim=True)
        result = (total / SAMPLES).cpu().numpy()
        sync()
        return result

    def loop_integrated():
        alphas = torch.linspace(0, 1, SAMPLES, device=device)
        total = torch.zeros_like(x)
        for start in range(0, SAMPLES, chunk):
            a = alphas[start:start + chunk].reshape(-1, 1, 1, 1)
            total += gradient(a * x).sum(0, keepdim=True)
        result = (x * total / SAMPLES).cpu().numpy()
        sync()
        return result

    layer = model[0]

    def loop_gradcam():
        seen = {}
        handle = layer.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
        try:
            with torch.enable_grad():
                out = model(x)
                a = seen["a"]
                (g,) = torch.autograd.grad(out[:, target].sum(), a)
        finally:
            handle.remove()
        cam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))
        result = cam.detach().cpu().numpy()
        sync()
        return result

    def ours(method, **options):
        def run():
            sw.attribute(model, x_np, method, seed=0, target=target, batch_size=chunk, **options)
            sync()
        return run

    cases = [
        (f"SmoothGrad-{SAMPLES}", ours("smoothgrad", nsamples=SAMPLES, stdev_spread=SPREAD), loop_smoothgrad),
        (f"IG-{SAMPLES}", ours("integrated", nsamples=SAMPLES, baseline=0.0), loop_integrated),
        ("Grad-CAM", ours("gradcam", layer="0"), loop_gradcam),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; one {SIZE}x{SIZE} image, "
          f"chunk {chunk}, near-free model; {args.rounds} rounds, medians\n")
    print("| method | salwidget ops | loop ops | ratio | salwidget ms | loop ms | difference ms | faults per call "
          "(salwidget / loop) |")
    print("|---|---|---|---|---|---|---|---|")
    details = []
    for name, mine, loop in cases:
        ours_ops, ours_names = count_ops(mine)
        loop_ops, loop_names = count_ops(loop)
        medians = alternate({"salwidget": mine, "loop": loop}, args.rounds)
        ms_ours, ms_loop = medians["salwidget"] * 1e3, medians["loop"] * 1e3
        faults = f"{faults_per_call(mine):.0f} / {faults_per_call(loop):.0f}"
        print(f"| {name} | {ours_ops} | {loop_ops} | {ours_ops / loop_ops:.2f}x | {ms_ours:.2f} | {ms_loop:.2f} | "
              f"{ms_ours - ms_loop:+.2f} | {faults} |")
        sys.stdout.flush()
        details.append((name, ours_names, loop_names))
    if args.detail:
        for name, ours_names, loop_names in details:
            print(f"\n{name}: salwidget's operations by name (loop's in brackets)")
            for op, count in ours_names.most_common():
                print(f"  {op}: {count} ({loop_names.get(op, 0)})")


if __name__ == "__main__":
    main()
