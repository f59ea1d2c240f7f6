"""salwidget against its peers on EfficientNet-Lite0 (224 x 224), printed as tables.

    python benchmarks/run.py                 # everything (about 15 minutes on 2 CPU cores)
    python benchmarks/run.py --quick         # one image, one round
    python benchmarks/run.py --only speed    # or: sweep, memory, widget, keras
    python benchmarks/run.py --device cuda   # the same tables on a GPU (memory: CPU only)

Every comparison alternates its contenders round by round in one process and
reports medians; ratios are contender time / salwidget time (> 1: salwidget is
faster). "limit" is the same number of forward+backward passes with nothing
else, at the best chunk size a sweep finds: the machine's floor for this work.
Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import salwidget as sw
from salwidget import models

SIGMA = 0.15  # SmoothGrad noise as a fraction of the image range
DEVICE = "cpu"


def sync() -> None:
    """Wait for queued GPU work, so that a timing covers it."""
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else f"{os.cpu_count()}-core CPU ({cpu})"
    return f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def alternate_rounds(contenders: dict, rounds: int, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each contender in each round, contenders run in turn each round (after one warm-up run,
    which long runs can skip: their first-call costs are a small share)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for run in contenders.values() if warmup else ():
        run()  # allocator, caches, first-call costs
    for _ in range(rounds):
        for name, run in contenders.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def alternate(contenders: dict, rounds: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds of each contender over :func:`alternate_rounds`."""
    return {name: statistics.median(ts) for name, ts in alternate_rounds(contenders, rounds, warmup).items()}


def table(title: str, rows: list[tuple], header: tuple) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    sys.stdout.flush()


# ----------------------------------------------------------------- contenders
def passes_at_chunk(model, x, passes: int, chunk: int):
    """Bare forward+backward passes: the work every method needs, and nothing else."""
    def run():
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            for start in range(0, passes, chunk):
                n = min(chunk, passes - start)
                xi = x[torch.arange(start, start + n) % len(x)].clone().requires_grad_(True)
                out = model(xi)
                torch.autograd.grad(out[:, 0].sum(), xi)
        finally:
            for p in model.parameters():
                p.requires_grad_(True)
    return run


def seed_loop(model, x, method: str, n: int):
    """The seed's way: one sample at a time, the whole batch per pass."""
    target = model(x).argmax(1).detach()

    def grad(xi):
        xi = xi.clone().requires_grad_(True)
        out = model(xi)
        return torch.autograd.grad(out.gather(1, target[:, None]).sum(), xi)[0]

    def run():
        total = torch.zeros_like(x)
        if method == "smoothgrad":
            sigma = SIGMA * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))[:, None, None, None]
            for _ in range(n):
                g = grad(x + torch.randn_like(x) * sigma)
                total += g * g
        else:
            for alpha in np.linspace(0, 1, n):
                total += grad(alpha * x)
            total *= x / n
        return total
    return run


def captum_run(model, x, method: str, n: int, batch: int | None):
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    target = model(x).argmax(1).detach()
    sigma = float(SIGMA * (x.max() - x.min()))  # Captum takes one sigma for the batch
    if method == "smoothgrad":
        tunnel = NoiseTunnel(Saliency(model))
        return lambda: tunnel.attribute(x, nt_type="smoothgrad_sq", nt_samples=n, nt_samples_batch_size=batch,
                                        stdevs=sigma, target=target, abs=False)
    ig = IntegratedGradients(model)
    return lambda: ig.attribute(x, baselines=0.0, target=target, n_steps=n, internal_batch_size=batch)


def pair_run(model, x, method: str, n: int):
    """PAIR saliency: one image, one sample at a time, numpy in and out (channels last)."""
    import saliency.core as pair

    images = x.permute(0, 2, 3, 1).cpu().numpy()
    target = model(x).argmax(1).detach().cpu().numpy()

    def call_model(batch, call_model_args=None, expected_keys=None):
        xi = torch.from_numpy(np.asarray(batch, np.float32)).permute(0, 3, 1, 2).to(DEVICE).requires_grad_(True)
        out = model(xi)
        g = torch.autograd.grad(out[:, call_model_args].sum(), xi)[0]
        return {pair.INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).cpu().numpy()}

    def run():
        for image, t in zip(images, target):
            if method == "smoothgrad":
                pair.GradientSaliency().GetSmoothedMask(image, call_model, int(t), stdev_spread=SIGMA, nsamples=n)
            else:
                pair.IntegratedGradients().GetMask(image, call_model, int(t), x_baseline=np.zeros_like(image), x_steps=n)
    return run


def salwidget_run(model, x, method: str, n: int, batch_size="auto"):
    settings = dict(nsamples=n, baseline=0.0, stdev_spread=SIGMA)  # each method takes its own
    own = {k: v for k, v in settings.items() if k in sw.get_method(method).option_names}
    return lambda: sw.attribute(model, x, method, seed=0, batch_size=batch_size, **own)


