"""How close the Evaluate view's estimates come to the time the work then takes, on the quickstart.

    python benchmarks/evaluate_estimate.py

The quickstart's panel (EfficientNet-Lite0, the two sample pictures, vanilla, SmoothGrad and IG with 16
samples) evaluates once with 8 curve steps and a sanity check at 2 depths (what the estimates learn from),
then the view is asked for 16 steps and 3 depths: the estimate shown in its cost line is compared with the
seconds each then takes (issue 27: within 1.5x).
"""

from __future__ import annotations

import html
import os
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import salwidget as sw  # noqa: E402
from salwidget import models  # noqa: E402


def estimates(panel) -> tuple[float | None, float | None]:
    text = html.unescape(panel.host.evaluate_view.cost.value)
    curves = re.search(r"Curves \(\d+ steps\):[^.]*?about (\d+) s", text)
    sanity = re.search(r"Sanity check \(\d+ depths\):[^;]*?about (\d+) s", text)
    return (float(curves.group(1)) if curves else None, float(sanity.group(1)) if sanity else None)


def main() -> None:
    model, class_names = models.efficientnet_lite0()
    pictures = models.sample_images(["chelsea", "coffee"])
    panel = sw.SaliencyWidget(model, pictures.transpose(0, 3, 1, 2), class_names=class_names,
                              display_images=pictures, confirm_seconds=float("inf"))
    assert panel.wait(600)
    panel.curve_steps, panel.sanity_depths = 8, 2
    panel.evaluate(sanity_check=True)
    assert panel.wait(1200) and not panel.error, panel.error
    panel.curve_steps, panel.sanity_depths = 16, 3
    curves_estimate, sanity_estimate = estimates(panel)
    start = time.perf_counter()
    panel.evaluate()
    assert panel.wait(1200) and not panel.error, panel.error
    curves_took = time.perf_counter() - start
    start = time.perf_counter()
    panel.evaluate(sanity_check=True)
    assert panel.wait(2400) and not panel.error, panel.error
    sanity_took = time.perf_counter() - start
    print("| work | estimate (s) | took (s) | took / estimate |")
    print("|---|---|---|---|")
    for name, estimate, took in (("curves, 16 steps", curves_estimate, curves_took),
                                 ("sanity check, 3 depths", sanity_estimate, sanity_took)):
        ratio = f"{took / estimate:.2f}" if estimate else "-"
        print(f"| {name} | {estimate} | {took:.1f} | {ratio} |")
    panel.close()


if __name__ == "__main__":
    main()
