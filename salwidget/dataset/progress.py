"""Progress bars for dataset work: tqdm's, a widget in a notebook and text in a terminal (``tqdm.auto``)."""

from __future__ import annotations

from typing import Any, Callable


def progress_bar(description: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback drawing a bar that counts images.

    The bar is created at the first call, which the jobs make before any work (:func:`start`): what is
    ``done`` then (rows a store already holds) is the bar's ``initial``, shown but not counted in its rate.
    """
    from tqdm.auto import tqdm

    state: dict = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, initial=done, desc=description, unit="image")
        bar = state["bar"]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    progress.starts = True  # wants the call before any work (see start)
    return progress


def start(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    """Before any work: show a bar of :func:`progress_bar` at ``done`` (a user's callable is called only
    after each committed block, as documented)."""
    if progress is not None and getattr(progress, "starts", False):
        progress(done, total)


def as_progress(progress: Any, description: str) -> Callable[[int, int], None] | None:
    """``progress=True`` is a bar; a callable stays; None or False is no progress."""
    if progress is True:
        return progress_bar(description)
    return progress or None
