"""The change feed's records, computed from folds (pure; the contract is docs/CHANGES.md).

An activity that sorts after everything its customer had gives one record per flattened
path of the state (the audit's paths: `projections.audit.Tracker`) whose value it changed,
effective from its `created_at`, `until` None. A late activity L gives corrections: the
customer's history folded without L and with L, compared at every business time from
L.created_at on (the state after every activity created by then); each window in which a
path's value differs, with the same pair of values, is one record from the window's start
(`effective_at`) to where the pair ends (`until`: both histories agree again, or one of
them changes its value), `until` None when it still holds now. Several activities of one
write give the records of folding them one by one, in arrival order (`records_for`).

The `activities` counters are never reported: every activity moves them."""

from __future__ import annotations

from bisect import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

import msgspec

from custate.domain import Activity, CustomerState, apply, format_time
from custate.projections.audit.changes import ABSENT, Flat, changed
from custate.projections.audit.results import ADDED, CHANGED, REMOVED, FieldChange
from custate.projections.audit.tracker import Tracker

__all__ = [
    "CAUSES",
    "ChangeRecord",
    "Keyed",
    "corrections",
    "differences",
    "from_step",
    "records_for",
    "replay",
]

# (fold key, activity): the key is the stored one (`projections.keys.key_text`).
Keyed = tuple[str, Activity]

CAUSES = ("activity", "rebuild", "erasure")


class ChangeRecord(msgspec.Struct, frozen=True, gc=False):
    """One change of a customer's derived state at one flattened path (docs/CHANGES.md).
    `position` and `recorded_at` are 0 and None until the record is written. (A msgspec
    Struct: a catch-up makes several an activity, and a frozen dataclass cost 20 times as
    much to construct. It holds JSON values and times only, no cycles, so the cyclic
    garbage collector need not track it: a catch-up holds a batch's records until its write.)"""

    customer_id: str
    path: str
    op: str  # added | changed | removed
    before: Any  # JSON value, None where absent
    after: Any
    activity_id: str
    effective_at: datetime
    until: datetime | None = None
    correction: bool = False
    cause: str = "activity"
    position: int = 0
    recorded_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "customer_id": self.customer_id,
            "path": self.path,
            "op": self.op,
            "before": self.before,
            "after": self.after,
            "activity_id": self.activity_id,
            "effective_at": format_time(self.effective_at),
            "until": None if self.until is None else format_time(self.until),
            "recorded_at": None if self.recorded_at is None else format_time(self.recorded_at),
            "correction": self.correction,
            "cause": self.cause,
        }

    def stamped(self, position: int, recorded_at: datetime | None) -> ChangeRecord:
        return msgspec.structs.replace(self, position=position, recorded_at=recorded_at)


def _reported(path: str) -> bool:
    return not (path == "activities" or path.startswith("activities."))


def from_step(
    customer_id: str,
    changes: Iterable[FieldChange],
    a: Activity,
    recorded_at: datetime | None = None,
) -> list[ChangeRecord]:
    """The records of an in-order activity `a`, from what its fold step changed."""
    aid, at = a.id, a.created_at
    return [
        ChangeRecord(customer_id, c.path, c.op, c.before, c.after, aid, at, recorded_at=recorded_at)
        for c in changes
        if _reported(c.path)
    ]


def _op(before: Any, after: Any) -> str:
    if before is ABSENT:
        return ADDED
    if after is ABSENT:
        return REMOVED
    return CHANGED


def _same(a: Any, b: Any) -> bool:
    return a is b or (a == b and type(a) is type(b))


def corrections(
    start: CustomerState,
    history: Sequence[Keyed],
    new: Keyed,
    recorded_at: datetime | None = None,
) -> list[ChangeRecord]:
    """The records of `new` arriving after `history` (in key order, folded on `start`, a
    state that sorts before `new`): the history without `new` against the history with it,
    over business time from `new`'s created_at. `start` is left as it is. An activity that
    sorts after all of `history` gives its in-order records (`correction` False)."""
    key = new[0]
    state = start.copy()
    i = 0
    while i < len(history) and history[i][0] < key:
        apply(state, history[i][1])
        i += 1
    return _corrections(state, history[i:], new, recorded_at)[0]


