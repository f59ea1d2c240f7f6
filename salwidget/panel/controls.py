"""The panel's controls: standard ipywidgets, each with a tooltip, a CSS class and a usable width.

Option controls are built from :class:`~salwidget.methods.Option` (kind,
range, label, help), so a newly registered method brings its own controls.
:func:`show_value` puts any accepted value on a control: a slider's range
grows to hold it, a dropdown gains an entry for it.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..methods import Method, Option
from .checks import VIEWS

CMAPS = ("inferno", "magma", "viridis", "plasma", "cividis", "hot", "gray", "turbo", "jet")
BASELINE_CHOICES = (("random uniform", "uniform"), ("black (0.0)", 0.0), ("blurred image", "blur"))
SCALING_CHOICES = (("per image", "image"), ("per method, all images", "method"), ("shared by all maps", "shared"))
SLIDER = dict(continuous_update=False, style={"description_width": "96px"})
SLIDER_LAYOUT = dict(width="340px", min_width="260px")


LABEL_WIDTH = "96px"


def wrap_row(children: list, **layout) -> widgets.HBox:
    """A row that wraps onto more lines when the panel is narrow."""
    row = widgets.HBox(children, layout=widgets.Layout(flex_flow="row wrap", align_items="center", **layout))
    row.add_class("salwidget-row")
    return row


def one_line(text: str) -> str:
    """HTML of ``text`` kept to one line: cut with an ellipsis where the row is too narrow, whole on hover.

    A status that wraps onto two or three lines ("..., all from the cache.") would move every control
    below it each time it changes."""
    escaped = html.escape(text)
    return (f"<div title=\"{escaped}\" style=\"white-space:nowrap;overflow:hidden;text-overflow:ellipsis\">"
            f"{escaped}</div>")


def labelled(control, label: str, tooltip: str) -> widgets.HBox:
    """``control`` with ``label`` on its left, both showing ``tooltip`` on hover.

    ipywidgets 8.1 shows the tooltip of a Dropdown, Checkbox or Text only when
    it has no description, so the description becomes a label of its own.
    """
    control.description = ""
    control.tooltip = tooltip
    caption = widgets.HTML(f"<span title=\"{html.escape(tooltip)}\">{html.escape(label)}</span>",
                           layout=widgets.Layout(width=LABEL_WIDTH, min_width=LABEL_WIDTH))
    named(caption, "label", None)
    box = widgets.HBox([caption, control], layout=widgets.Layout(align_items="center", margin="0 8px 0 0"))
    box.add_class("salwidget-field")
    return box


def named(control, name: str, tooltip: str | None):
    """Give ``control`` its CSS class ``salwidget-<name>`` and a tooltip.

    ipywidgets 8.1 writes an unset tooltip of a described widget (HTML,
    Label, ...) as ``title="null"``: those get '' at least. Widgets without a
    description (``Image``) get none: an Image with a tooltip fails to render.
    """
    control.add_class(f"salwidget-{name}")
    if hasattr(control, "description"):
        control.tooltip = tooltip or ""
    return control


def pager_buttons(previous: tuple[str, str], following: tuple[str, str]):
    """A Previous and a Next button, each given as (CSS name, tooltip)."""
    def button(description: str, icon: str, spec: tuple[str, str]):
        return named(widgets.Button(description=description, icon=icon, layout=widgets.Layout(width="110px")), *spec)

    return button("Previous", "arrow-left", previous), button("Next", "arrow-right", following)


def method_button(method: Method) -> widgets.ToggleButton:
    tip = method.summary + (" Signed: positive and negative evidence." if method.signed else "")
    if method.fails_sanity_check:
        tip += " Fails the model-randomisation sanity check."
    # As wide as its label: 29 buttons of 110 px or more took 8 rows above the grid of a narrow notebook.
    button = widgets.ToggleButton(description=method.label, layout=widgets.Layout(width="auto", min_width="0"))
    return named(button, f"method-{method.name}", tip)


def option_control(method: Method, option: Option, value: Any) -> tuple[Any, Any]:
    """(control, what to place in the panel) for one option of one method, showing ``value``."""
    label = option.label or option.name
    name, tip = f"option-{method.name}-{option.name}", option.help
    if option.name == "baseline" or option.kind == "choice" or option.presets:
        choices = (BASELINE_CHOICES if option.name == "baseline" else list(option.presets) if option.presets
                   else list(option.choices))
        control = named(widgets.Dropdown(options=choices, layout=widgets.Layout(width="170px")), name, tip)
        show_value(control, value)
        return control, labelled(control, label, tip)
    if option.kind == "bool":
        control = named(widgets.Checkbox(indent=False, layout=widgets.Layout(width="auto")), name, tip)
        show_value(control, value)
        return control, labelled(control, label, tip)
    if option.kind == "int":
        low = int(option.minimum if option.minimum is not None else 0)
        high = int(option.slider_max or option.maximum or max(4 * (option.default or 1), low + 10))
        control = widgets.IntSlider(min=low, max=max(high, low + 1), step=int(option.step or 1), description=label,
                                    layout=widgets.Layout(**SLIDER_LAYOUT), **SLIDER)
    else:  # float
        low = float(option.minimum if option.minimum is not None else 0.0)
        high = float(option.slider_max or option.maximum or max(4 * (option.default or 1.0), low + 1.0))
        step = float(option.step or (high - low) / 100)
        control = widgets.FloatSlider(min=low, max=high, step=step, description=label, readout_format=".3g",
                                      layout=widgets.Layout(**SLIDER_LAYOUT), **SLIDER)
    show_value(control, value)
    named(control, name, tip)  # a slider shows its tooltip on its description
    return control, control


NONE = "(none)"  # a dropdown's stand-in for None: ipywidgets reads a None value as "nothing selected"


def chosen(value: Any) -> Any:
    """A dropdown's value as the trait takes it (``NONE`` -> None)."""
    return None if isinstance(value, str) and value == NONE else value


