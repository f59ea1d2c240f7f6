"""salwidget from the shell.

    python -m salwidget demo --out grid.png                  # the quickstart's grid, no browser needed
    python -m salwidget scan --model M:F --data DIR --store S   # every image's prediction, into a store
    python -m salwidget attribute-dataset --model M:F --data DIR --store S --methods gradcam smoothgrad

An error is one line and an exit status (2: the command line, 1: the run); --traceback shows it in full.
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
        from .errors import SaliencyError

        raise SaliencyError(panel.error)
    panel.save(out)
    first = panel.results[panel.methods[0]]
    probabilities = softmax(first.scores)
    for i, (picture, result) in enumerate(zip(images, first.target)):
        print(f"{picture}: {class_names[result]} ({probabilities[i, result]:.2f})")
    print(f"{panel.status}\nwrote {out}")
    panel.close()


def _attribute(spec: str, what: str):
    """The object ``module:attribute`` names (not called)."""
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise CommandError(f"{what} takes module:name, e.g. salwidget.models:efficientnet_lite0; got {spec!r}.")
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise CommandError(f"{what} {spec!r}: cannot import {module!r} ({exc}); is it on PYTHONPATH?") from None
    try:
        return getattr(found, name)
    except AttributeError:
        raise CommandError(f"{what} {spec!r}: module {module!r} has no {name!r}.") from None


def _load(spec: str, what: str):
    """``module:attribute`` (called when it is a function, e.g. a dataset factory) or a path."""
    import os

    if ":" in spec and not os.path.exists(spec):
        value = _attribute(spec, what)
        return value() if callable(value) and not hasattr(value, "forward") and not hasattr(value, "predict") else value
    if spec.endswith(".npy"):
        import numpy as np

        return np.load(spec)
    return spec


def _model(spec: str):
    """(model, class_names or None, the factory's own preprocessing or None) from ``module:factory``.

    A factory may return (model, class_names), and may carry ``factory.preprocess``: a function turning a
    picture into the model's input, used for files when --preprocess is not given."""
    factory = _attribute(spec, "--model")
    made = factory() if callable(factory) and not hasattr(factory, "forward") and not hasattr(factory, "predict") \
        else factory
    model, names = made if isinstance(made, tuple) else (made, None)
    return model, names, getattr(factory, "preprocess", None)


def _function(spec: str, what: str):
    """A function named ``module:function`` (not called: the scan calls it on each picture)."""
    value = _attribute(spec, what)
    if not callable(value):
        raise CommandError(f"{what} {spec!r} is a {type(value).__name__}, not a function.")
    return value


def _options(pairs: list[str]) -> dict:
    """``method.option=value`` pairs -> {method: {option: value}} (values read as Python literals)."""
    import ast

    out: dict = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        method, _, option = key.partition(".")
        if not option or not text:
            raise CommandError(f"--option takes method.option=value, e.g. smoothgrad.nsamples=32; got {pair!r}.")
        try:
            value = text if option == "layer" else ast.literal_eval(text)  # a layer is a name, even "0"
        except (ValueError, SyntaxError):
            value = text
        out.setdefault(method, {})[option] = value
    return out


def dataset_command(args) -> None:
    """``scan`` and ``attribute-dataset``: a batch job from the shell."""
    from . import attribute_dataset, scan

    model, names, own = _model(args.model)
    data = _load(args.data, "--data")
    labels = None if args.labels is None else _load(args.labels, "--labels")
    preprocess = own if args.preprocess is None else _function(args.preprocess, "--preprocess")
    scanned = scan(model, data, labels, class_names=names, preprocess=preprocess, store=args.store,
                   batch_size=args.batch_size, progress=True)
    labelled = int((scanned.table["label"] >= 0).sum())
    accuracy = f"accuracy {scanned.accuracy:.4f} on {labelled} labelled" if labelled else \
        "no labels (a folder gives them by class subfolders; an array by --labels)"
    print(f"scan: {len(scanned.table)} images, {accuracy}, {len(scanned.errors)} unreadable; "
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


class CommandError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(exc: BaseException) -> str:
    from .errors import SaliencyError

    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (SaliencyError, CommandError)) else f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> None:
    """Run a command; every error ends as one line on stderr and an exit status (``--traceback``: in full)."""
    from .models import SAMPLE_IMAGES

    parser = _Parser(prog="python -m salwidget", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("demo", help="render the quickstart grid to a PNG, no browser needed")
    run.add_argument("--out", default="grid.png", help="PNG file to write (default grid.png)")
    run.add_argument("--methods", nargs="+", choices=[m.name for m in all_methods()],
                     help="default: the panel's (vanilla smoothgrad integrated), as the quickstart shows")
    run.add_argument("--images", nargs="+", default=["chelsea", "coffee"], choices=SAMPLE_IMAGES, metavar="NAME",
                     help=f"scikit-image pictures: {', '.join(SAMPLE_IMAGES)} (default chelsea coffee)")
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
        job.add_argument("--preprocess", help="module:function turning a picture (H, W, 3) uint8 into a model "
                                              "input (default: the factory's own, factory.preprocess, e.g. the "
                                              "demo model's resize and crop to 224 x 224; else RGB in [0, 1])")
        job.add_argument("--batch-size", default="auto", type=_batch_size)
        if name == "attribute-dataset":
            job.add_argument("--methods", nargs="+", required=True, choices=[m.name for m in all_methods()])
            job.add_argument("--option", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                             help="e.g. smoothgrad.nsamples=32 or gradcam.layer=net._bn1 (repeat for more)")
            job.add_argument("--query", help="a pandas query choosing the rows, e.g. 'not correct'")
            job.add_argument("--target", default="predicted", type=_target, help="predicted, label, or a class index")
            job.add_argument("--metrics", nargs="*", default=["deletion", "insertion"])
            job.add_argument("--engine", default="local", choices=("local", "ray"))
            job.add_argument("--seed", type=int, default=0)
            job.add_argument("--dtype", default="float32", choices=("float32", "float16", "float64"),
                             help="how maps are stored (float16: half the space, each map scaled by its range)")
            job.add_argument("--curve-steps", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            demo(args.out, args.methods, args.images, args.nsamples, args.nintegration)
        else:
            dataset_command(args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if args.traceback:
            raise
        sys.stderr.write(f"{parser.prog} {args.command}: error: {_one_line(exc)}\n")
        raise SystemExit(2 if isinstance(exc, CommandError) else 1) from None


def _batch_size(value: str):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of images or 'auto'; got {value!r}") from None


def _target(value: str):
    if value in ("predicted", "label"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'predicted', 'label' or a class index; got {value!r}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
