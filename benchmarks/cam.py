"""Grad-CAM and Score-CAM: salwidget against pytorch-grad-cam and torchcam on EfficientNet-Lite0 (224 x 224).

    python benchmarks/cam.py                        # all: Score-CAM's 4 x 1,280 passes dominate (minutes)
    python benchmarks/cam.py --skip scorecam memory  # Grad-CAM only: about a minute
    python benchmarks/cam.py --rounds 5 --images 8 --score-rounds 2

Every comparison alternates its contenders round by round in one process and
reports medians; ratios are contender time / salwidget time (> 1: salwidget is
faster). Each library gets its own copy of the model (their hooks stay on
their copy) and is called as its documentation shows, extractor made per call.
All explain the same class at the same layer: net._bn1 (1,280 x 7 x 7), called
once per forward pass. The automatic layer (salwidget's and torchcam's
locate_candidate_layer) is net._swish, the ReLU6 after it, but that module is
called twice (stem and head): salwidget and torchcam read its last call,
pytorch-grad-cam silently reads the first (the 112 x 112 stem), so it would
time other work. One more Score-CAM row runs salwidget at net._swish, where
about half the channels are constant on a picture and share one pass.
pytorch-grad-cam's and torchcam's time includes their normalise-and-resize;
salwidget's includes its clean forward pass (targets) that the others skip
when given targets.

Score-CAM's peak memory is measured in a fresh process per row (VmHWM above
the loaded model), at a 24- and a 320-channel layer so each row takes seconds:
salwidget's masked inputs exist a chunk at a time, so its peak follows the
chunk, not the channels; pytorch-grad-cam builds all of them at once.

Needs torchcam and grad-cam (pip install torchcam; pip install --no-deps grad-cam
ttach opencv-python-headless). pytorch-grad-cam imports a few torchvision names;
where torchvision does not load they are stubbed (nothing stubbed is called).
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import types
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score-CAM draws progress bars

import torch  # noqa: E402

import run as bench_run  # noqa: E402,I001 (same folder)
from run import alternate, machine, table  # noqa: E402,I001
import salwidget as sw  # noqa: E402
from salwidget import models  # noqa: E402

warnings.filterwarnings("ignore", message=".*no positive evidence")  # a zero map is still timed work


def import_grad_cam():
    """pytorch_grad_cam, with the torchvision names it imports stubbed if torchvision does not load."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        tv = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")
        functional = types.ModuleType("torchvision.transforms.functional")
        for name in ("Compose", "Normalize", "ToTensor"):
            setattr(transforms, name, type(name, (), {}))
        functional.resize = None
        tv.transforms, transforms.functional = transforms, functional
        sys.modules.update({"torchvision": tv, "torchvision.transforms": transforms,
                            "torchvision.transforms.functional": functional})
    import pytorch_grad_cam

    return pytorch_grad_cam


# ----------------------------------------------------------------- contenders
def salwidget_run(model, x, method, targets, layer=None, batch_size="auto"):
    if bench_run.DEVICE != "cpu":  # the same device tensor the others get
        x = torch.from_numpy(x).to(bench_run.DEVICE)

    def run():
        return sw.attribute(model, x, method, target=targets, layer=layer, batch_size=batch_size).raw

    return run


def grad_cam_run(model, x, cls, targets, layer, batch_size=None):
    lib = import_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    own = copy.deepcopy(model)
    module = dict(own.named_modules())[layer]
    tensor = torch.from_numpy(x).to(bench_run.DEVICE)

    def run():
        with getattr(lib, cls)(model=own, target_layers=[module]) as cam:
            if batch_size is not None:
                cam.batch_size = batch_size
            return cam(input_tensor=tensor, targets=[ClassifierOutputTarget(int(t)) for t in targets])

    return run


def torchcam_run(model, x, cls, targets, layer, batch_size=None):
    import torchcam.methods

    own = copy.deepcopy(model)
    tensor = torch.from_numpy(x).to(bench_run.DEVICE)
    extra = {} if batch_size is None else {"batch_size": batch_size}

    def run():
        with getattr(torchcam.methods, cls)(own, target_layer=layer, input_shape=tuple(x.shape[1:]), **extra) as cam:
            if cls == "ScoreCAM":
                with torch.no_grad():
                    own(tensor)
                return cam(class_idx=[int(t) for t in targets])
            return cam(class_idx=[int(t) for t in targets], scores=own(tensor))

    return run


def score_cam_passes(model, x, layer) -> int:
    """salwidget's Score-CAM passes at ``layer``: one per channel that is not constant on its image, plus
    one per image for its constant channels (read from the layer's last call)."""
    seen = {}
    hook = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.update(a=o))
    with torch.no_grad():
        model(torch.from_numpy(x).to(bench_run.DEVICE))
    hook.remove()
    flat = seen["a"].flatten(2)
    constant = flat.amax(-1) == flat.amin(-1)
    return int((~constant).sum() + constant.any(dim=1).sum())


