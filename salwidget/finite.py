"""Non-finite values are an error: a NaN or infinite gradient or output never becomes a map.

A run records, for every chunk of passes, one boolean per pass on the device ("its gradient is finite"),
two framework operations per tensor and no host round trip; the flags are read once, when the run ends or
a preview is read (:meth:`FiniteWatch.check`). A failure names the method, the first pass at fault (which
image, which noise sample or path point, as the method describes it) and the way out.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .errors import SaliencyError

Where = Callable[[int], str]  # a chunk's row -> where that pass was ("image 3 at alpha = 0 (the baseline)")


class NonFiniteError(SaliencyError):
    """A gradient or output of the model is NaN or infinite where a map needs it."""


class FiniteWatch:
    """Per-pass finiteness flags of one run, kept on the device until read."""

    def __init__(self, ops: Any, defer: bool = True):
        self.ops = ops
        self._parts: list[tuple[Any, Where, str]] = []  # (device flags per row, where each row was, what)
        self._read = 0  # parts already found finite
        # Tensors that are only summed into the maps need no flags while the run goes well: a NaN or inf in
        # one reaches its image's map, which the end checks on the host (free). Only then is the run done
        # again with every tensor watched, to name the pass (see :func:`salwidget.engine.run`).
        self.defer = defer
        self.deferred = False  # whether any tensor went unwatched for that reason

    def observe_summed(self, tensors: Sequence[Any], where: Where, what: str = "gradient") -> None:
        """:meth:`observe` for tensors that are summed (or squared and summed) into the maps as they are."""
        if self.defer:
            self.deferred = True
            return
        self.observe(tensors, where, what)

    def observe(self, tensors: Sequence[Any], where: Where, what: str = "gradient") -> None:
        """Record whether each row of each tensor is finite (``where(row)`` describes a row, on failure)."""
        finite_rows = getattr(self.ops, "finite_rows", None)  # a backend without it: the maps are checked at the end
        if finite_rows is None:
            return
        tensors = [t for t in tensors if t is not None]
        if tensors:
            self._parts.append((finite_rows(tensors), where, what))

    def check(self, label: str, advice: Callable[[str], str] | None = None) -> None:
        """Read the flags recorded so far (one transfer) and raise :class:`NonFiniteError` at the first
        non-finite pass: ``label`` names the method, ``advice(where)`` says what to do."""
        parts = self._parts[self._read:]
        if not parts:
            return
        ops = self.ops
        flags = ops.numpy(ops.concat([flag for flag, _, _ in parts])).astype(bool, copy=False)
        if flags.all():
            self._read = len(self._parts)
            return
        bad_total, offset = int((~flags).sum()), 0
        for flag, where, what in parts:
            rows = flags[offset: offset + int(flag.shape[0])]
            offset += len(rows)
            bad = np.nonzero(~rows)[0]
            if len(bad):
                place = where(int(bad[0]))
                more = f" (and {bad_total - 1} more pass(es))" if bad_total > 1 else ""
                hint = advice(place) if advice is not None else DEFAULT_ADVICE
                raise NonFiniteError(
                    f"{label}: the model's {what} is not finite (NaN or infinite) at {place}{more}, so the map "
                    f"would be too. {hint}"
                )


DEFAULT_ADVICE = ("The model's gradient is undefined there (e.g. sqrt, log or a division at 0, or a torch.where "
                  "whose unused branch is NaN): make the model finite there (add a small epsilon), or explain "
                  "other inputs.")


def check_outputs(scores: np.ndarray | None, label: str, where: str = "the clean input") -> None:
    """Raise :class:`NonFiniteError` when the explained output (host array, one row per image) is not finite."""
    if scores is None:
        return
    values = np.asarray(scores)
    if not np.issubdtype(values.dtype, np.floating) or values.ndim == 0:
        return
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if finite.all():
        return
    bad = np.nonzero(~finite)[0]
    shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
    raise NonFiniteError(
        f"{label}: the model's output is not finite (NaN or infinite) at {where} for image(s) {shown} "
        f"({len(bad)} of {len(values)}): no map can explain a non-finite score. Check the model on these images "
        "(a division by zero, log or sqrt of a non-positive number, an overflow) or leave them out."
    )


def check_maps(maps: Any, label: str) -> None:
    """The last guard: raise :class:`NonFiniteError` when finished maps (host arrays) hold NaN or inf."""
    for values in (maps if isinstance(maps, (tuple, list)) else (maps,)):
        values = np.asarray(values)
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            rows = np.nonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0]
            raise NonFiniteError(
                f"{label}: the map of image(s) {rows[:10].tolist()} is not finite (NaN or infinite). "
                + DEFAULT_ADVICE
            )


__all__ = ["FiniteWatch", "NonFiniteError", "check_maps", "check_outputs"]