# ------------------------------------------------------------------- sections
def sweep(model, x, rounds: int, passes: int = 48) -> tuple[int, float]:
    chunks = [1, 2, 4, 8, 16, 32] if DEVICE == "cpu" else [16, 32, 64, 128, 256]
    medians = alternate({c: passes_at_chunk(model, x, passes, c) for c in chunks}, rounds)
    best = min(medians, key=medians.get)
    auto = sw.engine.auto_batch_size(DEVICE, [x.cpu().numpy()])
    table(f"Forward+backward passes by chunk size ({passes} passes, 224x224)",
          [(c, f"{1000 * medians[c] / passes:.1f}", "best" if c == best else ("auto" if c == auto else ""))
           for c in chunks], ("chunk", "ms per pass", ""))
    return best, medians[best] / passes


def speed(model, batches, rounds: int, best_chunk: int, per_pass: float, quick: bool) -> None:
    rows, summary = [], []
    cases = [("smoothgrad", 25), ("smoothgrad", 50), ("integrated", 50)]
    for images in batches:
        x = torch.from_numpy(models.sample_images(["chelsea", "coffee", "astronaut", "rocket", "cat", "camera",
                                                   "chelsea", "coffee"][:images]).transpose(0, 3, 1, 2).copy()).to(DEVICE)
        for method, n in cases:
            if quick and n == 25:
                continue
            contenders = {"salwidget (auto)": salwidget_run(model, x, method, n)}
            # Captum's one-batch default needs ~83 MB per image x sample here (memory table): skip what cannot fit.
            if images * n <= 100 or DEVICE != "cpu":
                contenders["Captum default"] = captum_run(model, x, method, n, None)
            # Captum's own batch knob, hand-tuned: samples per image per batch (NoiseTunnel)
            # or rows per batch (IG). The table keeps each; the best is Captum at its best.
            sizes = sorted({max(1, c // images) for c in (4, 8, 16)}) if method == "smoothgrad" else [4, 8, 16]
            for size in sizes:
                contenders[f"Captum batch {size}"] = captum_run(model, x, method, n, size)
            contenders["seed loop"] = seed_loop(model, x, method, n)
            contenders["PAIR saliency"] = pair_run(model, x, method, n)
            contenders["limit"] = passes_at_chunk(model, x, images * n, best_chunk)
            medians = alternate(contenders, rounds, warmup=images == 1)
            ours = medians["salwidget (auto)"]
            print(f"{method} n={n}, {images} image(s): " + ", ".join(f"{k} {v:.3f} s" for k, v in medians.items()),
                  flush=True)  # as it goes: a run stopped at a time limit keeps what finished
            for name, seconds in medians.items():
                ratio = f"{seconds / ours:.2f}x"
                rows.append((f"{method} n={n}", images, name, f"{seconds:.2f}", ratio))
            best_captum = min(v for k, v in medians.items() if k.startswith("Captum batch"))
            summary.append((f"{method} n={n}", images,
                            f"{medians['Captum default'] / ours:.2f}x" if "Captum default" in medians else "not run",
                            f"{best_captum / ours:.2f}x", f"{ours / medians['limit']:.2f}x"))
            if images * n > 100:
                rows.append((f"{method} n={n}", images, "Captum default", f"not run: one batch of {images * n} needs ~{images * n * 83 // 1000} GB", ""))
    table("Time per call (median), ratio = time / salwidget's", rows, ("method", "images", "tool", "seconds", "ratio"))
    table("Summary: speed-up over Captum, and salwidget against the machine's limit", summary,
          ("method", "images", "Captum default / salwidget", "best Captum batch / salwidget", "salwidget / limit"))


MEMORY_SNIPPET = """
import sys, torch, salwidget as sw
from salwidget import models

def status(key):  # kB from /proc: VmHWM is this process's own peak (ru_maxrss survives exec)
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

tool, images, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model, _ = models.efficientnet_lite0()
x = torch.rand(images, 3, 224, 224)
base = status("VmRSS")
if tool == "salwidget":
    sw.attribute(model, x, "smoothgrad", nsamples=n, seed=0)
else:
    from captum.attr import NoiseTunnel, Saliency
    NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad_sq", nt_samples=n, stdevs=0.15, target=0)
print(status("VmHWM") - base)
"""


def memory() -> None:
    rows = []
    for tool, images, n in [("salwidget", 8, 25), ("salwidget", 8, 200), ("captum", 2, 10), ("captum", 2, 25), ("captum", 2, 50)]:
        out = subprocess.run([sys.executable, "-c", MEMORY_SNIPPET, tool, str(images), str(n)],
                             capture_output=True, text=True, check=True).stdout
        rows.append((tool if tool == "salwidget" else "Captum default", images, n, f"{float(out.split()[-1]):.0f}"))
    table("Peak memory above the loaded model, SmoothGrad (MB)", rows, ("tool", "images", "samples", "MB"))


def widget_latency(model, rounds: int) -> None:
    pictures = models.sample_images(["chelsea"])
    x = pictures.transpose(0, 3, 1, 2)
    first, full = [], []
    for _ in range(rounds):
        start, seen = time.perf_counter(), []
        sw.attribute(model, x, "smoothgrad", nsamples=50, seed=0,
                     progress=lambda d, t, p: seen.append(time.perf_counter() - start))
        first.append(seen[0])
        full.append(time.perf_counter() - start)
    four = models.sample_images(["chelsea", "coffee", "astronaut", "rocket"])
    panel = sw.SaliencyWidget(model, four.transpose(0, 3, 1, 2), display_images=four, nsamples=4, nintegration=4,
                              methods=("vanilla", "smoothgrad", "integrated"))
    panel.wait()
    renders = []
    for i in range(max(rounds, 5)):
        start = time.perf_counter()
        panel.cmap = ("viridis", "inferno")[i % 2]
        renders.append(time.perf_counter() - start)
    one = sw.attribute(model, x, "smoothgrad", nsamples=25, seed=0)
    raise_times, scratch = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        sw.attribute(model, x, "smoothgrad", nsamples=50, seed=0, resume_from=one)
        raise_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        sw.attribute(model, x, "smoothgrad", nsamples=50, seed=0)
        scratch.append(time.perf_counter() - start)
    med = statistics.median
    table("Widget latency (1 image unless said)", [
        ("first preview, SmoothGrad-50", f"{med(first):.2f} s"),
        ("full map, SmoothGrad-50", f"{med(full):.2f} s"),
        ("look-only re-render, 4 images x 5 columns", f"{1000 * med(renders):.0f} ms"),
        ("raise samples 25 -> 50 / compute 50 from scratch", f"{med(raise_times) / med(scratch):.0%}"),
    ], ("what", "median"))
    panel.close()


def keras(rounds: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    model = models.digits_cnn()
    _, _, x_test, _ = models.digits_data()
    x = x_test[:32]
    target = sw.predict(model, x).argmax(1)

    def tape_loop(n):  # one sample at a time, eager tape: the usual hand-written loop
        def run():
            sigma = SIGMA * (x.max() - x.min())
            for _ in range(n):
                xi = tf.convert_to_tensor(x + np.random.normal(size=x.shape).astype(np.float32) * sigma)
                with tf.GradientTape() as tape:
                    tape.watch(xi)
                    out = model(xi, training=False)
                    score = tf.reduce_sum(tf.gather(out, target, axis=1, batch_dims=1))
                tape.gradient(score, xi)
        return run

    contenders = {"salwidget (auto)": salwidget_run(model, x, "smoothgrad", 50), "eager tape loop": tape_loop(50)}
    try:
        from tf_keras_vis.saliency import Saliency

        saliency = Saliency(model, clone=False)
        contenders["tf-keras-vis"] = lambda: saliency(lambda out: tf.gather(out, target, axis=1, batch_dims=1), x,
                                                      smooth_samples=50, smooth_noise=SIGMA)
    except Exception as exc:  # keep the table even if tf-keras-vis cannot drive Keras 3
        print(f"tf-keras-vis unavailable: {type(exc).__name__}: {exc}")
    medians = alternate(contenders, rounds)
    ours = medians["salwidget (auto)"]
    table("Keras digits CNN, SmoothGrad-50 on 32 digits", [(k, f"{v:.2f}", f"{v / ours:.2f}x") for k, v in medians.items()],
          ("tool", "seconds", "ratio"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=["sweep", "speed", "memory", "widget", "keras"])
    parser.add_argument("--images", nargs="+", type=int, help="batch sizes for the speed table (default 1 8)")
    parser.add_argument("--device", default="cpu", help="torch device for the model: cpu (default) or cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    rounds = 1 if args.quick else args.rounds
    sections = set(args.only or ["sweep", "speed", "memory", "widget", "keras"])
    print(f"machine: {machine()}")
    model, _ = models.efficientnet_lite0()
    model = model.to(DEVICE)
    x = torch.rand(32, 3, 224, 224, device=DEVICE)
    best_chunk, per_pass = (8, None)
    if sections & {"sweep", "speed"}:
        best_chunk, per_pass = sweep(model, x, rounds)
    if "speed" in sections:
        speed(model, args.images or ([1] if args.quick else [1, 8]), rounds, best_chunk, per_pass, args.quick)
    if "memory" in sections and DEVICE == "cpu":
        memory()
    if "widget" in sections:
        widget_latency(model, rounds)
    if "keras" in sections:
        keras(rounds)


if __name__ == "__main__":
    main()
