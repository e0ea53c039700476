"""Baseline: the tables beside the events as the release before migrations made them.

They were made on first use, each by its own store, so a store of that release holds some
of them; this revision makes the ones it lacks and leaves the others as they are (their
rows untouched). From here on every change of their layout is a revision of its own.

Revision ID: 0001
Revises: (none)"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables(m: sa.MetaData) -> None:
    """The layout of 0001, frozen here: later changes go in later revisions, never here."""
    sa.Table(
        "custate_rejects",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("field", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("activity_id", sa.Text, index=True),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("stored", sa.Text),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("source", "location", "digest", name="custate_rejects_once"),
    )
    sa.Table(
        "custate_pull_cursors",
        m,
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("last_activity_id", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "custate_pull_listings",
        m,
        sa.Column("listing", sa.Text, primary_key=True),
        sa.Column("cursor", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "custate_pull_queue",
        m,
        sa.Column("listing", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "custate_changes",
        m,
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("before", sa.Text, nullable=False),
        sa.Column("after", sa.Text, nullable=False),
        sa.Column("activity_id", sa.String(255), nullable=False),
        sa.Column("effective_at", sa.String(32), nullable=False),
        sa.Column("until", sa.String(32), nullable=True),
        sa.Column("recorded_at", sa.String(32), nullable=True),
        sa.Column("correction", sa.Boolean, nullable=False),
        sa.Column("cause", sa.String(16), nullable=False),
        sa.Index("ix_custate_changes_customer", "customer_id", "position"),
    )
    sa.Table(
        "custate_changes_meta",
        m,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "custate_readmodel",
        m,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    sa.Table(
        "custate_forward_cursors",
        m,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "custate_forward_dead",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("first", sa.BigInteger, nullable=False),
        sa.Column("last", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )


def upgrade() -> None:
    m = sa.MetaData()
    _tables(m)
    # checkfirst: a table the store already has (with its rows) is left as it is
    m.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    raise NotImplementedError("custate's migrations go forward only")
