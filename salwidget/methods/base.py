"""What a saliency method is: its options, what its passes read, how they combine.

A method is an object (one instance per kind, registered by name) that the
engine, the panel's cache, the widget and ``SaliencyNet`` all ask instead of
comparing method names. It declares

- ``options``: each with a default, help text, range and whether it changes
  the result (only those go into cache and resume keys);
- ``reads``: what a pass feeds and reads back, ``"input_gradients"``,
  ``"layer"`` (a layer's activations and their gradients) or ``"outputs"``
  (forward only);
- ``output``: the shape of its map, ``"input"`` (like the input),
  ``"layer"`` (B, h, w at a layer's resolution) or ``"pixel"`` (B, H, W);
- ``signed``, ``label``, ``summary``; ``resumable``: the option whose increase
  can resume from an earlier result (the number of noise samples).

Running it is a conversation with the engine's scheduler: ``start`` makes the
method's state (tensors on the device), ``stages`` yields :class:`Stage` objects
whose passes the scheduler runs in chunks (a stage can depend on the state left
by earlier ones), and ``finish``/``preview`` turn the state into maps.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import SaliencyError
from ..targets import DeviceTarget, RowScore


@dataclass(frozen=True)
class Option:
    """One option of a method.

    Parameters
    ----------
    name : str
        The keyword of :func:`salwidget.attribute`.
    default : object
    help : str
        One sentence for users (docstrings, tooltips); says what raising it costs.
    kind : {'int', 'float', 'bool', 'choice', 'any'}
    minimum, maximum : float, optional
        Allowed range (inclusive). ``slider_max`` is only the panel's initial
        slider end; larger values are allowed where ``maximum`` allows them.
    choices : tuple
        For ``kind='choice'``.
    affects_result : bool
        Whether a different value gives a different map (cache and resume keys).
    label : str
        Short name for the panel.
    check : callable, optional
        ``check(value, method) -> value`` replaces the kind's check (an option of its own kind: a baseline,
        reference images); it raises :class:`~salwidget.SaliencyError` for a value it refuses.
    presets : tuple of (label, value)
        For ``kind='any'``: the values the panel offers in a dropdown (a perturbation's fill, a segmentation
        algorithm). Any other accepted value, set through ``options=``, joins the dropdown when set.
    """

    name: str
    default: Any
    help: str
    kind: str = "any"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    affects_result: bool = True
    label: str = ""
    slider_max: float | None = None
    step: float | None = None
    allow_none: bool = False
    check: Callable[[Any, str], Any] | None = None
    presets: tuple = ()

    def validate(self, value: Any, method: str) -> Any:
        """``value`` normalised to the option's kind (or by ``check``); a clear error when it is not allowed."""
        if self.check is not None:
            return self.check(value, method)
        if value is None and self.allow_none:
            return None
        got = f" (method {method!r}); got {value!r}."
        low = "" if self.minimum is None else f" >= {self.minimum:g}"
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
                self.minimum is not None and value < self.minimum
            ):
                raise SaliencyError(f"{self.name} must be an integer{low}{got}")
            value = int(value)
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
                raise SaliencyError(f"{self.name} must be a finite number{got}")
            value = float(value)
            if self.minimum is not None and value < self.minimum:
                raise SaliencyError(f"{self.name} must be{low}{got}")
        elif self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise SaliencyError(f"{self.name} must be True or False{got}")
            value = bool(value)
        elif self.kind == "choice" and value not in self.choices:
            raise SaliencyError(f"{self.name} must be one of {', '.join(map(repr, self.choices))}{got}")
        if self.kind in ("int", "float") and self.maximum is not None and value > self.maximum:
            raise SaliencyError(f"{self.name} must be <= {self.maximum:g}{got}")
        return value


@dataclass
class Stage:
    """A run of ``passes`` independent passes, executed by ``run(start, stop)``.

    ``cost`` is the relative cost of one pass (1 for a forward+backward pass,
    about 1/3 for a forward pass): the scheduler fits more cheap passes in a chunk.
    ``align`` keeps chunk boundaries on the stage's natural blocks where it can.
    ``grid`` is ``(offset, size)`` where chunks are cheapest when they start and
    stop at passes ``offset + k * size`` (noise drawn in blocks of passes): the
    scheduler keeps to it when that takes no more chunks than even ones.
    """

    passes: int
    run: Callable[[int, int], None]
    cost: float = 1.0
    align: int = 1  # chunks of at least this many passes are made multiples of it (e.g. one pass per image)
    grid: tuple[int, int] | None = None


