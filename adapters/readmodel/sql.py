"""Every raw SQL statement of the read model, for one generation's tables in one dialect.

The statements a catch-up or an answer runs however small go to the driver as text, built
once per read model, and the hottest reads (`driver`) skip SQLAlchemy's result rows too:
for short results, building statements and result rows cost as much as running them
(docs/DECISIONS.md, Read model). Statements that tests or the application watch through
SQLAlchemy's cursor events (every write, and a checkpoint's stored bytes) go through
`exec_driver_sql`, which keeps those events. Everything else in the read model is
SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, inspect, text
from sqlalchemy.exc import DBAPIError

from custate.adapters.readmodel.tables import INPUT_COLUMN, META_TABLE, Tables
from custate.adapters.sqlschema import driver, retry_creation

__all__ = ["CHUNK", "Statements", "add_input_column", "chunks", "insert_rows"]

# Customer ids per `IN (...)` list.
CHUNK = 500

# Fold keys are ASCII text starting with a year: "" and DEL bound them all.
_FIRST_KEY = ""
_PAST_LAST_KEY = "\x7f"


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """`values` in slices of at most `size`."""
    for i in range(0, len(values), size):
        yield values[i : i + size]


def add_input_column(engine: Engine, t: Tables) -> None:
    """Give a `keys` table created before fold inputs were kept their column: its rows stay
    null (read from the event store) until a rebuild writes them all."""
    name = t.keys.name

    def add() -> None:
        if INPUT_COLUMN in {c["name"] for c in inspect(engine).get_columns(name)}:
            return
        kind = "BYTEA" if engine.dialect.name == "postgresql" else "BLOB"
        with engine.begin() as c:
            c.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {INPUT_COLUMN} {kind}")

    retry_creation(add, (DBAPIError,))


def insert_rows(c: Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert `rows` (all columns, in column order) into `table`, in the transaction of `c`:
    COPY on PostgreSQL, the driver's executemany elsewhere (faster than SQLAlchemy's per-row
    parameter processing, and, on PostgreSQL, than psycopg's executemany)."""
    if not rows:
        return
    quote = c.dialect.identifier_preparer.quote
    cols = ", ".join(quote(col.name) for col in table.columns)
    if c.dialect.name == "postgresql":
        with (
            driver(c).cursor() as cur,
            cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as cp,
        ):
            for r in rows:
                cp.write_row(r)
        return
    mark = "?" if c.dialect.paramstyle == "qmark" else "%s"
    marks = ", ".join(mark for _ in table.columns)
    c.exec_driver_sql(f"INSERT INTO {table.name} ({cols}) VALUES ({marks})", list(rows))


