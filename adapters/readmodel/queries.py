"""Questions answered from the read model's rows and index tables, without folding: who
matches the filters of a customers query, how many do, who has balance-continuity gaps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, TypedDict

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    Integer,
    MetaData,
    Select,
    String,
    Text,
    bindparam,
    func,
    select,
)

from custate.adapters.codecs import paged as paged_codec
from custate.adapters.readmodel.tables import Tables, meta_table
from custate.adapters.sqlschema import reading
from custate.domain.state import Gap

__all__ = ["CustomerFilters", "CustomerQuery", "CustomerRow", "GenerationMoved", "Queries"]


class CustomerFilters(TypedDict, total=False):
    """The filters of a customers query, as keyword arguments."""

    segment: str | None
    tier: str | None
    campaign: str | None
    min_points: int | None
    max_points: int | None
    status: str | None
    order_status: str | None


@dataclass(frozen=True, slots=True)
class CustomerQuery:
    """Who to list or count: every filter given must hold. With `campaign`, `tier` and the
    points bounds look at that loyalty campaign only, and `campaign` alone means a tier or a
    loyalty card in it."""

    segment: str | None = None
    tier: str | None = None
    campaign: str | None = None
    min_points: int | None = None
    max_points: int | None = None
    status: str | None = None
    order_status: str | None = None


class CustomerRow(NamedTuple):
    """A customer as a customers query lists it (a named tuple: a page of a thousand is
    built at the cost of a thousand tuples)."""

    customer_id: str
    status: str
    points: int
    activity_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "status": self.status,
            "points": self.points,
            "activity_count": self.activity_count,
        }


class GenerationMoved(Exception):
    """A query of the generation that was active found nothing, and another generation is
    active now: a rebuild swapped it in; ask the new one."""


# The shape of a query: which filters are given, and whether `after` and `limit` are.
_Shape = tuple[bool, ...]
_FILTERS = ("segment", "tier", "campaign", "min_points", "max_points", "status", "order_status")


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A query's SQL for the driver, compiled once per shape, and its parameters' order."""

    sql: str
    positional: tuple[str, ...] | None  # names in placeholder order; None: named (pyformat)
    defaults: dict[str, Any]

    def params(self, values: dict[str, Any]) -> Any:
        p = {**self.defaults, **values}
        return p if self.positional is None else tuple(p[k] for k in self.positional)