@dataclass
class MethodOutput:
    """A method's maps (device tensors) and extras for :class:`~salwidget.Attribution`."""

    raw: Any  # a list of tensors (one per input) for output='input', else one tensor
    samples: int = 0
    extras: dict = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything a method may use while it runs (built by the engine).

    ``inputs`` are device tensors, ``targets`` what is explained for each
    explained output (device int tensors of classes, or a
    :class:`~salwidget.targets.DeviceTarget`), ``targets_np`` the classes (or
    indices) per image on the host, ``explained`` each output's
    :class:`~salwidget.targets.Bound` target, ``scores`` the clean outputs of
    the explained output (numpy), ``draws`` the seeded random numbers.
    """

    backend: Any
    ops: Any
    inputs: list
    host_inputs: list
    channels_last: bool
    targets: dict
    targets_np: dict
    output_index: int
    scores: np.ndarray
    options: dict
    seed: int
    draws: Any
    pairing: Any = None
    layer: str | None = None
    plan: Any = None  # set by the method's start(): its sampling plan, if any
    clean: Any = None  # the engine's CleanPass when a single-pass method's passes double as the clean forward
    cache: dict = field(default_factory=dict)  # per-run values a method computes once (baselines, ...)
    chunk: int = 8
    explained: dict = field(default_factory=dict)  # output index -> salwidget.targets.Bound
    finite: Any = None  # the run's salwidget.finite.FiniteWatch (None: nothing is watched)

    @property
    def low(self) -> list:
        """Each input's per-image minimum (device tensors), computed on first use: only noise and random
        baselines need it, so a plain gradient pays nothing for it."""
        return self._bounds()[0]

    @property
    def high(self) -> list:
        """Each input's per-image maximum (see :attr:`low`)."""
        return self._bounds()[1]

    def _bounds(self) -> tuple[list, list]:
        if "row_bounds" not in self.cache:
            self.cache["row_bounds"] = ([self.ops.row_min(x) for x in self.inputs],
                                        [self.ops.row_max(x) for x in self.inputs])
        return self.cache["row_bounds"]

    @property
    def batch(self) -> int:
        return len(self.host_inputs[0])

    @property
    def spatial_size(self) -> tuple[int, int] | None:
        """(H, W) of the first input when it is a batch of images."""
        shape = self.host_inputs[0].shape
        if len(shape) != 4:
            return None
        return (shape[1], shape[2]) if self.channels_last else (shape[2], shape[3])

    def row_targets(self, images: np.ndarray) -> dict:
        """Each explained output's targets for passes of ``images``: class rows (None: each row's own
        argmax, while the engine takes the targets from the method's own clean pass; see ``clean``), or
        a :class:`~salwidget.targets.RowScore` for other targets (see :mod:`salwidget.targets`).
        Chunks of the same images (the same rows again, as most chunks of a run are) share one copy."""
        key = ("row_targets", len(images), hash(np.asarray(images).tobytes()))
        held = self.cache.get(key)
        if held is None or not np.array_equal(held[0], images):
            held = (np.array(images), {o: _rows_of(self.ops, t, images) for o, t in self.targets.items()})
            if len([k for k in self.cache if isinstance(k, tuple) and k[:1] == ("row_targets",)]) < 8:
                self.cache[key] = held
        return held[1]

    def gradients(self, points: Sequence, images: np.ndarray, scores: bool = True, where=None,
                  observed: int | None = None, with_outputs: bool = False, summed: bool = False):
        """Input gradients of the target score for a chunk of points (one per row of
        ``images``); returns (gradients per input, target scores per row, or None
        when ``scores`` is False: a few device ops saved per chunk). ``where(row)``
        describes a row's pass for an error on a non-finite gradient (default: its image).

        ``observed``: only the first ``observed`` rows are the images' clean passes
        that a single-pass method's clean outputs are read from (the rest are other
        points, e.g. DeepLIFT's references); default every row. ``with_outputs``:
        return every output of the pass as a third item. ``summed``: the method sums
        the gradients (or their squares) into its maps as they are, so their
        finiteness is read from the finished maps (see :class:`salwidget.finite.FiniteWatch`)."""
        rows = self.row_targets(images)  # once per chunk: the pass and the scores index the same rows
        grads, outputs = self.backend.input_gradients(points, rows, self.pairing)
        if observed is None:
            self._observe(outputs, images)
        else:
            self._observe([o[:observed] for o in outputs], images[:observed])
        picked = self.target_scores(outputs, images, rows) if scores else None
        if summed:  # the maps are sums of these gradients: their finiteness is read from the maps
            self.watch(grads, images, where, summed=True)
            self.watch([picked], images, where, "output")
        else:
            self.watch([*grads, picked], images, where, "gradient" if picked is None else "gradient or output")
        return (grads, picked, outputs) if with_outputs else (grads, picked)

    def watch(self, tensors: Sequence, images: np.ndarray, where=None, what: str = "gradient",
              summed: bool = False) -> None:
        """Record on the device whether each row of ``tensors`` (passes of ``images``) is finite; read
        when the run ends or a preview is read (see :mod:`salwidget.finite`). ``summed``: tensors the maps
        only sum (:meth:`salwidget.finite.FiniteWatch.observe_summed`)."""
        if self.finite is not None:
            observe = self.finite.observe_summed if summed else self.finite.observe
            observe(tensors, where or (lambda row: f"image {int(images[row])}"), what)

    def layer_gradients(self, points: Sequence, images: np.ndarray, layer: str, observe: bool = True):
        """A layer's activations and their gradients for the target score, and every output
        (``observe=False``: a probe, whose outputs the clean pass does not record)."""
        activation, gradient, outputs = self.backend.layer_gradients(points, self.row_targets(images), layer)
        if observe:
            self._observe(outputs, images)
            self.watch([gradient], images, lambda row: f"image {int(images[row])}, layer {layer!r}")
        return activation, gradient, outputs

    def _observe(self, outputs: Sequence, images: np.ndarray) -> None:
        if self.clean is not None:
            self.clean.record(self, outputs, images)

    def target_scores(self, outputs: Sequence, images: np.ndarray, rows: dict | None = None):
        """Sum over explained outputs of ``out[r, target(images[r])]``, per row (``rows``: the
        :meth:`row_targets` of ``images``, when already made)."""
        ops = self.ops
        total = None
        for o, rows in (self.row_targets(images) if rows is None else rows).items():
            if isinstance(rows, RowScore):
                picked = rows(ops, outputs[o])
            else:
                rows = ops.argmax(outputs[o], 1) if rows is None else rows
                picked = ops.take_along_rows(outputs[o], rows)
            total = picked if total is None else total + picked
        return total


