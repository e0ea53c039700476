"""Erasing a customer's personal data from every place the store keeps it (GDPR Art. 17).

In place (docs/DECISIONS.md, Erasure): the erasure rewrites what holds the data, then makes
the database drop the old bytes.

1. Under the event store's write lock (nothing is appended meanwhile), the erasure record
   is written, so from then on the customer's activities are scrubbed on the way in
   (`adapters.erasures`); then, in one transaction, every stored activity of the customer
   is rewritten scrubbed (`domain.erasure.scrub`: ids, amounts, points, tiers, segments
   and times kept), under its own id, stream version and record time, and its idempotency
   marker gets the scrubbed content's digest (a redelivery, scrubbed on the way in too,
   is then a duplicate, not a conflict).
2. Each read-model generation (the active one and one a rebuild is building) re-folds the
   customer from the rewritten activities in one transaction (`readmodel.refold`): state
   row, index rows, pages, keys with their fold inputs and checkpoints.
   In that transaction too, when the store keeps a change feed, the erasure publishes its
   own records (`cause` erasure: each path whose current value it changed, the erased
   value never shown).
3. The change feed's earlier records of the customer, the rejects that hold the
   customer's data and the pull queue's errors are rewritten, a transaction each.
4. The old bytes go: on SQLite every write above runs with `PRAGMA secure_delete=ON`, then
   the WAL is checkpointed and truncated and the file vacuumed; on PostgreSQL the rewritten
   tables are rewritten by `VACUUM (FULL)` (a plain VACUUM leaves the dead rows' bytes in
   the pages' free space) and a `CHECKPOINT` is asked for. `vacuum=False` skips the
   rewrite of the files (SQLite: no VACUUM; PostgreSQL: a plain VACUUM).

The personal values searched for are gathered from the customer's whole history first, so
a value that appears in a free-text field of another activity goes too."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import orjson
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import OperationalError

from custate.adapters.erasures import Erasure, scrub_content
from custate.adapters.eventstore import EventStore, customer_stream, marker_stream
from custate.adapters.readmodel.feed import CHANGES_TABLE
from custate.adapters.readmodel.refold import refold_customer
from custate.adapters.readmodel.view import ReadModel
from custate.adapters.rejects import RejectStore
from custate.domain import CustomerState
from custate.domain.erasure import (
    MIN_VALUE_CHARS,
    PROFILE_FIELDS,
    erased_value,
    personal_values,
    scrub,
    scrub_text,
)
from custate.projections.changes import ChangeRecord, differences

__all__ = ["ErasureReport", "erase_customer"]

PULL_QUEUE_TABLE = "custate_pull_queue"


@dataclass(slots=True)
class ErasureReport:
    """What an erasure rewrote (counts of rows, never the data) and how the old bytes went."""

    erasure: Erasure
    activities: int = 0  # stored activities rewritten
    refolded: int = 0  # activities re-folded into the read model (all generations)
    rejects: int = 0
    changes: int = 0  # change-feed records rewritten
    published: int = 0  # change-feed records of the erasure itself (`cause` erasure)
    pull_queue: int = 0
    purge: list[str] = field(default_factory=list)  # what was done to the files, in order
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.erasure.to_json(),
            "rewritten": {
                "activities": self.activities,
                "read_model_activities": self.refolded,
                "rejects": self.rejects,
                "changes": self.changes,
                "pull_queue": self.pull_queue,
            },
            "published_changes": self.published,
            "purge": list(self.purge),
            "warnings": list(self.warnings),
        }


def erase_customer(
    store: EventStore,
    rejects: RejectStore,
    active: ReadModel,
    customer_id: str,
    at: datetime,
    by: str | None = None,
    vacuum: bool = True,
) -> ErasureReport:
    """Erase the customer's personal data from `store`, its `rejects` and the read model
    (`active`, and the generation a rebuild is building, if one is; see the module's
    docstring); the erasure is recorded at `at`, by `by` when given."""
    sqlite = store.url.kind == "sqlite"
    views = [active]
    building = active.generations.building_now()
    if building is not None and building != active.t.generation:
        views.append(ReadModel(store, generation=building))
    with store.write_lock():
        erasure = store.erasures.record(customer_id, at, by)
        report = ErasureReport(erasure)
        with _ErasureConnection(store, sqlite) as c:
            events = _customer_events(c, store, customer_id)
            values: set[str] = set()
            for _, state in events:
                values |= personal_values(orjson.loads(state)["activity"].get("data"), customer_id)
            values |= _reject_values(c, rejects, customer_id)
            report.activities = _rewrite_events(c, store, customer_id, events, values)
            c.commit()
        if not events:
            report.warnings.append(
                "the store holds no activity of this customer: the erasure is recorded, and "
                "the ones stored from now on are erased on the way in"
            )
    with _ErasureConnection(store, sqlite) as c:
        # Her row first: a catch-up of hers that commits between the read of her state
        # below and the re-fold would have its changes counted as the erasure's too.
        active._sql.hold_customer(c, customer_id)
        feed = active.feed
        before = active._rows.states(c, [customer_id]).get(customer_id) if feed else None
        for view in views:
            report.refolded += refold_customer(view, c, customer_id)
        if feed:
            after = active._rows.states(c, [customer_id]).get(customer_id)
            published = _erasure_records(customer_id, before, after, at, values)
            active.changes.insert(c, published)  # last: on PostgreSQL it locks the feed
            report.published = len(published)
        c.commit()
        report.changes = _rewrite_feed(c, customer_id, values)
        c.commit()
        report.rejects = _rewrite_rejects(c, rejects, customer_id, values)
        c.commit()
        report.pull_queue = _rewrite_queue(c, store, customer_id, values)
        c.commit()
    tables = [
        store.url.events_table,
        rejects.table.name,
        CHANGES_TABLE,
        PULL_QUEUE_TABLE,
        *(t.name for view in views for t in view.t.per_customer),
    ]
    _purge(store, report, tables, vacuum)
    return report


class _ErasureConnection:
    """A connection of the store's engine for the erasure's writes: on SQLite with
    `secure_delete` on (freed cells and pages are zeroed), set back off after."""

    def __init__(self, store: EventStore, sqlite: bool) -> None:
        self.store = store
        self.sqlite = sqlite

    def __enter__(self) -> Connection:
        self.c = self.store.engine.connect()
        if self.sqlite:
            self.c.exec_driver_sql("PRAGMA secure_delete=ON")
        return self.c

    def __exit__(self, *exc: object) -> None:
        try:
            self.c.rollback()
            if self.sqlite:
                self.c.exec_driver_sql("PRAGMA secure_delete=OFF")
        finally:
            self.c.close()


def _customer_events(c: Connection, store: EventStore, customer_id: str) -> list[tuple[int, bytes]]:
    rows = c.execute(
        text(
            f"SELECT originator_version, state FROM {store.url.events_table} "
            "WHERE originator_id = :s ORDER BY originator_version"
        ),
        {"s": customer_stream(customer_id)},
    ).all()
    return [(int(v), bytes(s)) for v, s in rows]


def _rewrite_events(
    c: Connection,
    store: EventStore,
    customer_id: str,
    events: list[tuple[int, bytes]],
    values: set[str],
) -> int:
    """Rewrite each stored activity scrubbed, and its marker's digest; how many changed."""
    table = store.url.events_table
    set_state = text(
        f"UPDATE {table} SET state = :state WHERE originator_id = :s AND originator_version = :v"
    )
    get_marker = text(
        f"SELECT state FROM {table} WHERE originator_id = :s AND originator_version = 1"
    )
    n = 0
    for version, state in events:
        d = orjson.loads(state)
        old = orjson.dumps(d["activity"], option=orjson.OPT_SORT_KEYS)
        new, sha = scrub_content(old, customer_id, values)
        if new == old:
            continue
        # As `EventStore._events` writes it: the record time and the group id kept.
        rewritten = orjson.dumps(
            {
                "timestamp": d["timestamp"],
                "group_id": d.get("group_id"),
                "activity": orjson.Fragment(new),
            }
        )
        c.execute(set_state, {"state": rewritten, "s": customer_stream(customer_id), "v": version})
        marker_id = marker_stream(str(d["activity"]["id"]))
        found = c.execute(get_marker, {"s": marker_id}).scalar()
        if found is not None:
            marker = orjson.loads(bytes(found))
            marker["sha256"] = sha
            c.execute(set_state, {"state": orjson.dumps(marker), "s": marker_id, "v": 1})
        n += 1
    return n


