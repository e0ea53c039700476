"""The fold key (`domain.fold_key`) as sortable text, so a database index orders activities
as the fold does.

`2024-03-01T10:00:00.000000Z|1|evcus_x`: the time is fixed width (microseconds, `Z`), the
rank one digit, so text order is fold order. The text is stored: its form never changes."""

from __future__ import annotations

from datetime import datetime

from custate.domain import Activity, fold_key, format_time

# Sorts after every "|<rank>|<id>" suffix: the bound of "created_at <= T".
_AFTER_ALL = "|~"


def key_text(a: Activity) -> str:
    """`fold_key(a)` as text: `<created_at>|<rank>|<id>`."""
    created_at, rank, activity_id = fold_key(a)
    return f"{format_time(created_at)}|{rank}|{activity_id}"


def as_of_bound(t: datetime) -> str:
    """Every activity with `created_at <= t`, and none after, has a key <= this."""
    return format_time(t) + _AFTER_ALL
