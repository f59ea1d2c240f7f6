"""A repeated call's fixed cost: salwidget's time outside the model's own passes, on an unchanged model.

    python benchmarks/overhead.py                          # EfficientNet-Lite0 (186 modules), 1 image 64 x 64
    python benchmarks/overhead.py --size 224 --images 4    # the same at full size (the passes' noise grows)
    python benchmarks/overhead.py --device cuda

Each round runs a ``sw.attribute`` call and the same passes written bare in
torch (the same rows through the same model in eval mode, gradients to the
input or to the CAM layer, the prediction read in the pass), alternating; the
table gives medians over the rounds and their difference, in wall-clock time
and in the CPU time of the process (steadier on a machine shared with other
work; torch runs one thread here unless --threads says otherwise): what the call adds
(input checks, the shadow and its check, the result, chunking, arithmetic
around the passes). A small input keeps the passes short, so the difference
stands out of the machine's noise; the fixed cost does not depend on the input
size (the checks and copies of the input's values do, a few microseconds at 64 x 64).
The second table times the parts a repeated call now reuses, as a first call pays them.
Needs the demo extra (EfficientNet-Lite0's weights).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from run import machine, sync, table  # noqa: I001 (same folder)
import run as run_module
import salwidget as sw
from salwidget import models
from salwidget.backends import get_backend

LAYER = "net._bn1"  # called once per pass (the automatic layer, net._swish, is called twice)


def bare_gradients(model, x):
    """One forward+backward pass to the input, explaining each row's prediction (salwidget's single pass)."""
    def run():
        xi = x.detach().requires_grad_(True)
        out = model(xi)
        score = out.gather(1, out.detach().argmax(1, keepdim=True)).sum()
        return torch.autograd.grad(score, xi)[0]
    return run


def bare_gradcam(model, x, layer: str):
    """Grad-CAM as salwidget computes it: the graph starts at the layer, gradients stop there."""
    module = dict(model.named_modules())[layer]
    seen = {}

    def start_graph(m, inputs, output):
        seen["a"] = output.detach().requires_grad_()
        return seen["a"]

    def run():
        handle = module.register_forward_hook(start_graph)
        try:
            with torch.enable_grad():
                out = model(x)
                score = out.gather(1, out.detach().argmax(1, keepdim=True)).sum()
                activation = seen["a"]
                (grad,) = torch.autograd.grad(score, activation)
        finally:
            handle.remove()
        weights = grad.mean(dim=(2, 3), keepdim=True)
        return torch.relu((weights * activation.detach()).sum(1))
    return run


def bare_smoothgrad(model, x, n: int):
    """SmoothGrad's passes: the clean forward (the targets), then n noisy copies of each image in one
    chunk, squared gradients averaged."""
    def run():
        with torch.no_grad():
            target = model(x).argmax(1, keepdim=True).repeat(n, 1)
        sigma = (0.15 * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))).repeat(n)[:, None, None, None]
        points = x.repeat(n, 1, 1, 1) + torch.randn((n * len(x),) + x.shape[1:], device=x.device) * sigma
        points.requires_grad_(True)
        (grad,) = torch.autograd.grad(model(points).gather(1, target).sum(), points)
        return grad.square().reshape(n, *x.shape).mean(0)
    return run


def salwidget_call(model, x, method: str, **options):
    host = x.cpu().numpy()
    return lambda: sw.attribute(model, host, method, seed=0, **options)


def paired(call, bare, rounds: int) -> dict[str, float]:
    """Medians (seconds) of the call, the bare passes and their difference per round, in wall-clock and
    process CPU time; the two run in turn, in alternating order."""
    times: dict[str, list[float]] = {k: [] for k in ("call", "bare", "gap", "call_cpu", "bare_cpu", "gap_cpu")}
    call(), bare()  # first-call costs (a new shadow, the allocator)
    for i in range(rounds):
        spent = {}
        for name in (("call", "bare") if i % 2 == 0 else ("bare", "call")):
            run = call if name == "call" else bare
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            sync()
            spent[name], spent[name + "_cpu"] = time.perf_counter() - wall, time.process_time() - cpu
        for name, value in spent.items():
            times[name].append(value)
        times["gap"].append(spent["call"] - spent["bare"])
        times["gap_cpu"].append(spent["call_cpu"] - spent["bare_cpu"])
    return {name: statistics.median(values) for name, values in times.items()}


def parts(model, x, rounds: int) -> list[tuple[str, float]]:
    """Milliseconds of what a first call pays and a repeated call reuses (medians)."""
    from salwidget.backends.torch_shadow import read_structure, shadow_copy
    from salwidget.digests import bytes_digest

    backend = get_backend(model)
    host = [x.cpu().numpy()]

    def median(run) -> float:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    return [
        ("shadow copy (a first call, or after the structure changed)", median(lambda: shadow_copy(model))),
        ("structure walk (every call: is the cached shadow still valid?)", median(lambda: read_structure(model))),
        ("weights version (identity; the walk and the in-place counters)", median(backend.identity)),
        ("input digest (XXH3-128; only for resumable results)", median(lambda: bytes_digest(*host))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1)")
    args = parser.parse_args()
    run_module.DEVICE = args.device
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    model, _ = models.efficientnet_lite0()
    model = model.to(args.device).eval()
    for p in model.parameters():  # the bare passes compute no weight gradients, as salwidget does
        p.requires_grad_(False)
    x = torch.rand(args.images, 3, args.size, args.size, device=args.device)
    cases = [
        ("vanilla", salwidget_call(model, x, "vanilla"), bare_gradients(model, x)),
        ("gradient_x_input", salwidget_call(model, x, "gradient_x_input"), bare_gradients(model, x)),
        ("gradcam", salwidget_call(model, x, "gradcam", layer=LAYER), bare_gradcam(model, x, LAYER)),
        ("smoothgrad n=8", salwidget_call(model, x, "smoothgrad", nsamples=8, batch_size=8 * args.images),
         bare_smoothgrad(model, x, 8)),
    ]
    rows = []
    for name, call, bare in cases:
        m = {k: 1000 * v for k, v in paired(call, bare, args.rounds).items()}
        rows.append((name, f"{m['call']:.2f}", f"{m['bare']:.2f}", f"{m['gap']:+.2f}", f"{m['call_cpu']:.2f}",
                     f"{m['bare_cpu']:.2f}", f"{m['gap_cpu']:+.2f}"))
    table(f"sw.attribute vs the same passes bare: {args.images} image(s) {args.size} x {args.size}, "
          f"{len(list(model.modules()))} modules, median of {args.rounds} alternating rounds (ms)",
          rows, ("method", "call", "bare", "call - bare", "call (CPU)", "bare (CPU)", "call - bare (CPU)"))
    shown = parts(model, x, args.rounds)
    table("What a first call pays and a repeated one reuses (ms, median)", [(w, f"{ms:.3f}") for w, ms in shown],
          ("part", "ms"))


if __name__ == "__main__":
    main()
