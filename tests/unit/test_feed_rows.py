"""The change feed's stored form (adapters/readmodel/feed.py): a row holds a run of records
that share their activity, and reading the rows back gives every record, field for field,
at consecutive positions, whatever the mix of in-order records, corrections with their own
windows, and records of rebuilds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import MetaData

from custate.adapters.readmodel.feed import changes_table, records_of, rows_of
from custate.projections.changes import ChangeRecord

from .test_properties import SETTINGS

T0 = datetime(2025, 1, 1, tzinfo=UTC)
COLUMNS = [c.name for c in changes_table(MetaData()).columns]

_times = st.integers(0, 10**6).map(lambda ms: T0 + timedelta(milliseconds=ms))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@st.composite
def _activity_records(draw: st.DrawFn) -> list[ChangeRecord]:
    """The records of one activity's folding: in order, or a late one's corrections."""
    cid = draw(st.sampled_from(["c1", "c2"]))
    aid = draw(st.sampled_from(["ev_1", "ev_2", "ev_3", ""]))
    cause = "activity" if aid else draw(st.sampled_from(["rebuild", "erasure"]))
    at, recorded = draw(_times), draw(st.none() | _times)
    correction = bool(aid) and draw(st.booleans())
    out = []
    for _ in range(draw(st.integers(1, 5))):
        effective_at, until = at, None
        if correction:
            effective_at = draw(st.sampled_from([at, at + timedelta(seconds=1)]))
            until = draw(st.none() | st.just(effective_at + timedelta(days=1)))
        out.append(
            ChangeRecord(
                cid,
                draw(st.sampled_from(["segments", "orders.o_1.status", "loyalty.points"])),
                draw(st.sampled_from(["added", "changed", "removed"])),
                draw(_json),
                draw(_json),
                aid,
                effective_at,
                until,
                correction,
                cause,
                recorded_at=recorded,
            )
        )
    return out


def _read(rows: list[tuple[Any, ...]]) -> list[ChangeRecord]:
    return [
        r
        for row in rows
        for r in records_of(SimpleNamespace(**dict(zip(COLUMNS, row, strict=True))))
    ]


@SETTINGS
@given(st.lists(_activity_records(), max_size=6), st.integers(1, 10**6))
def test_rows_give_back_every_record_at_consecutive_positions(
    writes: list[list[ChangeRecord]], first: int
) -> None:
    records = [r for w in writes for r in w]
    rows = rows_of(records, first)
    back = _read(rows)
    assert back == [r.stamped(first + i, r.recorded_at) for i, r in enumerate(records)]
    # one row per run of an activity's records: never more rows than activities
    assert len(rows) <= len(writes)
    # a row's positions are its first and last record's
    assert [(row[1], row[0]) for row in rows] == sorted((row[1], row[0]) for row in rows)


def test_an_in_order_activity_is_one_row_of_records_without_their_own_times() -> None:
    records = [
        ChangeRecord("c1", path, "added", None, 1, "ev_1", T0, recorded_at=T0)
        for path in ("a", "b", "c")
    ]
    (row,) = rows_of(records, 7)
    stored = dict(zip(COLUMNS, row, strict=True))
    assert (stored["first_position"], stored["last_position"]) == (7, 9)
    assert stored["records"] == '[["a","added",null,1],["b","added",null,1],["c","added",null,1]]'
