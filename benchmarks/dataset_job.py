"""sw.attribute_dataset against calling sw.attribute page by page; its memory over 10,000 images; Ray's overhead.

    python benchmarks/dataset_job.py                      # everything (several minutes on 2 CPU cores)
    python benchmarks/dataset_job.py --only speed --device cuda

Speed: EfficientNet-Lite0 over N images 224 x 224 already scanned, maps only (metrics=()), the local engine
against the loop a user writes: ``sw.attribute`` on pages of 256 rows and the maps written into a
``.npy`` memmap (float32, as the job stores by default). ``--proxy``: a near-free model instead. Each round
runs a new job (another seed), contenders alternating; medians. Ratio = loop / job (>= 0.95 is the target).

Memory: peak resident memory (VmHWM) above the loaded model of a job (Gradient, deletion and insertion) over
N 64 x 64 images made on the fly by a torch Dataset, each N in a fresh process.

Ray: the same small job on a local Ray cluster of 2 workers and locally; the difference is Ray's fixed cost
per job (the cluster's start is timed apart), and the maps are compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import salwidget as sw  # noqa: E402

import run as common  # noqa: E402 (same folder: the timing helpers)

sync = common.sync
DEVICE = "cpu"


def speed(images: int, rounds: int, methods: list[str], proxy: bool = False) -> None:
    from salwidget import models

    if proxy:  # the near-free model (pooling + linear): only salwidget's own work shows (the GPU regime)
        from scan import near_free_model

        model, names = near_free_model().to(DEVICE), None
    else:
        model, names = models.efficientnet_lite0()
        model = model.to(DEVICE)
    pictures = models.sample_images(["chelsea", "coffee", "astronaut", "rocket"])
    x = np.ascontiguousarray(np.resize(pictures.transpose(0, 3, 1, 2), (images, 3, 224, 224)).astype(np.float32))
    with tempfile.TemporaryDirectory() as store:
        scan = sw.scan(model, x, class_names=names, store=store)
        for method in methods:
            seeds = iter(range(1, 10_000))

            def job():
                sw.attribute_dataset(model, scan, method, metrics=(), seed=next(seeds))

            def loop():
                seed = next(seeds)
                with tempfile.TemporaryDirectory() as folder:
                    maps = None
                    for start in range(0, images, 256):
                        rows = np.arange(start, min(images, start + 256))
                        raw = sw.attribute(model, x[rows], method, seed=seed).raw
                        if maps is None:
                            maps = np.lib.format.open_memmap(os.path.join(folder, "maps.npy"), mode="w+",
                                                             dtype=np.float32, shape=(images, *raw.shape[1:]))
                        maps[rows] = raw
                    maps.flush()

            times = {"attribute_dataset (local)": [], "attribute page by page + numpy": []}
            job(), loop()  # warm-up
            for _ in range(rounds):
                for name, run in zip(times, (job, loop)):
                    sync()
                    start = time.perf_counter()
                    run()
                    sync()
                    times[name].append(time.perf_counter() - start)
            ratio = statistics.median(b / a for a, b in zip(*times.values()))
            what = "near-free model" if proxy else "EfficientNet-Lite0"
            print(f"\n### {what}, {method}, {images} images 224 x 224, maps only (float32), {DEVICE}\n")
            print("| contender | seconds (median) | images per second |\n|---|---|---|")
            for name, ts in times.items():
                print(f"| {name} | {statistics.median(ts):.2f} | {images / statistics.median(ts):.1f} |")
            print(f"\nloop / job = **{ratio:.2f}x** (job / loop {1 / ratio:.2f}x; target <= 1.3x)", flush=True)


MEMORY = """
with tempfile.TemporaryDirectory() as store:
    sw.attribute_dataset(model, OnTheFly(300), "vanilla", store=store, curve_steps=8)  # warm-up
base = status("VmRSS")
with tempfile.TemporaryDirectory() as store:
    job = sw.attribute_dataset(model, OnTheFly(n), "vanilla", store=store, curve_steps=8)
    assert job.table["vanilla_deletion_auc"].notna().sum() == n
print(status("VmHWM") - base)
"""


def memory(sizes: list[int]) -> None:
    from memory_probe import peak_table

    peak_table(MEMORY, sizes, "Peak memory of a job (Gradient, deletion and insertion, 8 steps) above the loaded model")


def ray_overhead(images: int) -> None:
    import logging

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import ray

    from tests.helpers import make_torch_cnn

    model = make_torch_cnn()
    x = np.random.default_rng(0).uniform(0, 1, (images, 3, 32, 32)).astype(np.float32)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        ray.init(num_cpus=2, _temp_dir=temp, object_store_memory=256 * 1024**2, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
        start_up = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as ray_store, tempfile.TemporaryDirectory() as local_store:
            scans = {"ray": sw.scan(model, x, store=ray_store), "local": sw.scan(model, x, store=local_store)}
            runs, jobs = {}, {}
            for engine, seed in (("ray", 1), ("local", 1), ("ray", 2), ("local", 2)):
                start = time.perf_counter()
                jobs[engine, seed] = sw.attribute_dataset(model, scans[engine], "smoothgrad", metrics=(), seed=seed,
                                                          engine=engine, workers=2 if engine == "ray" else None,
                                                          options={"smoothgrad": {"nsamples": 8}})
                runs.setdefault(engine, []).append(time.perf_counter() - start)
            same = all(np.array_equal(jobs["ray", seed].maps("smoothgrad", range(images)),
                                      jobs["local", seed].maps("smoothgrad", range(images))) for seed in (1, 2))
        started = time.perf_counter()
        ray.shutdown()
        shutdown = time.perf_counter() - started
    ray_s, local_s = min(runs["ray"]), min(runs["local"])
    print(f"\n### Ray, 2 local workers: SmoothGrad (8 samples) over {images} images 32 x 32\n")
    print(f"cluster start {start_up:.1f} s, shutdown {shutdown:.1f} s; a job: Ray {ray_s:.1f} s, local {local_s:.1f} s "
          f"(best of 2): Ray's fixed cost per job about **{ray_s - local_s:.1f} s**; same maps: {same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=("speed", "memory", "ray"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--methods", nargs="+", default=["gradcam", "vanilla"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--proxy", action="store_true", help="the near-free model instead of EfficientNet-Lite0")
    args = parser.parse_args()
    global DEVICE
    DEVICE = common.DEVICE = args.device
    only = set(args.only or ("speed", "memory", "ray"))
    if "speed" in only:
        speed(args.images, args.rounds, args.methods, args.proxy)
    if "memory" in only and DEVICE == "cpu":
        memory([500, 10_000])
    if "ray" in only and DEVICE == "cpu":
        ray_overhead(512)


if __name__ == "__main__":
    main()
