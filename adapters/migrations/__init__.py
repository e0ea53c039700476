"""Versioned migrations (alembic) of the tables that are not rebuilt: rejects, pull
cursors and listings, the change feed, forwarding cursors and dead letters, and the read
model's settings (`custate_readmodel`: the active generation, fold versions). The events
table is the event-sourcing library's own; the read model's generations are never
migrated but rebuilt (`adapters.upgrade`).

The revisions are modules of `versions/`, run programmatically (no alembic.ini, no
env.py): `migrate(store)` brings a store to `HEAD` under its write lock, so processes
opening it at once run each revision once; the version is kept in `custate_schema_version`
(beside the events: in the `?schema=` schema on PostgreSQL), not alembic's default name, so
custate's tables never mix with an application's own alembic history in one database. A
store at a revision this code does not know was written by a newer custate and is refused
(`StoreTooNewError`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    text,
)

from custate.adapters.eventstore import EventStore, StoreUnavailableError

__all__ = [
    "HEAD",
    "VERSION_TABLE",
    "SchemaStatus",
    "StoreTooNewError",
    "known_revisions",
    "migrate",
    "schema_status",
    "upgrade",
]

VERSION_TABLE = "custate_schema_version"
# The newest revision (tests/integration/test_migrations.py checks it is the scripts' head).
HEAD = "0002"
_SCRIPTS = Path(__file__).parent
# The tables of the baseline (versions/r0001_baseline.py): a store holding none is new.
_BASELINE = frozenset(
    {
        "custate_rejects",
        "custate_pull_cursors",
        "custate_pull_listings",
        "custate_pull_queue",
        "custate_changes",
        "custate_changes_meta",
        "custate_readmodel",
        "custate_forward_cursors",
        "custate_forward_dead",
    }
)


class StoreTooNewError(StoreUnavailableError):
    """The store's schema is at a revision this custate does not know: a newer custate
    wrote it, and this one could misread or damage it."""


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """The store's schema revision (None: none recorded, a store of the release before
    migrations or a new one) and this code's newest."""

    revision: str | None
    head: str = HEAD

    @property
    def current(self) -> bool:
        return self.revision == self.head

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "head": self.head, "current": self.current}


def _revision(c: Connection, schema: str | None) -> str | None:
    if not inspect(c).has_table(VERSION_TABLE, schema=schema):
        return None
    name = f'"{schema}".{VERSION_TABLE}' if schema else VERSION_TABLE
    rows = c.execute(text(f"SELECT version_num FROM {name}")).scalars().all()
    return str(rows[0]) if rows else None


def schema_status(store: EventStore) -> SchemaStatus:
    """The store's schema revision, read without changing anything."""
    with store.engine.connect() as c:
        return SchemaStatus(_revision(c, store.url.schema))


def known_revisions() -> set[str]:
    """Every revision this code has."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(_SCRIPTS), version_locations=[str(_SCRIPTS / "versions")])
    return {s.revision for s in script.walk_revisions()}


def _refuse_if_newer(store: EventStore, revision: str | None) -> None:
    if revision is not None and revision != HEAD and revision not in known_revisions():
        raise StoreTooNewError(
            f"{store.url.url}: the store's schema is at revision {revision}, which this "
            f"custate does not know (its newest is {HEAD}): a newer custate wrote it. "
            "Upgrade custate (pip install -U custate) to use this store"
        )


def migrate(store: EventStore) -> tuple[str | None, str | None]:
    """Bring the store's own tables to `HEAD`; returns (revision before, revision now). A
    store already there costs one query. A read-only store is only checked (a newer one
    is refused; an older one is read as it is). Raises `StoreTooNewError`."""
    before = schema_status(store).revision
    _refuse_if_newer(store, before)
    if before == HEAD or store.url.read_only:
        return before, before
    schema = store.url.schema
    with store.exclusive(), store.engine.begin() as c:
        before = _revision(c, schema)  # another process may have migrated meanwhile
        _refuse_if_newer(store, before)
        if before == HEAD:
            pass
        elif before is None and not set(inspect(c).get_table_names(schema=schema)) & _BASELINE:
            # A new store: its tables are made at HEAD's layout by their stores on first
            # use (a test checks the layouts agree), so it is only stamped, and alembic
            # (half a second to import) is left alone.
            _stamp(c, schema)
        else:
            _upgrade(c, schema)
    return before, HEAD


def upgrade(store: EventStore) -> None:
    """Run every revision the store has not had, with alembic, whatever it holds (what
    `migrate` does for a store that is not new; for tests of the revisions)."""
    with store.exclusive(), store.engine.begin() as c:
        _refuse_if_newer(store, _revision(c, store.url.schema))
        _upgrade(c, store.url.schema)


def _stamp(c: Connection, schema: str | None) -> None:
    table = Table(
        VERSION_TABLE,
        MetaData(schema=schema),
        # alembic's own layout of its version table
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )
    table.create(c, checkfirst=True)
    c.execute(table.insert().values(version_num=HEAD))


def _upgrade(c: Connection, schema: str | None) -> None:
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.set_main_option("version_locations", str(_SCRIPTS / "versions"))
    config.set_main_option("path_separator", "os")
    script = ScriptDirectory.from_config(config)

    def upgrade(rev: Any, _context: Any) -> Any:
        return script._upgrade_revs(HEAD, rev)

    with EnvironmentContext(config, script, fn=upgrade, destination_rev=HEAD) as env:
        env.configure(
            connection=c,
            version_table=VERSION_TABLE,
            version_table_schema=schema,
            transactional_ddl=True,
        )
        with env.begin_transaction():
            env.run_migrations()
