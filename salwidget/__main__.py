"""Command line: ``python -m salwidget demo --out grid.png`` renders the quickstart's grid."""

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
    from .explorer import softmax

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
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out, args.methods, args.images, args.nsamples, args.nintegration)


if __name__ == "__main__":
    main(sys.argv[1:])
