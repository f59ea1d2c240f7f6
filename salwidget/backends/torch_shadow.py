"""The shadow copy a torch computation runs through, and when one can be reused.

A *shadow* is a structural copy of the user's module tree whose module
objects are new (eval mode, their own hook tables) while every parameter and
buffer is the user's own storage, detached (:func:`shadow_copy`). Making one
costs milliseconds for a model of a few hundred modules, so a call on an
unchanged model reuses the last one: :class:`ModelWatch` walks the user's
modules once per call and compares everything a shadow copies (each module's
attributes, submodules, parameters and buffers by identity, the storage
pointers of parameters and buffers, the keys of the forward and backward hook
tables). Anything else changed (a training step: in-place writes, which the
shadow shares) needs no new shadow; torch's in-place version counters make it
visible in the weights' version (``TorchBackend.identity``). That version
changes with the structure too (a submodule replaced, ``.to()``), but not
with hooks: a hook added to the model runs in the next computation (a new
shadow copies it), yet caches keyed by the weights stay valid, as hooks
usually observe (torchcam's and pytorch-grad-cam's come and go).

A watch holds detached views of the tensors it last recorded, so their storage
cannot be freed and its address handed to another tensor while the watch
compares pointers. The per-model state lives in a small registry keyed weakly
by the backend that owns it and bounded in size: if a model's own objects
refer back to it (a hook closing over the model), holding its shadow could
otherwise keep the model alive for ever.
"""

from __future__ import annotations

import copy
import itertools
import operator
import threading
from contextlib import contextmanager
from itertools import islice
from typing import Any, Iterator

import torch

from ..caches import OwnerCache

_HOOK_TABLES = tuple(k for k in vars(torch.nn.Module()) if "hooks" in k)
# The hook tables whose keys say which hooks run in a forward or backward pass (the others are
# keyed subsets of these, or state-dict hooks). Hook handles are numbered process-wide, never reused.
_PASS_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_MODULE_GETSTATE, _MODULE_SETSTATE = torch.nn.Module.__getstate__, torch.nn.Module.__setstate__
_DATA_PTR = torch.Tensor.data_ptr
_SIZE, _STRIDE = torch.Tensor.size, torch.Tensor.stride
_VERSION = torch.Tensor._version.__get__
_TOKENS = itertools.count(1)  # one per structure recorded, process-wide: a version never names two structures
_REGISTRY_SIZE = 8


def shadow_copy(module: torch.nn.Module, memo: dict | None = None) -> torch.nn.Module:
    """A structural copy in eval mode that shares (detached) parameters and buffers.

    Module objects, training flags and hook tables are new, so hooks added to
    the shadow and its eval mode are invisible to the original; tensors are
    the original's storage, so no weights are copied.
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    cls = type(module)
    if (cls.__getstate__ is _MODULE_GETSTATE and cls.__setstate__ is _MODULE_SETSTATE and getattr(cls, "__copy__", None)
            is None and cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__):
        # What copy.copy does for such a class (a new object; Module's own getstate, which drops a compiled
        # call, and setstate), without its generic reduce machinery: paid once per module and call.
        clone = object.__new__(cls)
        _MODULE_SETSTATE(clone, _MODULE_GETSTATE(module))
    else:  # the class customises copying (e.g. RNN flat weights): let it
        clone = copy.copy(module)
    memo[id(module)] = clone
    state = clone.__dict__
    state["_parameters"] = {k: None if p is None else p.detach() for k, p in module._parameters.items()}
    state["_buffers"] = dict(module._buffers)
    state["_modules"] = {k: None if c is None else shadow_copy(c, memo) for k, c in module._modules.items()}
    for table in _HOOK_TABLES:
        if table in state and hasattr(state[table], "copy"):
            state[table] = state[table].copy()
    state["training"] = False
    return clone


class Structure:
    """What one walk over a module tree read (see :func:`read_structure`).

    ``objects`` are compared by identity, ``numbers`` (attribute counts,
    storage pointers) and ``hooks`` (hook keys) by value; ``tensors`` are the
    parameters and buffers in walk order.
    """

    __slots__ = ("objects", "numbers", "hooks", "tensors")

    def __init__(self, objects: list, numbers: list, hooks: list, tensors: list):
        self.objects, self.numbers, self.hooks, self.tensors = objects, numbers, hooks, tensors

    def same_as(self, other: "Structure | None") -> bool:
        """Whether the modules, their attributes and the weights' storage are the same (hooks aside)."""
        return (other is not None and len(self.objects) == len(other.objects) and self.numbers == other.numbers
                and all(map(operator.is_, self.objects, other.objects)))

    def versions(self) -> tuple:
        """Each tensor's in-place write counter, now."""
        return tuple(map(_VERSION, self.tensors))


