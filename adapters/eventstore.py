"""The event store: each activity one event on its customer's stream, on `eventsourcing`.

Idempotency is the database's: beside each activity event, the same transaction writes a
one-event marker stream `activity:<id>` at version 1. A second delivery of the id, from
this process or another, fails on the store's unique `(originator_id, originator_version)`
and the whole batch rolls back; a probe before each batch keeps that rare (one duplicate
would otherwise cost the batch), and an `IntegrityError` is told apart (duplicate or a
lost version race) by probing again.

Stream ids are text (`customer:<id>`, `activity:<id>`; the library's ORIGINATOR_ID_TYPE
text), readable in the database and free of uuid5 work on the hot path. Events are
written as `StoredEvent`s with explicit, registered topics and a JSON-native state that the
library's own mapper also decodes (the record time uses its `datetime_iso` transcoding)."""

from __future__ import annotations

import fcntl
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

import msgspec
import orjson
from eventsourcing.application import Application
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import (
    IntegrityError,
    InternalError,
    Notification,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.utils import register_topic
from sqlalchemy import Connection, Engine, bindparam, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import InternalError as SAInternalError
from sqlalchemy.exc import ProgrammingError as SAProgrammingError

from custate.adapters.erasures import ErasureRecords
from custate.adapters.sqlschema import driver, reading, retry_creation
from custate.domain import KNOWN_TYPES, Activity, parse_activity, parse_time
from custate.domain.activity import LazyData
from custate.domain.errors import Error
from custate.domain.fold import PROFILE_FIELD_TYPES
from custate.domain.payload import FullPayload, Payload

ACTIVITY_TOPIC = "custate:ActivityRecorded"
MARKER_TOPIC = "custate:ActivityMarker"
APP_NAME = "custate"


class ActivityRecorded(DomainEvent):
    """An activity as stored on its customer's stream; `timestamp` is the record time."""

    TOPIC = ACTIVITY_TOPIC
    activity: dict[str, Any]


class ActivityMarker(DomainEvent):
    """Version 1 of the stream `activity:<id>`: where the activity went, and its digest."""

    TOPIC = MARKER_TOPIC
    customer_id: str
    version: int
    sha256: str


register_topic(ACTIVITY_TOPIC, ActivityRecorded)
register_topic(MARKER_TOPIC, ActivityMarker)


# What processes opening one new PostgreSQL store at once can get from racing on the
# catalog, even with IF NOT EXISTS: a duplicate (integrity), a relation that appeared
# meanwhile (programming), or "tuple concurrently updated" (internal, XX000).
_CREATION_RACE = (
    IntegrityError,
    ProgrammingError,
    InternalError,
    SAIntegrityError,
    SAProgrammingError,
    SAInternalError,
)


class ActivityLog(Application[Any]):
    name = APP_NAME  # pinned: PostgreSQL table names follow it (custate_events)


class StoreError(Error):
    """A store URL that cannot be used, a store that cannot be reached, or a stored record
    that cannot be read back (changed after custate wrote it)."""


class StoreUnavailableError(StoreError):
    """The store is there but cannot be used: unreachable, refused, read-only or full."""


def store_fault(e: BaseException) -> str | None:
    """What a user should read when a database error reached the top of a command, or None
    if `e` is not a store fault: the store is read-only, full, or failed (its first line,
    password masked), or custate found it unusable (a `StoreError`: a stored record that
    cannot be read back, say). The CLI exits with its store-failed code on any of them."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError

    from custate.adapters.report import mask_password

    if isinstance(e, StoreError):  # custate's own words
        return str(e)
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, (sqlite3.Error, DBAPIError)) or type(cause).__module__.startswith(
            "psycopg"
        ):
            break
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    text = str(getattr(cause, "orig", None) or cause).strip()
    first = mask_password(text.splitlines()[0] if text else type(cause).__name__)
    low = text.lower()
    if "readonly" in low or "read-only" in low or "read only" in low:
        return f"the store is read-only ({first}); reads work, writes need a writable store"
    if "database or disk is full" in low or "no space left" in low or "disk full" in low:
        return f"the store is full ({first}); nothing of the failed write was kept"
    return f"the store failed: {first}"


def store_wide(e: BaseException) -> bool:
    """Whether `e` fails every write, not one record: the store is read-only or full."""
    message = store_fault(e)
    return message is not None and message.startswith(
        ("the store is read-only", "the store is full")
    )


def customer_stream(customer_id: str) -> str:
    return f"customer:{customer_id}"


def marker_stream(activity_id: str) -> str:
    return f"activity:{activity_id}"


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class StoredActivity(msgspec.Struct, frozen=True, gc=False):
    """An activity as stored: with its record time and its place on the stream. A Struct
    for the reason `Activity` is one."""

    activity: Activity
    recorded_at: datetime
    version: int  # position on the customer's stream: arrival order
    notification_id: int | None = None


@dataclass(frozen=True, slots=True)
class Encoded:
    """An activity reduced to what the store writes and compares: its canonical content
    (`Activity.content()`) and digest. Small and picklable, so parsing and validation can
    run in another process; `where` says where it came from, for rejects."""

    id: str
    customer_id: str
    type: str
    group_id: str | None
    content: bytes
    sha256: str
    source: str = ""
    location: str = ""

    @classmethod
    def of(cls, a: Activity, source: str = "", location: str = "") -> Encoded:
        content = a.content()
        return cls(
            a.id, a.customer_id, a.type, a.group_id, content, digest(content), source, location
        )

    @property
    def recognized(self) -> bool:
        return self.type in KNOWN_TYPES

    def record(self) -> dict[str, Any]:
        """The activity record, as `Activity.to_record` gives it."""
        return _record({"activity": orjson.loads(self.content), "group_id": self.group_id})


@dataclass(frozen=True, slots=True)
class Conflict:
    """A redelivery of a stored id with different content: the stored one stays."""

    item: Encoded
    stored: dict[str, Any]


@dataclass(slots=True)
class AppendResult:
    accepted: list[Encoded] = field(default_factory=list)
    duplicates: list[Encoded] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    position: int = 0  # the store's head once the append committed: a read's min_position


Then = Callable[["Connection", list[str]], None]

# The PostgreSQL append's lock: the same key as `EventStore._process_lock`'s session-level
# lock (the two conflict), held to the end of the append's transaction.
_PG_XACT_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:k))")
_PG_NOTIFY = text("SELECT pg_notify(:ch, '')")


@dataclass(frozen=True, slots=True)
class StoreUrl:
    url: str
    kind: str  # "sqlite" | "postgresql"
    env: dict[str, str]
    sqlalchemy_url: str
    schema: str | None
    events_table: str
    read_only: bool = False  # `sqlite:///PATH?mode=ro`: reads only, no table created


DEFAULT_CONNECT_TIMEOUT = 5  # seconds to reach PostgreSQL; ?connect_timeout=N overrides


def parse_store_url(url: str) -> StoreUrl:
    """`sqlite:///PATH` or `postgresql://user[:password]@host[:port]/db[?schema=S]`; a bare
    path (no `://`) is an SQLite file."""
    if "://" not in url and url.strip():
        url = f"sqlite:///{url}"
    try:
        u = make_url(url)
    except Exception as e:
        raise StoreError(f"not a store URL: {url!r} ({e})") from None
    backend = u.get_backend_name()
    if backend == "sqlite":
        if not u.database or u.database == ":memory:":
            raise StoreError(f"{url}: an SQLite store needs a file path: sqlite:///PATH")
        mode = u.query.get("mode")
        if mode not in (None, "ro", "rw"):
            raise StoreError(f"{url}: mode={mode!r}; an SQLite store takes ?mode=ro or ?mode=rw")
        read_only = mode == "ro"
        path = u.database
        # Read-only: SQLite's own `mode=ro` (an URI filename), so no write is ever tried,
        # whatever the file's permissions say (root ignores them).
        name = f"file:{quote(path)}?mode=ro" if read_only else path
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": name,
            "SQLITE_LOCK_TIMEOUT": "60",
            "ORIGINATOR_ID_TYPE": "text",
        }
        if read_only:
            env["CREATE_TABLE"] = "false"
        sa_url = f"sqlite:///{name}&uri=true" if read_only else f"sqlite:///{path}"
        return StoreUrl(url, "sqlite", env, sa_url, None, "stored_events", read_only)
    if backend in ("postgresql", "postgres"):
        try:
            import psycopg  # noqa: F401  (the driver, an extra: custate[postgres])
        except ImportError:
            raise StoreError(
                f"{u.render_as_string(hide_password=True)}: a PostgreSQL store needs psycopg: "
                "pip install 'custate[postgres]'"
            ) from None
        schema = u.query.get("schema")
        schema = schema if isinstance(schema, str) else None
        timeout = u.query.get("connect_timeout")
        timeout = timeout if isinstance(timeout, str) else str(DEFAULT_CONNECT_TIMEOUT)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": u.database or "postgres",
            "POSTGRES_HOST": u.host or "127.0.0.1",
            "POSTGRES_PORT": str(u.port or 5432),
            "POSTGRES_USER": u.username or "postgres",
            "POSTGRES_PASSWORD": u.password or "",
            "POSTGRES_SCHEMA": schema or "",
            "POSTGRES_LOCK_TIMEOUT": "60",
            "POSTGRES_CONNECT_TIMEOUT": timeout,
            "ORIGINATOR_ID_TYPE": "text",
        }
        sa = (
            u.set(drivername="postgresql+psycopg")
            .difference_update_query(["schema"])
            .update_query_dict({"connect_timeout": timeout})
        )
        table = f"{schema}.{APP_NAME}_events" if schema else f"{APP_NAME}_events"
        return StoreUrl(
            url, "postgresql", env, sa.render_as_string(hide_password=False), schema, table
        )
    from custate.adapters.report import mask_password

    raise StoreError(
        f"{mask_password(url)}: unsupported store; use sqlite:///PATH or postgresql://..."
    )


# Connections a process keeps open to a PostgreSQL store, and makes beyond them at peaks;
# a connection unused this many seconds is pinged before use.
POOL_SIZE = 16
POOL_OVERFLOW = 32
PING_IDLE = 1.0


def make_engine(store: StoreUrl) -> Engine:
    """A SQLAlchemy engine on the same database, for probes, rejects and the read model."""
    if store.kind == "sqlite":
        engine = create_engine(store.sqlalchemy_url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            # No `mmap_size`: reading a long stream mapped was a quarter faster, but every
            # page a rebuild touched then counted as resident: 1.46 GB peak RSS, not 0.39.
            cur.close()

        return engine
    # `?schema=S`: the tables custate creates beside the events (rejects) go there too
    options = {"options": f"-csearch_path={store.schema}"} if store.schema else {}
    # Connections are kept, not made per read: a read waiting for a position, the writer,
    # the projector and its heartbeat each hold one at times, and every connection made
    # anew is a PostgreSQL backend forked (a few ms of CPU on both sides). Beyond
    # `pool_size`, an overflow connection is closed when it comes back.
    engine = create_engine(
        store.sqlalchemy_url,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        connect_args=options,
    )
    _ping_when_idle(engine, PING_IDLE)
    return engine


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """Ping a pooled connection as it is checked out, if it lay unused for `idle` seconds:
    one that the server dropped meanwhile (a restart, an idle timeout) is replaced before
    use. A connection back from use moments ago is not pinged (`pool_pre_ping` pinged every
    checkout: a round trip added to each read); should the server have gone meanwhile, the
    statement fails, SQLAlchemy sees the disconnect and empties the pool, and the next
    checkout connects anew (SQLAlchemy's "Disconnect Handling - Pessimistic" with a custom
    checkout ping)."""

    @event.listens_for(engine, "checkin")
    def _back(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:
            raise DisconnectionError(f"a pooled connection was dropped: {e}") from e


# `EventStore.keep_statistics`: it looks this often, or after this many appends of its
# process; it never runs ANALYZE for fewer rows changed since the last than this.
STATISTICS_EVERY = 30.0
STATISTICS_LOOK = 10_000
STATISTICS_AFTER = 1_000


class EventStore:
    """Append activities idempotently; read a customer's activities back, with record times."""

    MAX_RETRIES = 30

    def __init__(self, url: str) -> None:
        self.url = parse_store_url(url)
        self.engine = make_engine(self.url)
        self._lock_file: IO[str] | None = None
        self._statistics_at = float("-inf")  # when `keep_statistics` last looked
        self._appended = 0  # activities appended since
        self._thread_lock = threading.Lock()
        self._erasures: ErasureRecords | None = None  # made on the first append
        self.app = self._open(url)
        self.recorder = self.app.recorder
        table = self.url.events_table
        self._probe = text(
            f"SELECT originator_id, state FROM {table} "
            "WHERE originator_id IN :ids AND originator_version = 1"
        ).bindparams(bindparam("ids", expanding=True))
        self._heads = text(
            f"SELECT originator_id, MAX(originator_version) FROM {table} "
            "WHERE originator_id IN :ids GROUP BY originator_id"
        ).bindparams(bindparam("ids", expanding=True))
        self._customers = text(
            f"SELECT DISTINCT originator_id FROM {table} WHERE originator_id LIKE 'customer:%' "
            "ORDER BY originator_id"
        )
        self._by_versions = text(
            f"SELECT originator_version, state FROM {table} "
            "WHERE originator_id = :s AND originator_version IN :vs"
        ).bindparams(bindparam("vs", expanding=True))
        column = "rowid" if self.url.kind == "sqlite" else "notification_id"
        self._head_stmt = text(
            f"SELECT {column} FROM {table} WHERE topic = :t ORDER BY {column} DESC LIMIT 1"
        )
        self._insert_pg = text(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:vs AS bigint[]), "
            "CAST(:topics AS text[]), CAST(:states AS bytea[])) "
            "RETURNING notification_id, topic = :t"
        )
        self._insert_sqlite = text(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "VALUES (:i, :v, :t, :s)"
        )
        self._lock_key = f"custate:{self.url.schema or 'public'}"
        # In the driver's own parameter style: read through its cursor (`customer_activities`).
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._stream = (
            f"SELECT originator_version, state FROM {table} "
            f"WHERE originator_id = {mark} AND originator_version <= {mark} "
            "ORDER BY originator_version"
        )

    def _open(self, url: str) -> ActivityLog:
        def create() -> ActivityLog:
            if self.url.kind == "postgresql" and self.url.schema:
                with self.engine.begin() as c:
                    c.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.url.schema}"'))
            return ActivityLog(env=self.url.env)

        try:
            return retry_creation(create, _CREATION_RACE)
        except _CREATION_RACE:
            raise
        except Exception as e:
            raise StoreUnavailableError(self._cannot_open(e)) from e

    def _cannot_open(self, e: Exception) -> str:
        """Why the store did not open, with its password masked and, on PostgreSQL, the
        host and port it could not reach."""
        from custate.adapters.report import mask_password

        where = mask_password(self.url.url)
        if self.url.kind == "postgresql":
            env = self.url.env
            host = f"{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}"
            timeout = env["POSTGRES_CONNECT_TIMEOUT"]
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return (
                f"{where}: cannot reach PostgreSQL at {host} (connect timeout {timeout} s, "
                f"set ?connect_timeout=N in the URL): {mask_password(first)}"
            )
        return f"{where}: cannot open the event store: {e}"

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
        self.app.close()
        self.engine.dispose()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def append(
        self, activities: Sequence[Activity], recorded_at: datetime | None = None
    ) -> AppendResult:
        """Store each activity once. Duplicates (same id, same content) are skipped; a
        conflicting redelivery (same id, other content) is returned, and nothing of it stored."""
        return self.append_encoded([Encoded.of(a) for a in activities], recorded_at)

    def append_encoded(
        self,
        items: Sequence[Encoded],
        recorded_at: datetime | None = None,
        then: Then | None = None,
    ) -> AppendResult:
        """Store each item once (see `append`). `then(connection, stored)` runs in the
        append's own transaction, after the insert, with the ids of what the store now holds
        of `items` (stored now or before): a caller's bookkeeping that must commit with it
        (the webhook's resolved rejects)."""
        if self.url.read_only:
            raise StoreUnavailableError(
                "the store is read-only (opened with ?mode=ro); reads work, writes need a "
                "writable store"
            )
        when = recorded_at or datetime.now(UTC)
        batch: dict[str, Encoded] = {}
        result = AppendResult()
        for e in items:
            first = batch.get(e.id)
            if first is None:
                batch[e.id] = e
            elif first.sha256 == e.sha256:
                result.duplicates.append(e)
            else:
                result.conflicts.append(Conflict(e, first.record()))
        for attempt in range(self.MAX_RETRIES):
            attempt_result = AppendResult(
                list(result.accepted), list(result.duplicates), list(result.conflicts)
            )
            try:
                self._append_once(dict(batch), attempt_result, when, then)
            except (IntegrityError, SAIntegrityError):
                # another writer got there first: probe again and retry what is left, after a
                # random pause so that two writers on the same streams stop colliding
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
                continue
            # (threads may race here: it only moves `keep_statistics`'s next look)
            self._appended += len(attempt_result.accepted)
            return attempt_result
        raise StoreError("could not append a batch after repeated write conflicts")

    def keep_statistics(self) -> bool:
        """On PostgreSQL, at most every `STATISTICS_EVERY` seconds, or sooner once this
        process appended `STATISTICS_LOOK` activities: `ANALYZE` the events table if its
        planner statistics are missing or older than a tenth of its rows (True: it ran).
        Called before a catch-up reads: autovacuum does the same, but only at its next round
        (a minute apart by default), and meanwhile the catch-up of a bulk ingest is planned
        as if the table were empty: each batch reads every row after its position, and the
        database works as long as the projector (docs/DECISIONS.md, Projector workers). A
        failure (no privilege, a lock) leaves it to autovacuum."""
        if self.url.kind != "postgresql":
            return False
        now = time.monotonic()
        if self._appended < STATISTICS_LOOK and now - self._statistics_at < STATISTICS_EVERY:
            return False
        self._statistics_at, self._appended = now, 0
        table = self.url.events_table
        try:
            with self.engine.begin() as c:
                row = c.execute(
                    text(
                        "SELECT n_live_tup, n_mod_since_analyze, "
                        "last_analyze IS NULL AND last_autoanalyze IS NULL "
                        "FROM pg_stat_user_tables WHERE relid = to_regclass(:t)"
                    ),
                    {"t": table},
                ).first()
                if row is None:
                    return False
                live, changed, never = int(row[0]), int(row[1]), bool(row[2])
                if changed < STATISTICS_AFTER or not (never or changed > live // 10):
                    return False
                c.execute(text(f"ANALYZE {table}"))
        except Exception:
            return False
        return True

    def _append_once(
        self, batch: dict[str, Encoded], result: AppendResult, when: datetime, then: Then | None
    ) -> None:
        """Probe, stream heads and insert under the lock every custate writer of this store
        takes, so two writers never pick the same next version of a stream, and notification
        ids become visible in the order they were given (a follower reading past a position
        never misses one committed below it).

        On PostgreSQL all of it is one transaction on one connection, the lock a
        transaction-level advisory lock released by the commit (which also sends the
        projectors' NOTIFY): one append batch is then one commit, not four (bench/README,
        "Several processes on one PostgreSQL store")."""
        if self.url.kind == "postgresql":
            with self._thread_lock, self.engine.begin() as c:
                c.execute(_PG_XACT_LOCK, {"k": self._lock_key})
                self._append_in(c, batch, result, when, then)
                if result.accepted:
                    c.execute(_PG_NOTIFY, {"ch": self.channel})
            return
        with self._write_lock(), self.engine.begin() as c:
            self._append_in(c, batch, result, when, then)

    def _append_in(
        self,
        c: Connection,
        batch: dict[str, Encoded],
        result: AppendResult,
        when: datetime,
        then: Then | None,
    ) -> None:
        batch = self.erasures.on_the_way_in(batch, c)  # erased customers: scrubbed
        todo = self._drop_stored(c, batch, result)
        stored = [e.id for e in result.duplicates]
        if todo:
            last = self._insert(c, self._events(c, todo, when))
            result.accepted.extend(todo)
            stored += [e.id for e in todo]
            result.position = last
        else:
            result.position = self._head(c)
        if then is not None and stored:
            then(c, stored)

    def _insert(self, c: Connection, events: list[StoredEvent]) -> int:
        """Insert stored events in one statement; the last activity's notification id."""
        if self.url.kind == "postgresql":
            rows = c.execute(
                self._insert_pg,
                {
                    "ids": [e.originator_id for e in events],
                    "vs": [e.originator_version for e in events],
                    "topics": [e.topic for e in events],
                    "states": [e.state for e in events],
                    "t": ACTIVITY_TOPIC,
                },
            ).all()
            return max((int(r[0]) for r in rows if r[1]), default=0)
        c.execute(
            self._insert_sqlite,
            [
                {"i": e.originator_id, "v": e.originator_version, "t": e.topic, "s": e.state}
                for e in events
            ],
        )
        return self._head(c)

    @property
    def erasures(self) -> ErasureRecords:
        """The store's erasure records (`adapters.erasures`); the table is made on first use."""
        if self._erasures is None:
            self._erasures = ErasureRecords(self.engine)
        return self._erasures

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the lock every custate writer of this store takes to append: no activity is
        appended, by this process or another, until the block ends."""
        with self._write_lock():
            yield

    @property
    def channel(self) -> str | None:
        """The PostgreSQL channel told of every append (`LISTEN`), one per store (schema);
        None on SQLite."""
        return self._channel("custate_events_")

    @property
    def changes_channel(self) -> str | None:
        """The PostgreSQL channel told of every write of change records (the change feed's
        followers `LISTEN`), one per store (schema); None on SQLite."""
        return self._channel("custate_changes_")

    @property
    def projected_channel(self) -> str | None:
        """The PostgreSQL channel told of every read-model write of the active generation
        (a read waiting for `min_position` listens), one per store (schema); None on
        SQLite."""
        return self._channel("custate_projected_")

    @property
    def workers_channel(self) -> str | None:
        """The PostgreSQL channel told when a projector worker joins, leaves or gives up
        partitions, so the others take their share at once, not at their next heartbeat
        (`adapters.projector`); None on SQLite."""
        return self._channel("custate_workers_")

    def _channel(self, prefix: str) -> str | None:
        if self.url.kind != "postgresql":
            return None
        name = f"{prefix}{self.url.schema or 'public'}"
        if len(name.encode()) > 63:  # identifiers are cut at 63 bytes
            name = prefix + hashlib.sha256(name.encode()).hexdigest()[:32]
        return name

    @property
    def conninfo(self) -> str:
        """The driver's connection string (password included: never print it), for a
        connection of its own outside SQLAlchemy's pool (`LISTEN`)."""
        url = make_url(self.url.sqlalchemy_url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def activity_notes(self, after: int, limit: int) -> list[tuple[int, str]]:
        """(notification id, stream id) of the first `limit` activities stored after the
        notification `after`: what a projector worker holding some partitions reads first,
        to fetch only its own rows (`notifications`)."""
        column = "rowid" if self.url.kind == "sqlite" else "notification_id"
        with reading(self.engine) as c:
            rows = c.execute(
                text(
                    f"SELECT {column}, originator_id FROM {self.url.events_table} "
                    f"WHERE {column} > :p AND topic = :t ORDER BY {column} LIMIT :n"
                ),
                {"p": after, "t": ACTIVITY_TOPIC, "n": limit},
            ).all()
        return [(int(i), str(o)) for i, o in rows]

    def activity_window(
        self, after: int, limit: int, upto: int | None, mine: Callable[[int, str], bool]
    ) -> tuple[int, int, list[Notification]]:
        """The first `limit` activities stored after the notification `after` (none after
        `upto`): how many there are, the last one's id (`after` if none), and those of
        them that `mine(id, stream id)` accepts, in id order. One statement through the
        driver: a parallel rebuild's process reads the same windows a one-process rebuild
        reads, and skipping the others' rows in Python costs less than listing them first
        and fetching its own by id (a third of its time)."""
        column = "rowid" if self.url.kind == "sqlite" else "notification_id"
        mark = "?" if self.url.kind == "sqlite" else "%s"
        bound = f" AND {column} <= {mark}" if upto is not None else ""
        sql = (
            f"SELECT {column}, originator_id, originator_version, topic, state "
            f"FROM {self.url.events_table} WHERE {column} > {mark} AND topic = {mark}{bound} "
            f"ORDER BY {column} LIMIT {mark}"
        )
        params = (after, ACTIVITY_TOPIC, *(() if upto is None else (upto,)), limit)
        rows = self._driver_rows(sql, params)
        out = [
            Notification(
                originator_id=o, originator_version=int(v), topic=t, state=bytes(st), id=int(n)
            )
            for n, o, v, t, st in rows
            if mine(n, o)
        ]
        return len(rows), (int(rows[-1][0]) if rows else after), out

    def notifications(self, ids: Sequence[int]) -> list[Notification]:
        """The notifications with these ids, in id order (through the driver, 5,000 ids a
        statement: on PostgreSQL one array parameter)."""
        if not ids:
            return []
        column = "rowid" if self.url.kind == "sqlite" else "notification_id"
        select_ = f"SELECT {column}, originator_id, originator_version, topic, state "
        out: list[Notification] = []
        for i in range(0, len(ids), 5000):
            chunk = list(ids[i : i + 5000])
            if self.url.kind == "sqlite":
                marks = ",".join("?" * len(chunk))
                sql = f"{select_}FROM {self.url.events_table} WHERE {column} IN ({marks})"
                params: tuple[Any, ...] = tuple(chunk)
            else:
                sql = f"{select_}FROM {self.url.events_table} WHERE {column} = ANY(%s)"
                params = (chunk,)
            rows = self._driver_rows(f"{sql} ORDER BY {column}", params)
            out.extend(
                Notification(
                    originator_id=o, originator_version=int(v), topic=t, state=bytes(st), id=int(n)
                )
                for n, o, v, t, st in rows
            )
        return out

    def _driver_rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """The rows of one statement run on the driver's own cursor; on PostgreSQL with
        binary results (the events' payloads come as bytes, not hex text to decode: a
        window of 10k activities read in 62 ms instead of 111)."""
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            if self.url.kind == "postgresql":
                cur.execute(sql, params, binary=True)  # type: ignore[call-arg]
            else:
                cur.execute(sql, params)
            rows = cur.fetchall()
            cur.close()
        finally:
            raw.close()
        return list(rows)

    def head(self) -> int:
        """The notification id of the last activity stored (0: none): the position a read
        model must reach to reflect everything stored so far. (Markers are notifications
        too, but are not projected: the head is the last activity's, found by reading the
        notification index backwards past at most a marker or two.)"""
        with reading(self.engine) as c:
            return self._head(c)

    def _head(self, c: Connection) -> int:
        return int(c.execute(self._head_stmt, {"t": ACTIVITY_TOPIC}).scalar() or 0)

    def reachable(self) -> bool:
        """Whether the database answers at all (told apart from refusing one write)."""
        try:
            with self.engine.connect() as c:
                c.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def exclusive(self) -> AbstractContextManager[None]:
        """The lock every custate writer of this store takes (threads of this process, then
        other processes): held by a schema migration, so processes opening a store at
        once migrate it once."""
        return self._write_lock()

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        # Threads of this process first (flock does not exclude threads sharing one open
        # file), then other processes.
        with self._thread_lock, self._process_lock():
            yield

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        if self.url.kind == "sqlite":
            if self._lock_file is None:
                self._lock_file = open(self.url.env["SQLITE_DBNAME"] + ".lock", "a")  # noqa: SIM115
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            return
        key = {"k": self._lock_key, "ch": self.channel}
        with self.engine.connect() as c:
            c.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), key)
            try:
                yield
            finally:
                # The projector workers listening are told when this commits, after the
                # append's own transaction (a hint: they poll too).
                c.execute(text("SELECT pg_advisory_unlock(hashtext(:k)), pg_notify(:ch, '')"), key)
                c.commit()

    def _drop_stored(
        self, c: Connection, batch: dict[str, Encoded], result: AppendResult
    ) -> list[Encoded]:
        """Remove from `batch` what the store already holds; sort those into the result."""
        if not batch:
            return []
        markers = {marker_stream(i): i for i in batch}
        rows = c.execute(self._probe, {"ids": list(markers)}).all()
        for originator_id, state in rows:
            e = batch.pop(markers[originator_id])
            marker = orjson.loads(bytes(state))
            if marker["sha256"] == e.sha256:
                result.duplicates.append(e)
            else:
                stored = self._stored_record(marker["customer_id"], marker["version"])
                result.conflicts.append(Conflict(e, stored))
        return list(batch.values())

    def _events(self, c: Connection, todo: list[Encoded], when: datetime) -> list[StoredEvent]:
        streams = sorted({customer_stream(e.customer_id) for e in todo})
        heads: dict[str, int] = {r[0]: int(r[1]) for r in c.execute(self._heads, {"ids": streams})}
        stamp = {"_type_": "datetime_iso", "_data_": when.isoformat()}
        events: list[StoredEvent] = []
        for e in todo:
            stream = customer_stream(e.customer_id)
            version = heads.get(stream, 0) + 1
            heads[stream] = version
            # The canonical content already is the activity's JSON (less group_id): embed
            # it as is rather than serialise the payload a second time.
            state = {
                "timestamp": stamp,
                "group_id": e.group_id,
                "activity": orjson.Fragment(e.content),
            }
            marker = {
                "timestamp": stamp,
                "customer_id": e.customer_id,
                "version": version,
                "sha256": e.sha256,
            }
            events.append(StoredEvent(stream, version, ACTIVITY_TOPIC, orjson.dumps(state)))
            events.append(StoredEvent(marker_stream(e.id), 1, MARKER_TOPIC, orjson.dumps(marker)))
        return events

    def stored_payload(self, customer_id: str, version: int) -> dict[str, Any]:
        """The raw payload of the customer's activity at this stream version."""
        data: dict[str, Any] = self._stored_record(customer_id, version)["data"]
        return data

    def _stored_record(self, customer_id: str, version: int) -> dict[str, Any]:
        (ev,) = self.recorder.select_events(
            customer_stream(customer_id), gt=version - 1, lte=version
        )
        return _record(orjson.loads(ev.state))

    # -- reading ---------------------------------------------------------------------------

    def customer_activities(
        self,
        customer_id: str,
        known_at: datetime | None = None,
        lte: int | None = None,
    ) -> list[StoredActivity]:
        """The customer's stored activities in arrival order; with `known_at`, only those the
        store had accepted by then; with `lte`, only up to that stream version."""
        # Straight from the table, not through the library's `select_events` (building its
        # event objects was a fifth of loading a long history, which an audit reads whole),
        # and through the driver's own cursor: SQLAlchemy's result rows were a tenth of it.
        with reading(self.engine) as c:
            rows = (
                driver(c)
                .execute(self._stream, (customer_stream(customer_id), lte or 2**62))
                .fetchall()
            )
        out: list[StoredActivity] = []
        for version, state in rows:
            stored = decode(bytes(state), version)
            if known_at is None or stored.recorded_at <= known_at:
                out.append(stored)
        return out

    def customer_versions(
        self, customer_id: str, versions: Sequence[int]
    ) -> dict[int, StoredActivity]:
        """The customer's stored activities at these stream versions, by version."""
        out: dict[int, StoredActivity] = {}
        with reading(self.engine) as c:
            for i in range(0, len(versions), 500):
                chunk = list(versions[i : i + 500])
                rows = c.execute(
                    self._by_versions, {"s": customer_stream(customer_id), "vs": chunk}
                ).fetchall()
                for version, state in rows:
                    out[version] = decode(bytes(state), version)
        return out

    def has_customer(self, customer_id: str) -> bool:
        return bool(self.recorder.select_events(customer_stream(customer_id), limit=1))

    def customers(self) -> Iterator[str]:
        with reading(self.engine) as c:
            for (originator_id,) in c.execute(self._customers):
                yield originator_id.removeprefix("customer:")

    def count(self) -> int:
        with reading(self.engine) as c:
            n = c.execute(
                text(f"SELECT COUNT(*) FROM {self.url.events_table} WHERE topic = :t"),
                {"t": ACTIVITY_TOPIC},
            ).scalar_one()
        return int(n)