def _rows_of(ops, target: Any, images: np.ndarray) -> Any:
    if target is None:
        return None
    if isinstance(target, DeviceTarget):
        return target.rows(ops, images)
    if len(images) == int(target.shape[0]) and np.array_equal(images, np.arange(len(images))):
        return target  # every row in order (a whole-batch chunk): no gather
    return ops.take(target, images)


class Method:
    """Base class of saliency methods; see the module docstring."""

    name: str = ""
    label: str = ""
    summary: str = ""
    signed: bool = False
    reads: str = "input_gradients"
    output: str = "input"
    options: tuple[Option, ...] = ()
    resumable: str | None = None
    fails_sanity_check: bool = False
    order: int = 100  # place among the panel's buttons (lower first)

    # ----------------------------------------------------------- options
    def option(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def resolve(self, given: dict) -> dict:
        """Defaults filled in and every value checked.

        An option that no registered method knows is an error (a typo), and so is
        one that only other methods take: it would change nothing here, silently
        (the panel keeps each method's own options, see
        :mod:`salwidget.panel.method_options`).
        """
        unknown = sorted(set(given) - _known_options() - set(self.option_names))
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(_known_options()), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SaliencyError(
                f"Unknown option(s) {unknown} for method {self.name!r}; its options are "
                f"{', '.join(self.option_names) or 'none'}.{hint}"
            )
        foreign = sorted(set(given) - set(self.option_names))
        if foreign:
            takers = [m.name for m in all_methods() if foreign[0] in m.option_names]
            raise SaliencyError(
                f"{foreign[0]}= is not an option of {self.name!r} ({self.label}), which would ignore it; it is "
                f"taken by {', '.join(takers)}. {self.name!r} takes "
                f"{', '.join(self.option_names) or 'no options'}: leave {foreign[0]}= out, or choose one of those."
            )
        return {o.name: o.validate(given.get(o.name, o.default), self.name) for o in self.options}

    def key(self, options: dict) -> tuple:
        """What identifies this method's result under ``options``, except the resumable count."""
        parts = [self.name]
        for option in self.options:
            if option.affects_result and option.name != self.resumable:
                parts.append((option.name, hashable(options[option.name])))
        return tuple(parts)

    def single_pass(self, options: dict) -> bool:
        """Whether the method passes every image once, at its clean input, through
        ``ctx.gradients`` or ``ctx.layer_gradients``: the engine then reads the clean
        outputs and predicted targets from that pass instead of a forward pass of its own."""
        return False

    def is_signed(self, options: dict) -> bool:
        """Whether maps made with ``options`` carry a meaningful sign (squared maps do not)."""
        return self.signed

    def pick_layer(self, ctx: RunContext, layer: Any) -> str:
        """For ``reads == 'layer'``: the name of the layer to read (``layer`` as the user gave it, or None)."""
        if layer is None:
            raise NotImplementedError(f"{type(self).__name__} must pick a layer when none is given")
        return ctx.backend.layer_name(layer)

    def variant(self, options: dict) -> Any:
        """A :class:`~salwidget.backends.base.ModelVariant` to run the model as, or None."""
        return None

    def passes(self, options: dict, batch: int) -> int:
        """How many passes through the model a call makes (for cost estimates)."""
        return batch

    # ----------------------------------------------------------- running
    def passes_left(self, ctx: RunContext, state: Any) -> int:
        """Passes the stages of ``state`` will run (the progress total)."""
        return self.passes(ctx.options, ctx.batch)

    def start(self, ctx: RunContext, resume: Any = None) -> Any:
        raise NotImplementedError

    def stages(self, ctx: RunContext, state: Any) -> Iterator[Stage]:
        raise NotImplementedError

    def finish(self, ctx: RunContext, state: Any) -> MethodOutput:
        raise NotImplementedError

    def preview(self, ctx: RunContext, state: Any) -> MethodOutput:
        return self.finish(ctx, state)

    def saved_state(self, ctx: RunContext, state: Any) -> Any:
        """A host copy of ``state`` that a later call with more samples can resume from."""
        return None

    def nonfinite_advice(self, options: dict, where: str) -> str:
        """What to do when the model's gradient is not finite at ``where`` (a pass, as described by the
        method): the way out of :class:`~salwidget.finite.NonFiniteError`."""
        from ..finite import DEFAULT_ADVICE

        return DEFAULT_ADVICE

    def __repr__(self) -> str:
        return f"<method {self.name!r}: {self.label}>"


def hashable(value: Any) -> Any:
    """``value`` as part of a cache key: arrays and tensors by shape and a digest of their bytes, sequences as
    tuples, anything else as itself."""
    if isinstance(value, np.ndarray):
        import hashlib

        return ("array", value.shape, hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=12).hexdigest())
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        from ..inputs import to_numpy

        return hashable(to_numpy(value))
    return value


