"""Tracked catch-up: new activities, in arrival order, folded into each customer's state in
business-time order.

Per batch, per customer: when every new activity sorts after what the customer already
folded, the state simply continues. A *late* activity (one that sorts before) re-folds only
that customer, from its latest checkpoint before the late key, over the activities already
projected after that checkpoint plus the new ones, never over events not yet projected.
Checkpoints (the state after every `interval`-th activity in fold order) at or after the
late key are dropped, and everything, tracking position included, is written in one
transaction by the port."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Protocol

from custate.domain import Activity, CustomerState, apply
from custate.projections.audit.tracker import Tracker
from custate.projections.audit.units import name_entries
from custate.projections.changes import ChangeRecord, from_step, records_for

DEFAULT_CHECKPOINT_INTERVAL = 100
# From this many entries in its maps (orders, vouchers, ...), a customer's batch says which
# entries its activities can have written (`Changes.touched`): the port may then store its
# checkpoints as what changed since an earlier one (a long history's state is megabytes,
# and a checkpoint every `interval` activities stored whole made the first projection's
# cost per activity grow with the history).
TOUCHED_FROM = 256

# Map attribute (`orders`, `vouchers`, ...) -> keys.
Touched = dict[str, set[str]]
# (customer, key, the state as it stands, the entries named so far or None) -> None
KeepCheckpoint = Callable[[str, str, CustomerState, Touched | None], None]


@dataclass(frozen=True, slots=True)
class Head:
    """Where a customer's projection stands."""

    last_key: str
    last_version: int


@dataclass(frozen=True, slots=True)
class Projected:
    """One activity from the store, with its place in the customer's stream."""

    activity: Activity
    version: int
    key: str
    recorded_at: datetime | None = None  # when it was stored (new ones: for the feed)


@dataclass(slots=True)
class Changes:
    """What one batch writes, in one transaction with the tracking position."""

    states: dict[str, tuple[CustomerState, Head]] = field(default_factory=dict)
    keys: list[tuple[str, str, int]] = field(default_factory=list)  # customer, key, version
    drop_checkpoints_from: dict[str, str] = field(default_factory=dict)  # customer -> key
    # Checkpoints of activities folded in order, as copies of the state (customer, key,
    # state), when `plan` was given no `keep_checkpoint`: the port stores them.
    checkpoints: list[tuple[str, str, CustomerState]] = field(default_factory=list)
    # Checkpoints of late activities' re-folds, as copies of the state (customer, key,
    # state), for the port to store in a form of its choosing: it knows the checkpoint the
    # re-fold started from, and a re-fold changes few of a long history's entries. The
    # next late activity of that customer starts from one of them, so the port may also
    # keep them decoded.
    refold_checkpoints: list[tuple[str, str, CustomerState]] = field(default_factory=list)
    late: int = 0
    # Customers with no projected state before this batch: they have no rows to replace.
    new: set[str] = field(default_factory=set)
    # The change feed's records of the batch (`projections.changes`), when asked for.
    feed: list[ChangeRecord] = field(default_factory=list)
    # Per customer of at least `TOUCHED_FROM` map entries: the entries that the activities
    # folded for it in this batch can have written (a re-fold's: from its start on). Every
    # checkpoint of the batch differs from the one before it (a re-fold's, from its start)
    # in these entries at most; a customer absent was not tracked.
    touched: dict[str, Touched] = field(default_factory=dict)


class ReadModelPort(Protocol):
    """What the catch-up needs of the read model. `adapters.readmodel.view.ReadModel`
    implements it on SQLAlchemy (and `adapters.readmodel.runner.Overlay` over it, for
    batches planned but not yet written); tests have a fake."""

    def heads(self, customer_ids: Sequence[str]) -> dict[str, Head]: ...

    def states(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]: ...

    def checkpoint_before(self, customer_id: str, key: str) -> tuple[str, CustomerState] | None:
        """The latest checkpoint whose key sorts strictly before `key`."""
        ...

    def keys_between(
        self, customer_id: str, after: str | None, upto: str | None = None
    ) -> list[tuple[str, int]]:
        """(fold key, stream version) of projected activities with `after < key <= upto`,
        in key order."""
        ...


class ActivityPort(Protocol):
    def activities(self, customer_id: str, versions: Sequence[int]) -> list[Activity]:
        """The customer's activities at these stream versions, in the order asked."""
        ...


