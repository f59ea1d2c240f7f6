"""The controls that set up the maps: method buttons, each method's options, the CAM layer, the target and
its class search, and the look; mirrored both ways with the panel's traits.

A control's change sets its trait through :meth:`SettingsView.set_from_control`
(a value the panel refuses puts the control back and shows why); a trait's
change reaches its control through :meth:`SettingsView.show`.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Callable, Iterable

import ipywidgets as widgets
import traitlets

from ..methods import all_methods, get_method
from ..outputs import labels_above
from . import controls
from .classes import top_classes
from .method_options import shown_options
from .notes import SANITY_NOTE

if TYPE_CHECKING:
    from .host import PanelHost

THRESHOLD = 0.5  # a multi-label head's labels above this probability are offered as targets

METHOD_ROWS_HEIGHT = "98px"  # three rows of 28 px buttons and their margins


class SettingsView:
    """The settings controls of one panel (see the module docstring)."""

    def __init__(self, host: "PanelHost", show_all: Callable[[], None]):
        self.host = host
        self.show_all = show_all  # puts every trait on its control, this view's and the others' 
        self.panel = host.panel
        self.syncing = False  # the controls are being set from the traits: their changes are not requests
        self.offered: list[int] = []  # classes a search offered in the target list (duplicated names)
        self.search_shown_for: Any = object()  # the target the search box last showed (nothing yet)
        self.group_boxes: dict[str, tuple] = {}
        self.method_buttons = {m.name: controls.method_button(m) for m in all_methods()
                               if not host.forward_only or m.reads == "outputs"}
        for button in self.method_buttons.values():
            button.observe(self.on_method_button_change, names="value")
        self.option_controls: dict[tuple[str, str], Any] = {}
        self.option_views: dict[tuple[str, str], Any] = {}
        self.groups = widgets.VBox(layout=widgets.Layout(margin="2px 0"))
        tip = "The layer class activation maps read: automatic (the last layer with a spatial output) or any one."
        self.layer = controls.named(widgets.Dropdown(options=[("automatic", controls.NONE)],
                                                     layout=widgets.Layout(width="320px")), "layer", tip)
        self.layer.observe(self.on_layer_change, names="value")
        self.layer_row = controls.wrap_row([controls.labelled(self.layer, "CAM layer", tip)])
        tip = ("The class whose score is explained: each image's prediction, or one class for all images "
               "(the top classes are listed; search for any other).")
        self.target = controls.named(widgets.Dropdown(layout=widgets.Layout(width="340px")), "target", tip)
        self.target_view = controls.labelled(self.target, "explain", tip)
        self.target.observe(self.on_target_change, names="value")
        classes = host.classes
        self.search = controls.named(widgets.Combobox(placeholder="search a class, press Enter",
                                                      options=classes.suggestions(), ensure_option=False,
                                                      continuous_update=False,
                                                      layout=widgets.Layout(width="260px")),
                                     "class-search", "Type a class name and press Enter: a unique match becomes "
                                                     "the target; duplicated names show their indices.")
        self.search.layout.display = "" if classes.names else "none"
        self.search.observe(self.on_search_change, names="value")
        self.search_hint = controls.named(widgets.HTML(), "search-hint", None)
        looks = controls.look_controls()
        self.look = {name: control for name, (control, _) in looks.items()}
        self.look_views = [view for _, view in looks.values()]
        self.look_row = controls.wrap_row(self.look_views)  # below the grid: the maps come first
        for trait, control in self.look_pairs():
            control.observe(self.on_look_control_change, names="value")

    def rows(self) -> list:
        """The rows of controls above the grid that set up the maps (hidden in the Dataset view, as is
        :attr:`look_row`, which sits below the grid: at 1000 px the look's six controls take six lines)."""
        return [
            # At most three rows of method buttons, the rest a scroll away: the grid stays near the top.
            controls.wrap_row(list(self.method_buttons.values()), max_height=METHOD_ROWS_HEIGHT, overflow="hidden auto"),
            self.groups,
            controls.wrap_row([self.target_view, self.search, self.search_hint]),
        ]

    def look_pairs(self) -> list[tuple[str, Any]]:
        """(trait, control) pairs of the look."""
        return [("cmap", self.look["cmap"]), ("percentile", self.look["percentile"]),
                ("scaling", self.look["scaling"]), ("view", self.look["view"]),
                ("overlay_method", self.look["overlay"]), ("overlay_alpha", self.look["alpha"]),
                ("cell_size", self.look["cell_size"])]

    # ------------------------------------------------------------------ traits -> controls
    def show(self, pairs: Iterable[tuple[str, Any]] = ()) -> None:
        """Put every trait's value on its control (``pairs``: other views' (trait, control) pairs too)."""
        p = self.panel
        self.syncing = True
        try:
            for name, button in self.method_buttons.items():
                button.value = name in p.methods
            self.show_groups()
            for (method, option), control in self.option_controls.items():
                controls.show_value(control, p.options[method][option])
            controls.set_choices(self.look["overlay"],
                                 [("none", controls.NONE)] + [(get_method(m).label, m) for m in p.methods])
            for trait, control in [*self.look_pairs(), *pairs]:
                controls.show_value(control, getattr(p, trait))
            self.show_layer()
            self.show_target()
        finally:
            self.syncing = False

    def show_groups(self) -> None:
        """A box per selected method (its name, note and options), rebuilt only when what it shows changes."""
        boxes = []
        for name in self.panel.methods:
            method = get_method(name)
            shown = tuple(o.name for o in shown_options(method, self.panel.options[name]))
            if self.group_boxes.get(name, (None,))[0] != shown:
                self.group_boxes[name] = (shown, self.group_box(method, shown))
            boxes.append(self.group_boxes[name][1])
        if any(get_method(m).reads == "layer" for m in self.panel.methods):
            boxes.append(self.layer_row)
        if tuple(self.groups.children) != tuple(boxes):
            self.groups.children = boxes

    def group_box(self, method, shown: tuple[str, ...]) -> widgets.VBox:
        items = []
        for option in (method.option(n) for n in shown):
            key = (method.name, option.name)
            if key not in self.option_controls:
                control, view = controls.option_control(method, option, self.panel.options[method.name][option.name])
                control.observe(lambda change, key=key: self.on_option_control_change(key, change), names="value")
                self.option_controls[key], self.option_views[key] = control, view
            items.append(self.option_views[key])
        note = f" <span style='color:#8a5300'>&#9888; {html.escape(SANITY_NOTE)}</span>" if method.fails_sanity_check else ""
        # A CAM's layer control follows the groups: "(no options)" would contradict it.
        empty = "" if items or note or method.reads == "layer" else " <span style='color:#777'>(no options)</span>"
        title = html.escape(method.summary, quote=True)
        header = controls.named(widgets.HTML(f"<b title=\"{title}\">{html.escape(method.label)}</b>{note}{empty}"),
                                f"group-{method.name}", None)
        return widgets.VBox([header, controls.wrap_row(items)], layout=widgets.Layout(margin="0 0 4px 0"))

    def show_layer(self) -> None:
        p = self.panel
        if any(get_method(m).reads == "layer" for m in p.methods) and len(self.layer.options) == 1:
            try:
                layers = self.host.explorer(0).spatial_layers()
            except Exception as exc:  # the CAM itself will say what is wrong when it runs
                layers = []
                p.error = f"Could not list the model's layers: {exc}"
            self.layer.options = [("automatic", controls.NONE)] + [(f"{n} {tuple(s[1:])}", n) for n, s in layers]
        controls.show_value(self.layer, p.layer)

    def show_target(self) -> None:
        p, host = self.panel, self.host
        explorer, first, classes = host.explorer(), host.page_slice().start, host.classes
        if host.dense:  # regions, set by clicks on the pictures
            controls.set_choices(self.target, [("Regions: click a picture or drag a box", "predicted")])
            controls.show_value(self.target, "predicted")
            self.search.layout.display = "none"
            return
        choices = [(classes.target_label("predicted"), "predicted")]
        if explorer.multilabel_head:  # every label above the threshold, per image
            for i, labels in enumerate(labels_above(explorer.scores, THRESHOLD, True)):
                for c in labels:
                    choices.append((f"{classes.label(int(c))}; image {first + i + 1}: "
                                    f"{explorer.probabilities[i, c]:.2f}", int(c)))
        else:
            for c, i, prob in top_classes(explorer.probabilities):
                choices.append((f"{classes.label(c)}; image {first + i + 1}: {prob:.2f}", c))
        known = [v for _, v in choices]
        choices += [(classes.label(c), c) for c in self.offered if c not in known]
        if not any(controls.same(p.target, v) for _, v in choices):
            choices.append((classes.target_label(p.target), p.target))
        controls.set_choices(self.target, choices)
        controls.show_value(self.target, p.target)
        if controls.same(self.search_shown_for, p.target):
            return  # the target did not change: the search box keeps what the user typed there
        self.search_shown_for = p.target
        self.search_hint.value = ""  # a new target answers the last search
        text = classes.suggestions()[p.target] if isinstance(p.target, int) and classes.names else ""
        if self.search.value != text:
            self.search.value = text

    # ------------------------------------------------------------------ controls -> traits
    def set_from_control(self, control, apply: Callable[[], None], shown: Callable[[], Any]) -> None:
        """Apply a control's change; if the panel cannot honour it, put the control back and say why."""
        if self.syncing:
            return
        try:
            apply()
        except traitlets.TraitError as exc:
            self.panel.error = str(exc)
            self.syncing = True
            try:
                controls.show_value(control, shown())
            finally:
                self.syncing = False

    def mirror(self, pairs: Callable[[], list[tuple[str, Any]]], chosen: Callable[[Any], Any] = lambda v: v):
        """A handler for controls of ``pairs()`` that sets the control's trait (through ``chosen``)."""
        p = self.panel

        def on_change(change) -> None:
            trait = next(t for t, c in pairs() if c is change["owner"])
            self.set_from_control(change["owner"], lambda: setattr(p, trait, chosen(change["new"])),
                                  lambda: getattr(p, trait))
        return on_change

    def on_method_button_change(self, change) -> None:
        p = self.panel
        button = change["owner"]
        name = next(m for m, b in self.method_buttons.items() if b is button)
        wanted = (*p.methods, name) if change["new"] else tuple(m for m in p.methods if m != name)
        self.set_from_control(button, lambda: setattr(p, "methods", wanted), lambda: name in p.methods)

    def on_option_control_change(self, key: tuple[str, str], change) -> None:
        p = self.panel
        method, option = key
        self.set_from_control(change["owner"], lambda: setattr(p, "options", {method: {option: change["new"]}}),
                              lambda: p.options[method][option])

    def on_look_control_change(self, change) -> None:
        self.mirror(self.look_pairs, controls.chosen)(change)

    def on_layer_change(self, change) -> None:
        p = self.panel
        self.set_from_control(self.layer, lambda: setattr(p, "layer", controls.chosen(change["new"])),
                              lambda: p.layer)

    def on_target_change(self, change) -> None:
        p = self.panel
        if change["new"] is not None:
            self.set_from_control(self.target, lambda: setattr(p, "target", change["new"]), lambda: p.target)

    def on_search_change(self, change) -> None:
        if self.syncing:
            return
        classes = self.host.classes
        found = classes.search(change["new"])
        if len(found.matches) == 1:
            self.panel.target = found.matches[0]
        elif found.exact:  # a duplicated name: offer each in the target list
            self.offered = [*self.offered, *[c for c in found.matches if c not in self.offered]]
            self.show_all()
        self.search_hint.value = html.escape(found.hint(classes), quote=False)
