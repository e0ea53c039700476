"""The change feed's table (`custate_changes`): records written in the read model's write
transaction, with positions a follower can trust, and the pages consumers read.

A row holds the records of one activity's folding (or of one customer's rebuild swap or
erasure), in position order: positions `first_position` to `last_position`, one each, and
what they share (customer, activity, record time, `correction`, `cause`, and the
`effective_at` of most) once; each record's own fields are an element of the row's
`records` JSON array. A catch-up makes four or five records an activity, and a row
each cost most of the feed's write (docs/DECISIONS.md, Change feed).

Positions: on PostgreSQL the write takes `LOCK TABLE custate_changes IN EXCLUSIVE MODE`
just before it inserts (as eventsourcing's PostgreSQL recorder does for notification ids)
and numbers its records from `max(position) + 1`; the lock is held to the commit, so a
writer that numbers after another also commits after it, and no record ever becomes
visible below one already visible. On SQLite the write transaction already holds the
database's write lock (the tracking position is written first). Plain reads (SELECT) are
not blocked by that lock mode (docs/DECISIONS.md, Change feed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
)

from custate.adapters.readmodel.sql import insert_rows
from custate.adapters.sqlschema import create_all, driver, reading
from custate.domain import format_time, parse_time
from custate.projections.changes import ChangeRecord

__all__ = [
    "CHANGES_META_TABLE",
    "CHANGES_TABLE",
    "ChangeFeed",
    "Page",
    "changes_table",
    "records_of",
    "rows_of",
]

CHANGES_TABLE = "custate_changes"
CHANGES_META_TABLE = "custate_changes_meta"
_PRUNED = "pruned_upto"


def changes_table(metadata: MetaData) -> Table:
    return Table(
        CHANGES_TABLE,
        metadata,
        Column("last_position", BigInteger, primary_key=True, autoincrement=False),
        Column("first_position", BigInteger, nullable=False),
        Column("customer_id", String(255), nullable=False),
        Column("activity_id", String(255), nullable=False),
        Column("recorded_at", String(32), nullable=True),  # UTC, as the state renders
        Column("correction", Boolean, nullable=False),
        Column("cause", String(16), nullable=False),
        Column("effective_at", String(32), nullable=False),  # the first record's
        # JSON, in position order: [path, op, before, after] for a record effective from the
        # row's `effective_at` and holding now (`until` null), else [path, op, before,
        # after, effective_at, until]
        Column("records", Text, nullable=False),
        Index("ix_custate_changes_customer", "customer_id", "last_position"),
    )


# What the records of one row share, in the table's column order.
_Shared = tuple[str, str, datetime | None, bool, str]


def _shared(r: ChangeRecord) -> _Shared:
    return (r.customer_id, r.activity_id, r.recorded_at, r.correction, r.cause)


def rows_of(records: Sequence[ChangeRecord], first: int) -> list[tuple[Any, ...]]:
    """The table's rows holding `records` (in order) numbered from position `first`: one
    row for each run of records that share their activity (and customer, record time,
    correction and cause)."""
    dumps = orjson.dumps
    times: dict[datetime, str] = {}  # the records of one activity share their times

    def fmt(t: datetime | None) -> str | None:
        if t is None:
            return None
        text = times.get(t)
        if text is None:
            text = times[t] = format_time(t)
        return text

    rows: list[tuple[Any, ...]] = []
    position = first
    i, n = 0, len(records)
    while i < n:
        head = records[i]
        key = _shared(head)
        j = i + 1
        while j < n and _shared(records[j]) == key:
            j += 1
        since = head.effective_at
        body = [
            (r.path, r.op, r.before, r.after)
            if r.until is None and r.effective_at == since
            else (r.path, r.op, r.before, r.after, fmt(r.effective_at), fmt(r.until))
            for r in records[i:j]
        ]
        last = position + (j - i) - 1
        cid, aid, recorded, correction, cause = key
        rows.append(
            (
                last,
                position,
                cid,
                aid,
                fmt(recorded),
                correction,
                cause,
                fmt(since),
                dumps(body).decode(),
            )
        )
        position, i = last + 1, j
    return rows


def records_of(row: Any) -> list[ChangeRecord]:
    """The records a row of the table holds, in position order."""
    first, cid, aid = int(row.first_position), row.customer_id, row.activity_id
    recorded, correction, cause = _time(row.recorded_at), bool(row.correction), row.cause
    since = parse_time(row.effective_at, "effective_at")
    out: list[ChangeRecord] = []
    for i, r in enumerate(orjson.loads(row.records)):
        path, op, before, after = r[:4]
        at, until = (
            (since, None) if len(r) == 4 else (parse_time(r[4], "effective_at"), _time(r[5]))
        )
        out.append(
            ChangeRecord(
                cid, path, op, before, after, aid, at, until, correction, cause, first + i, recorded
            )
        )
    return out


def _time(value: str | None) -> datetime | None:
    return None if value is None else parse_time(value, "time")


@dataclass(frozen=True, slots=True)
class Page:
    """Records after a position, in position order, and the position to ask after next
    (the last record's, or the position asked after when there is none)."""

    records: list[ChangeRecord]
    next: int

    def to_json(self) -> dict[str, Any]:
        return {"records": [r.to_json() for r in self.records], "next": self.next}


class ChangeFeed:
    """The feed's table on one store's engine."""

    def __init__(self, engine: Engine, channel: str | None = None) -> None:
        """`channel`: on PostgreSQL, where each write of records is announced (`NOTIFY`,
        sent when the write commits) to the followers listening."""
        self.engine = engine
        self.channel = channel
        self.postgresql = engine.dialect.name == "postgresql"
        self.metadata = MetaData()
        self.t = changes_table(self.metadata)
        self.meta = Table(
            CHANGES_META_TABLE,
            self.metadata,
            Column("name", String(64), primary_key=True),
            Column("value", BigInteger, nullable=False),
        )
        create_all(engine, self.metadata)

    def pruned_upto(self, c: Connection | None = None) -> int:
        """The highest position pruned (0: none)."""
        if c is None:
            with reading(self.engine) as c2:
                return self.pruned_upto(c2)
        q = select(self.meta.c.value).where(self.meta.c.name == _PRUNED)
        value = c.execute(q).scalar_one_or_none()
        return 0 if value is None else int(value)

    def prune(self, before: datetime) -> tuple[int, int]:
        """Delete the records recorded before `before`, from the first position on up to
        the first record recorded at or after it (a prefix: positions stay without holes
        for a consumer). (records deleted, the highest position now pruned)."""
        t = self.t
        cut = format_time(before)
        with self.engine.begin() as c:
            if self.postgresql:
                c.exec_driver_sql(f"LOCK TABLE {CHANGES_TABLE} IN EXCLUSIVE MODE")
            keep = c.execute(
                select(func.min(t.c.first_position)).where(
                    (t.c.recorded_at >= cut) | (t.c.recorded_at.is_(None))
                )
            ).scalar_one_or_none()
            top = keep - 1 if keep is not None else self._max(c)
            done = self.pruned_upto(c)
            if top <= done:
                return 0, done
            gone = c.execute(
                select(
                    func.coalesce(func.sum(t.c.last_position - t.c.first_position + 1), 0)
                ).where(t.c.last_position <= top)
            ).scalar_one()
            c.execute(t.delete().where(t.c.last_position <= top))
            c.execute(self.meta.delete().where(self.meta.c.name == _PRUNED))
            c.execute(self.meta.insert().values(name=_PRUNED, value=top))
            return int(gone), int(top)

    def _max(self, c: Connection) -> int:
        q = select(func.coalesce(func.max(self.t.c.last_position), 0))
        return int(c.execute(q).scalar_one())

    def insert(self, c: Connection, records: Sequence[ChangeRecord]) -> int:
        """Insert `records`, numbered on from the highest position, in the transaction of
        `c` (see the module's docstring); the last position given, or 0."""
        if not records:
            return 0
        if self.postgresql:
            c.exec_driver_sql(f"LOCK TABLE {CHANGES_TABLE} IN EXCLUSIVE MODE")
        top = int(max(self._max(c), self.pruned_upto(c)))
        insert_rows(c, self.t, rows_of(records, top + 1))
        last = top + len(records)
        if self.postgresql and self.channel is not None:
            driver(c).execute("SELECT pg_notify(%s, %s)", (self.channel, str(last)))
        return last

    def last(self) -> int:
        """The highest position written (0: none), pruned ones included."""
        with reading(self.engine) as c:
            return max(self._max(c), self.pruned_upto(c))

    def page(
        self,
        after: int,
        customer: str | None = None,
        paths: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> Page:
        """Records after position `after` of `customer` (None: all) at paths matching one of
        the globs `paths` (None: all), at most `limit`. With globs, the rows are read in
        chunks and filtered here; `next` is the last position looked at, so a filter that
        matches little still moves the consumer on."""
        t = self.t
        out: list[ChangeRecord] = []
        position = after
        chunk = max(limit, 1000) if paths else limit
        with reading(self.engine) as c:
            while len(out) < limit:
                q = select(t).where(t.c.last_position > position)
                if customer is not None:
                    q = q.where(t.c.customer_id == customer)
                rows = c.execute(q.order_by(t.c.last_position).limit(chunk)).all()
                for row in rows:
                    for r in records_of(row):
                        if r.position <= position:
                            continue  # a row that the last page ended in
                        position = r.position
                        if paths and not any(fnmatchcase(r.path, g) for g in paths):
                            continue
                        out.append(r)
                        if len(out) >= limit:
                            break
                    if len(out) >= limit:
                        break
                if len(rows) < chunk:
                    break
        return Page(out, position)