_hashable = hashable  # its name before issue 27, for modules written against it


# ----------------------------------------------------------------- registry
_REGISTRY: dict[str, Method] = {}


_REGISTERED = 0  # how many registrations so far: what is derived from the registry is keyed by it


def register(method: Method) -> Method:
    """Add ``method`` to the registry under ``method.name``."""
    global _REGISTERED
    _REGISTRY[method.name] = method
    _REGISTERED += 1
    return method


def get_method(name: Any) -> Method:
    """The registered method called ``name`` (a Method passes through); else an error naming close matches."""
    if isinstance(name, Method):
        return name
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    names = ", ".join(m.name for m in all_methods())
    raise SaliencyError(f"Unknown method {name!r}; choose one of {names}.{hint}")


def _known_options() -> frozenset:
    """Every option name of every registered method (remembered until the registry changes)."""
    global _KNOWN
    if _KNOWN[0] != _REGISTERED:
        _KNOWN = (_REGISTERED, frozenset(name for method in _REGISTRY.values() for name in method.option_names))
    return _KNOWN[1]


_KNOWN: tuple[int, frozenset] = (-1, frozenset())


def layer_methods() -> list[str]:
    """The names of the methods that read a layer (take ``layer=``), in display order."""
    return [m.name for m in all_methods() if m.reads == "layer"]


def all_methods() -> list[Method]:
    """Every registered method, in display order."""
    return sorted(_REGISTRY.values(), key=lambda method: method.order)
