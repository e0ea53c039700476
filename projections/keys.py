"""The fold key as sortable text, so a database index orders activities as the fold does.

`2024-03-01T10:00:00.000000Z|1|evcus_x`: the time is fixed width (microseconds, `Z`), the
rank one digit, so text order is fold order."""

from __future__ import annotations

from datetime import datetime

from custate.domain import Activity, format_time, rank

# Sorts after every "|<rank>|<id>" suffix: the bound of "created_at <= T".
_AFTER_ALL = "|~"


def key_text(a: Activity) -> str:
    return f"{format_time(a.created_at)}|{rank(a.type)}|{a.id}"


def as_of_bound(t: datetime) -> str:
    """Every activity with `created_at <= t`, and none after, has a key <= this."""
    return format_time(t) + _AFTER_ALL
