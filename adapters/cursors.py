"""Where each customer's pull stands: the id of the last activity pulled and stored
(`custate_pull_cursors`, beside the events). The table is made on first use, so a store
that never pulled has none."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Engine, MetaData, Table, Text, select

from custate.adapters.sqlschema import create_all

__all__ = ["PullCursors", "cursors_table"]


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