def _mentions(s: str | None, customer_id: str, values: set[str]) -> bool:
    if not s:
        return False
    return customer_id in s or any(v in s for v in values if len(v) >= MIN_VALUE_CHARS)


def _reject_values(c: Connection, rejects: RejectStore, customer_id: str) -> set[str]:
    """The customer's personal values held by rejects that name the customer."""
    t = rejects.table
    out: set[str] = set()
    for raw, stored in c.execute(t.select().with_only_columns(t.c.raw, t.c.stored)):
        for s in (raw, stored):
            if s and customer_id in s:
                try:
                    out |= personal_values(orjson.loads(s), customer_id)
                except orjson.JSONDecodeError:
                    continue
    return out


def _scrub_any_text(s: str, customer_id: str, values: set[str]) -> str:
    """JSON text scrubbed as a payload (when it names the customer), else as plain text."""
    try:
        value = orjson.loads(s)
    except orjson.JSONDecodeError:
        return scrub_text(s, values)
    if customer_id in s:
        return orjson.dumps(scrub(value, customer_id, values)).decode()
    out = orjson.dumps(scrub(value, "", values)).decode()  # values only: no own objects
    return out


def _rewrite_rejects(
    c: Connection, rejects: RejectStore, customer_id: str, values: set[str]
) -> int:
    import hashlib

    t = rejects.table
    n = 0
    rows = c.execute(
        t.select().with_only_columns(t.c.id, t.c.source, t.c.location, t.c.raw, t.c.stored)
    ).all()
    for rid, source, location, raw, stored in rows:
        if not (_mentions(raw, customer_id, values) or _mentions(stored, customer_id, values)):
            continue
        new_raw = _scrub_any_text(raw, customer_id, values)
        new_stored = None if stored is None else _scrub_any_text(stored, customer_id, values)
        if new_raw == raw and new_stored == stored:
            continue
        digest = hashlib.sha256(new_raw.encode()).hexdigest()
        twin = c.execute(
            t.select()
            .with_only_columns(t.c.id)
            .where(t.c.source == source, t.c.location == location, t.c.digest == digest)
            .where(t.c.id != rid)
        ).first()
        if twin is not None:  # the same reject, scrubbed, is kept once
            c.execute(t.delete().where(t.c.id == rid))
        else:
            c.execute(
                t.update()
                .where(t.c.id == rid)
                .values(raw=new_raw, stored=new_stored, digest=digest)
            )
        n += 1
    return n


