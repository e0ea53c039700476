"""Stable SQL views over the active generation, for SQL and BI tools.

Every rebuild builds a new generation of tables (`custate_rm1_customers`, then
`custate_rm2_customers`, ...); a query written against one of them breaks at the next swap.
The views keep one name each and are re-pointed in the transaction that makes a new
generation the active one (`Generations.activate`), so a query on them sees the old
generation or the new one, never neither. Their columns are documented in README.md
(Querying with SQL) and are a contract: a column is added, never renamed or dropped,
without a release note."""

from __future__ import annotations

from sqlalchemy import Connection

from custate.adapters.readmodel.tables import tables

__all__ = ["VIEWS", "point_views"]

# view name -> (the generation's table, after `custate_rmN_`; the columns it shows)
VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "custate_customers": (
        "customers",
        ("customer_id", "status", "points", "activity_count", "state"),
    ),
    "custate_segments": ("segments", ("customer_id", "segment_id")),
    "custate_tiers": ("tiers", ("customer_id", "campaign_id", "tier_id")),
    "custate_cards": (
        "cards",
        ("customer_id", "card_id", "campaign_id", "balance", "pending_points"),
    ),
    "custate_gift_cards": ("gift_cards", ("customer_id", "card_id", "campaign_id", "balance")),
    "custate_orders": ("orders", ("customer_id", "order_id", "status")),
}


def point_views(c: Connection, generation: int) -> None:
    """(Re)create every view over the tables of `generation`, in the caller's transaction
    (DDL is transactional on both backends)."""
    t = tables(generation)
    names = {
        "customers": t.customers.name,
        "segments": t.segments.name,
        "tiers": t.tiers.name,
        "cards": t.cards.name,
        "gift_cards": t.gift_cards.name,
        "orders": t.orders.name,
    }
    for view, (table, columns) in VIEWS.items():
        c.exec_driver_sql(f"DROP VIEW IF EXISTS {view}")
        c.exec_driver_sql(f"CREATE VIEW {view} AS SELECT {', '.join(columns)} FROM {names[table]}")
