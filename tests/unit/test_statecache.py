"""The cache of decoded checkpoints: answers only for the same stored bytes, hands out
copies that folding cannot spoil, and keeps to its budget."""

from __future__ import annotations

import pytest

from custate.adapters.statecache import CheckpointCache
from custate.domain import CustomerState, snapshot
from custate.domain.state import Order


def stored(cid: str, orders: int) -> bytes:
    s = CustomerState(cid)
    s.orders = {f"ord_{i}": Order("PAID", None, i, i) for i in range(orders)}
    return snapshot.dump(s)


def test_a_copy_is_handed_out_and_folding_it_leaves_the_cache_alone() -> None:
    cache = CheckpointCache()
    blob = stored("c", 3)
    first = cache.state("c", "k1", blob)
    first.orders["ord_9"] = Order("CREATED")
    first.profile.name = "changed"
    with pytest.raises(AttributeError):  # shared with the cache: entries are frozen
        first.orders["ord_1"].status = "CANCELED"  # type: ignore[misc]
    again = cache.state("c", "k1", blob)
    assert (cache.hits, cache.misses) == (1, 1)
    assert again == snapshot.load(blob)


def test_other_bytes_under_the_same_key_are_decoded_again() -> None:
    cache = CheckpointCache()
    cache.state("c", "k1", stored("c", 3))
    rewritten = stored("c", 4)
    assert len(cache.state("c", "k1", rewritten).orders) == 4
    assert (cache.hits, cache.misses) == (0, 2)


def test_the_least_recently_used_go_first_within_the_budget() -> None:
    a, b = stored("a", 5), stored("b", 5)
    cache = CheckpointCache(max_bytes=len(a) + len(b) - 1)
    cache.state("a", "k", a)
    cache.state("b", "k", b)  # over budget: a goes
    cache.state("b", "k", b)
    cache.state("a", "k", a)
    assert (cache.hits, cache.misses) == (1, 3)


def test_a_budget_of_zero_turns_it_off() -> None:
    cache = CheckpointCache(max_bytes=0)
    blob = stored("c", 2)
    cache.state("c", "k", blob)
    cache.state("c", "k", blob)
    assert cache.hits == 0