def _feed_value(path: str, value: Any, customer_id: str, values: set[str]) -> Any:
    parts = path.split(".")
    if parts[0] == "profile" and len(parts) > 1 and parts[1] in PROFILE_FIELDS:
        return erased_value(parts[1], value) if len(parts) == 2 else erased_value("", value)
    return scrub(value, customer_id, values)


def _erasure_records(
    customer_id: str,
    before: CustomerState | None,
    after: CustomerState | None,
    at: datetime,
    values: set[str],
) -> list[ChangeRecord]:
    """The erasure's own change records (docs/CHANGES.md): each path whose current value
    the erasure changed, `cause` erasure, effective and recorded at the erasure's time,
    with `before` scrubbed as the customer's earlier records are (the feed never shows the
    erased value, only that the field was erased)."""
    if before is None or after is None:
        return []
    return [
        msgspec.structs.replace(
            r, before=_feed_value(r.path, r.before, customer_id, values), recorded_at=at
        )
        for r in differences(customer_id, before, after, "erasure", at)
    ]


def _rewrite_feed(c: Connection, customer_id: str, values: set[str]) -> int:
    """Scrub the customer's values out of her change records; the records rewritten."""
    rows = c.execute(
        # An erasure's own records hold erased markers only (`_erasure_records`).
        text(
            f"SELECT last_position, records FROM {CHANGES_TABLE} "
            "WHERE customer_id = :c AND cause <> 'erasure'"
        ),
        {"c": customer_id},
    ).all()
    update = text(f"UPDATE {CHANGES_TABLE} SET records = :r WHERE last_position = :p")
    n = 0
    for position, body in rows:
        records = orjson.loads(body)
        for r in records:
            path, _, before, after, *_ = r
            r[2] = _feed_value(path, before, customer_id, values)
            r[3] = _feed_value(path, after, customer_id, values)
            n += (r[2], r[3]) != (before, after)
        new = orjson.dumps(records).decode()
        if new != body:
            c.execute(update, {"r": new, "p": position})
    return n


