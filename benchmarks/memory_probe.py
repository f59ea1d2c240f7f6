"""Peak memory of a dataset job over N images made on the fly, each N in a fresh process.

Shared by scan.py and dataset_job.py: ``OnTheFly`` is a torch Dataset of random 64 x 64 images (nothing held
in memory), :func:`peak_table` runs a snippet per size and prints the peaks above the loaded model (VmHWM, MB).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

PRELUDE = f"""
import os, sys, tempfile
sys.path.insert(0, {os.path.dirname(HERE)!r}); sys.path.insert(0, {HERE!r})
import numpy as np, salwidget as sw
from memory_probe import OnTheFly, status
from tests.helpers import make_torch_cnn
n = int(sys.argv[1])
model = make_torch_cnn()
"""


def _dataset_class():
    import torch

    class OnTheFly(torch.utils.data.Dataset):
        """``n`` random (3, 64, 64) images, each made when read, labelled ``i % 5``."""

        def __init__(self, n: int):
            self.n = n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int):
            image = np.random.default_rng(i).uniform(0, 1, (3, 64, 64)).astype(np.float32)
            return torch.from_numpy(image), i % 5

    return OnTheFly


def __getattr__(name: str):
    if name == "OnTheFly":  # torch only when a probe runs
        return _dataset_class()
    raise AttributeError(name)


def status(key: str) -> float:
    """A /proc/self/status figure in MB (VmRSS: now; VmHWM: this process's peak)."""
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def peak_table(body: str, sizes: list[int], title: str) -> None:
    """Run ``PRELUDE + body`` (which prints the peak above its base last) for each size; print the table."""
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", PRELUDE + body, str(n)], capture_output=True, text=True,
                             check=True).stdout
        rows.append((n, float(out.split()[-1])))
    print(f"\n### {title} (MB)\n\n| images | MB |\n|---|---|")
    for n, mb in rows:
        print(f"| {n:,} | {mb:.0f} |")
    print(f"\n{rows[-1][0]:,} - {rows[0][0]:,} images = **{rows[-1][1] - rows[0][1]:.0f} MB** (target <= 300)",
          flush=True)