class Statements:
    """The read model's raw SQL on the tables `t`, each statement one method that runs it on
    the connection given (the caller owns the transaction)."""

    def __init__(self, t: Tables, engine: Engine) -> None:
        self.t = t
        self.postgresql = engine.dialect.name == "postgresql"
        self.sqlite = engine.dialect.name == "sqlite"
        # The driver's placeholder, for statements that go to it directly.
        m = self.mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        tr, cu, cp, ke, pg = (
            t.tracking.name,
            t.customers.name,
            t.checkpoints.name,
            t.keys.name,
            t.pages.name,
        )
        self._position = f"SELECT notification_id FROM {tr} WHERE application_name = {m}"
        self._positions = f"SELECT application_name, notification_id FROM {tr}"
        # Reads that also say which generation is active, in the same statement (a read
        # answers from a generation only while it is the active one).
        active = f"(SELECT value FROM {META_TABLE} WHERE name = 'active')"
        self._state_active = f"SELECT {active}, (SELECT state FROM {cu} WHERE customer_id = {m})"
        self._positions_active = (
            f"SELECT {active}, application_name, notification_id FROM {tr} "
            f"UNION ALL SELECT {active}, NULL, NULL"
        )
        self._checkpoint_before = (
            f"SELECT cp.key, cu.last_key, cu.last_version FROM {cp} cp "
            f"JOIN {cu} cu ON cu.customer_id = cp.customer_id "
            f"WHERE cp.customer_id = {m} AND cp.key < {m} "
            "ORDER BY cp.key DESC LIMIT 1"
        )
        self._checkpoint_at = f"SELECT state FROM {cp} WHERE customer_id = {m} AND key = {m}"
        self._drop_checkpoints = f"DELETE FROM {cp} WHERE customer_id = {m} AND key >= {m}"
        self._keys_between = (
            f"SELECT key, version FROM {ke} WHERE customer_id = {m} "
            f"AND key > {m} AND key <= {m} ORDER BY key"
        )
        self._fold_inputs = (
            f"SELECT version, {INPUT_COLUMN} FROM {ke} "
            f"WHERE customer_id = {m} AND key > {m} ORDER BY key"
        )
        self._drop_map_pages = f"DELETE FROM {pg} WHERE customer_id = {m} AND field = {m}"
        self._drop_pages = (
            f"DELETE FROM {pg} WHERE customer_id = {m} AND field = {m} AND page = {m}"
        )
        cols = [col.name for col in t.customers.columns][1:]  # customer_id is first
        sets = ", ".join(f"{name} = {m}" for name in cols)
        self._update_customers = f"UPDATE {cu} SET {sets} WHERE customer_id = {m}"

    def marks(self, n: int) -> str:
        """`n` placeholders, for an `IN (...)` list."""
        return ", ".join(self.mark for _ in range(n))

    # -- the tracking position -----------------------------------------------------------

    def position(self, c: Connection, application: str) -> int:
        (position,) = driver(c).execute(self._position, (application,)).fetchone()
        return int(position)

    def state_and_active(self, c: Connection, customer_id: str) -> tuple[str | None, Any]:
        """The active generation and the customer's stored state row (None: no row), in
        one statement."""
        active, state = driver(c).execute(self._state_active, (customer_id,)).fetchone()
        return (None if active is None else str(active)), state

    def positions_and_active(self, c: Connection) -> tuple[str | None, dict[str, int]]:
        """The active generation and every tracking row, in one statement."""
        rows = driver(c).execute(self._positions_active).fetchall()
        active = rows[0][0] if rows else None
        return (None if active is None else str(active)), {
            str(n): int(p) for _, n, p in rows if n is not None
        }

    def positions(self, c: Connection) -> dict[str, int]:
        """Every tracking row: name -> position."""
        return {str(n): int(p) for n, p in driver(c).execute(self._positions).fetchall()}

    def advance(self, c: Connection, previous: Mapping[str, int], new: int) -> bool:
        """Compare and set, in one statement: each named position becomes `new` only where
        it is what `previous` says; False unless all of them were (the caller rolls back)."""
        if not previous:
            return True
        where = " OR ".join(
            f"(application_name = {self.mark} AND notification_id = {self.mark})" for _ in previous
        )
        args = [new, *(v for pair in previous.items() for v in pair)]
        sql = f"UPDATE {self.t.tracking.name} SET notification_id = {self.mark} WHERE {where}"
        return c.exec_driver_sql(sql, tuple(args)).rowcount == len(previous)

    # -- customers' rows -----------------------------------------------------------------

    def hold_customer(self, c: Connection, customer_id: str) -> None:
        """Take the customer's row for the transaction of `c` before reading it (an update
        that changes nothing): on SQLite the database's write lock, on PostgreSQL the row's
        lock, so no other writer changes her rows between this transaction's reads and
        writes (writers that check her head wait for it, then see it moved)."""
        c.exec_driver_sql(
            f"UPDATE {self.t.customers.name} SET last_version = last_version "
            f"WHERE customer_id = {self.marks(1)}",
            (customer_id,),
        )

    def heads(
        self, c: Connection, ids: Sequence[str], for_update: bool = False
    ) -> list[tuple[str, str, int]]:
        """(customer, last key, last version) of those of `ids` (at most `CHUNK`) with a row.
        `for_update`: the rows locked to the end of the transaction on PostgreSQL (a writer
        that checks them writes before anyone changes them; SQLite's write transaction
        holds the whole database already)."""
        lock = " FOR UPDATE" if for_update and self.postgresql else ""
        sql = (
            f"SELECT customer_id, last_key, last_version FROM {self.t.customers.name} "
            f"WHERE customer_id IN ({self.marks(len(ids))}){lock}"
        )
        rows: list[tuple[str, str, int]] = driver(c).execute(sql, tuple(ids)).fetchall()
        return rows

    def update_customers(self, c: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Update customers' rows in place, each given as (customer_id, *the other columns)."""
        c.exec_driver_sql(self._update_customers, [(*r[1:], r[0]) for r in rows])

    def delete_customers_rows(self, c: Connection, table: Table, ids: Sequence[str]) -> None:
        """Delete the rows of `table` of the customers `ids` (at most `CHUNK`)."""
        c.exec_driver_sql(
            f"DELETE FROM {table.name} WHERE customer_id IN ({self.marks(len(ids))})",
            tuple(ids),
        )

    def customers_rows(
        self, c: Connection, table: Table, ids: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        """Every row of `table` of the customers `ids` (at most `CHUNK`), all columns."""
        cols = ", ".join(col.name for col in table.columns)
        sql = f"SELECT {cols} FROM {table.name} WHERE customer_id IN ({self.marks(len(ids))})"
        return [tuple(r) for r in c.exec_driver_sql(sql, tuple(ids)).fetchall()]

    def delete_rows(self, c: Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Delete these rows of `table` (all columns, in column order) by primary key."""
        pk = [i for i, col in enumerate(table.columns) if col.primary_key]
        where = " AND ".join(f"{table.columns[i].name} = {self.mark}" for i in pk)
        c.exec_driver_sql(
            f"DELETE FROM {table.name} WHERE {where}", [tuple(r[i] for i in pk) for r in rows]
        )

    def insert(self, c: Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert `rows` (all columns, in column order) into `table` (`insert_rows`)."""
        insert_rows(c, table, rows)

    # -- large maps' pages ---------------------------------------------------------------

    def pages(self, c: Connection, ids: Sequence[str]) -> list[tuple[str, str, int, str]]:
        """(customer, map, page, entries) of every page of the customers `ids` (at most
        `CHUNK`), in customer and map order."""
        sql = (
            f"SELECT customer_id, field, page, entries FROM {self.t.pages.name} "
            f"WHERE customer_id IN ({self.marks(len(ids))}) ORDER BY customer_id, field"
        )
        rows: list[tuple[str, str, int, str]] = driver(c).execute(sql, tuple(ids)).fetchall()
        return rows

    def drop_map_pages(self, c: Connection, maps: Sequence[tuple[str, str]]) -> None:
        """Delete every page of these (customer, map)s."""
        c.exec_driver_sql(self._drop_map_pages, list(maps))

    def drop_pages(self, c: Connection, pages: Sequence[tuple[str, str, int]]) -> None:
        """Delete these (customer, map, page)s."""
        c.exec_driver_sql(self._drop_pages, list(pages))

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint_before(
        self, c: Connection, customer_id: str, key: str
    ) -> tuple[str, str, int] | None:
        """(key, head's last key, head's last version): the latest checkpoint of the
        customer before `key`, and the customer's head, in one statement (one snapshot)."""
        found = driver(c).execute(self._checkpoint_before, (customer_id, key)).fetchone()
        return None if found is None else (found[0], found[1], found[2])

    def checkpoint_at(self, c: Connection, customer_id: str, key: str) -> str | None:
        """The stored form of the checkpoint under exactly `key`."""
        row = c.exec_driver_sql(self._checkpoint_at, (customer_id, key)).first()
        return None if row is None else str(row[0])

    def drop_checkpoints(self, c: Connection, customer_id: str, from_key: str) -> None:
        """Delete the customer's checkpoints at or after `from_key`."""
        c.exec_driver_sql(self._drop_checkpoints, (customer_id, from_key))

    # -- keys ----------------------------------------------------------------------------

    def keys_between(
        self, c: Connection, customer_id: str, after: str | None, upto: str | None
    ) -> list[tuple[str, int]]:
        """(key, version) with `after < key <= upto` (None: unbounded), in key order."""
        bounds = (
            customer_id,
            after if after is not None else _FIRST_KEY,
            upto or _PAST_LAST_KEY,
        )
        rows: list[tuple[str, int]] = driver(c).execute(self._keys_between, bounds).fetchall()
        return rows

    def fold_inputs(
        self, c: Connection, customer_id: str, after: str | None
    ) -> list[tuple[int, bytes | None]]:
        """(version, fold input or None) of the keys after `after`, in key order."""
        rows: list[tuple[int, bytes | None]] = (
            driver(c).execute(self._fold_inputs, (customer_id, after or _FIRST_KEY)).fetchall()
        )
        return rows

    # -- the event store -----------------------------------------------------------------

    def activities_after(
        self,
        c: Connection,
        events: str,
        topic: str,
        sqlite: bool,
        position: int,
        at_most: int | None = None,
    ) -> int:
        """How many events of `topic` in the event store's table `events` have a
        notification id after `position` (counting no further than `at_most`, if given:
        a bounded answer, in bounded time)."""
        where = f"WHERE topic = :t AND {'rowid' if sqlite else 'notification_id'} > :p"
        if at_most is None:
            sql = f"SELECT COUNT(*) FROM {events} {where}"
        else:
            sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM {events} {where} LIMIT :n) AS lag"
        n = c.execute(text(sql), {"t": topic, "p": position, "n": at_most}).scalar_one()
        return int(n)
