"""How to store a dataset job's maps: size and error of float32, float16 scaled per map, plain float16 and
bfloat16, measured on SmoothGrad and Gradient maps of two models (the test CNN, and the same CNN with its last
layer scaled by 1e-4, whose SmoothGrad maps are near 1e-10).

    python benchmarks/stored_maps.py

Error: the largest |stored - map| of each map over that map's largest magnitude (median and worst over the
images); Spearman: the largest difference of the smoothgrad-vs-vanilla Spearman column against float32 maps.
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import salwidget as sw  # noqa: E402
from salwidget.dataset.stored_maps import decode, encode  # noqa: E402
from salwidget.evaluation.similarity import spearman  # noqa: E402


def forms(maps: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
    import torch

    scaled, scales = encode(maps, "float16")
    return {
        "float32": (maps.astype(np.float32), 4),
        "float16 scaled per map (+ 4 bytes a map)": (decode(scaled, scales), 2),
        "float16 plain": (maps.astype(np.float16).astype(np.float32), 2),
        "bfloat16": (torch.from_numpy(maps).to(torch.bfloat16).float().numpy(), 2),
    }


def main() -> None:
    import torch

    sys.path.insert(0, os.path.dirname(HERE))
    from tests.helpers import make_torch_cnn

    x = np.random.default_rng(0).uniform(0, 1, (64, 3, 32, 32)).astype(np.float32)
    for title, scale in (("test CNN", 1.0), ("test CNN, last layer x 1e-4", 1e-4)):
        model = make_torch_cnn()
        with torch.no_grad():
            model[6].weight.mul_(scale)
        maps = {m: sw.attribute(model, x, m, nsamples=8, seed=0).raw for m in ("smoothgrad", "vanilla")}
        stored = {m: forms(v) for m, v in maps.items()}
        reference = spearman(np.abs(maps["smoothgrad"]).sum(1), np.abs(maps["vanilla"]).sum(1))
        print(f"\n### {title}: SmoothGrad maps up to {np.abs(maps['smoothgrad']).max():.1e}\n")
        print("| form | bytes per value | SmoothGrad error / map range (median, worst) | zeros | Spearman diff |")
        print("|---|---|---|---|---|")
        for form in stored["smoothgrad"]:
            got, size = stored["smoothgrad"][form]
            span = np.abs(maps["smoothgrad"]).reshape(len(x), -1).max(1)
            error = np.abs(got - maps["smoothgrad"]).reshape(len(x), -1).max(1) / span
            column = spearman(np.abs(got).sum(1), np.abs(stored["vanilla"][form][0]).sum(1))
            diff = np.nanmax(np.abs(np.nan_to_num(column, nan=0.0) - reference))
            print(f"| {form} | {size} | {np.median(error):.1e}, {error.max():.1e} | {np.mean(got == 0):.1%} | "
                  f"{diff:.1e} |")


if __name__ == "__main__":
    main()
