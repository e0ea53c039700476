"""Rejected records, kept where a user can list, fix and re-submit them.

Nothing is lost: a record that failed to parse or validate, or that conflicts with a
stored activity, is kept with its source, location, reason and raw text. The same bad
record seen again (a rerun after a crash) is kept once. A reject whose activity later goes
in cleanly is marked resolved."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    update,
)

from custate.adapters.readers import RAW_KEEP_BYTES, BadRecord
from custate.adapters.sqlschema import create_all, insert_or_ignore
from custate.domain.activity import MAX_ID_BYTES

_log = logging.getLogger("custate.rejects")


def rejects_table(metadata: MetaData) -> Table:
    return Table(
        "custate_rejects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("kind", String(16), nullable=False),  # invalid | conflict
        Column("source", Text, nullable=False),
        Column("location", Text, nullable=False),
        Column("field", Text, nullable=False),
        Column("reason", Text, nullable=False),
        Column("activity_id", Text, index=True),
        Column("raw", Text, nullable=False),
        Column("stored", Text),  # a conflict: the version the store keeps
        Column("digest", String(64), nullable=False),
        Column("rejected_at", DateTime(timezone=True), nullable=False),
        Column("resolved_at", DateTime(timezone=True)),
        UniqueConstraint("source", "location", "digest", name="custate_rejects_once"),
    )


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that was not stored as an activity: `invalid` (it is not one) or
    `conflict` (its id is stored with other content). `raw` is the record as received,
    `activity_id` the id it claims (to mark it resolved when that activity goes in), and
    `stored`, for a conflict, the version the store keeps. Built by the constructors below,
    one for each way a record is turned away."""

    kind: str
    source: str
    location: str
    field: str
    reason: str
    raw: str
    activity_id: str | None = None
    stored: str | None = None

    @classmethod
    def invalid(
        cls,
        source: str,
        location: str,
        field: str,
        reason: str,
        raw: str,
        activity_id: str | None = None,
    ) -> Reject:
        """Input that holds no valid activity at `field`, for `reason`."""
        return cls("invalid", source, location, field, reason, raw, activity_id)

    @classmethod
    def bad_record(cls, bad: BadRecord) -> Reject:
        """A record the readers could not take; the id it claims, if it claims one, is
        kept to resolve it later."""
        return cls.invalid(
            bad.source, bad.location, bad.field, bad.message, bad.raw, activity_id_of(bad.raw)
        )

    @classmethod
    def not_json(cls, source: str, location: str, text: str, error: str) -> Reject:
        """A body that does not parse as JSON (`error` says where): its first
        `RAW_KEEP_BYTES` characters are kept."""
        return cls.invalid(
            source,
            location,
            "body",
            f"malformed JSON: {error}",
            text[:RAW_KEEP_BYTES],
            activity_id_of(text),
        )

    @classmethod
    def conflict(
        cls,
        source: str,
        location: str,
        activity_id: str,
        record: dict[str, Any],
        stored: dict[str, Any],
    ) -> Reject:
        """An activity whose id is stored with other content: the stored one is kept."""
        return cls(
            "conflict",
            source,
            location,
            "id",
            f"conflict: activity {activity_id} is stored with different content; "
            "the stored version is kept",
            orjson.dumps(record).decode(),
            activity_id,
            orjson.dumps(stored).decode(),
        )

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Reject:
        """A reject as `RejectStore` keeps it (a row of `custate_rejects`)."""
        return cls(
            row["kind"],
            row["source"],
            row["location"],
            row["field"],
            row["reason"],
            row["raw"],
            row["activity_id"],
            row["stored"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "location": self.location,
            "field": self.field,
            "reason": self.reason,
            "activity_id": self.activity_id,
            "raw": self.raw,
            "stored": self.stored,
        }


@dataclass(frozen=True, slots=True)
class StoredReject:
    id: int
    reject: Reject
    rejected_at: datetime
    resolved_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.reject.to_json(),
            "rejected_at": self.rejected_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
        }


