"""The Dataset view over a 100,000-image scan: how long a filter or sort change takes to redraw its page.

    python benchmarks/dataset_view.py [--images 100000] [--rounds 5]

A small torch CNN scans N random 8 x 8 images (the scan itself is timed too); the panel then opens on
the stored scan and each change (a filter, the sort, a query, a confusion cell) is timed from setting the
trait to the page of thumbnails being on screen: filtering and sorting the table (pandas), reading the
page's thumbnails (zarr) and drawing them (Pillow, PNG). Medians over rounds; target < 200 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import salwidget as sw  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(32, 10)).eval()
    x = np.random.default_rng(0).uniform(0, 1, (args.images, 1, 8, 8)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 10, args.images)
    with tempfile.TemporaryDirectory() as store:
        started = time.perf_counter()
        scan = sw.scan(model, x, labels, class_names=[str(d) for d in range(10)], store=store, batch_size=4096)
        scanned = time.perf_counter() - started
        started = time.perf_counter()
        panel = sw.SaliencyWidget(model, scan, methods=("vanilla",))
        panel.wait(600)
        opened = time.perf_counter() - started
        changes = {
            "filter: wrong predictions": lambda: setattr(panel, "filter_correct", "wrong"),
            "filter: all again": lambda: setattr(panel, "filter_correct", "all"),
            "sort by probability": lambda: setattr(panel, "sort_by", "probability"),
            "sort by loss": lambda: setattr(panel, "sort_by", "loss"),
            "query: probability > 0.15 and label != 3": lambda: setattr(panel, "query",
                                                                         "probability > 0.15 and label != 3"),
            "query: none": lambda: setattr(panel, "query", ""),
            "confusion cell (true 2, predicted 7)": lambda: (setattr(panel, "filter_label", 2),
                                                             setattr(panel, "filter_predicted", 7)),
            "confusion cell cleared": lambda: (setattr(panel, "filter_label", -1), setattr(panel, "filter_predicted", -1)),
        }
        times = {name: [] for name in changes}
        for _ in range(args.rounds):
            for name, change in changes.items():
                start = time.perf_counter()
                change()
                times[name].append(time.perf_counter() - start)
                assert panel.error == "", panel.error
    print(f"{args.images:,} images: scan {scanned:.1f} s ({args.images / scanned:,.0f} images/s); the panel opened on "
          f"the stored scan in {opened:.2f} s\n")
    print(f"| change | ms (median of {args.rounds}) |\n|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {1000 * statistics.median(ts):.0f} |")


if __name__ == "__main__":
    main()
