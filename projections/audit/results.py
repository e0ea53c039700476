"""The audit's answers: typed, frozen, rendered to JSON by `to_json`. Times are aware UTC
datetimes, rendered as `format_time` does; values are JSON values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from custate.domain import Activity, format_time
from custate.domain.state import Gap

# What a change did to its path: it had a value before and after, it did not exist before,
# it no longer exists.
CHANGED, ADDED, REMOVED = "changed", "added", "removed"


class _Result(msgspec.Struct, frozen=True, gc=False):
    """Audit results are msgspec Structs, not dataclasses: a long history is tens of
    thousands of changes, and a frozen dataclass took a tenth of `history` to build them.
    They hold JSON values only (no cycles), so the cyclic GC need not track them."""


def _t(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


class FieldChange(_Result, frozen=True):
    path: str
    before: Any  # None when op is "added"
    after: Any  # None when op is "removed"
    op: str  # "changed" | "added" | "removed"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "op": self.op, "before": self.before, "after": self.after}


class ActivityRef(_Result, frozen=True):
    id: str
    type: str
    created_at: datetime
    recorded_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "created_at": _t(self.created_at),
            "recorded_at": _t(self.recorded_at),
        }


class HistoryEntry(_Result, frozen=True):
    """One activity in fold order and what folding it changed. `late`: it was recorded
    after an activity that sorts after it (it corrected what had been shown)."""

    activity: ActivityRef
    changes: tuple[FieldChange, ...]
    late: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            **self.activity.to_json(),
            "late": self.late,
            "changes": [c.to_json() for c in self.changes],
        }


class DiffEntry(_Result, frozen=True):
    path: str
    before: Any
    after: Any
    op: str
    activities: tuple[str, ...]  # ids of the activities responsible

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "op": self.op,
            "before": self.before,
            "after": self.after,
            "activities": list(self.activities),
        }


class StateDiff(_Result, frozen=True):
    """`kind` "as_of": state at `as_of[0]` vs `as_of[1]` (both known now, or at `known_at[0]`).
    `kind` "known_at": state about `as_of[0]` as known at `known_at[0]` vs `known_at[1]`.
    `activities`: those between the two cuts (all of them, also those that changed nothing)."""

    customer_id: str
    kind: str
    as_of: tuple[datetime | None, ...]
    known_at: tuple[datetime | None, ...]
    changes: tuple[DiffEntry, ...]
    activities: tuple[ActivityRef, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "kind": self.kind,
            "as_of": [_t(t) for t in self.as_of],
            "known_at": [_t(t) for t in self.known_at],
            "changes": [c.to_json() for c in self.changes],
            "activities": [a.to_json() for a in self.activities],
        }


class ValueStep(_Result, frozen=True):
    """One activity that changed the explained path, with the value before and after."""

    activity: ActivityRef
    before: Any
    after: Any
    op: str
    late: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "activity": self.activity.to_json(),
            "op": self.op,
            "before": self.before,
            "after": self.after,
            "late": self.late,
        }


class Explanation(_Result, frozen=True):
    """Why `path` has its value. `value` is the leaf's value, or for a path above leaves the
    flattened subtree (relative paths); `present` is False when the path is not in the state.
    `set_by` is the last activity in fold order that changed it; `chain` every one, oldest
    first (the last step is `set_by`)."""

    customer_id: str
    path: str
    present: bool
    value: Any
    set_by: ActivityRef | None
    chain: tuple[ValueStep, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "path": self.path,
            "present": self.present,
            "value": self.value,
            "set_by": self.set_by.to_json() if self.set_by else None,
            "chain": [s.to_json() for s in self.chain],
        }


@dataclass(frozen=True, slots=True)
class CardGap(Gap):
    """A balance-continuity break on one customer's card: an activity is missing upstream
    between `previous_activity_id` and `activity_id`."""

    customer_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, **Gap.to_json(self)}


def activity_ref(a: Activity, recorded_at: datetime | None) -> ActivityRef:
    """The activity as the answers name it."""
    return ActivityRef(a.id, a.type, a.created_at, recorded_at)