def activity_id_of(raw: str) -> str | None:
    """The id a raw record claims, if it is readable at all (to resolve it later)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict):
        event = value.get("event")
        if isinstance(event, dict) and isinstance(event.get("id"), str):
            return str(event["id"])
        if isinstance(value.get("id"), str):
            return str(value["id"])
    return None


def _logged(r: Reject) -> None:
    """The log line of one record kept as a reject: where it was, its id, field, reason."""
    _log.info(
        "rejected %s record at %s (%s)%s: %s: %s",
        r.kind,
        r.location,
        r.source,
        f", activity {r.activity_id}" if r.activity_id else "",
        r.field,
        r.reason,
        extra={
            "kind": r.kind,
            "source": r.source,
            "location": r.location,
            "activity_id": r.activity_id,
            "field": r.field,
            "reason": r.reason,
        },
    )


class RejectStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.metadata = MetaData()
        self.table = rejects_table(self.metadata)
        create_all(engine, self.metadata)

    def add(self, rejects: Iterable[Reject], at: datetime) -> int:
        """Keep `rejects` (a record seen before is kept once); each is logged at INFO on
        `custate.rejects` once written."""
        kept = list(rejects)
        rows = [_row(r, at) for r in kept]
        if not rows:
            return 0
        stmt = insert_or_ignore(self.engine, self.table)
        with self.engine.begin() as c:
            c.execute(stmt, rows)
        if _log.isEnabledFor(logging.INFO):
            for r in kept:
                _logged(r)
        return len(rows)

    def resolve(
        self, activity_ids: Iterable[str], at: datetime, c: Connection | None = None
    ) -> int:
        """Mark the invalid rejects of these activities resolved (they are stored now), in
        the transaction `c` when given (the append's own); how many were."""
        ids = list(activity_ids)
        if not ids:
            return 0
        if c is None:
            with self.engine.begin() as own:
                return self.resolve(ids, at, own)
        t = self.table
        n = 0
        for i in range(0, len(ids), 500):
            res = c.execute(
                update(t)
                .where(t.c.activity_id.in_(ids[i : i + 500]), t.c.resolved_at.is_(None))
                .where(t.c.kind == "invalid")
                .values(resolved_at=at)
            )
            n += res.rowcount or 0
        return n

    def list(self, include_resolved: bool = False) -> Iterator[StoredReject]:
        t = self.table
        q = select(t).order_by(t.c.id)
        if not include_resolved:
            q = q.where(t.c.resolved_at.is_(None))
        with self.engine.connect() as c:
            for row in c.execute(q).mappings():
                yield StoredReject(
                    row["id"],
                    Reject.from_row(row),
                    _utc(row["rejected_at"]),
                    _utc(row["resolved_at"]) if row["resolved_at"] is not None else None,
                )


MAX_WHERE_BYTES = 1024
"""The longest `source` and `location` kept (in UTF-8 bytes): with the digest they key a
unique index, and a PostgreSQL index entry holds about 2,700 bytes."""


def _row(r: Reject, at: datetime) -> dict[str, Any]:
    """A reject as a row any backend holds, whatever the record was: text without NUL or
    lone surrogates (PostgreSQL text cannot hold a NUL), keys short enough to index. Only
    malformed input carries these (JSON writes NUL as an escape), so no fix of it is lost;
    an activity id that could never be stored resolves nothing and is left out."""
    raw = _text(r.raw)
    activity_id = r.activity_id
    if activity_id is not None and (
        _text(activity_id) != activity_id or len(activity_id.encode()) > MAX_ID_BYTES
    ):
        activity_id = None
    return {
        "kind": r.kind,
        "source": _clip(_text(r.source)),
        "location": _clip(_text(r.location)),
        "field": _text(r.field),
        "reason": _text(r.reason),
        "activity_id": activity_id,
        "raw": raw,
        "stored": None if r.stored is None else _text(r.stored),
        "digest": hashlib.sha256(raw.encode()).hexdigest(),
        "rejected_at": at,
    }


def _text(s: str) -> str:
    if s.isascii() and "\x00" not in s:
        return s
    return s.replace("\x00", "\ufffd").encode("utf-8", "backslashreplace").decode()


def _clip(s: str) -> str:
    b = s.encode()
    if len(b) <= MAX_WHERE_BYTES:
        return s
    return b[: MAX_WHERE_BYTES - 3].decode("utf-8", "ignore") + "..."


def _utc(t: datetime) -> datetime:
    """SQLite keeps no zone: the times it hands back are the UTC times that were written."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
