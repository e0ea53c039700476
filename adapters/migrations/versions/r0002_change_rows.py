"""The change feed keeps one row per activity, holding that activity's records.

Revision 0001's `custate_changes` held a row per record. Each becomes a row of the new
layout holding that one record, at its position (`first_position` = `last_position`), so
every position, and so every consumer's and forwarder's cursor, stays valid; the rows that
catch-ups write from now on hold an activity's records each (`adapters.readmodel.feed`).
A table that already has the new layout (a store of the release before migrations, made
by this code and stamped by none) is left as it is.

Revision ID: 0002
Revises: 0001"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from custate.adapters.migrations.versions import r0001_baseline

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_NEW = "custate_changes_0002"
_INDEX = "ix_custate_changes_customer"
_CHUNK = 5000


def _layout(m: sa.MetaData, name: str) -> sa.Table:
    """The layout of 0002, frozen here: later changes go in later revisions."""
    return sa.Table(
        name,
        m,
        sa.Column("last_position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("first_position", sa.BigInteger, nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("activity_id", sa.String(255), nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=True),
        sa.Column("correction", sa.Boolean, nullable=False),
        sa.Column("cause", sa.String(16), nullable=False),
        sa.Column("effective_at", sa.String(32), nullable=False),
        sa.Column("records", sa.Text, nullable=False),
    )


def _record(r: sa.Row[Any]) -> list[Any]:
    """A record of the old layout as an element of a row's `records`: its own times only
    when it has an end (the row's `effective_at` is its own)."""
    out = [r.path, r.op, orjson.loads(r.before), orjson.loads(r.after)]
    return out if r.until is None else [*out, r.effective_at, r.until]


def upgrade() -> None:
    c = op.get_bind()
    columns = {col["name"] for col in sa.inspect(c).get_columns("custate_changes")}
    if "records" in columns:
        return
    new = _layout(sa.MetaData(), _NEW)
    new.create(c)
    m = sa.MetaData()
    r0001_baseline._tables(m)  # the layout it converts, as 0001 froze it
    old = m.tables["custate_changes"]
    after = 0
    while True:
        rows = c.execute(
            sa.select(old).where(old.c.position > after).order_by(old.c.position).limit(_CHUNK)
        ).all()
        if not rows:
            break
        c.execute(
            new.insert(),
            [
                {
                    "last_position": r.position,
                    "first_position": r.position,
                    "customer_id": r.customer_id,
                    "activity_id": r.activity_id,
                    "recorded_at": r.recorded_at,
                    "correction": bool(r.correction),
                    "cause": r.cause,
                    "effective_at": r.effective_at,
                    "records": orjson.dumps([_record(r)]).decode(),
                }
                for r in rows
            ],
        )
        after = rows[-1].position
    op.drop_table("custate_changes")
    op.rename_table(_NEW, "custate_changes")
    if c.dialect.name == "postgresql":
        op.execute(f"ALTER INDEX {_NEW}_pkey RENAME TO custate_changes_pkey")
    op.create_index(_INDEX, "custate_changes", ["customer_id", "last_position"])


def downgrade() -> None:
    raise NotImplementedError("custate's migrations go forward only")
