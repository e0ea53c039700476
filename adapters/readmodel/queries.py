"""Questions answered from the read model's rows and index tables, without folding: who
matches the filters of a customers query, how many do, who has balance-continuity gaps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, TypedDict

from sqlalchemy import ColumnElement, Engine, Select, func, select

from custate.adapters.codecs import paged as paged_codec
from custate.adapters.readmodel.tables import Tables
from custate.domain.state import Gap

__all__ = ["CustomerFilters", "CustomerQuery", "CustomerRow", "Queries"]


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


@dataclass(frozen=True, slots=True)
class CustomerRow:
    """A customer as a customers query lists it."""

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


class Queries:
    """The questions, on one generation's tables."""

    def __init__(self, engine: Engine, t: Tables) -> None:
        self.engine = engine
        self.t = t

    def last_key(self, customer_id: str) -> str | None:
        """The fold key of the last activity folded into the customer's current state;
        None for a customer the read model has not seen."""
        cu = self.t.customers
        with self.engine.connect() as c:
            row = c.execute(select(cu.c.last_key).where(cu.c.customer_id == customer_id)).first()
        return None if row is None else str(row[0])

    def customers(
        self, q: CustomerQuery, after: str | None = None, limit: int | None = None
    ) -> list[CustomerRow]:
        """Customers matching every filter of `q`, in customer id order, from the indexes:
        a page of at most `limit` after the id `after` (keyset paging: a page costs the
        same wherever it starts)."""
        t = self.t
        cu = t.customers
        query: Select[Any] = select(cu.c.customer_id, cu.c.status, cu.c.points, cu.c.activity_count)
        # A segment drives the query from its index, which is in customer id order: a page
        # of a large segment reads a page of index rows, not every member first.
        order = cu.c.customer_id
        if q.segment is not None:
            sg = t.segments
            query = query.join(
                sg, (sg.c.customer_id == cu.c.customer_id) & (sg.c.segment_id == q.segment)
            )
            order = sg.c.customer_id
        query = self._where(query, replace(q, segment=None))
        if after is not None:
            query = query.where(order > after)
        query = query.order_by(order)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as c:
            return [CustomerRow(r[0], r[1], int(r[2]), r[3]) for r in c.execute(query)]

    def count(self, q: CustomerQuery) -> int:
        """How many customers match every filter of `q`."""
        t = self.t
        if q == CustomerQuery(segment=q.segment) and q.segment is not None:
            # Every membership row is a customer's: count the index alone.
            query = select(func.count()).where(t.segments.c.segment_id == q.segment)
        else:
            query = self._where(select(func.count()).select_from(t.customers), q)
        with self.engine.connect() as c:
            return int(c.execute(query).scalar_one())

    def _where(self, query: Select[Any], q: CustomerQuery) -> Select[Any]:
        """`query` over `customers`, narrowed by each filter of `q`."""
        t = self.t
        cu = t.customers
        points: ColumnElement[Any] = cu.c.points
        # Membership as `customer_id IN (SELECT ... WHERE <indexed column> = ?)`: the index
        # finds the few members; a correlated EXISTS made SQLite probe every customer.
        if q.segment is not None:
            query = query.where(
                cu.c.customer_id.in_(
                    select(t.segments.c.customer_id).where(t.segments.c.segment_id == q.segment)
                )
            )
        if q.tier is not None or q.campaign is not None:
            cond = [t.tiers.c.customer_id == cu.c.customer_id]
            if q.tier is not None:
                cond.append(t.tiers.c.tier_id == q.tier)
            if q.campaign is not None:
                cond.append(t.tiers.c.campaign_id == q.campaign)
            in_tiers = select(t.tiers.c.customer_id).where(*cond).exists()
            if q.tier is None and q.campaign is not None:
                in_cards = (
                    select(t.cards.c.customer_id)
                    .where(
                        t.cards.c.customer_id == cu.c.customer_id,
                        t.cards.c.campaign_id == q.campaign,
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
                    t.cards.c.customer_id == cu.c.customer_id, t.cards.c.campaign_id == q.campaign
                )
                .scalar_subquery()
            )
        if q.min_points is not None:
            query = query.where(points >= q.min_points)
        if q.max_points is not None:
            query = query.where(points <= q.max_points)
        if q.status is not None:
            query = query.where(cu.c.status == q.status)
        if q.order_status is not None:
            query = query.where(
                cu.c.customer_id.in_(
                    select(t.orders.c.customer_id).where(t.orders.c.status == q.order_status)
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
        with self.engine.connect() as c:
            for cid, state in c.execute(q):
                gaps = paged_codec.load_row(state)[0].gaps
                if gaps:
                    yield cid, gaps

    def all_customer_ids(self) -> Iterator[str]:
        """Every customer with a state, in customer id order."""
        cu = self.t.customers
        with self.engine.connect() as c:
            yield from (
                r[0] for r in c.execute(select(cu.c.customer_id).order_by(cu.c.customer_id))
            )
