"""The cache of decoded checkpoints: answers only for the same stored bytes, hands out
copies that folding cannot spoil, and keeps to its budget."""

from __future__ import annotations

import pytest

from custate.adapters.codecs import state as snapshot
from custate.adapters.readmodel.checkpoints import CheckpointMemory
from custate.domain import CustomerState
from custate.domain.state import Order
from custate.projections.catchup import Head


def stored(cid: str, orders: int) -> bytes:
    s = CustomerState(cid)
    s.orders = {f"ord_{i}": Order("PAID", None, i, i) for i in range(orders)}
    return snapshot.dump(s)


def test_a_copy_is_handed_out_and_folding_it_leaves_the_cache_alone() -> None:
    cache = CheckpointMemory()
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
    cache = CheckpointMemory()
    cache.state("c", "k1", stored("c", 3))
    rewritten = stored("c", 4)
    assert len(cache.state("c", "k1", rewritten).orders) == 4
    assert (cache.hits, cache.misses) == (0, 2)


def test_the_least_recently_used_go_first_within_the_budget() -> None:
    a, b = stored("a", 5), stored("b", 5)
    cache = CheckpointMemory(max_bytes=len(a) + len(b) - 1)
    cache.state("a", "k", a)
    cache.state("b", "k", b)  # over budget: a goes
    cache.state("b", "k", b)
    cache.state("a", "k", a)
    assert (cache.hits, cache.misses) == (1, 3)


def test_a_budget_of_zero_turns_it_off() -> None:
    cache = CheckpointMemory(max_bytes=0)
    blob = stored("c", 2)
    cache.state("c", "k", blob)
    cache.state("c", "k", blob)
    assert cache.hits == 0


def test_current_answers_only_at_the_head_the_state_was_known_current_at() -> None:
    cache = CheckpointMemory()
    blob = stored("c", 3)
    cache.state("c", "k1", blob, Head("key_9", 9))  # read with the customer at head 9
    assert cache.current("c", "k1", Head("key_12", 12)) is None  # new activities since
    assert cache.current("c", "k2", Head("key_9", 9)) is None  # another checkpoint
    again = cache.current("c", "k1", Head("key_9", 9))
    assert again == snapshot.load(blob)
    assert again is not None
    again.profile.name = "changed"  # a copy, like every answer
    assert cache.current("c", "k1", Head("key_9", 9)) == snapshot.load(blob)


def test_a_read_of_the_same_bytes_moves_the_head_on_and_a_put_sets_it() -> None:
    cache = CheckpointMemory()
    blob = stored("c", 3)
    cache.state("c", "k1", blob, Head("key_9", 9))
    cache.state("c", "k1", blob, Head("key_12", 12))  # still the same bytes at head 12
    assert cache.current("c", "k1", Head("key_9", 9)) is None
    assert cache.current("c", "k1", Head("key_12", 12)) is not None
    rewritten = stored("c", 4)
    cache.put("c", "k1", rewritten, snapshot.load(rewritten), Head("key_13", 13))
    hit = cache.current("c", "k1", Head("key_13", 13))
    assert hit is not None
    assert len(hit.orders) == 4
    assert cache.current("c", "k1", Head("key_12", 12)) is None


def test_a_write_moves_on_only_what_it_left_alone() -> None:
    cache = CheckpointMemory()
    blob = stored("c", 2)
    for key in ("k1", "k2", "k3"):
        cache.state("c", key, blob, Head("key_9", 9))
    cache.state("d", "k1", blob, Head("key_9", 9))
    # a late activity between k1 and k2: k2 and k3 were dropped and may be rewritten
    cache.advance("c", Head("key_9", 9), Head("key_10", 10), below="k2")
    assert cache.current("c", "k1", Head("key_10", 10)) is not None
    assert cache.current("c", "k2", Head("key_10", 10)) is None
    assert cache.current("c", "k3", Head("key_10", 10)) is None
    assert cache.current("d", "k1", Head("key_9", 9)) is not None  # another customer
    cache.advance("c", Head("key_4", 4), Head("key_11", 11), below=None)  # not the head it had
    assert cache.current("c", "k1", Head("key_11", 11)) is None


def test_a_state_over_the_budget_replaces_nothing_stale() -> None:
    small, big = stored("c", 2), stored("c", 50)
    cache = CheckpointMemory(max_bytes=len(small))
    cache.state("c", "k1", small, Head("key_9", 9))
    assert not cache.put("c", "k1", big, snapshot.load(big), Head("key_10", 10))
    assert cache.current("c", "k1", Head("key_9", 9)) is None  # the old one is gone too
    assert len(cache.state("c", "k1", big).orders) == 50
