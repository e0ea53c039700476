"""Where each customer's pull stands: the id of the last activity pulled and stored
(`custate_pull_cursors`, beside the events); and where each backfill's customer listing
stands (`custate_pull_listings`) with the customers it listed and did not finish yet
(`custate_pull_queue`). The tables are made on first use, so a store that never pulled has
none."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Engine, MetaData, Table, Text, delete, select

from custate.adapters.sqlschema import create_all

__all__ = ["PullCursors", "PullListings", "cursors_table"]


def cursors_table(metadata: MetaData) -> Table:
    return Table(
        "custate_pull_cursors",
        metadata,
        Column("customer_id", Text, primary_key=True),
        Column("last_activity_id", Text, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )


class PullCursors:
    """The pull cursors of one store: `get` a customer's, `set` it after a page committed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.metadata = MetaData()
        self.table = cursors_table(self.metadata)
        create_all(engine, self.metadata)

    def get(self, customer_id: str) -> str | None:
        t = self.table
        with self.engine.connect() as c:
            row = c.execute(
                select(t.c.last_activity_id).where(t.c.customer_id == customer_id)
            ).first()
        return None if row is None else str(row[0])

    def set(self, customer_id: str, activity_id: str) -> None:
        t = self.table
        now = datetime.now(UTC)
        with self.engine.begin() as c:
            n = c.execute(
                t.update()
                .where(t.c.customer_id == customer_id)
                .values(last_activity_id=activity_id, updated_at=now)
            ).rowcount
            if not n:
                c.execute(
                    t.insert().values(
                        customer_id=customer_id, last_activity_id=activity_id, updated_at=now
                    )
                )


class PullListings:
    """The backfill listings of one store. A listing (named by its key) has a cursor (JSON
    text, the client's `ListingCursor`) and a queue of the customers it listed that are not
    done: `pending` (not finished) or `failed` (with the error). A listed page's customers
    and the cursor past them are stored in one transaction, so a kill between pages loses
    nothing and lists nothing twice."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.metadata = MetaData()
        self.listings = Table(
            "custate_pull_listings",
            self.metadata,
            Column("listing", Text, primary_key=True),
            Column("cursor", Text, nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False),
        )
        self.queue = Table(
            "custate_pull_queue",
            self.metadata,
            Column("listing", Text, primary_key=True),
            Column("customer_id", Text, primary_key=True),
            Column("state", Text, nullable=False),  # pending | failed
            Column("error", Text, nullable=True),
            Column("updated_at", DateTime(timezone=True), nullable=False),
        )
        create_all(engine, self.metadata)

    def cursor(self, listing: str) -> str | None:
        t = self.listings
        with self.engine.connect() as c:
            row = c.execute(select(t.c.cursor).where(t.c.listing == listing)).first()
        return None if row is None else str(row[0])

    def unfinished(self, listing: str) -> list[tuple[str, str, str | None]]:
        """(customer id, state, error) of every customer listed and not done, in id order."""
        q = self.queue
        with self.engine.connect() as c:
            rows = c.execute(
                select(q.c.customer_id, q.c.state, q.c.error)
                .where(q.c.listing == listing)
                .order_by(q.c.customer_id)
            ).all()
        return [(str(r[0]), str(r[1]), r[2]) for r in rows]

    def listed(self, listing: str, customer_ids: list[str], cursor: str) -> None:
        """Queue a page's customers (pending) and store the cursor past them, at once."""
        now = datetime.now(UTC)
        q, t = self.queue, self.listings
        with self.engine.begin() as c:
            have = (
                {
                    str(r[0])
                    for r in c.execute(
                        select(q.c.customer_id).where(
                            q.c.listing == listing, q.c.customer_id.in_(customer_ids)
                        )
                    )
                }
                if customer_ids
                else set()
            )
            fresh = [i for i in dict.fromkeys(customer_ids) if i not in have]
            if fresh:
                c.execute(
                    q.insert(),
                    [
                        {
                            "listing": listing,
                            "customer_id": i,
                            "state": "pending",
                            "error": None,
                            "updated_at": now,
                        }
                        for i in fresh
                    ],
                )
            n = c.execute(
                t.update().where(t.c.listing == listing).values(cursor=cursor, updated_at=now)
            ).rowcount
            if not n:
                c.execute(t.insert().values(listing=listing, cursor=cursor, updated_at=now))

    def finished(self, listing: str, customer_id: str, error: str | None = None) -> None:
        """A customer is done (dropped from the queue) or failed (kept, with the error)."""
        q = self.queue
        where = (q.c.listing == listing) & (q.c.customer_id == customer_id)
        with self.engine.begin() as c:
            if error is None:
                c.execute(delete(q).where(where))
            else:
                c.execute(
                    q.update()
                    .where(where)
                    .values(state="failed", error=error, updated_at=datetime.now(UTC))
                )

    def forget(self, listing: str) -> None:
        """Start this listing over (`--restart`); the activity cursors stay."""
        with self.engine.begin() as c:
            c.execute(delete(self.listings).where(self.listings.c.listing == listing))
            c.execute(delete(self.queue).where(self.queue.c.listing == listing))
