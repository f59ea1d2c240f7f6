"""Command line.

    python -m salwidget demo --out grid.png                  # the quickstart's grid, no browser needed
    python -m salwidget scan --model M:F --data DIR --store S   # every image's prediction, into a store
    python -m salwidget attribute-dataset --model M:F --data DIR --store S --methods gradcam smoothgrad
"""

from __future__ import annotations

import argparse
import sys

from .methods import all_methods


def demo(out: str, methods: list[str] | None, images: list[str], nsamples: int | None,
         nintegration: int | None) -> None:
    """Explain the bundled EfficientNet-Lite0 on scikit-image's pictures; save the grid.

    With no options this is the quickstart's panel as it first shows (the panel's own defaults:
    Gradient, SmoothGrad and Integrated Gradients, 16 samples and steps, each image's prediction).
    """
    from . import SaliencyWidget, models
    from .panel.map_cache import softmax

    model, class_names = models.efficientnet_lite0()
    pictures = models.sample_images(images)
    given = {k: v for k, v in dict(methods=None if methods is None else tuple(methods), nsamples=nsamples,
                                   nintegration=nintegration).items() if v is not None}
    panel = SaliencyWidget(model, pictures.transpose(0, 3, 1, 2), class_names=class_names, display_images=pictures,
                           **given)
    panel.wait()
    if panel.error:
        raise SystemExit(f"error: {panel.error}")
    panel.save(out)
    first = panel.results[panel.methods[0]]
    probabilities = softmax(first.scores)
    for i, (picture, result) in enumerate(zip(images, first.target)):
        print(f"{picture}: {class_names[result]} ({probabilities[i, result]:.2f})")
    print(f"{panel.status}\nwrote {out}")
    panel.close()


def _load(spec: str):
    """``module:attribute`` (called when it is a function, e.g. a model factory) or a path."""
    import importlib
    import os

    if ":" in spec and not os.path.exists(spec):
        module, name = spec.split(":", 1)
        value = getattr(importlib.import_module(module), name)
        return value() if callable(value) and not hasattr(value, "forward") and not hasattr(value, "predict") else value
    if spec.endswith(".npy"):
        import numpy as np

        return np.load(spec)
    return spec


def _model(spec: str):
    """A model from ``module:factory``; a factory may return (model, class_names)."""
    made = _load(spec)
    return made if isinstance(made, tuple) else (made, None)


def _options(pairs: list[str]) -> dict:
    """``method.option=value`` pairs -> {method: {option: value}} (values read as Python literals)."""
    import ast

    out: dict = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        method, _, option = key.partition(".")
        if not option or not text:
            raise SystemExit(f"error: --option takes method.option=value, e.g. smoothgrad.nsamples=32; got {pair!r}")
        try:
            value = text if option == "layer" else ast.literal_eval(text)  # a layer is a name, even "0"
        except (ValueError, SyntaxError):
            value = text
        out.setdefault(method, {})[option] = value
    return out


def dataset_command(args) -> None:
    """``scan`` and ``attribute-dataset``: a batch job from the shell."""
    from . import attribute_dataset, scan

    model, names = _model(args.model)
    data = _load(args.data)
    labels = None if args.labels is None else _load(args.labels)
    preprocess = None if args.preprocess is None else _load(args.preprocess)
    scanned = scan(model, data, labels, class_names=names, preprocess=preprocess, store=args.store,
                   batch_size=args.batch_size, progress=True)
    print(f"scan: {len(scanned.table)} images, accuracy {scanned.accuracy:.4f}, {len(scanned.errors)} unreadable; "
          f"store {args.store} (key {scanned.key})")
    if args.command == "scan":
        return
    rows = None if args.query is None else scanned.table.query(args.query).index
    result = attribute_dataset(model, scanned, args.methods, rows=rows, options=_options(args.option),
                               target=args.target, metrics=tuple(args.metrics), engine=args.engine,
                               batch_size=args.batch_size, seed=args.seed, dtype=args.dtype,
                               curve_steps=args.curve_steps, progress=True)
    columns = [c for c in result.table.columns if c.startswith(tuple(result.labels))]
    summary = result.table[columns].describe().loc[["count", "mean"]].round(4)
    print(f"{', '.join(result.labels)}: {result.calls} blocks computed; columns {', '.join(columns)}\n"
          f"{summary.to_string()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m salwidget", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="render the quickstart grid to a PNG, no browser needed")
    run.add_argument("--out", default="grid.png", help="PNG file to write (default grid.png)")
    run.add_argument("--methods", nargs="+", choices=[m.name for m in all_methods()],
                     help="default: the panel's (vanilla smoothgrad integrated), as the quickstart shows")
    run.add_argument("--images", nargs="+", default=["chelsea", "coffee"])
    run.add_argument("--nsamples", type=int, help="SmoothGrad samples (default: the panel's, 16)")
    run.add_argument("--nintegration", type=int, help="IG steps (default: the panel's, 16)")
    for name, help_text in (("scan", "predict every image of a dataset into a store (Parquet + zarr)"),
                            ("attribute-dataset", "scan, then maps and deletion/insertion AUCs of every image")):
        job = sub.add_parser(name, help=help_text)
        job.add_argument("--model", required=True, help="module:factory returning a model or (model, class_names), "
                                                        "e.g. salwidget.models:efficientnet_lite0")
        job.add_argument("--data", required=True, help="a folder of images (class subfolders = labels), a .npy "
                                                       "array, or module:function returning a dataset")
        job.add_argument("--store", required=True, help="the folder the rows and maps go to")
        job.add_argument("--labels", help="a .npy of one label per image (for arrays)")
        job.add_argument("--preprocess", help="module:function turning a picture (H, W, 3) uint8 into a model input")
        job.add_argument("--batch-size", default="auto", type=lambda v: v if v == "auto" else int(v))
        if name == "attribute-dataset":
            job.add_argument("--methods", nargs="+", required=True, choices=[m.name for m in all_methods()])
            job.add_argument("--option", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                             help="e.g. smoothgrad.nsamples=32 or gradcam.layer=net._bn1 (repeat for more)")
            job.add_argument("--query", help="a pandas query choosing the rows, e.g. 'not correct'")
            job.add_argument("--target", default="predicted", help="predicted, label, or a class index")
            job.add_argument("--metrics", nargs="*", default=["deletion", "insertion"])
            job.add_argument("--engine", default="local", choices=("local", "ray"))
            job.add_argument("--seed", type=int, default=0)
            job.add_argument("--dtype", default="float32", choices=("float32", "float16", "float64"),
                             help="how maps are stored (float16: half the space, each map scaled by its range)")
            job.add_argument("--curve-steps", type=int, default=16)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out, args.methods, args.images, args.nsamples, args.nintegration)
    elif args.command in ("scan", "attribute-dataset"):
        if getattr(args, "target", None) not in (None, "predicted", "label"):
            args.target = int(args.target)
        dataset_command(args)


if __name__ == "__main__":
    main(sys.argv[1:])
