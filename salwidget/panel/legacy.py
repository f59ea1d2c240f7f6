"""The panel's private names from before its views took a host (:mod:`salwidget.panel.host`).

Tests, benchmarks and notebooks of earlier versions read ``w._worker``, ``w._image``, ``w._target``...;
:class:`LegacyNames` answers each from where it lives now, read-only. New code uses the paths in
:data:`LEGACY_NAMES` (``w.host.worker``, ``w.settings_view.target``...).
"""

from __future__ import annotations

from typing import Any

# Each old name, and where it lives now (an attribute path from the panel).
LEGACY_NAMES = {
    **{f"_{n}": f"host.{n}" for n in ("worker", "images", "display", "labels", "indices", "source", "model",
                                      "classes", "channels_last", "preprocess", "from_dataset", "dense",
                                      "explorers", "progress", "notes", "explorer", "held", "closed")},
    "_stop": "host.stop_button", "_compute": "host.compute_button", "_status": "host.status_line",
    "_error": "host.error_line", "_settings": "host.settings", "_show_error": "host.show_error",
    "_look_now": "host.look", "_rate": "host.rate", "_start_held": "host.start_held",
    **{f"_{n}": f"settings_view.{n}" for n in ("method_buttons", "option_controls", "option_views", "groups",
                                               "layer", "layer_row", "target", "target_view", "search",
                                               "search_hint", "look", "look_views", "group_boxes", "syncing")},
    **{f"_{n}": f"_maps.{n}" for n in ("image", "grid_box", "pager", "page_label", "next", "enlarge", "cell",
                                       "cell_caption", "cell_box", "upload", "downloads", "npz_button",
                                       "npz_link")},
    "_prev": "_maps.previous", "_maps_box": "_maps.box", "_maps_extras": "_maps.extras",
}


class LegacyNames:
    """A mixin of :class:`~salwidget.SaliencyWidget`: its old private names, read where they live now."""

    def __getattr__(self, name: str) -> Any:
        """The panel's old private names (:data:`LEGACY_NAMES`), read where they live now."""
        path = LEGACY_NAMES.get(name)
        if path is None or name == path.split(".")[0]:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = self
        for part in path.split("."):
            value = getattr(value, part)
        return value
