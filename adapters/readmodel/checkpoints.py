"""Checkpoints: customers' states keyed by fold key (after every `interval`-th activity in
fold order), the starts of late activities' re-folds and of points in time.

`CheckpointStore` reads and writes them in the `checkpoints` table; `CachedCheckpoints`
wraps it with the states decoded from them (`CheckpointMemory`). A checkpoint is stored in
full (`codecs.state`) or, written by a re-fold, against the one the re-fold started from
(`codecs.delta`); what is read back is always whole.

A decoded state answers from memory in one of two cases, so that a checkpoint rewritten by
a late activity, here or in another process, is never answered from memory:

- `current`: the customer's head in the database (its last fold key and stream version,
  read in the same statement as the checkpoint's key) is the head the entry was known
  current at. Every write that changes a customer's checkpoints folds new activities of
  that customer, so it writes a new head in the same transaction, and heads only move
  forward: the same head means the same checkpoints. The stored bytes are not read.
- `state`: the stored bytes, read, are the ones the state was decoded from.

What memory hands out is a copy (`CustomerState.copy`), which shares the entries the fold
only ever replaces, so folding the tail onto it leaves the remembered state as it was."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection

from custate.adapters.codecs import delta
from custate.adapters.codecs import state as state_codec
from custate.adapters.readmodel.connections import Connections
from custate.adapters.readmodel.sql import Statements
from custate.domain import CustomerState
from custate.projections.catchup import Head

__all__ = [
    "DEFAULT_CHECKPOINT_CACHE_BYTES",
    "CachedCheckpoints",
    "Checkpoint",
    "CheckpointMemory",
    "CheckpointStore",
]

# Budget in stored bytes: a decoded state takes roughly 4-5 times its stored size in
# memory, so the default holds about 100-150 MB of states.
DEFAULT_CHECKPOINT_CACHE_BYTES = 32 * 1024 * 1024
# What a state made whole with a base held in memory adds, an entry of its large maps, in
# the stored bytes the budget counts: its own dicts' slots (about 50 bytes an entry in
# CPython, where a decoded state is 4-5 times its stored size).
_MAP_ENTRY_BYTES = 12


class Checkpoint(NamedTuple):
    """A checkpoint read back: its key, the whole state (the caller's to fold on), its
    stored form when known (for a `delta.Base` of what a re-fold from it stores), the size
    memory counts it at, and, when it came from memory, the remembered state it is a copy
    of (never folded on while memory holds it: its maps can be referenced instead of copied
    again; with `borrow`, `state` is that state itself). `base`:
    when reading it decoded the checkpoint it is stored against, that one's key, state
    (never folded on) and stored size: a projector that did not write the chain of
    checkpoints it belongs to can take it up from there (`runner.Overlay`), rather than
    decode a long history's base again for the next late activity."""

    key: str
    state: CustomerState
    stored: bytes | str | None
    size: int
    original: CustomerState | None = None
    base: tuple[str, CustomerState, int] | None = None


class CheckpointStore:
    """The `checkpoints` table, on the connection the caller gives (and its transaction)."""

    def __init__(self, sql: Statements) -> None:
        self.sql = sql

    def before(self, c: Connection, customer_id: str, key: str) -> tuple[str, Head] | None:
        """The key of the customer's latest checkpoint before `key`, and the customer's
        head, read together (one snapshot)."""
        found = self.sql.checkpoint_before(c, customer_id, key)
        return None if found is None else (found[0], Head(found[1], found[2]))

    def at(self, c: Connection, customer_id: str, key: str) -> str | None:
        """The stored form of the checkpoint under exactly `key`."""
        return self.sql.checkpoint_at(c, customer_id, key)

    def drop_from(self, c: Connection, customer_id: str, key: str) -> None:
        """Delete the customer's checkpoints at or after `key`."""
        self.sql.drop_checkpoints(c, customer_id, key)

    def insert(self, c: Connection, rows: Sequence[tuple[str, str, str]]) -> None:
        """Insert (customer, key, stored form) rows."""
        if rows:
            self.sql.insert(c, self.sql.t.checkpoints, rows)


class CheckpointMemory:
    """Decoded checkpoints, least recently used first out, up to `max_bytes` of stored
    checkpoints (0: off). Thread-safe."""

    def __init__(self, max_bytes: int = DEFAULT_CHECKPOINT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        # (customer, key) -> stored bytes, decoded state, head it was known current at,
        # bytes counted
        self._entries: OrderedDict[
            tuple[str, str], tuple[bytes | str, CustomerState, Head | None, int]
        ] = OrderedDict()
        self._keys: dict[str, set[str]] = {}  # customer -> keys held
        # A state made whole with a base held here shares that base's entries, and is
        # counted at what it adds: it is kept no longer than its base. (customer, key) ->
        # the key of its base; (customer, base key) -> the keys made whole with it.
        self._base_of: dict[tuple[str, str], str] = {}
        self._on_base: dict[tuple[str, str], set[str]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def current(self, customer_id: str, key: str, head: Head) -> CustomerState | None:
        """The checkpoint under `key` as a state to fold on, if it was known current while
        the customer's head was `head` (see the module's docstring); else None."""
        found = self.current_of(customer_id, key, head)
        return None if found is None else found[0]

    def current_of(
        self, customer_id: str, key: str, head: Head, copy: bool = True
    ) -> tuple[CustomerState, CustomerState] | None:
        """`current`, and the remembered state it is a copy of (not to be folded on).
        `copy=False`: the remembered state twice (the caller copies it, or has this memory
        `let_go` of it, before it folds on it)."""
        k = (customer_id, key)
        with self._lock:
            hit = self._entries.get(k)
            if hit is None or hit[2] != head:
                return None
            self._entries.move_to_end(k)
            self.hits += 1
            return (hit[1].copy() if copy else hit[1]), hit[1]

    def let_go(self, customer_id: str, key: str, state: CustomerState) -> None:
        """Hold `state` no longer (if it is the one held under `key`): the caller folds on
        it. Nobody else can then: what this memory hands out are copies of it."""
        with self._lock:
            hit = self._entries.get((customer_id, key))
            if hit is not None and hit[1] is state:
                self._drop(customer_id, key)

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
        load: Callable[[bytes | str], tuple[CustomerState, int, str | None]] | None = None,
        keep: bool = True,
    ) -> CustomerState:
        """The checkpoint `stored` (stored under `key`) as a state to fold on. `head`: the
        customer's head when `stored` was read, or earlier (never later). `load`: how to
        decode `stored`, what to count it as and the key of the base it shares entries with
        (see `put`); `codecs.state.load` by default. `keep=False`: if it must be decoded,
        the decoded state is the caller's, not kept (nor copied)."""
        k = (customer_id, key)
        with self._lock:
            hit = self._entries.get(k)
            if hit is not None and hit[0] == stored:
                self._entries[k] = (hit[0], hit[1], head if head is not None else hit[2], hit[3])
                self._entries.move_to_end(k)
                self.hits += 1
                return hit[1].copy()
        self.misses += 1
        if load is None:
            state, size, on = state_codec.load(stored), len(stored), None
        else:
            state, size, on = load(stored)
        if not keep:
            return state
        kept = self.put(customer_id, key, stored, state, head, size, on)
        return state.copy() if kept else state

    def put(
        self,
        customer_id: str,
        key: str,
        stored: bytes | str,
        state: CustomerState,
        head: Head | None = None,
        size: int | None = None,
        on: str | None = None,
    ) -> bool:
        """Keep `state`, decoded from (or dumped as) `stored`, unless it is over the budget
        on its own; the caller folds on it no more once kept. `head`: the customer's head
        written with `stored`, or read with it. `size`: what to count it as, if not its
        stored size: a state stored against another (`codecs.delta.Base`) is a fraction of
        the size of the whole state it decodes to. `on`: the key of the checkpoint held
        here whose entries `state` shares, when `size` counts only what it adds: then it
        goes when that one goes (and is not kept if that one is not held)."""
        size = len(stored) if size is None else size
        k = (customer_id, key)
        with self._lock:
            if k in self._entries:  # whatever was kept under this key is not what it holds now
                self._drop(customer_id, key)
            if size > self.max_bytes or (on is not None and (customer_id, on) not in self._entries):
                return False
            self._entries[k] = (stored, state, head, size)
            self._keys.setdefault(customer_id, set()).add(key)
            if on is not None:
                self._base_of[k] = on
                self._on_base.setdefault((customer_id, on), set()).add(key)
            self._bytes += size
            while self._bytes > self.max_bytes:
                cid, gone_key = next(iter(self._entries))
                self._drop(cid, gone_key)
        return True

    def _drop(self, customer_id: str, key: str) -> None:
        """Let go of the entry under `key`, and of those made whole with it (lock held)."""
        k = (customer_id, key)
        entry = self._entries.pop(k, None)
        if entry is None:
            return
        self._bytes -= entry[3]
        held = self._keys[customer_id]
        held.discard(key)
        if not held:
            del self._keys[customer_id]
        base = self._base_of.pop(k, None)
        if base is not None:
            on = self._on_base.get((customer_id, base))
            if on is not None:
                on.discard(key)
        for dependent in self._on_base.pop(k, ()):
            self._drop(customer_id, dependent)

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
            self._base_of.clear()
            self._on_base.clear()
            self._bytes = 0


def _added_bytes(stored: bytes | str, state: CustomerState) -> int:
    """What a state made whole with a base it shares entries with is counted at."""
    return len(stored) + _MAP_ENTRY_BYTES * state_codec.large_entries(state)


# (customer, its head) -> (key of a checkpoint stored whole, its large maps), or None
KnownBases = Callable[[str, Head], "tuple[str, Mapping[str, Mapping[str, Any]]] | None"]


class CachedCheckpoints:
    """`CheckpointStore` read through `CheckpointMemory`: checkpoints read back whole, and
    from memory while that is sound (see the module's docstring)."""

    def __init__(
        self,
        store: CheckpointStore,
        connections: Connections,
        max_bytes: int = DEFAULT_CHECKPOINT_CACHE_BYTES,
        bases: KnownBases | None = None,
    ) -> None:
        """`bases(customer, head)`: a checkpoint stored whole that this process holds the
        large maps of, while the customer's head is `head` (the projector's chain, kept
        outside this memory): a checkpoint stored against it is made whole with those maps
        instead of decoding the base (a 1M-activity history's is 37 MB)."""
        self.store = store
        self.connections = connections
        self.memory = CheckpointMemory(max_bytes)
        self.bases = bases

    @property
    def hits(self) -> int:
        return self.memory.hits

    @property
    def misses(self) -> int:
        return self.memory.misses

    def before(self, customer_id: str, key: str, borrow: bool = False) -> Checkpoint | None:
        """The customer's latest checkpoint whose key sorts strictly before `key`.
        `borrow`: one remembered here, with its stored form, comes back as the remembered
        state itself (`Checkpoint.state` is `Checkpoint.original`), which the caller copies
        before it folds on it, or has this memory `let_go` of (a re-fold that makes a
        checkpoint of its own need not copy a long history's maps to start); one decoded
        is the caller's and is not kept (the re-fold's own checkpoints will be)."""
        # The checkpoint's key comes with the customer's head (`CheckpointStore.before`):
        # while the head is the one a remembered state was known current at, its stored
        # bytes are not read (a long history's are hundreds of KB).
        memory = self.memory
        with self.connections.reading() as c:
            found = self.store.before(c, customer_id, key)
            if found is None:
                return None
            at, head = found
            held = memory.held(customer_id, at)
            pair = memory.current_of(customer_id, at, head, copy=not (borrow and held))
            if pair is not None:
                if held is None:
                    return Checkpoint(at, pair[0], None, 0)
                return Checkpoint(at, pair[0], held[0], held[1], pair[1])
            stored = self.store.at(c, customer_id, at)
        if stored is None:  # dropped by a late activity since the first statement: look again
            return self.before(customer_id, key)
        # `head` was read no later than these bytes: see `CheckpointMemory.state`.
        bases: list[tuple[str, CustomerState, int]] = []
        state = memory.state(
            customer_id,
            at,
            stored,
            head,
            lambda s: self.load(customer_id, s, head, bases),
            keep=not borrow,
        )
        held = memory.held(customer_id, at)
        size = held[1] if held is not None else len(stored)
        return Checkpoint(at, state, stored, size, None, bases[0] if bases else None)

    def let_go(self, customer_id: str, key: str, state: CustomerState) -> None:
        """`CheckpointMemory.let_go`: a state `before(borrow=True)` returned is the caller's."""
        self.memory.let_go(customer_id, key, state)

    def at(self, customer_id: str, key: str, head: Head) -> CustomerState | None:
        """The checkpoint stored under exactly `key`, whole; `head`: the customer's."""
        with self.connections.reading() as c:
            stored = self.store.at(c, customer_id, key)
        return None if stored is None else self.load(customer_id, stored, head)[0]

    def load(
        self,
        customer_id: str,
        stored: bytes | str,
        head: Head,
        decoded: list[tuple[str, CustomerState, int]] | None = None,
    ) -> tuple[CustomerState, int, str | None]:
        """A stored checkpoint decoded, made whole with its base if it was stored against
        one, the size to count it as in memory and the key of the base it shares entries
        with, if it shares them with one held in memory (then it counts what it adds: its
        own bytes and its maps' tables, `_MAP_ENTRY_BYTES` an entry). `decoded`: where to
        put the base's key, state and stored size when it was read from the database."""
        state, against = delta.load_delta(stored)
        if against is None:
            return state, len(stored), None
        known = self.bases(customer_id, head) if self.bases is not None else None
        if known is not None and known[0] == against.base:
            state = delta.rebase_maps(state, against, known[1])
            return state, _added_bytes(stored, state), None
        with self.connections.reading() as c:
            base = self.store.at(c, customer_id, against.base)
        if base is None:
            # A base sorts before what is stored against it, and late activities drop
            # checkpoints from a key on, in the same transaction: it cannot be gone.
            raise LookupError(f"checkpoint {customer_id!r} {against.base!r} is gone")
        whole = self.memory.state(customer_id, against.base, base, head)
        if decoded is not None:
            decoded.append((against.base, whole, len(base)))
        state = delta.rebase(state, against, whole)
        if self.memory.held(customer_id, against.base) is None:
            return state, len(base), None
        return state, _added_bytes(stored, state), against.base

    def written(
        self,
        old_heads: Mapping[str, Head],
        states: Mapping[str, tuple[CustomerState, Head]],
        dropped_from: Mapping[str, str],
        refolds: Sequence[tuple[str, str, CustomerState, str, int]],
    ) -> None:
        """A committed write moved customers' heads from `old_heads` (what the database had,
        as that write's plan read it) to those of `states`, dropped their checkpoints from the
        keys `dropped_from`, and stored the re-folds' checkpoints `refolds` (customer, key,
        decoded state, stored form, size to count): what it left alone moves on to the new
        heads, and the re-folds' checkpoints are remembered."""
        memory = self.memory
        for cid, old in old_heads.items():
            written = states.get(cid)
            if written is not None:
                memory.advance(cid, old, written[1], dropped_from.get(cid))
        for cid, key, state, stored, size in refolds:
            memory.put(cid, key, stored, state, states[cid][1], size)

    def clear(self) -> None:
        self.memory.clear()