def _corrections(
    state: CustomerState,
    rest: Sequence[Keyed],
    new: Keyed,
    recorded_at: datetime | None,
) -> tuple[list[ChangeRecord], Tracker]:
    """`corrections` of `new` on `state`, the state of the history before it (folded on
    from here), with `rest` the history after it; and the tracker of the history with
    `new`, on the state after all of it (in-order arrivals that follow go on with it)."""
    late = new[1]
    cid = state.customer_id
    correction = bool(rest)
    with_new = Tracker(cid, start=state, counters=False, lazy=True)
    old = with_new.copy()
    # Both start from the same state: each side holds only the paths its steps changed,
    # and a path's value at the start is the `before` of the first change to it.
    base: dict[str, Any] = {}
    f_old: Flat = {}
    f_new: Flat = {}
    windows: dict[str, tuple[Any, Any, datetime]] = {}  # path -> (before, after, since)
    out: list[ChangeRecord] = []

    def close(path: str, until: datetime | None) -> None:
        b, a, since = windows.pop(path)
        out.append(
            ChangeRecord(
                cid,
                path,
                _op(b, a),
                None if b is ABSENT else b,
                None if a is ABSENT else a,
                late.id,
                since,
                until,
                correction,
                recorded_at=recorded_at,
            )
        )

    def settle(paths: set[str], t: datetime) -> None:
        for p in sorted(paths):
            if not _reported(p):
                continue
            start = base[p]
            b, a = f_old.get(p, start), f_new.get(p, start)
            held = windows.get(p)
            if _same(b, a):
                if held is not None:
                    close(p, t)
            elif held is None or not (_same(held[0], b) and _same(held[1], a)):
                if held is not None:
                    close(p, t)
                windows[p] = (b, a, t)

    def record(changes: list[FieldChange], flat: Flat, touched: set[str]) -> None:
        for c in changes:
            p = c.path
            if p not in base:
                base[p] = ABSENT if c.op == ADDED else c.before
            flat[p] = ABSENT if c.op == REMOVED else c.after
            touched.add(p)

    def step_both(a: Activity, touched: set[str]) -> None:
        record(old.step(a), f_old, touched)
        record(with_new.step(a), f_new, touched)

    t = late.created_at
    touched: set[str] = set()
    record(with_new.step(late), f_new, touched)
    j = 0
    while True:
        while j < len(rest) and rest[j][1].created_at == t:
            step_both(rest[j][1], touched)
            j += 1
        settle(touched, t)
        if j >= len(rest):
            break
        t = rest[j][1].created_at
        touched = set()
    for p in sorted(windows):
        close(p, None)
    return out, with_new


def records_for(
    start: CustomerState,
    history: Sequence[Keyed],
    new: Sequence[Keyed],
    recorded: Mapping[str, datetime | None] | None = None,
    current: CustomerState | None = None,
    before_first: Callable[[CustomerState], object] | None = None,
) -> list[ChangeRecord]:
    """The records of `new` (in arrival order) arriving one by one after `history` (in key
    order, folded on `start`); `start` is left as it is. `recorded`: each new activity's
    `recorded_at`, by id. `current`: the state after `history`, when the caller has it
    (left as it is: arrivals before the first late one fold on a copy instead of on
    `history` folded again). `before_first`: given a copy of the state of `history` before
    the first of `new` in key order, when that one is late (the state a re-fold of
    `history` and `new` on `start` reaches just before it: a caller re-folding them can
    go on from there). Arrivals that each sort after everything before them are folded
    once, through one `Tracker` (after a late one: the tracker its corrections folded the
    history with it through; re-folding the history for each in-order arrival after a
    late one was most of a catch-up's feed cost)."""
    seen = list(history)
    out: list[ChangeRecord] = []
    cid = start.customer_id
    at = recorded or {}
    tracker: Tracker | None = None  # on the state after `seen`
    first = min(n[0] for n in new) if new and before_first is not None else None
    # `start` with seen[:folded] folded on it: a late arrival's state before it is folded
    # on from here while arrivals come in key order, and from `start` again otherwise.
    cursor, folded = start.copy(), 0
    for n in new:
        if not seen or n[0] > seen[-1][0]:
            if tracker is None:
                if current is not None:
                    state = current.copy()
                else:
                    state = start.copy()
                    for _, a in seen:
                        apply(state, a)
                tracker = Tracker(cid, start=state, counters=False, lazy=True)
            out.extend(from_step(cid, tracker.step(n[1]), n[1], at.get(n[1].id)))
            seen.append(n)
            continue
        i = bisect(seen, n[0], key=itemgetter(0))
        if i < folded:
            cursor, folded = start.copy(), 0
        for _, a in seen[folded:i]:
            apply(cursor, a)
        folded = i
        if n[0] == first and before_first is not None:
            before_first(cursor.copy())
        found, tracker = _corrections(cursor.copy(), seen[i:], n, at.get(n[1].id))
        out.extend(found)
        seen.insert(i, n)
    return out


def differences(
    customer_id: str,
    before: CustomerState | None,
    after: CustomerState | None,
    cause: str,
    at: datetime,
) -> list[ChangeRecord]:
    """One record per path whose value differs between two current states of a customer
    (None: no state), with `cause` (`rebuild`), effective from `at`; no activity made
    them, so `activity_id` is empty. The states are left as they are."""
    flats = [
        {} if s is None else Tracker(customer_id, start=s.copy(), counters=False).flat()
        for s in (before, after)
    ]
    return [
        ChangeRecord(customer_id, c.path, c.op, c.before, c.after, "", at, None, False, cause)
        for c in changed(flats[0], flats[1])
        if _reported(c.path)
    ]


def replay(records: Iterable[ChangeRecord], onto: Flat | None = None) -> Flat:
    """A flattened state with the records that hold now (`until` None) applied, in order."""
    flat: Flat = {} if onto is None else onto
    for r in records:
        if r.until is not None:
            continue
        if r.op == REMOVED:
            flat.pop(r.path, None)
        else:
            flat[r.path] = r.after
    return flat
