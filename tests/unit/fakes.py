"""An in-memory read model for the catch-up logic: implements `ReadModelPort` and
`ActivityPort`, keeps an event log (per-customer streams, versions 1..n in arrival order,
one notification per stored activity, duplicates ignored as the store ignores them) and
applies `Changes` the way `adapters.readmodel.view.ReadModel.write` does: each touched
customer's row replaced, checkpoints at or after a late key dropped, keys and checkpoints
inserted (a repeated primary key fails, as it would in the database). States cross the
boundary in their JSON form, as the database's rows and checkpoints do."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from custate.domain import Activity, CustomerState
from custate.projections.catchup import (
    DEFAULT_CHECKPOINT_INTERVAL,
    Changes,
    Head,
    Projected,
    plan,
)
from custate.projections.keys import key_text
from custate.projections.pointintime import state_as_of

Json = dict[str, Any]


class DuplicateKeyError(AssertionError):
    """What the database's primary key would have refused."""


@dataclass
class Calls:
    """Which customers the catch-up read through the re-fold ports."""

    checkpoint_before: list[tuple[str, str]] = field(default_factory=list)
    keys_between: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    activities: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

    def customers(self) -> set[str]:
        return (
            {c for c, _ in self.checkpoint_before}
            | {c for c, *_ in self.keys_between}
            | {c for c, _ in self.activities}
        )

    def clear(self) -> None:
        self.checkpoint_before.clear()
        self.keys_between.clear()
        self.activities.clear()


class FakeReadModel:
    """Event log + read model in memory. `catch_up(batch_sizes)` projects what was appended
    since the tracking position, one `plan` + `apply` per batch."""

    def __init__(
        self,
        interval: int = DEFAULT_CHECKPOINT_INTERVAL,
        use_cache: bool = True,
        feed: bool = False,
    ) -> None:
        """`feed`: plan the change feed's records too (the catch-up folds otherwise then)."""
        self.interval = interval
        self.feed = feed
        # event store
        self.streams: dict[str, list[Activity]] = {}
        self.log: list[tuple[Activity, int]] = []  # (activity, stream version), arrival order
        self.ids: set[str] = set()
        self.duplicates = 0
        # read model
        self.position = 0
        self.rows: dict[str, tuple[Json, Head]] = {}
        self.keys: dict[str, dict[str, int]] = {}  # customer -> key -> version
        self.checkpoints: dict[str, dict[str, Json]] = {}  # customer -> key -> state JSON
        self.cache: dict[str, tuple[CustomerState, Head]] | None = {} if use_cache else None
        self.calls = Calls()
        self.history: list[Changes] = []

    # -- the event store ---------------------------------------------------------------

    def append(self, activities: Iterable[Activity]) -> int:
        """Store each activity id once; returns how many were new."""
        new = 0
        for a in activities:
            if a.id in self.ids:
                self.duplicates += 1
                continue
            self.ids.add(a.id)
            stream = self.streams.setdefault(a.customer_id, [])
            stream.append(a)
            self.log.append((a, len(stream)))
            new += 1
        return new

    @property
    def lag(self) -> int:
        return len(self.log) - self.position

    # -- catch-up ------------------------------------------------------------------------

    def next_batch(self, size: int) -> list[Projected]:
        notes = self.log[self.position : self.position + size]
        return [Projected(a, v, key_text(a)) for a, v in notes]

    def catch_up_once(self, size: int) -> Changes | None:
        batch = self.next_batch(size)
        if not batch:
            return None
        changes = plan(batch, self, self, self.interval, self.cache, feed=self.feed)
        self.apply(changes, len(batch))
        return changes

    def catch_up(self, sizes: Iterable[int] | int = 1000) -> list[Changes]:
        """Batches of the given sizes (an int: all of that size) until nothing is left; the
        last size repeats."""
        out: list[Changes] = []
        it = iter([sizes] if isinstance(sizes, int) else sizes)
        size = 1000
        while self.lag:
            size = next(it, size)
            changes = self.catch_up_once(size)
            assert changes is not None
            out.append(changes)
        return out

    def apply(self, changes: Changes, advance: int) -> None:
        """What `ReadModel.write` does, in the same order, in one step."""
        for cid, (state, head) in changes.states.items():
            self.rows[cid] = (state.to_json(), head)
        for cid, from_key in changes.drop_checkpoints_from.items():
            cps = self.checkpoints.get(cid, {})
            for k in [k for k in cps if k >= from_key]:
                del cps[k]
        for cid, key, version in changes.keys:
            keys = self.keys.setdefault(cid, {})
            if key in keys:
                raise DuplicateKeyError(f"keys: ({cid}, {key}) inserted twice")
            keys[key] = version
        for cid, key, state in [*changes.checkpoints, *changes.refold_checkpoints]:
            cps = self.checkpoints.setdefault(cid, {})
            if key in cps:
                raise DuplicateKeyError(f"checkpoints: ({cid}, {key}) inserted twice")
            cps[key] = state.to_json()
        self.position += advance
        if self.cache is not None:
            self.cache.update(changes.states)
        self.history.append(changes)

    # -- ReadModelPort -------------------------------------------------------------------

    def heads(self, customer_ids: Sequence[str]) -> dict[str, Head]:
        return {c: self.rows[c][1] for c in customer_ids if c in self.rows}

    def states(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        return {c: CustomerState.from_json(self.rows[c][0]) for c in customer_ids if c in self.rows}

    def checkpoint_before(self, customer_id: str, key: str) -> tuple[str, CustomerState] | None:
        self.calls.checkpoint_before.append((customer_id, key))
        before = [k for k in self.checkpoints.get(customer_id, {}) if k < key]
        if not before:
            return None
        k = max(before)
        return k, CustomerState.from_json(self.checkpoints[customer_id][k])

    def keys_between(
        self, customer_id: str, after: str | None, upto: str | None = None
    ) -> list[tuple[str, int]]:
        self.calls.keys_between.append((customer_id, after, upto))
        keys = self.keys.get(customer_id, {})
        return [
            (k, keys[k])
            for k in sorted(keys)
            if (after is None or k > after) and (upto is None or k <= upto)
        ]

    # -- ActivityPort --------------------------------------------------------------------

    def activities(self, customer_id: str, versions: Sequence[int]) -> list[Activity]:
        self.calls.activities.append((customer_id, tuple(versions)))
        stream = self.streams[customer_id]
        return [stream[v - 1] for v in versions]

    # -- answers -------------------------------------------------------------------------

    def current(self, customer_id: str) -> CustomerState | None:
        row = self.rows.get(customer_id)
        return None if row is None else CustomerState.from_json(row[0])

    def as_of(self, customer_id: str, t: datetime) -> CustomerState:
        return state_as_of(self, self, customer_id, t)