def show_value(control, value: Any) -> None:
    """Show ``value`` on ``control``: extend a slider's range or add a dropdown entry when needed."""
    if value is None and isinstance(control, widgets.Dropdown):
        value = NONE
    if isinstance(control, (widgets.IntSlider, widgets.FloatSlider)):
        with control.hold_trait_notifications():
            if value > control.max:
                control.max = value
            if value < control.min:
                control.min = value
        control.value = value
    elif isinstance(control, widgets.Dropdown):
        if not any(same(value, v) for v in _option_values(control)):
            control.options = list(_labelled(control.options)) + [(_label_for(value), value)]
        control.value = next(v for v in _option_values(control) if same(value, v))
    else:
        control.value = value


def _labelled(options) -> list:
    return [o if isinstance(o, tuple) else (str(o), o) for o in options]


def _option_values(control) -> list:
    return [v for _, v in _labelled(control.options)]


def set_choices(control: widgets.Dropdown, choices: list) -> None:
    """Replace a dropdown's (label, value) choices, only when they differ (a change resets its value)."""
    if _labelled(control.options) != list(choices):
        value = control.value
        control.options = choices
        if any(same(value, v) for _, v in choices):
            control.value = next(v for _, v in choices if same(value, v))


def same(a: Any, b: Any) -> bool:
    """Equal, and not a word against a number ('uniform' is not 0.0)."""
    return isinstance(a, str) == isinstance(b, str) and a == b


def _label_for(value: Any) -> str:
    return f"constant {value:g}" if isinstance(value, float) else str(value)


def look_controls() -> dict[str, tuple[Any, Any]]:
    """The controls that change how maps look, never what is computed: name -> (control, what to place)."""

    def dropdown(name, label, tip, width, **kwargs):
        control = named(widgets.Dropdown(layout=widgets.Layout(width=width), **kwargs), name, tip)
        return control, labelled(control, label, tip)

    def slider(kind, name, tip, **kwargs):
        control = named(kind(layout=widgets.Layout(**SLIDER_LAYOUT), **SLIDER, **kwargs), name, tip)
        return control, control

    view = named(widgets.ToggleButtons(options=list(VIEWS), style={"button_width": "110px"},
                                       tooltips=["Absolute values (|map|)",
                                                 "Signed methods in a diverging colour map centred at 0"]),
                 "view", "How signed methods (IG, Gradient x Input, ...) are shown. No model call.")
    return {
        "cmap": dropdown("cmap", "colours", "Colour map of the magnitude maps (signed maps use a diverging map). "
                                            "No model call.", "140px", options=list(CMAPS)),
        "percentile": slider(widgets.FloatSlider, "percentile", "Values above this percentile saturate the colour "
                             "map. No model call.", min=90.0, max=100.0, step=0.1, description="clip at p"),
        "scaling": dropdown("scaling", "scale", "Which maps share one colour scale: each image alone, each method "
                            "across its images, or every map. No model call.", "200px", options=SCALING_CHOICES),
        "view": (view, view),
        "overlay": dropdown("overlay-method", "overlay", "The method drawn over the image in the last column.",
                            "200px"),
        "alpha": slider(widgets.FloatSlider, "overlay", "Opacity of the heatmap over the image. No model call.",
                        min=0.0, max=1.0, step=0.05, description="opacity"),
        "cell_size": slider(widgets.IntSlider, "cell-size", "Size of each grid cell in pixels (the grid shrinks to "
                            "the panel's width down to 160 px per cell, then scrolls). No model call.",
                            min=80, max=480, step=10, description="cell px"),
    }


def pane_toggle() -> widgets.ToggleButtons:
    """The Dataset / Maps / Evaluate toggle (the ``pane`` trait)."""
    return named(widgets.ToggleButtons(
        options=[("Dataset", "dataset"), ("Maps", "maps"), ("Evaluate", "evaluate")], style={"button_width": "90px"},
        tooltips=["Every image's prediction: filter, sort, pick the images to explain",
                  "The grid of saliency maps", "How much to trust the maps: deletion/insertion curves against "
                                               "a random order, and the model-randomisation sanity check"]),
        "pane", "Pick images in the dataset, see their maps, or the maps' evaluation (computed in the "
                "background, cached).")
