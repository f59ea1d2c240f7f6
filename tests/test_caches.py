"""The package's cache helpers: least recently used first out, and entries that go with their owners."""

from __future__ import annotations

import gc
import threading

from salwidget.caches import BoundedCache, OwnerCache


class Owner:
    pass


def test_the_least_recently_used_entry_goes_first():
    cache = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the newest
    cache.put("c", 3)
    assert "b" not in cache and cache.items() == [("a", 1), ("c", 3)]
    assert cache.pop("a") == 1 and cache.pop("a", "gone") == "gone" and len(cache) == 1


def test_an_owners_entry_is_its_own_and_goes_when_it_is_collected():
    cache = OwnerCache(4)
    first, second = Owner(), Owner()
    assert cache.put(first, "first's") and cache.put(second, "second's")
    assert cache.get(first) == "first's" and cache.get(second) == "second's"
    del first
    gc.collect()
    assert len(cache) == 1  # dropped with its owner, not only when pushed out
    assert cache.get(Owner(), "none") == "none"


def test_an_entry_is_not_served_to_another_object_under_a_reused_id():
    cache = OwnerCache(4)
    owner = Owner()
    cache.put(owner, "owner's")
    key = id(owner)
    stale = cache._items.get(key)
    impostor = Owner()
    cache._items.put(id(impostor), stale)  # as if ``impostor`` had been given the dead owner's id
    assert cache.get(impostor) is None and cache.get(owner) == "owner's"


def test_owners_that_cannot_be_weakly_referenced_are_not_kept():
    cache = OwnerCache(4)
    assert not cache.put(3, "an int") and cache.get(3) is None and len(cache) == 0


def test_at_most_size_owners_are_kept_newest_first():
    cache = OwnerCache(2)
    owners = [Owner() for _ in range(3)]
    for i, owner in enumerate(owners):
        cache.put(owner, i)
    assert cache.get(owners[0]) is None and cache.get(owners[1]) == 1 and cache.get(owners[2]) == 2


def test_an_owner_collected_inside_the_caches_locked_step_does_not_wait_on_its_lock():
    """The collector may run inside any of the cache's calls (an allocation under its lock); an owner that dies
    then must not make its weak reference's callback wait on that same lock (the thread would hang)."""
    cache = OwnerCache(4)
    owners = [Owner()]
    cache.put(owners[0], "first's")
    finished = threading.Event()

    def die_under_the_lock():
        with cache._items._lock:  # as if the collector ran inside one of the cache's own steps
            owners.clear()  # the last reference: the owner dies here, its callback runs here
        finished.set()

    worker = threading.Thread(target=die_under_the_lock, daemon=True)
    worker.start()
    worker.join(10)
    assert finished.is_set()
    assert len(cache) == 0  # forgotten at the next call