def _record(d: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = d["activity"]
    record["group_id"] = d.get("group_id")
    return record


class _StoredRecord(msgspec.Struct, frozen=True):
    id: str
    type: str
    created_at: datetime  # parsed by msgspec, in C: a Python call each was a tenth of a read
    customer_id: str
    data: Payload


class _Stamp(msgspec.Struct, frozen=True):
    data: datetime = msgspec.field(name="_data_")


class _StoredEvent(msgspec.Struct, frozen=True):
    timestamp: _Stamp
    activity: _StoredRecord
    group_id: str | None = None


class _StoredFullRecord(_StoredRecord, frozen=True):
    data: FullPayload


class _StoredFullEvent(_StoredEvent, frozen=True):
    activity: _StoredFullRecord


_decode_lean = msgspec.json.Decoder(_StoredEvent).decode
_decode_full_event = msgspec.json.Decoder(_StoredFullEvent).decode


def _decode_stored(state: bytes) -> _StoredEvent:
    """Without the customer's profile fields, unless the type copies them into the profile:
    they were a fifth of decoding every stored activity, and only a few types read them."""
    ev = _decode_lean(state)
    if ev.activity.type in PROFILE_FIELD_TYPES:
        return _decode_full_event(state)
    return ev


def decode(state: bytes, version: int, notification_id: int | None = None) -> StoredActivity:
    """A stored activity read back. What we stored was validated on the way in and is in
    canonical form (UTC `Z` times, payload unwrapped, customer explicit), so the typed views
    come straight from the bytes in one msgspec pass and the raw payload only when asked for:
    decoding is most of a catch-up's time. Anything else takes the full `parse_activity`."""
    try:
        ev = _decode_stored(state)
    except msgspec.ValidationError:
        return _decode_full(state, version, notification_id)
    except msgspec.DecodeError as e:
        where = "" if notification_id is None else f" at notification {notification_id}"
        raise StoreError(
            f"the stored activity{where} (stream version {version}) cannot be read: {e}"
        ) from e
    r = ev.activity
    created_at = r.created_at
    recorded_at = ev.timestamp.data
    if created_at.tzinfo is not UTC or recorded_at.tzinfo is not UTC:
        return _decode_full(state, version, notification_id)
    activity = Activity(
        id=r.id,
        type=r.type,
        created_at=created_at,
        customer_id=r.customer_id,
        data=LazyData(_stored_data, state),
        payload=r.data,
        group_id=ev.group_id,
    )
    return StoredActivity(activity, recorded_at, version, notification_id)


def _stored_data(state: bytes) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(state)["activity"]["data"]
    return data


def _decode_full(state: bytes, version: int, notification_id: int | None) -> StoredActivity:
    d = orjson.loads(state)
    return StoredActivity(
        parse_activity(_record(d)),
        parse_time(d["timestamp"]["_data_"], "timestamp"),
        version,
        notification_id,
    )
