"""Progress bars for dataset work: tqdm's, a widget in a notebook and text in a terminal (``tqdm.auto``)."""

from __future__ import annotations

from typing import Any, Callable


def progress_bar(description: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback drawing a bar that counts images (created at the first call)."""
    from tqdm.auto import tqdm

    state: dict = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=description, unit="image")
        bar = state["bar"]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def as_progress(progress: Any, description: str) -> Callable[[int, int], None] | None:
    """``progress=True`` is a bar; a callable stays; None or False is no progress."""
    if progress is True:
        return progress_bar(description)
    return progress or None
