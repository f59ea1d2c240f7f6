"""``BoundedCache``: a small thread-safe least-recently-used mapping, the one cache helper of the package."""

from __future__ import annotations

import threading
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