def read_structure(model: torch.nn.Module) -> Structure:
    """One walk over ``model``'s modules reading everything a shadow copies.

    Per module: its class, every attribute except the training flag (a shadow
    is always in eval mode), its parameters, buffers and submodules, the keys
    of its pass hook tables; then every tensor's storage pointer (``.to()`` and
    ``.double()`` swap a parameter's storage in place). The root module itself
    is left out of ``objects``: the watch must not hold the model. Paid on
    every call, so written for speed: C-level list operations per module.
    """
    objects: list = []
    numbers: list = []
    hooks: list = []
    tensors: list = []
    add, extend, count, tensors_extend = objects.append, objects.extend, numbers.append, tensors.extend
    modules = [model]
    seen = {id(model)}
    for module in modules:  # the list grows as children are found
        state = module.__dict__
        add(type(module))
        count(len(state))
        if next(iter(state), None) == "training":  # set first by Module.__init__: skipped at C speed
            extend(islice(state.values(), 1, None))
        else:
            extend([v for k, v in state.items() if k != "training"])
        if state["_forward_hooks"] or state["_forward_pre_hooks"] or state["_backward_hooks"] or \
                state["_backward_pre_hooks"]:
            for table in _PASS_HOOKS:
                hooks.extend(state[table])
        parameters, buffers, children = state["_parameters"].values(), state["_buffers"].values(), state["_modules"].values()
        extend(parameters)
        extend(buffers)
        extend(children)
        tensors_extend(parameters)
        tensors_extend(buffers)
        for child in children:
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                modules.append(child)
    extend(islice(modules, 1, None))
    tensors = [t for t in tensors if t is not None]
    numbers.extend(map(_DATA_PTR, tensors))
    # A `.data` swap to another view of the same memory (`p.data = p.data.t()`) keeps the pointer: the
    # shape and strides tell it.
    numbers.extend(map(_SIZE, tensors))
    numbers.extend(map(_STRIDE, tensors))
    return Structure(objects, numbers, hooks, tensors)


class ModelWatch:
    """One model's last recorded structure, its version tokens and its cached shadow.

    ``token`` changes when the structure changes (modules, attributes, the
    weights' storage); ``layout`` also when hooks do: a shadow copies both.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.structure: Structure | None = None
        self.token = self.layout = 0
        self._keep: list = []  # detached views: the recorded storages stay allocated (see the module docstring)
        self._shadow: torch.nn.Module | None = None
        self._shadow_layout = 0
        self._leased = False

    def check(self, model: torch.nn.Module) -> tuple[int, int, Structure]:
        """Walk ``model``: (token, layout, structure), with a new token or layout for what changed."""
        structure = read_structure(model)
        with self.lock:
            known = self.structure
            if not structure.same_as(known):
                self.token = self.layout = next(_TOKENS)
                self._keep = [t.detach() for t in structure.tensors]
            elif structure.hooks != known.hooks:
                self.layout = next(_TOKENS)
            self.structure = structure
            return self.token, self.layout, structure

    @contextmanager
    def shadow(self, model: torch.nn.Module, layout: int) -> Iterator[torch.nn.Module]:
        """The cached shadow of the structure and hooks ``layout`` names (made if there is none yet); a
        private one while another computation (another thread, a nested session) holds the cached one."""
        with self.lock:
            shared = not self._leased and layout == self.layout
            if shared:
                self._leased = True
            cached = self._shadow if shared and self._shadow_layout == layout else None
        try:
            if cached is None:
                cached = shadow_copy(model)
                if shared:
                    with self.lock:
                        if self.layout == layout:
                            self._shadow, self._shadow_layout = cached, layout
            yield cached
        finally:
            if shared:
                with self.lock:
                    self._leased = False


class _Registry:
    """At most ``size`` watches, by owner (held weakly: a watch goes when its owner does)."""

    def __init__(self, size: int):
        self._watches = OwnerCache(size)
        self._lock = threading.Lock()  # one watch per owner when two threads ask at once

    def get(self, owner: Any) -> ModelWatch:
        with self._lock:
            watch = self._watches.get(owner)
            if watch is None:
                watch = ModelWatch()
                self._watches.put(owner, watch)
            return watch

    def clear(self) -> None:
        self._watches.clear()


WATCHES = _Registry(_REGISTRY_SIZE)


def watch_for(owner: Any) -> ModelWatch:
    """The watch of ``owner`` (a backend: one per model)."""
    return WATCHES.get(owner)


__all__ = ["ModelWatch", "Structure", "WATCHES", "read_structure", "shadow_copy", "watch_for"]
