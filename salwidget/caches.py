"""The package's cache helpers: ``BoundedCache``, a small thread-safe least-recently-used mapping, and
``OwnerCache``, the same kept per live object (a model, a backend) and dropped with it."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterator


class BoundedCache:
    """At most ``size`` entries; reading or writing one makes it the newest, the oldest go first.

    Safe to share between the kernel's thread and a worker (one lock around each call).

    Parameters
    ----------
    size : int
        How many entries are kept.
    """

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The entry of ``key`` (now the newest), or ``default``."""
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Keep ``value`` under ``key`` as the newest entry, forgetting the oldest beyond ``size``."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The entry of ``key``, made by ``make()`` (outside the lock) and kept when missing."""
        hit = self.get(key, _MISSING)
        if hit is _MISSING:
            hit = make()
            self.put(key, hit)
        return hit

    def values(self) -> list:
        """The entries, oldest first (a copy)."""
        with self._lock:
            return list(self._items.values())

    def items(self) -> list:
        """(key, entry) pairs, oldest first (a copy)."""
        with self._lock:
            return list(self._items.items())

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Forget ``key``; its entry, or ``default``."""
        with self._lock:
            return self._items.pop(key, default)

    def pop_if(self, key: Hashable, test: Callable[[Any], bool]) -> None:
        """Forget ``key`` when ``test(entry)`` holds (one locked step: no other call between the two)."""
        with self._lock:
            if key in self._items and test(self._items[key]):
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator:
        with self._lock:
            return iter(list(self._items))


_MISSING = object()


class OwnerCache:
    """At most ``size`` entries, one per owner object, newest kept; an entry goes when its owner is
    collected (its memory with it) and is never served to another object given the dead one's id.

    Owners are held weakly and keyed by identity: models need not be hashable, and a model equal to
    another is not the same model. An owner that cannot be weakly referenced is not cached.
    """

    def __init__(self, size: int):
        self._items = BoundedCache(size)
        self._dead: list = []  # (id, weak reference) of owners collected since the last call

    def get(self, owner: Any, default: Any = None) -> Any:
        """The entry of ``owner`` (now the newest), or ``default``."""
        self._forget_dead()
        item = self._items.get(id(owner))
        return item[1] if item is not None and item[0]() is owner else default

    def put(self, owner: Any, value: Any) -> bool:
        """Keep ``value`` for ``owner``; False (nothing kept) when ``owner`` cannot be weakly referenced."""
        self._forget_dead()
        key = id(owner)
        try:
            ref = weakref.ref(owner, lambda dead, key=key: self._dead.append((key, dead)))
        except TypeError:
            return False
        self._items.put(key, (ref, value))
        return True

    def _forget_dead(self) -> None:
        # The weak references' callbacks only note the dead: they run inside the garbage collector, which may
        # run inside this very cache's locked step, whose lock they would then wait on forever.
        while self._dead:
            key, dead = self._dead.pop()
            self._items.pop_if(key, lambda item: item[0] is dead)  # not a newer owner's entry under a reused id

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        self._forget_dead()
        return len(self._items)
