"""Decoded checkpoints, kept in memory between questions.

A checkpoint of a long history is thousands of entries, and decoding one was most of a
point-in-time answer (2 of 2.6 ms for a 10k-activity customer). A cached state answers in
one of two cases, so that a checkpoint rewritten by a late activity, here or in another
process, is never answered from the cache:

- `current`: the customer's head in the database (its last fold key and stream version,
  read in the same statement as the checkpoint's key) is the head the entry was known
  current at. Every write that changes a customer's checkpoints folds new activities of
  that customer, so it writes a new head in the same transaction, and heads only move
  forward: the same head means the same checkpoints. The stored bytes are not read.
- `state`: the stored bytes, read, are the ones the state was decoded from (a few hundred
  microseconds for a long history's 233 KB).

What the cache hands out is a copy (`CustomerState.copy`), which shares the entries the
fold only ever replaces, so folding the tail onto it leaves the cached state as it was."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from custate.adapters.codecs import state as state_codec
from custate.domain import CustomerState
from custate.projections.catchup import Head

# Budget in stored bytes: a decoded state takes roughly 4-5 times its stored size in
# memory, so the default holds about 100-150 MB of states.
DEFAULT_CHECKPOINT_CACHE_BYTES = 32 * 1024 * 1024


class CheckpointCache:
    """Least recently used first out, up to `max_bytes` of stored checkpoints (0: off)."""

    def __init__(self, max_bytes: int = DEFAULT_CHECKPOINT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        # (customer, key) -> stored bytes, decoded state, head it was known current at,
        # bytes counted
        self._entries: OrderedDict[
            tuple[str, str], tuple[bytes | str, CustomerState, Head | None, int]
        ] = OrderedDict()
        self._keys: dict[str, set[str]] = {}  # customer -> keys held
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def current(self, customer_id: str, key: str, head: Head) -> CustomerState | None:
        """The checkpoint under `key` as a state to fold on, if it was known current while
        the customer's head was `head` (see the module's docstring); else None."""
        k = (customer_id, key)
        with self._lock:
            hit = self._entries.get(k)
            if hit is None or hit[2] != head:
                return None
            self._entries.move_to_end(k)
            self.hits += 1
            return hit[1].copy()

    def held(self, customer_id: str, key: str) -> tuple[bytes | str, int] | None:
        """The stored bytes of the checkpoint held under `key`, if one is, and the size it
        is counted at."""
        with self._lock:
            hit = self._entries.get((customer_id, key))
            return None if hit is None else (hit[0], hit[3])

    def state(
        self,
        customer_id: str,
        key: str,
        stored: bytes | str,
        head: Head | None = None,
        load: Callable[[bytes | str], tuple[CustomerState, int]] | None = None,
    ) -> CustomerState:
        """The checkpoint `stored` (stored under `key`) as a state to fold on. `head`: the
        customer's head when `stored` was read, or earlier (never later). `load`: how to
        decode `stored` and what to count it as (see `put`); `codecs.state.load` by default."""
        k = (customer_id, key)
        with self._lock:
            hit = self._entries.get(k)
            if hit is not None and hit[0] == stored:
                self._entries[k] = (hit[0], hit[1], head if head is not None else hit[2], hit[3])
                self._entries.move_to_end(k)
                self.hits += 1
                return hit[1].copy()
        self.misses += 1
        state, size = load(stored) if load is not None else (state_codec.load(stored), len(stored))
        return state.copy() if self.put(customer_id, key, stored, state, head, size) else state

    def put(
        self,
        customer_id: str,
        key: str,
        stored: bytes | str,
        state: CustomerState,
        head: Head | None = None,
        size: int | None = None,
    ) -> bool:
        """Keep `state`, decoded from (or dumped as) `stored`, unless it is over the budget
        on its own; the caller folds on it no more once kept. `head`: the customer's head
        written with `stored`, or read with it. `size`: what to count it as, if not its
        stored size: a state stored against another (`codecs.delta.Base`) is a fraction of the
        size of the whole state it decodes to."""
        size = len(stored) if size is None else size
        k = (customer_id, key)
        with self._lock:
            old = self._entries.pop(k, None)
            if old is not None:  # whatever was kept under this key is not what it holds now
                self._bytes -= old[3]
                self._forget(customer_id, key)
            if size > self.max_bytes:
                return False
            self._entries[k] = (stored, state, head, size)
            self._keys.setdefault(customer_id, set()).add(key)
            self._bytes += size
            while self._bytes > self.max_bytes:
                (cid, gone_key), (_, _, _, gone) = self._entries.popitem(last=False)
                self._bytes -= gone
                self._forget(cid, gone_key)
        return True

    def _forget(self, customer_id: str, key: str) -> None:
        held = self._keys[customer_id]
        held.discard(key)
        if not held:
            del self._keys[customer_id]

    def advance(self, customer_id: str, old: Head, new: Head, below: str | None) -> None:
        """A write moved the customer's head from `old` to `new`, changing none of its
        checkpoints under the key `below` (None: none at all): what was current at `old`
        there is current at `new`. The caller makes sure `old` was the head in the
        database when it wrote (the catch-up's tracking position guarantees it)."""
        with self._lock:
            for key in self._keys.get(customer_id, ()):
                if below is not None and key >= below:
                    continue
                k = (customer_id, key)
                stored, state, head, size = self._entries[k]
                if head == old:
                    self._entries[k] = (stored, state, new, size)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._keys.clear()
            self._bytes = 0
