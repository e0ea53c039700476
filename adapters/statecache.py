"""Decoded checkpoints, kept in memory between questions.

A checkpoint of a long history is thousands of entries, and decoding one was most of a
point-in-time answer (2 of 2.6 ms for a 10k-activity customer). The stored bytes are still
read each time (a few hundred microseconds at most) and compared with the bytes a cached
state was decoded from: a checkpoint rewritten by a late activity, here or in another
process, is never answered from the cache. What the cache hands out is a copy
(`CustomerState.copy`), which shares the entries the fold only ever replaces, so folding
the tail onto it leaves the cached state as it was."""

from __future__ import annotations

import threading
from collections import OrderedDict

from custate.domain import CustomerState, snapshot

# Budget in stored bytes: a decoded state takes roughly 4-5 times its stored size in
# memory, so the default holds about 100-150 MB of states.
DEFAULT_CHECKPOINT_CACHE_BYTES = 32 * 1024 * 1024


class CheckpointCache:
    """Least recently used first out, up to `max_bytes` of stored checkpoints (0: off)."""

    def __init__(self, max_bytes: int = DEFAULT_CHECKPOINT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], tuple[bytes | str, CustomerState]] = (
            OrderedDict()
        )
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def state(self, customer_id: str, key: str, stored: bytes | str) -> CustomerState:
        """The checkpoint `stored` (stored under `key`) as a state to fold on."""
        k = (customer_id, key)
        with self._lock:
            hit = self._entries.get(k)
            if hit is not None and hit[0] == stored:
                self._entries.move_to_end(k)
                self.hits += 1
                return hit[1].copy()
        self.misses += 1
        state = snapshot.load(stored)
        return state.copy() if self.put(customer_id, key, stored, state) else state

    def put(self, customer_id: str, key: str, stored: bytes | str, state: CustomerState) -> bool:
        """Keep `state`, decoded from (or dumped as) `stored`, unless it is over the budget
        on its own; the caller folds on it no more once kept."""
        size = len(stored)
        if size > self.max_bytes:
            return False
        k = (customer_id, key)
        with self._lock:
            old = self._entries.pop(k, None)
            if old is not None:
                self._bytes -= len(old[0])
            self._entries[k] = (stored, state)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (gone, _) = self._entries.popitem(last=False)
                self._bytes -= len(gone)
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
