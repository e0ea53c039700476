"""Erasure records (`custate_erasures`) and erasing on the way in.

An erasure record keeps who was erased, when, and by whom when given, and never any of the
erased data. While a customer's record is not lifted, every activity of that customer the
event store appends is scrubbed first (`on_the_way_in`, called by `EventStore` under its
write lock), so a redelivery or a later activity never brings the data back. A lifted
record stays, with when it was lifted; erasing again makes it active again."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    Table,
    Text,
    select,
    update,
)

from custate.adapters.sqlschema import create_all, insert_or_ignore
from custate.domain.erasure import scrub

__all__ = ["ERASURES_TABLE", "Erasure", "ErasureRecords", "scrub_content"]

ERASURES_TABLE = "custate_erasures"


@dataclass(frozen=True, slots=True)
class Erasure:
    """A customer's erasure record: when, by whom (when given), and whether lifted."""

    customer_id: str
    erased_at: datetime
    erased_by: str | None
    lifted_at: datetime | None = None
    lifted_by: str | None = None

    @property
    def active(self) -> bool:
        return self.lifted_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "erased_at": self.erased_at.isoformat(),
            "erased_by": self.erased_by,
            "active": self.active,
            "lifted_at": None if self.lifted_at is None else self.lifted_at.isoformat(),
            "lifted_by": self.lifted_by,
        }


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class ErasureRecords:
    """The erasure records of one store (the table is made on first use)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.metadata = MetaData()
        self.table = Table(
            ERASURES_TABLE,
            self.metadata,
            Column("customer_id", Text, primary_key=True),
            Column("erased_at", DateTime(timezone=True), nullable=False),
            Column("erased_by", Text),
            Column("lifted_at", DateTime(timezone=True)),
            Column("lifted_by", Text),
        )
        create_all(engine, self.metadata)

    def record(self, customer_id: str, at: datetime, by: str | None) -> Erasure:
        """Record the customer's erasure (anew, if it was lifted); an active one is kept as
        it is (erasing again only purges again)."""
        t = self.table
        values = {"erased_at": at, "erased_by": by, "lifted_at": None, "lifted_by": None}
        with self.engine.begin() as c:
            c.execute(insert_or_ignore(self.engine, t).values(customer_id=customer_id, **values))
            c.execute(
                update(t)
                .where(t.c.customer_id == customer_id, t.c.lifted_at.is_not(None))
                .values(**values)
            )
        found = self.get(customer_id)
        assert found is not None
        return found

    def lift(self, customer_id: str, at: datetime, by: str | None) -> Erasure | None:
        """Lift the customer's erasure: its activities are stored as they come again (what
        was erased stays erased). None if the customer has no erasure record."""
        t = self.table
        with self.engine.begin() as c:
            c.execute(
                update(t)
                .where(t.c.customer_id == customer_id, t.c.lifted_at.is_(None))
                .values(lifted_at=at, lifted_by=by)
            )
        return self.get(customer_id)

    def get(self, customer_id: str) -> Erasure | None:
        t = self.table
        with self.engine.connect() as c:
            row = c.execute(select(t).where(t.c.customer_id == customer_id)).first()
        if row is None:
            return None
        return Erasure(
            row.customer_id,
            _utc(row.erased_at) or row.erased_at,
            row.erased_by,
            _utc(row.lifted_at),
            row.lifted_by,
        )

    def all(self) -> list[Erasure]:
        t = self.table
        with self.engine.connect() as c:
            ids = [r[0] for r in c.execute(select(t.c.customer_id).order_by(t.c.customer_id))]
        return [e for e in (self.get(i) for i in ids) if e is not None]

    def active(self, customer_ids: Sequence[str], c: Connection | None = None) -> set[str]:
        """Those of `customer_ids` whose erasure is active: one indexed look (on every
        appended batch, in its transaction `c` when given)."""
        if not customer_ids:
            return set()
        if c is None:
            with self.engine.connect() as own:
                return self.active(customer_ids, own)
        t = self.table
        out: set[str] = set()
        ids = sorted(set(customer_ids))
        for i in range(0, len(ids), 500):
            q = select(t.c.customer_id).where(
                t.c.customer_id.in_(ids[i : i + 500]), t.c.lifted_at.is_(None)
            )
            out.update(r[0] for r in c.execute(q))
        return out

    def on_the_way_in(self, batch: Mapping[str, _E], c: Connection | None = None) -> dict[str, _E]:
        """`batch` (activity id -> encoded activity) with the activities of erased customers
        scrubbed (content and digest), looked up in the transaction `c` when given."""
        erased = self.active([e.customer_id for e in batch.values()], c)
        if not erased:
            return dict(batch)
        out: dict[str, _E] = {}
        for i, e in batch.items():
            if e.customer_id in erased:
                content, sha = scrub_content(e.content, e.customer_id)
                e = replace(e, content=content, sha256=sha)  # type: ignore[type-var]
            out[i] = e
        return out


class _Encoded(Protocol):
    @property
    def customer_id(self) -> str: ...
    @property
    def content(self) -> bytes: ...
    @property
    def sha256(self) -> str: ...


_E = TypeVar("_E", bound=_Encoded)


def scrub_content(
    content: bytes, customer_id: str, values: set[str] | None = None
) -> tuple[bytes, str]:
    """An activity's canonical content (`Activity.content`) with the customer's personal
    data erased (`domain.erasure.scrub`), in canonical form again, and its digest."""
    record = orjson.loads(content)
    record["data"] = scrub(record.get("data"), customer_id, values or ())
    out = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return out, hashlib.sha256(out).hexdigest()
