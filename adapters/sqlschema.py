"""Creating custate's own tables beside the events, safely when processes race."""

from __future__ import annotations

import random
import time
from typing import Any

from sqlalchemy import Engine, MetaData, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert


def create_all(engine: Engine, metadata: MetaData, attempts: int = 5) -> None:
    """`create_all`, retried: two processes opening one new store race between the check
    and the CREATE (PostgreSQL's catalog says so even for IF NOT EXISTS); a second look
    finds what the other one made, and a random pause keeps them from colliding again."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.01, 0.1))


def insert_or_ignore(engine: Engine, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING, in the engine's dialect."""
    make: Any = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    stmt: Insert = make(table).on_conflict_do_nothing()
    return stmt
