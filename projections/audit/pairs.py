"""What every audit question folds: a customer's activities, each with the time it was
recorded, in fold order; and which of them arrived late."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import itemgetter

from custate.domain import Activity, ordered

# An activity and when it was recorded (None: not known).
Pair = tuple[Activity, datetime | None]

_activity_of: Callable[[Pair], Activity] = itemgetter(0)


def in_fold_order(pairs: Iterable[Pair], as_of: datetime | None = None) -> list[Pair]:
    """As `ordered`, keeping each activity's record time beside it."""
    return ordered(pairs, as_of, activity=_activity_of)


def late_flags(todo: Sequence[Pair]) -> list[bool]:
    """Per pair in fold order, whether it is late: recorded after some activity that sorts
    after it."""
    flags = [False] * len(todo)
    latest_min: datetime | None = None
    for i in range(len(todo) - 1, -1, -1):
        r = todo[i][1]
        if r is None:
            continue
        if latest_min is not None and r > latest_min:
            flags[i] = True
        if latest_min is None or r < latest_min:
            latest_min = r
    return flags