def plan(
    batch: Sequence[Projected],
    model: ReadModelPort,
    source: ActivityPort,
    interval: int = DEFAULT_CHECKPOINT_INTERVAL,
    cache: dict[str, tuple[CustomerState, Head]] | None = None,
    feed: bool = False,
    keep_checkpoint: KeepCheckpoint | None = None,
) -> Changes:
    """The changes that fold `batch` into the read model. `cache` holds states this process
    wrote itself; an entry is used only while its head still matches the stored one.
    `feed`: also the change records of the batch's activities, folded one by one in
    arrival order (the batch's order). `keep_checkpoint(customer, key, state, named)`: called
    at each checkpoint of activities folded in order, with the state as it stands (the fold
    goes on with it right after: store it or copy it then) and, for a customer of at least
    `TOUCHED_FROM` entries, the entries the batch's activities named so far; without it,
    `Changes.checkpoints` holds copies (a copy of a long history's maps costs milliseconds)."""
    by_customer: dict[str, list[Projected]] = {}
    for p in batch:
        by_customer.setdefault(p.activity.customer_id, []).append(p)
    ids = sorted(by_customer)
    heads = model.heads(ids)
    cached: dict[str, CustomerState] = {}
    missing: list[str] = []
    for cid in ids:
        hit = cache.get(cid) if cache is not None else None
        if hit is not None and heads.get(cid) == hit[1]:
            cached[cid] = hit[0]
        elif cid in heads:
            missing.append(cid)
    stored = model.states(missing) if missing else {}
    changes = Changes()
    for cid in ids:
        new = sorted(by_customer[cid], key=lambda p: p.key)
        changes.keys.extend((cid, p.key, p.version) for p in new)
        head = heads.get(cid)
        last_version = max([p.version for p in new] + ([head.last_version] if head else []))
        refold = head is not None and new[0].key <= head.last_key
        tail: list[Projected] = []
        if head is None:
            state, todo = CustomerState(cid), new
            changes.new.add(cid)
        elif not refold:
            state = cached.get(cid) or stored[cid]
            todo = new
        else:
            changes.late += 1
            state, todo, tail = _refold_from(cid, new, model, source, changes)
        step: Callable[[Activity], object] = partial(apply, state)
        folded: list[Projected] = []  # of `todo`, what is folded into `state` already
        if feed:
            arrived = by_customer[cid]
            if not refold and all(
                a is b for a, b in zip(arrived, new, strict=True)
            ):  # in order, the common case: one fold
                step = _feed_step(cid, state, changes.feed, arrived)
            else:
                # A re-fold goes on from where the corrections of its earliest activity
                # folded the tail to, instead of folding that part again.
                before_first: list[CustomerState] = []
                changes.feed.extend(
                    records_for(
                        state,
                        [(p.key, p.activity) for p in tail],
                        [(p.key, p.activity) for p in arrived],
                        _recorded(arrived),
                        cached.get(cid) or stored.get(cid),
                        before_first.append if refold else None,
                    )
                )
                if before_first:
                    state = before_first[0]
                    step = partial(apply, state)
                    skipped = 0
                    while todo[skipped].key < new[0].key:
                        skipped += 1
                    folded, todo = todo[:skipped], todo[skipped:]
        touched: Touched | None = None
        if _entries(state) >= TOUCHED_FROM:
            touched = changes.touched[cid] = {}
            for p in folded:
                name_entries(p.activity, touched)
        last_key = _fold(state, todo, interval, changes, refold, step, touched, keep_checkpoint)
        if head is not None and head.last_key > last_key:
            last_key = head.last_key
        changes.states[cid] = (state, Head(last_key, last_version))
    return changes


def _refold_from(
    cid: str,
    new: list[Projected],
    model: ReadModelPort,
    source: ActivityPort,
    changes: Changes,
) -> tuple[CustomerState, list[Projected], list[Projected]]:
    """The state to re-fold from, what to fold on it, and of that what was projected."""
    first = new[0].key
    checkpoint = model.checkpoint_before(cid, first)
    changes.drop_checkpoints_from[cid] = first
    after = checkpoint[0] if checkpoint else None
    keys = model.keys_between(cid, after)
    tail = source.activities(cid, [v for _, v in keys]) if keys else []
    # The keys as stored, not computed again (docs/DECISIONS.md, Read model).
    projected = [Projected(a, v, k) for a, (k, v) in zip(tail, keys, strict=True)]
    todo = sorted([*projected, *new], key=lambda p: p.key)
    state = checkpoint[1] if checkpoint else CustomerState(cid)
    return state, todo, projected


def _recorded(arrived: list[Projected]) -> dict[str, datetime | None]:
    return {p.activity.id: p.recorded_at for p in arrived}


def _feed_step(
    cid: str, state: CustomerState, out: list[ChangeRecord], arrived: list[Projected]
) -> Callable[[Activity], object]:
    """A fold step that folds `state` in place and reports each step's records."""
    tracker = Tracker(cid, start=state, counters=False, lazy=True)
    at = _recorded(arrived)

    def step(a: Activity) -> None:
        out.extend(from_step(cid, tracker.step(a), a, at.get(a.id)))

    return step


def _entries(s: CustomerState) -> int:
    return len(s.orders) + len(s.vouchers) + len(s.reward_redemptions) + len(s.cards)


def _fold(
    state: CustomerState,
    todo: list[Projected],
    interval: int,
    changes: Changes,
    keep: bool,
    step: Callable[[Activity], object],
    touched: Touched | None = None,
    keep_checkpoint: KeepCheckpoint | None = None,
) -> str:
    last = ""
    for p in todo:
        step(p.activity)
        if touched is not None:
            name_entries(p.activity, touched)
        last = p.key
        if state.activities.count % interval == 0:
            if keep:
                changes.refold_checkpoints.append((state.customer_id, p.key, state.copy()))
            elif keep_checkpoint is not None:
                keep_checkpoint(state.customer_id, p.key, state, touched)
            else:
                changes.checkpoints.append((state.customer_id, p.key, state.copy()))
    return last
