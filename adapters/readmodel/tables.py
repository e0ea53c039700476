"""The read model's tables (SQLAlchemy Core), one set per generation for blue/green rebuilds.

`customers` holds each customer's current state as JSON plus the columns queries filter
on; the other tables index what "who is in segment X / holds tier Gold / has over N points"
asks, so those questions never fold. `keys` maps each projected activity's fold key to its
stream version (point in time and late activities read only the tail they need) and holds
its fold input (`adapters.codecs.foldinput`: what audits fold, without reading the events), and
`checkpoints` holds states keyed by fold key. `pages` holds, in pages of entries
(`adapters.codecs.paged.dump_page`), the large maps (orders, vouchers, reward redemptions) that
`customers.state` leaves out: those of long histories (see `readmodel.PAGED_FROM`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["FOLD_KEY", "INPUT_COLUMN", "META_TABLE", "Tables", "meta_table", "tables"]

META_TABLE = "custate_readmodel"
INPUT_COLUMN = "input"


def meta_table(metadata: MetaData) -> Table:
    """The read model's own settings (`name` -> `value`): which generation is active, and
    which one a rebuild is building."""
    return Table(
        META_TABLE,
        metadata,
        Column("name", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )


@dataclass(frozen=True)
class Tables:
    """One generation's tables."""

    generation: int
    metadata: MetaData
    tracking: Table
    customers: Table
    keys: Table
    checkpoints: Table
    segments: Table
    tiers: Table
    cards: Table
    gift_cards: Table
    orders: Table
    pages: Table

    @property
    def per_customer(self) -> tuple[Table, ...]:
        """The tables holding rows of each customer (all but tracking), keyed by
        `customer_id`."""
        return (
            self.customers,
            self.keys,
            self.checkpoints,
            self.segments,
            self.tiers,
            self.cards,
            self.gift_cards,
            self.orders,
            self.pages,
        )


# Fold keys compare as bytes: the fold's order is Python's string order. A PostgreSQL
# database with a linguistic collation (en_US, ICU) would sort "|~" (the as-of bound)
# before "|1|..." and "B" after "a", and give wrong points in time.
FOLD_KEY = Text().with_variant(Text(collation="C"), "postgresql")


def _customer() -> Column[str]:
    return Column("customer_id", Text, primary_key=True)


def tables(generation: int) -> Tables:
    """The tables of `generation` (not created: see `sqlschema.create_all`)."""
    m = MetaData()
    p = f"custate_rm{generation}_"
    return Tables(
        generation=generation,
        metadata=m,
        tracking=Table(
            p + "tracking",
            m,
            Column("application_name", String(64), primary_key=True),
            Column("notification_id", BigInteger, nullable=False),
        ),
        customers=Table(
            p + "customers",
            m,
            _customer(),
            Column("status", String(16), nullable=False, index=True),
            Column("points", BigInteger, nullable=False, index=True),
            Column("activity_count", Integer, nullable=False),
            Column("last_key", FOLD_KEY, nullable=False),
            Column("last_version", Integer, nullable=False),
            Column("state", Text, nullable=False),
        ),
        keys=Table(
            p + "keys",
            m,
            _customer(),
            Column("key", FOLD_KEY, primary_key=True),
            Column("version", Integer, nullable=False),
            # Null in rows written before it existed (and where msgpack cannot hold the
            # activity): those are read from the event store.
            Column(INPUT_COLUMN, LargeBinary),
        ),
        checkpoints=Table(
            p + "checkpoints",
            m,
            _customer(),
            Column("key", FOLD_KEY, primary_key=True),
            Column("state", Text, nullable=False),
        ),
        segments=Table(
            p + "segments",
            m,
            Column("segment_id", Text, primary_key=True),
            _customer(),
            Index(p + "segments_customer", "customer_id"),
        ),
        tiers=Table(
            p + "tiers",
            m,
            _customer(),
            Column("campaign_id", Text, primary_key=True),
            Column("tier_id", Text),
            Index(p + "tiers_tier", "tier_id", "campaign_id"),
            Index(p + "tiers_campaign", "campaign_id", "tier_id"),
        ),
        cards=Table(
            p + "cards",
            m,
            _customer(),
            Column("card_id", Text, primary_key=True),
            Column("campaign_id", Text, index=True),
            Column("balance", BigInteger),
            Column("pending_points", BigInteger, nullable=False),
        ),
        gift_cards=Table(
            p + "gift_cards",
            m,
            _customer(),
            Column("card_id", Text, primary_key=True),
            Column("campaign_id", Text, index=True),
            Column("balance", BigInteger),
        ),
        orders=Table(
            p + "orders",
            m,
            _customer(),
            Column("order_id", Text, primary_key=True),
            Column("status", String(32)),
            Index(p + "orders_status", "status", "customer_id"),
        ),
        pages=Table(
            p + "pages",
            m,
            _customer(),
            Column("field", String(32), primary_key=True),
            Column("page", Integer, primary_key=True, autoincrement=False),
            Column("entries", Text, nullable=False),
        ),
    )
