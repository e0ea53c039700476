"""What changed between two cuts of a customer's state, and which activities did it: two
business times (`diff_as_of`) or two record times (`diff_known_at`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from custate.projections.audit.changes import Flat, changed
from custate.projections.audit.pairs import Pair, in_fold_order
from custate.projections.audit.results import ActivityRef, DiffEntry, StateDiff, activity_ref
from custate.projections.audit.tracker import Tracker


def diff_as_of(
    pairs: Iterable[Pair],
    customer_id: str,
    t1: datetime,
    t2: datetime,
    known_at: datetime | None = None,
) -> StateDiff:
    """State at business time `t1` vs `t2`, each path with the activities (t1 < created_at <=
    t2) whose fold touched it."""
    lo, hi = (t1, t2) if t1 <= t2 else (t2, t1)
    todo = in_fold_order(pairs, hi)
    tracker = Tracker(customer_id)
    at_lo: Flat | None = None
    touched: dict[str, list[str]] = {}
    between: list[ActivityRef] = []
    for a, r in todo:
        if a.created_at > lo and at_lo is None:
            at_lo = tracker.flat()
        changes = tracker.step(a)
        if a.created_at > lo:
            between.append(activity_ref(a, r))
            for c in changes:
                touched.setdefault(c.path, []).append(a.id)
    if at_lo is None:
        at_lo = tracker.flat()
    at_hi = tracker.flat()
    before, after = (at_lo, at_hi) if t1 <= t2 else (at_hi, at_lo)
    entries = tuple(
        DiffEntry(c.path, c.before, c.after, c.op, tuple(touched.get(c.path, ())))
        for c in changed(before, after)
    )
    return StateDiff(customer_id, "as_of", (t1, t2), (known_at,), entries, tuple(between))


def diff_known_at(
    pairs: Iterable[Pair],
    customer_id: str,
    as_of: datetime | None,
    k1: datetime,
    k2: datetime,
) -> StateDiff:
    """State about `as_of` as known at `k1` vs at `k2`, each path with the activities recorded
    in (k1, k2] (and created by `as_of`) that touched it; a path they changed only through
    other activities (a late activity can change what a later one does) names them all."""
    lo, hi = (k1, k2) if k1 <= k2 else (k2, k1)
    todo = in_fold_order(pairs, as_of)
    old = Tracker(customer_id)
    new = Tracker(customer_id)
    touched: dict[str, list[str]] = {}
    arrived: list[ActivityRef] = []
    for a, r in todo:
        if r is None or r > hi:
            continue
        if r <= lo:
            old.step(a)
        changes = new.step(a)
        if r > lo:
            arrived.append(activity_ref(a, r))
            for c in changes:
                touched.setdefault(c.path, []).append(a.id)
    f_lo, f_hi = old.flat(), new.flat()
    before, after = (f_lo, f_hi) if k1 <= k2 else (f_hi, f_lo)
    every = tuple(a.id for a in arrived)
    entries = tuple(
        DiffEntry(c.path, c.before, c.after, c.op, tuple(touched.get(c.path, ())) or every)
        for c in changed(before, after)
    )
    return StateDiff(customer_id, "known_at", (as_of,), (k1, k2), entries, tuple(arrived))
