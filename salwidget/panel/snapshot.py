"""A PNG of the last finished grid, kept in the notebook beside the panel.

Displaying the panel also displays a second output with a display id. Its
live view is an invisible widget, so JupyterLab and Voila show only the
panel; its ``image/png`` is what GitHub, nbconvert and other static viewers
show. (Updating the panel's own output instead would make JupyterLab rebuild
the whole panel view each time a grid finishes: focus, scroll and open menus
lost.)

The PNG is updated through the display id on the main thread only: after
every cell the kernel runs (IPython's ``post_execute`` event, so a notebook
executed by nbclient records it), from :meth:`SaliencyWidget.wait`, and when
the kernel is idle after a grid finished (JupyterLab saves what it shows).
"""

from __future__ import annotations

import base64
import threading

import ipywidgets as widgets

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class Snapshot:
    """The display-id'd PNG output of one panel (see the module docstring)."""

    def __init__(self):
        self._png = b""
        self._published = b""
        self._handles: list = []
        self._shell = None
        self._hidden: widgets.Box | None = None

    @property
    def displayed(self) -> bool:
        return bool(self._handles)

    def bundle(self) -> dict:
        """The output's data: the invisible widget's view, and the PNG when there is one."""
        if self._hidden is None:
            self._hidden = widgets.Box(layout=widgets.Layout(display="none"))
            self._hidden.add_class("salwidget-snapshot")
        data = {"text/plain": "", WIDGET_VIEW: {"version_major": 2, "version_minor": 0,
                                                 "model_id": self._hidden.model_id}}
        if self._png:
            data["image/png"] = base64.b64encode(self._png).decode("ascii")
        return data

    def display(self) -> None:
        """Display the snapshot output (main thread, inside the panel's own display)."""
        from IPython import get_ipython
        from IPython.display import display

        self._published = self._png
        handle = display(self.bundle(), raw=True, display_id=True)
        if handle is not None:
            self._handles.append(handle)
        shell = get_ipython()
        if shell is not None and self._shell is None:
            shell.events.register("post_execute", self.publish)
            self._shell = shell

    def set(self, png: bytes) -> None:
        """A new finished grid (any thread): published when the main thread is free."""
        self._png = png
        loop = getattr(getattr(self._shell, "kernel", None), "io_loop", None)
        if loop is not None and self._handles:
            loop.add_callback(self.publish)

    def publish(self) -> None:
        """Update every displayed snapshot to the latest PNG (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if not self._handles or self._png == self._published:
            return
        self._published = self._png
        data = self.bundle()
        for handle in self._handles:
            handle.update(data, raw=True)

    def close(self) -> None:
        if self._shell is not None:
            try:
                self._shell.events.unregister("post_execute", self.publish)
            except ValueError:
                pass
            self._shell = None
        if self._hidden is not None:
            self._hidden.close()
