"""The GPU regime on any machine: a model so cheap that the engine's own work dominates.

    python benchmarks/proxy.py                      # CPU (torch, then Keras)
    python benchmarks/proxy.py --device cuda        # the same on a GPU
    python benchmarks/proxy.py --only torch         # or: keras

8 images 224x224, 50 samples (SmoothGrad) or steps (IG). Contenders alternate
round by round in one process; medians. "plain loop" is the same work written
directly in the framework (noise, points and sums kept in torch / inside a
``tf.function``), at the same passes per chunk as salwidget. Ratios are
contender / plain loop (salwidget's target: <= 1.3x) and Captum at its best
internal batch / salwidget.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

IMAGES, SIZE, SAMPLES, SPREAD = 8, 224, 50, 0.15


def alternate(contenders: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for run in contenders.values():
        run()  # warm-up: allocator, traces, first-call costs
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(title: str, medians: dict[str, float], reference: str, ours: str) -> None:
    print(f"\n### {title}\n")
    print(f"| contender | seconds | / {reference} | / {ours} |")
    print("|---|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {seconds / medians[reference]:.2f}x | {seconds / medians[ours]:.2f}x |")
    sys.stdout.flush()


# ---------------------------------------------------------------------- torch
def torch_cases(device: str, rounds: int) -> None:
    import torch

    import salwidget as sw

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=4, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    ).to(device).eval()
    x = torch.rand(IMAGES, 3, SIZE, SIZE, device=device)
    x_np = x.cpu().numpy()
    target = model(x).argmax(1).detach()
    chunk = sw.engine.auto_batch_size(device, [x_np])
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)

    def grad(points, rows):
        points = points.detach().requires_grad_(True)
        out = model(points)
        return torch.autograd.grad(out.gather(1, rows[:, None]).sum(), points)[0]

    def plain_smoothgrad():
        sigma = SPREAD * (x.amax((1, 2, 3)) - x.amin((1, 2, 3)))[:, None, None, None]
        total = torch.zeros_like(x)
        rows = [(s, i) for s in range(SAMPLES) for i in range(IMAGES)]
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            s_idx = torch.tensor([s for s, _ in part], device=device)
            i_idx = torch.tensor([i for _, i in part], device=device)
            noise = torch.randn((len(part), 3, SIZE, SIZE), device=device) * sigma[i_idx]
            noise[s_idx == 0] = 0
            g = grad(x[i_idx] + noise, target[i_idx])
            total.index_add_(0, i_idx, g * g)
        sync()
        return total / SAMPLES

    def plain_integrated():
        alphas = torch.linspace(0, 1, SAMPLES, device=device)
        total = torch.zeros_like(x)
        rows = [(k, i) for k in range(SAMPLES) for i in range(IMAGES)]
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            k_idx = torch.tensor([k for k, _ in part], device=device)
            i_idx = torch.tensor([i for _, i in part], device=device)
            g = grad(alphas[k_idx, None, None, None] * x[i_idx], target[i_idx])
            total.index_add_(0, i_idx, g)
        sync()
        return x * total / SAMPLES

    def ours(method):
        def run():
            settings = dict(nsamples=SAMPLES, stdev_spread=SPREAD, baseline=0.0)  # each method takes its own
            sw.attribute(model, x_np, method, seed=0, target=target.cpu().numpy(),
                         **{k: v for k, v in settings.items() if k in sw.get_method(method).option_names})
        return run

    def captum(method, batch):
        from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

        if method == "smoothgrad":
            tunnel = NoiseTunnel(Saliency(model))
            sigma = float(SPREAD * (x.max() - x.min()))
            return lambda: (tunnel.attribute(x, nt_type="smoothgrad_sq", nt_samples=SAMPLES,
                                             nt_samples_batch_size=batch, stdevs=sigma, target=target, abs=False),
                            sync())
        ig = IntegratedGradients(model)
        return lambda: (ig.attribute(x, baselines=0.0, target=target, n_steps=SAMPLES, internal_batch_size=batch),
                        sync())

    for method, plain in (("smoothgrad", plain_smoothgrad), ("integrated", plain_integrated)):
        contenders = {"salwidget": ours(method), "plain loop": plain}
        # Captum's batch knob: samples per image per batch (NoiseTunnel) or rows per batch (IG).
        for batch in ((1, 2, 4) if method == "smoothgrad" else (8, 16, 32)):
            contenders[f"Captum batch {batch}"] = captum(method, batch)
        medians = alternate(contenders, rounds)
        table(f"torch {method}, {IMAGES} images {SIZE}x{SIZE}, {SAMPLES} samples, {device}, chunk {chunk}",
              medians, "plain loop", "salwidget")
        best = min(v for k, v in medians.items() if k.startswith("Captum"))
        print(f"\nsalwidget / plain loop = {medians['salwidget'] / medians['plain loop']:.2f}x; "
              f"best Captum / salwidget = {best / medians['salwidget']:.2f}x")


# ---------------------------------------------------------------------- Keras
def keras_cases(rounds: int) -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    import salwidget as sw

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu"),
        keras.layers.Conv2D(16, 3, strides=4, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10),
    ])
    x_np = np.random.default_rng(0).random((IMAGES, SIZE, SIZE, 3), dtype=np.float32)
    x = tf.constant(x_np)
    target = tf.argmax(model(x, training=False), axis=1, output_type=tf.int32)
    chunk = sw.engine.auto_batch_size("CPU", [x_np])

    @tf.function(reduce_retracing=True)
    def step(points, rows):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(points)
            out = model(points, training=False)
            score = tf.reduce_sum(tf.gather(out, rows, axis=1, batch_dims=1))
        return tape.gradient(score, points)

    @tf.function(reduce_retracing=True)
    def noisy_chunk(i_idx, clean, seed):
        sigma = SPREAD * (tf.reduce_max(x, axis=(1, 2, 3)) - tf.reduce_min(x, axis=(1, 2, 3)))
        noise = tf.random.stateless_normal((tf.shape(i_idx)[0], SIZE, SIZE, 3), seed=seed)
        noise = noise * tf.gather(sigma, i_idx)[:, None, None, None] * (1.0 - clean)[:, None, None, None]
        g = step(tf.gather(x, i_idx) + noise, tf.gather(target, i_idx))
        return tf.tensor_scatter_nd_add(tf.zeros_like(x), i_idx[:, None], g * g)

    def plain_smoothgrad():
        total = tf.zeros_like(x)
        rows = [(s, i) for s in range(SAMPLES) for i in range(IMAGES)]
        for n, start in enumerate(range(0, len(rows), chunk)):
            part = rows[start:start + chunk]
            i_idx = tf.constant([i for _, i in part], tf.int32)
            clean = tf.constant([float(s == 0) for s, _ in part])
            total += noisy_chunk(i_idx, clean, tf.constant([0, n], tf.int64))
        return (total / SAMPLES).numpy()

    def ours():
        sw.attribute(model, x_np, "smoothgrad", nsamples=SAMPLES, stdev_spread=SPREAD, seed=0,
                     target=target.numpy())

    medians = alternate({"salwidget": ours, "plain tf.function loop": plain_smoothgrad}, rounds)
    table(f"Keras smoothgrad, {IMAGES} images {SIZE}x{SIZE}, {SAMPLES} samples, CPU, chunk {chunk}",
          medians, "plain tf.function loop", "salwidget")
    print(f"\nsalwidget / plain loop = {medians['salwidget'] / medians['plain tf.function loop']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=("torch", "keras"))
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    if args.only in (None, "torch"):
        torch_cases(args.device, args.rounds)
    if args.only in (None, "keras"):
        keras_cases(args.rounds)


if __name__ == "__main__":
    main()