def compare(title, contenders: dict, rounds: int, warmup: bool, per: int) -> None:
    medians = alternate(contenders, rounds, warmup=warmup)
    ours = medians["salwidget"]
    rows = [(name, f"{seconds:.2f}", f"{seconds / per:.3f}", f"{seconds / ours:.2f}") for name, seconds in medians.items()]
    table(f"{title} (median of {rounds})", rows, ("contender", "seconds", "per image", "ratio to salwidget"))


# ---------------------------------------------------------------- memory
MEMORY_SNIPPET = r"""
import os, sys
os.environ["TQDM_DISABLE"] = "1"
sys.path.insert(0, sys.argv[5])
import numpy as np, torch
from salwidget import models
import cam as bench

def status(key):  # MB from /proc: VmHWM is this process's own peak
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

tool, layer, chunk, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model, _ = models.efficientnet_lite0()
x = models.sample_images(["chelsea"]).transpose(0, 3, 1, 2).copy()
if tool == "salwidget":
    run = bench.salwidget_run(model, x, "scorecam", [target], layer, batch_size=chunk)
elif tool == "pytorch-grad-cam":
    run = bench.grad_cam_run(model, x, "ScoreCAM", [target], layer, batch_size=chunk)
else:
    run = bench.torchcam_run(model, x, "ScoreCAM", [target], layer, batch_size=chunk)
base = status("VmRSS")
run()
print(status("VmHWM") - base)
"""


def memory(layers: list[str], target: int) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rows = []
    # Each tool's masked inputs per forward call (salwidget: a given batch_size caps every call).
    runs = [(layer, tool, chunk) for layer in layers
            for tool, chunk in [("salwidget", 16), ("pytorch-grad-cam", 16), ("torchcam", 32)]]
    runs.append((layers[-1], "salwidget", 64))
    for layer, tool, chunk in runs:
        out = subprocess.run([sys.executable, "-c", MEMORY_SNIPPET, tool, layer, str(chunk), str(target), here],
                             capture_output=True, text=True, check=True).stdout
        rows.append((layer, tool, chunk, f"{float(out.split()[-1]):.0f}"))
    table("Score-CAM peak memory above the loaded model, 1 image (MB)", rows,
          ("layer", "tool", "masked inputs per forward call", "MB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="Grad-CAM rounds")
    parser.add_argument("--images", type=int, default=4, help="Grad-CAM images")
    parser.add_argument("--score-rounds", type=int, default=1)
    parser.add_argument("--score-images", type=int, default=1)
    parser.add_argument("--layer", default="net._bn1", help="the layer every contender reads (see above)")
    parser.add_argument("--memory-layers", nargs="+", default=["net._blocks.1", "net._blocks.15"],
                        help="layers for the memory table (24 and 320 channels by default: seconds per row)")
    parser.add_argument("--skip", nargs="*", default=(), choices=("gradcam", "scorecam", "memory"))
    parser.add_argument("--device", default="cpu", help="torch device for the model: cpu (default) or cuda "
                        "(the memory table runs on the CPU only)")
    args = parser.parse_args()
    bench_run.DEVICE = args.device
    torch.manual_seed(0)
    model, _ = models.efficientnet_lite0()
    model = model.to(args.device)
    names = ["chelsea", "coffee", "astronaut", "rocket", "cat", "camera"]
    x = models.sample_images((names * 4)[: max(args.images, args.score_images)]).transpose(0, 3, 1, 2).copy()
    targets = sw.predict(model, x).argmax(1)
    auto = sw.attribute(model, x[:1], "gradcam").layer
    layer = args.layer
    print(f"machine: {machine()}\nlayer: {layer} (the automatic one: {auto})")

    if "gradcam" not in args.skip:
        xs, ts = x[: args.images], targets[: args.images]
        compare(f"Grad-CAM, {args.images} images, layer {layer}", {
            "salwidget": salwidget_run(model, xs, "gradcam", ts, layer),
            "pytorch-grad-cam": grad_cam_run(model, xs, "GradCAM", ts, layer),
            "torchcam": torchcam_run(model, xs, "GradCAM", ts, layer),
        }, args.rounds, warmup=True, per=args.images)
    if "scorecam" not in args.skip:
        xs, ts = x[: args.score_images], targets[: args.score_images]
        passes = score_cam_passes(model, xs, auto)
        compare(f"Score-CAM, {args.score_images} image(s), layer {layer}: 1,280 masked passes per image", {
            "salwidget": salwidget_run(model, xs, "scorecam", ts, layer),
            "pytorch-grad-cam (batch 16)": grad_cam_run(model, xs, "ScoreCAM", ts, layer),
            "torchcam (batch 32)": torchcam_run(model, xs, "ScoreCAM", ts, layer),
            f"salwidget at {auto} ({passes // args.score_images} passes per image)":
                salwidget_run(model, xs, "scorecam", ts, auto),
        }, args.score_rounds, warmup=False, per=args.score_images)
    if "memory" not in args.skip and args.device == "cpu":
        memory(args.memory_layers, int(targets[0]))


if __name__ == "__main__":
    main()