def _rewrite_queue(c: Connection, store: EventStore, customer_id: str, values: set[str]) -> int:
    if not values or not inspect(c).has_table(PULL_QUEUE_TABLE):
        return 0
    rows = c.execute(
        text(
            f"SELECT listing, error FROM {PULL_QUEUE_TABLE} "
            "WHERE customer_id = :c AND error IS NOT NULL"
        ),
        {"c": customer_id},
    ).all()
    n = 0
    for listing, error in rows:
        new = scrub_text(error, values)
        if new != error:
            c.execute(
                text(
                    f"UPDATE {PULL_QUEUE_TABLE} SET error = :e "
                    "WHERE listing = :l AND customer_id = :c"
                ),
                {"e": new, "l": listing, "c": customer_id},
            )
            n += 1
    return n


HORIZON_WAIT = 60.0
"""Seconds a PostgreSQL erasure waits for the transactions that started before it to end:
VACUUM cannot remove a row version an open snapshot may still see."""


def _wait_for_horizon(c: Connection, timeout: float) -> list[int]:
    """Wait until no other session of this database holds a snapshot or transaction older
    than now (this moment's transaction id); the pids still holding one after `timeout`
    seconds (none: every old row version the erasure left is removable)."""
    xid = int(c.exec_driver_sql("SELECT txid_current()").scalar_one()) % 2**32
    older = text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND ("
        "(backend_xmin IS NOT NULL AND age(backend_xmin) > age(CAST(CAST(:x AS text) AS xid))) "
        "OR (backend_xid IS NOT NULL AND age(backend_xid) > age(CAST(CAST(:x AS text) AS xid))))"
    )
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(p) for p in c.execute(older, {"x": xid}).scalars()]
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.1)


def _purge(store: EventStore, report: ErasureReport, tables: list[str], full: bool) -> None:
    """Make the database drop the old bytes (see the module's docstring). Without `full`,
    SQLite is not vacuumed and PostgreSQL gets a plain VACUUM: that frees the old rows'
    space for reuse but leaves their bytes in it until overwritten (a warning says so)."""
    engine = store.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        if store.url.kind == "sqlite":
            steps = ["PRAGMA wal_checkpoint(TRUNCATE)"]
            if full:
                steps += ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"]
            for step in steps:
                try:
                    result = c.exec_driver_sql(step)
                except OperationalError as e:  # VACUUM: another connection is writing
                    report.warnings.append(
                        f"{step} could not run ({str(e.orig).strip()}): run the erasure "
                        "again when the store is less busy"
                    )
                    continue
                row = result.first() if result.returns_rows else None
                if row is not None and row[0]:  # busy: a reader held the WAL
                    report.warnings.append(
                        f"{step}: another connection was reading; the WAL may still hold "
                        "old pages until the next checkpoint"
                    )
                report.purge.append(step)
            if not full:
                report.warnings.append(
                    "not vacuumed: what the erasure freed was zeroed (secure_delete), but "
                    "free space left by earlier writes may hold old bytes until VACUUM"
                )
            return
        holding = _wait_for_horizon(c, HORIZON_WAIT)
        if holding:
            report.warnings.append(
                f"transactions older than the erasure were still open after {HORIZON_WAIT:.0f} s "
                f"(pids {', '.join(map(str, holding))}): VACUUM keeps the old rows they may "
                "still see; erase again once they have ended"
            )
        have = set(inspect(c).get_table_names())
        for name in tables:
            if name.rsplit(".", 1)[-1] not in have:
                continue
            step = f"VACUUM {'(FULL) ' if full else ''}{name}"
            c.exec_driver_sql(step)
            report.purge.append(step)
        if not full:
            report.warnings.append(
                "plain VACUUM: the old rows' bytes stay in the tables' free space until "
                "overwritten; erase with vacuum (the default) to rewrite the tables"
            )
        try:
            c.exec_driver_sql("CHECKPOINT")
            report.purge.append("CHECKPOINT")
        except Exception as e:  # needs superuser or pg_checkpoint: the server checkpoints soon
            report.warnings.append(
                f"CHECKPOINT not allowed ({type(e).__name__}); the server's own checkpoint writes the pages"
            )
