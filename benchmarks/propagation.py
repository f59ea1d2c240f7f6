"""LRP and DeepLIFT against one gradient pass of the same chunk, zennit and Captum, on the same torch models.

    python benchmarks/propagation.py               # VGG-like (BatchNorm) and ResNet-like, 16 images 64 x 64
    python benchmarks/propagation.py --rounds 9 --images 32

Each contender runs the same images in one chunk (salwidget: batch_size = the
number of images); contenders alternate round by round in one process and the
table reports medians. "gradient" is salwidget's plain input gradient
('vanilla') of the same chunk, "bare gradient" the same pass in plain torch.
Ratios are time / salwidget's gradient. The two "floor" rows are plain torch
doing the least arithmetic each method needs: LRP's z+ rule convolves each
layer's input once more with the positive weights (timed as the gradient pass
plus one more forward), DeepLIFT with a shared baseline is a gradient pass
over the images and one reference row. zennit runs EpsilonPlusFlat with
SequentialMergeBatchNorm (its canonizer merges into the model while the
context is open; a copy of the model is used); Captum's DeepLift against a
zero baseline. The ResNet-like's additions are functional ``+``: zennit's
Sum-layer canonizer needs the model written with zennit.layer.Sum, so zennit
is timed on the VGG-like only.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import alternate, machine, table  # noqa: E402,I001 (same folder)
import salwidget as sw  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.helpers import import_zennit  # noqa: E402 (zennit, torchvision stubbed where it does not load)

warnings.filterwarnings("ignore")


def vgg_like(width=32, classes=10):
    torch.manual_seed(0)

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(3, width), *block(width, width), nn.MaxPool2d(2),
        *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),
        *block(2 * width, 4 * width), *block(4 * width, 4 * width), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4 * width, 64), nn.ReLU(), nn.Linear(64, classes),
    ).eval()


class Residual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + x)


class ResNetLike(nn.Module):
    def __init__(self, width=32, classes=10):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.bn, self.relu = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        self.blocks = nn.Sequential(Residual(width), nn.AvgPool2d(2), Residual(width), nn.AvgPool2d(2), Residual(width))
        self.gap, self.flatten, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.flatten(self.gap(self.blocks(self.relu(self.bn(self.stem(x)))))))


def contenders(model, x, targets, with_zennit: bool) -> dict:
    chunk = len(x)
    xt = torch.as_tensor(x)

    def ours(method, **options):
        return lambda: sw.attribute(model, x, method, target=targets, batch_size=chunk, seed=0, **options)

    def bare_gradient():
        inputs = xt.clone().requires_grad_(True)
        torch.autograd.grad(model(inputs)[range(chunk), targets].sum(), inputs)

    def lrp_floor():
        # What LRP's z+ rule cannot do without: the gradient pass and, per convolution, one more
        # convolution of its input with the positive weights (here: one more forward of the model)
        bare_gradient()
        with torch.no_grad():
            model(xt)

    def deeplift_floor():
        # DeepLIFT's least work with a shared baseline: a gradient pass over the images and one reference row
        inputs = torch.cat([xt, torch.zeros_like(xt[:1])]).requires_grad_(True)
        torch.autograd.grad(model(inputs)[range(chunk), targets].sum(), inputs)

    def zennit_lrp():
        import_zennit()
        from zennit.canonizers import SequentialMergeBatchNorm
        from zennit.composites import EpsilonPlusFlat

        inputs = xt.clone().requires_grad_(True)
        with EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]).context(zennit_model) as modified:
            out = modified(inputs)
            onehot = torch.zeros_like(out)
            onehot[range(chunk), targets] = 1
            torch.autograd.grad(out, inputs, onehot * out)

    def captum_deeplift():
        from captum.attr import DeepLift

        DeepLift(captum_model).attribute(xt.clone(), baselines=torch.zeros_like(xt[:1]), target=targets)

    zennit_model, captum_model = copy.deepcopy(model), copy.deepcopy(model)
    runs = {"gradient": ours("vanilla"), "bare gradient": bare_gradient, "lrp": ours("lrp"),
            "floor: bare gradient + one forward": lrp_floor, "deeplift": ours("deeplift", baseline=0.0),
            "floor: bare gradient of images + 1 reference row": deeplift_floor, "captum DeepLift": captum_deeplift}
    if with_zennit:
        runs["zennit EpsilonPlusFlat"] = zennit_lrp
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    x = np.random.default_rng(0).uniform(0, 1, (args.images, 3, args.size, args.size)).astype(np.float32)
    targets = [i % 10 for i in range(args.images)]
    print(f"{machine()}; {args.images} images {args.size} x {args.size} in one chunk, median of {args.rounds} rounds")
    for title, model, with_zennit in (("VGG-like, 6 conv + BatchNorm", vgg_like(), True),
                                      ("ResNet-like, 3 residual blocks", ResNetLike().eval(), False)):
        times = alternate(contenders(model, x, targets, with_zennit), args.rounds)
        base = times["gradient"]
        rows = [(name, f"{1000 * t:.1f}", f"{t / base:.2f}x") for name, t in times.items()]
        table(title, rows, ("contender", "ms", "vs salwidget gradient"))


if __name__ == "__main__":
    main()
