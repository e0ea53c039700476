"""Creating custate's own tables beside the events, safely when processes race; and
reading from them in as few round trips as the driver allows."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, MetaData, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

T = TypeVar("T")


def retry_creation(
    create: Callable[[], T], races: tuple[type[BaseException], ...], attempts: int = 5
) -> T:
    """`create()`, retried on `races`: processes opening one new store at once race between
    the check and the CREATE (PostgreSQL's catalog says so even for IF NOT EXISTS); a
    second look finds what the other one made, and a random pause keeps two that collided
    from colliding again."""
    for attempt in range(attempts):
        try:
            return create()
        except races:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.01, 0.1))
    raise AssertionError("unreachable")


def create_all(engine: Engine, metadata: MetaData) -> None:
    retry_creation(lambda: metadata.create_all(engine), (DBAPIError,))


def insert_or_ignore(engine: Engine, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING, in the engine's dialect."""
    make: Any = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    stmt: Insert = make(table).on_conflict_do_nothing()
    return stmt


def driver(c: Connection) -> Any:
    """The driver's own connection under `c`, for the hot reads whose result rows cost more
    through SQLAlchemy than the query itself (they skip its statement events; writes do
    not come here). Statements to it use the driver's parameter style."""
    return c.connection.driver_connection


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A pooled connection for reads that need no transaction of their own (one statement,
    or statements that each stand alone): on PostgreSQL in autocommit, so a read is its one
    round trip, without the BEGIN before it and the ROLLBACK when it goes back to the pool.
    SQLite: a plain connection."""
    with engine.connect() as c:
        if engine.dialect.name == "postgresql":
            c = c.execution_options(isolation_level="AUTOCOMMIT")
        yield c