class Queries:
    """The questions, on one generation's tables. With `guarded`, the customers queries
    check in their own statement (no query more) that this generation is the active one:
    a page holds the condition, and one that finds nothing asks whether a rebuild swapped
    another in; a count reads the active generation beside it. Either raises
    `GenerationMoved` rather than answer from a retired generation's tables."""

    def __init__(self, engine: Engine, t: Tables, guarded: bool = False) -> None:
        self.engine = engine
        self.t = t
        self.guarded = guarded
        self._meta = meta_table(MetaData())
        self._compiled: dict[tuple[str, _Shape], _Compiled] = {}

    def last_key(self, customer_id: str) -> str | None:
        """The fold key of the last activity folded into the customer's current state;
        None for a customer the read model has not seen."""
        cu = self.t.customers
        with reading(self.engine) as c:
            row = c.execute(select(cu.c.last_key).where(cu.c.customer_id == customer_id)).first()
        return None if row is None else str(row[0])

    def customers(
        self, q: CustomerQuery, after: str | None = None, limit: int | None = None
    ) -> list[CustomerRow]:
        """Customers matching every filter of `q`, in customer id order, from the indexes:
        a page of at most `limit` after the id `after` (keyset paging: a page costs the
        same wherever it starts). One statement through the driver, compiled once per
        shape of query; rows are built as tuples (`CustomerRow`), not through SQLAlchemy."""
        values = self._values(q)
        shape = (*(v is not None for v in values.values()), after is not None, limit is not None)
        compiled = self._compiled.get(("customers", shape))
        if compiled is None:
            compiled = self._compile(("customers", shape), self._customers_query(q, after, limit))
        values["after"] = after
        values["limit"] = limit
        rows = self._run(compiled, values)
        if not rows:
            self._check_active()
        new = tuple.__new__
        return [new(CustomerRow, r) for r in rows]

    def count(self, q: CustomerQuery) -> int:
        """How many customers match every filter of `q`."""
        values = self._values(q)
        shape = tuple(v is not None for v in values.values())
        compiled = self._compiled.get(("count", shape))
        if compiled is None:
            compiled = self._compile(("count", shape), self._count_query(q))
        row = self._run(compiled, values)[0]
        if self.guarded and row[1] != str(self.t.generation):
            raise GenerationMoved(f"generation {self.t.generation} is no longer active")
        return int(row[0])

    def _values(self, q: CustomerQuery) -> dict[str, Any]:
        return {name: getattr(q, name) for name in _FILTERS}

    def _run(self, compiled: _Compiled, values: dict[str, Any]) -> list[Any]:
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                cur.execute(compiled.sql, compiled.params(values))
                return list(cur.fetchall())
            finally:
                cur.close()
        finally:
            raw.close()

    def _compile(self, key: tuple[str, _Shape], query: Select[Any]) -> _Compiled:
        if self.guarded:
            meta = self._meta
            active = select(meta.c.value).where(meta.c.name == "active").scalar_subquery()
            if key[0] == "count":
                # A count tells the active generation beside it (a condition in the
                # WHERE clause cost SQLite a test per index row counted).
                query = query.add_columns(active)
            else:
                query = query.where(active == str(self.t.generation))
        c = query.compile(dialect=self.engine.dialect)
        positional = tuple(c.positiontup) if c.positiontup is not None else None
        out = _Compiled(c.string, positional, dict(c.params))
        self._compiled[key] = out
        return out

    def _check_active(self) -> None:
        """Raise `GenerationMoved` if a guarded query's generation is no longer active."""
        if not self.guarded:
            return
        meta = self._meta
        with reading(self.engine) as c:
            row = c.execute(select(meta.c.value).where(meta.c.name == "active")).first()
        if row is not None and int(row[0]) != self.t.generation:
            raise GenerationMoved(f"generation {self.t.generation} is no longer active")

    def _customers_query(
        self, q: CustomerQuery, after: str | None, limit: int | None
    ) -> Select[Any]:
        """The customers query of `q`'s shape, with its values as named parameters."""
        t = self.t
        cu = t.customers
        query: Select[Any] = select(cu.c.customer_id, cu.c.status, cu.c.points, cu.c.activity_count)
        # A segment drives the query from its index, which is in customer id order: a page
        # of a large segment reads a page of index rows, not every member first.
        order = cu.c.customer_id
        if q.segment is not None:
            sg = t.segments
            query = query.join(
                sg,
                (sg.c.customer_id == cu.c.customer_id)
                & (sg.c.segment_id == bindparam("segment", type_=Text)),
            )
            order = sg.c.customer_id
        query = self._where(query, replace(q, segment=None))
        if after is not None:
            query = query.where(order > bindparam("after", type_=Text))
        query = query.order_by(order)
        if limit is not None:
            query = query.limit(bindparam("limit", type_=Integer))
        return query

    def _count_query(self, q: CustomerQuery) -> Select[Any]:
        t = self.t
        if q == CustomerQuery(segment=q.segment) and q.segment is not None:
            # Every membership row is a customer's: count the index alone.
            return select(func.count()).where(
                t.segments.c.segment_id == bindparam("segment", type_=Text)
            )
        return self._where(select(func.count()).select_from(t.customers), q)

    def _where(self, query: Select[Any], q: CustomerQuery) -> Select[Any]:
        """`query` over `customers`, narrowed by each filter `q` gives, as a named parameter
        (the values are bound when it runs)."""
        t = self.t
        cu = t.customers
        points: ColumnElement[Any] = cu.c.points
        # Membership as `customer_id IN (SELECT ... WHERE <indexed column> = ?)`: the index
        # finds the few members; a correlated EXISTS made SQLite probe every customer.
        if q.segment is not None:
            query = query.where(
                cu.c.customer_id.in_(
                    select(t.segments.c.customer_id).where(
                        t.segments.c.segment_id == bindparam("segment", type_=Text)
                    )
                )
            )
        if q.tier is not None or q.campaign is not None:
            cond = [t.tiers.c.customer_id == cu.c.customer_id]
            if q.tier is not None:
                cond.append(t.tiers.c.tier_id == bindparam("tier", type_=Text))
            if q.campaign is not None:
                cond.append(t.tiers.c.campaign_id == bindparam("campaign", type_=Text))
            in_tiers = select(t.tiers.c.customer_id).where(*cond).exists()
            if q.tier is None and q.campaign is not None:
                in_cards = (
                    select(t.cards.c.customer_id)
                    .where(
                        t.cards.c.customer_id == cu.c.customer_id,
                        t.cards.c.campaign_id == bindparam("campaign", type_=Text),
                    )
                    .exists()
                )
                query = query.where(in_tiers | in_cards)
            else:
                query = query.where(in_tiers)
        if q.campaign is not None and (q.min_points is not None or q.max_points is not None):
            points = (
                select(func.coalesce(func.sum(t.cards.c.balance), 0))
                .where(
                    t.cards.c.customer_id == cu.c.customer_id,
                    t.cards.c.campaign_id == bindparam("campaign", type_=Text),
                )
                .scalar_subquery()
            )
        if q.min_points is not None:
            query = query.where(points >= bindparam("min_points", type_=BigInteger))
        if q.max_points is not None:
            query = query.where(points <= bindparam("max_points", type_=BigInteger))
        if q.status is not None:
            query = query.where(cu.c.status == bindparam("status", type_=String))
        if q.order_status is not None:
            query = query.where(
                cu.c.customer_id.in_(
                    select(t.orders.c.customer_id).where(
                        t.orders.c.status == bindparam("order_status", type_=String)
                    )
                )
            )
        return query

    def gaps(self) -> Iterator[tuple[str, list[Gap]]]:
        """Each customer with balance-continuity gaps, and the gaps, in customer id order,
        from the stored states (no fold). A state with no gaps has `"gaps":[]` in its
        stored form; only the others are parsed."""
        cu = self.t.customers
        q = (
            select(cu.c.customer_id, cu.c.state)
            .where(cu.c.state.like('%"gaps":[[%') | cu.c.state.like('%"gaps":[{%'))
            .order_by(cu.c.customer_id)
        )
        with reading(self.engine) as c:
            for cid, state in c.execute(q):
                gaps = paged_codec.load_row(state)[0].gaps
                if gaps:
                    yield cid, gaps

    def all_customer_ids(self) -> Iterator[str]:
        """Every customer with a state, in customer id order."""
        cu = self.t.customers
        with reading(self.engine) as c:
            yield from (
                r[0] for r in c.execute(select(cu.c.customer_id).order_by(cu.c.customer_id))
            )
