"""What each activity changed, in fold order: `history`, the late activities among them
(`corrections`), and the flattened state a history adds up to (`Replay`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from custate.domain import EFFECTS, CustomerState, format_time
from custate.projections.audit.changes import Flat, apply_changes
from custate.projections.audit.pairs import Pair, in_fold_order, late_flags
from custate.projections.audit.results import HistoryEntry, activity_ref
from custate.projections.audit.tracker import Tracker, empty_flat


def history(
    pairs: Iterable[Pair],
    customer_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    checkpoint: CustomerState | None = None,
) -> list[HistoryEntry]:
    """Every activity in fold order with what it changed in the customer's state, apart from
    the `activities` counters: those count the very list this is, and reported on every
    entry, they would hide which activities changed nothing (`Replay` adds them back).
    `start`/`end` (inclusive, business time) only limit what is reported. The fold starts
    from the first activity, or from `checkpoint`, the state after every activity that sorts
    before all of `pairs` (then `pairs` must be all the others: whether one is late depends
    only on those after it)."""
    todo = in_fold_order(pairs)
    late = late_flags(todo)  # over everything stored, also what sorts after `end`
    # From a checkpoint, the entries of its large maps are looked at only when an activity
    # names them: a long history's thousands of orders are not rendered for a tail's few.
    tracker = Tracker(customer_id, checkpoint, counters=False, lazy=checkpoint is not None)
    out: list[HistoryEntry] = []
    for (a, r), is_late in zip(todo, late, strict=True):
        if end is not None and a.created_at > end:
            break
        changes = tracker.step(a)
        if start is None or a.created_at >= start:
            out.append(HistoryEntry(activity_ref(a, r), tuple(changes), is_late))
    return out


def corrections(entries: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """The late activities (recorded after one that sorts after them) and what they changed."""
    return [e for e in entries if e.late]


class Replay:
    """The flattened state that a history's entries add up to, one entry at a time: each
    entry's changes, and the `activities` counters that the entry is (as the fold counts)."""

    def __init__(self, customer_id: str) -> None:
        self.flat = empty_flat(customer_id)

    def apply(self, entry: HistoryEntry) -> None:
        apply_changes(self.flat, entry.changes)
        f, a = self.flat, entry.activity
        at = format_time(a.created_at)
        f["activities.count"] += 1
        if f["activities.first_at"] is None:
            f["activities.first_at"] = at
        f["activities.last_at"] = at
        f["activities.last_id"] = a.id
        if a.type not in EFFECTS:
            f["activities.unrecognized"] += 1


def replay_history(customer_id: str, entries: Iterable[HistoryEntry]) -> Flat:
    """The flattened state a whole history adds up to."""
    replay = Replay(customer_id)
    for e in entries:
        replay.apply(e)
    return replay.flat
