"""The read model on SQLAlchemy: tracked, batched, exactly-once catch-up from the event
store, current state and indexed queries without folding, point in time from checkpoints,
and blue/green rebuilds.

Exactly once: a batch's rows and its tracking position commit in one transaction, and the
position moves only forward (`UPDATE ... WHERE notification_id = :previous`); a projector
that lost the race rolls back and reads again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from itertools import groupby
from operator import itemgetter
from typing import Any, TypedDict

from eventsourcing.persistence import Notification, TrackingRecorder
from eventsourcing.persistence import Tracking as LibTracking
from sqlalchemy import (
    ColumnElement,
    Connection,
    MetaData,
    Select,
    Table,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from custate.adapters.bulk import fewer_collections
from custate.adapters.codecs import delta
from custate.adapters.codecs import foldinput as inputs
from custate.adapters.codecs import paged as paged_codec
from custate.adapters.codecs import state as state_codec
from custate.adapters.eventstore import (
    ACTIVITY_TOPIC,
    APP_NAME,
    EventStore,
    decode,
)
from custate.adapters.readmodel_tables import (
    INPUT_COLUMN,
    Tables,
    add_input_column,
    meta_table,
    tables,
)
from custate.adapters.sqlschema import create_all, driver, insert_or_ignore
from custate.adapters.statecache import DEFAULT_CHECKPOINT_CACHE_BYTES, CheckpointCache
from custate.domain import Activity, CustomerState
from custate.domain.activity import LazyData
from custate.domain.state import Gap
from custate.projections.catchup import (
    DEFAULT_CHECKPOINT_INTERVAL,
    Changes,
    Head,
    Projected,
    plan,
)
from custate.projections.keys import key_text
from custate.projections.pointintime import state_as_of

# Activities read and planned per step. Several late activities of one customer in a step
# cost one re-fold: 10,000 re-folds a third less often than 5,000 (10% late: 4.7k/s ->
# 6.4k/s, peak RSS 189 -> 240 MB on 100k activities of 2,000 customers).
DEFAULT_CATCHUP_BATCH = 10_000
# Activities planned per write transaction: a catch-up reads `batch_size` at a time but
# writes each touched customer's state and index rows once per this many.
WRITE_EVERY = 100_000
# Index rows are remembered only from writes of at most this many customers: following
# new activities and absorbing late ones (where re-reading a long history's rows was the
# cost), not rebuilds, whose 20k customers' rows were 85 MB of peak memory.
REMEMBER_ROWS_UPTO = 1_000
# SQLite updates customers' rows in place in writes of at most this many customers (the
# following and late activities of long histories); bulk writes delete and insert: with
# thousands of short states per write, row-by-row updates made catch-up a fifth slower.
UPDATE_IN_PLACE_UPTO = 100
# Parsed activities kept for re-folds and point in time (about 4.5 KiB each, stored bytes
# included).
PARSED_CACHE_SIZE = 4096
# A large map (orders, vouchers, reward redemptions) of at least this many entries is
# stored in pages of entries (`pages`), not in the customer's row: a long history's row
# was 233 KB, mostly orders, rewritten whole for every activity, a late one's included,
# that changed a few bytes of it. Shorter maps stay in the row, where a bulk write puts
# them in one insert.
APART_FROM = 256


@dataclass(slots=True)
class CatchUpReport:
    activities: int = 0
    batches: int = 0
    late: int = 0
    position: int = 0


class CustomerFilters(TypedDict, total=False):
    """The filters of a customers query, as keyword arguments."""

    segment: str | None
    tier: str | None
    campaign: str | None
    min_points: int | None
    max_points: int | None
    status: str | None
    order_status: str | None


@dataclass(frozen=True, slots=True)
class CustomerQuery:
    """Who to list or count: every filter given must hold."""

    segment: str | None = None
    tier: str | None = None
    campaign: str | None = None
    min_points: int | None = None
    max_points: int | None = None
    status: str | None = None
    order_status: str | None = None


@dataclass(frozen=True, slots=True)
class CustomerRow:
    customer_id: str
    status: str
    points: int
    activity_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "status": self.status,
            "points": self.points,
            "activities": self.activity_count,
        }


class ReadModel(TrackingRecorder):
    """One generation of the read model. Implements the library's `TrackingRecorder`, and
    the ports the catch-up and point-in-time logic read through."""

    def __init__(
        self,
        store: EventStore,
        generation: int | None = None,
        interval: int = DEFAULT_CHECKPOINT_INTERVAL,
        checkpoint_cache_bytes: int = DEFAULT_CHECKPOINT_CACHE_BYTES,
        apart_from: int | None = None,
    ) -> None:
        self.store = store
        self.apart_from = APART_FROM if apart_from is None else apart_from
        self.engine = store.engine
        # The driver's placeholder, for statements that go to it directly.
        self._mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self.interval = interval
        self._meta = meta_table(MetaData())
        create_all(self.engine, self._meta.metadata)
        self.t: Tables = tables(generation if generation is not None else self.active_generation())
        create_all(self.engine, self.t.metadata)
        add_input_column(self.engine, self.t)
        with self.engine.begin() as c:
            c.execute(
                insert_or_ignore(self.engine, self.t.tracking).values(
                    application_name=APP_NAME, notification_id=0
                )
            )
        self._cache: dict[str, tuple[CustomerState, Head]] = {}
        # The index rows this process last wrote for a customer, under the head written
        # with them: while the database still has that head, they are its rows (every write
        # of a customer's rows writes its head, and commits with the tracking position).
        self._rows: dict[str, _Written] = {}
        # Parsed activities read back for re-folds and point in time, by (customer, stream
        # version): stored events never change, and `Activity` is immutable, so entries
        # stay valid; least recently used ones go first.
        self._parsed: OrderedDict[tuple[str, int], Activity] = OrderedDict()
        self._local = threading.local()  # `conn`: the connection of this thread's catch-up
        self.checkpoints = CheckpointCache(checkpoint_cache_bytes)

    # -- generations ---------------------------------------------------------------------

    def _meta_get(self, c: Connection, name: str) -> str | None:
        row = c.execute(select(self._meta.c.value).where(self._meta.c.name == name)).first()
        return None if row is None else str(row[0])

    def active_generation(self) -> int:
        with self.engine.begin() as c:
            value = self._meta_get(c, "active")
            if value is not None:
                return int(value)
            c.execute(insert_or_ignore(self.engine, self._meta).values(name="active", value="1"))
            return int(self._meta_get(c, "active") or 1)

    # -- TrackingRecorder ----------------------------------------------------------------

    def insert_tracking(self, tracking: LibTracking) -> None:
        with self.engine.begin() as c:
            self._advance(c, self._position(c), tracking.notification_id)

    def max_tracking_id(self, application_name: str) -> int | None:
        with self.engine.connect() as c:
            return self._position(c) or None

    def position(self) -> int:
        with self._reading() as c:
            return self._position(c)

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection to read with: the one of this thread's catch-up, when one runs. A
        catch-up reads the position, the heads, a checkpoint and keys, and checking a pooled
        connection out and back in for each read cost more than the reads (eight times for
        a late activity). Its writes take a connection of their own (`_write`)."""
        c: Connection | None = getattr(self._local, "conn", None)
        if c is not None:
            yield c
            return
        with self.engine.connect() as c:
            yield c

    # The statements every catch-up runs, however small, go to the driver as text: for a
    # single late activity, building SQLAlchemy statements was a quarter of the work.

    def _position(self, c: Connection) -> int:
        sql = f"SELECT notification_id FROM {self.t.tracking.name} WHERE application_name = {self._mark}"
        (position,) = driver(c).execute(sql, (APP_NAME,)).fetchone()
        return int(position)

    def _advance(self, c: Connection, previous: int, new: int) -> bool:
        mark = self._mark
        sql = (
            f"UPDATE {self.t.tracking.name} SET notification_id = {mark} "
            f"WHERE application_name = {mark} AND notification_id = {mark}"
        )
        return c.exec_driver_sql(sql, (new, APP_NAME, previous)).rowcount == 1

    # -- ports for the catch-up and point in time ------------------------------------------

    def heads(self, customer_ids: Sequence[str]) -> dict[str, Head]:
        out: dict[str, Head] = {}
        with self._reading() as c:
            for chunk in _chunks(customer_ids):
                sql = (
                    f"SELECT customer_id, last_key, last_version FROM {self.t.customers.name} "
                    f"WHERE customer_id IN ({self._marks(len(chunk))})"
                )
                rows = driver(c).execute(sql, tuple(chunk)).fetchall()
                out.update((r[0], Head(r[1], r[2])) for r in rows)
        return out

    def _marks(self, n: int) -> str:
        return ", ".join(self._mark for _ in range(n))

    def states(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        cu = self.t.customers
        out: dict[str, CustomerState] = {}
        apart: dict[str, tuple[str, ...]] = {}
        with self.engine.connect() as c:
            for chunk in _chunks(customer_ids):
                q = select(cu.c.customer_id, cu.c.state).where(cu.c.customer_id.in_(chunk))
                for cid, stored in c.execute(q):
                    out[cid], names = paged_codec.load_row(stored)
                    if names:
                        apart[cid] = names
            if apart:
                self._fill(c, out, apart)
        return out

    def _fill(
        self, c: Connection, states: Mapping[str, CustomerState], apart: Mapping[str, Sequence[str]]
    ) -> None:
        """Read back the large maps `apart` names, stored in pages, into `states`."""
        for ids in _chunks(list(apart)):
            sql = (
                f"SELECT customer_id, field, entries FROM {self.t.pages.name} "
                f"WHERE customer_id IN ({self._marks(len(ids))}) ORDER BY customer_id, field"
            )
            rows = driver(c).execute(sql, tuple(ids)).fetchall()
            for (cid, name), run in groupby(rows, key=itemgetter(0, 1)):
                if name in apart[cid]:
                    setattr(states[cid], name, paged_codec.load_map(name, (r[2] for r in run)))

    def checkpoint_before(self, customer_id: str, key: str) -> tuple[str, CustomerState] | None:
        found = self._checkpoint_before(customer_id, key)
        return None if found is None else (found[0], found[1])

    def _checkpoint_before(
        self, customer_id: str, key: str
    ) -> tuple[str, CustomerState, bytes | str | None, int] | None:
        """`checkpoint_before`, and the checkpoint's stored form and the size the cache
        counts it at, when known (for a `delta.Base` of what a re-fold from it stores)."""
        # Straight to the driver, as in keys_between: once the decoded checkpoint is cached,
        # building the statement was a tenth of a point-in-time answer. The checkpoint's key
        # comes with the customer's head, in one statement (one snapshot): while the head is
        # the one a cached state was known current at, its stored bytes are not read (for a
        # long history they were a third of absorbing a late activity).
        mark = self._mark
        cp, cu = self.t.checkpoints.name, self.t.customers.name
        with self._reading() as c:
            found = (
                driver(c)
                .execute(
                    f"SELECT cp.key, cu.last_key, cu.last_version FROM {cp} cp "
                    f"JOIN {cu} cu ON cu.customer_id = cp.customer_id "
                    f"WHERE cp.customer_id = {mark} AND cp.key < {mark} "
                    "ORDER BY cp.key DESC LIMIT 1",
                    (customer_id, key),
                )
                .fetchone()
            )
            if found is None:
                return None
            at, head = found[0], Head(found[1], found[2])
            cached = self.checkpoints.current(customer_id, at, head)
            if cached is not None:
                held = self.checkpoints.held(customer_id, at)
                return (at, cached, *held) if held is not None else (at, cached, None, 0)
            stored = self._stored_checkpoint(c, customer_id, at)
        if stored is None:  # dropped by a late activity since the first statement: look again
            return self._checkpoint_before(customer_id, key)
        # `head` was read no later than these bytes: see `CheckpointCache.state`.
        state = self.checkpoints.state(
            customer_id, at, stored, head, lambda s: self._load_checkpoint(customer_id, s, head)
        )
        held = self.checkpoints.held(customer_id, at)
        return at, state, stored, held[1] if held is not None else len(stored)

    def _stored_checkpoint(self, c: Connection, customer_id: str, key: str) -> str | None:
        mark = self._mark
        row = c.exec_driver_sql(
            f"SELECT state FROM {self.t.checkpoints.name} "
            f"WHERE customer_id = {mark} AND key = {mark}",
            (customer_id, key),
        ).first()
        return None if row is None else str(row[0])

    def _load_checkpoint(
        self, customer_id: str, stored: bytes | str, head: Head
    ) -> tuple[CustomerState, int]:
        """A stored checkpoint decoded, made whole with its base if it was stored against
        one, and the size to count it as in the cache (its base's, if it has one)."""
        state, against = delta.load_delta(stored)
        if against is None:
            return state, len(stored)
        with self._reading() as c:
            base = self._stored_checkpoint(c, customer_id, against.base)
        if base is None:
            # A base sorts before what is stored against it, and late activities drop
            # checkpoints from a key on, in the same transaction: it cannot be gone.
            raise LookupError(f"checkpoint {customer_id!r} {against.base!r} is gone")
        whole = self.checkpoints.state(customer_id, against.base, base, head)
        return delta.rebase(state, against, whole), len(base)

    def checkpoint_at(self, customer_id: str, key: str) -> CustomerState | None:
        """The checkpoint stored under exactly `key`, whole."""
        with self._reading() as c:
            stored = self._stored_checkpoint(c, customer_id, key)
            head = self.heads([customer_id]).get(customer_id)
        if stored is None or head is None:
            return None
        return self._load_checkpoint(customer_id, stored, head)[0]

    def keys_between(
        self, customer_id: str, after: str | None, upto: str | None = None
    ) -> list[tuple[str, int]]:
        """(key, version) of projected activities with `after < key <= upto`, in key order."""
        # Through the driver's own cursor (`driver`): this runs for every point in time and
        # every late activity, and SQLAlchemy's result rows cost more than the query (a
        # late activity's ~200 keys: 0.2 ms through them, 0.1 ms without).
        mark = self._mark
        sql = (
            f"SELECT key, version FROM {self.t.keys.name} WHERE customer_id = {mark} "
            f"AND key > {mark} AND key <= {mark} ORDER BY key"
        )
        # Fold keys are ASCII text starting with a year: "" and DEL bound them all.
        bounds = (customer_id, after if after is not None else "", upto or "\x7f")
        with self._reading() as c:
            rows: list[tuple[str, int]] = driver(c).execute(sql, bounds).fetchall()
        return rows

    def fold_inputs(
        self, customer_id: str, after: str | None = None, known_at: datetime | None = None
    ) -> list[tuple[Activity, datetime]]:
        """The projected activities with a key after `after` (and recorded by `known_at`),
        in fold order, with their record times: from their fold inputs (`adapters.codecs.foldinput`),
        what an audit folds at a fifth of the bytes of the events. Those without one are
        read from the event store. Pairs, not `StoredActivity`s: a long history is tens of
        thousands, and every object more was time to build and to free."""
        mark = self._mark
        sql = (
            f"SELECT version, {INPUT_COLUMN} FROM {self.t.keys.name} "
            f"WHERE customer_id = {mark} AND key > {mark} ORDER BY key"
        )
        with self._reading() as c:
            rows: list[tuple[int, bytes | None]] = (
                driver(c).execute(sql, (customer_id, after or "")).fetchall()
            )
        raw = partial(self.store.stored_payload, customer_id)  # one loader, a version each
        load = inputs.load
        out: list[tuple[Activity, datetime] | None] = []
        missing: list[tuple[int, int]] = []  # (place in `out`, version)
        for version, blob in rows:
            got = None if blob is None else load(blob, customer_id, LazyData(raw, version))
            if got is None:
                missing.append((len(out), version))
            out.append(got)
        if missing:
            found = self.store.customer_versions(customer_id, [v for _, v in missing])
            for i, v in missing:
                s = found[v]
                out[i] = (s.activity, s.recorded_at)
        filled: list[tuple[Activity, datetime]] = out  # type: ignore[assignment]
        if known_at is not None:
            return [p for p in filled if p[1] <= known_at]
        return filled

    def activities(self, customer_id: str, versions: Sequence[int]) -> list[Activity]:
        parsed = self._parsed
        found: dict[int, Activity] = {}
        for v in versions:
            hit = parsed.get((customer_id, v))
            if hit is not None:
                parsed.move_to_end((customer_id, v))
                found[v] = hit
        missing = [v for v in versions if v not in found]
        if missing:
            for version, stored in self.store.customer_versions(customer_id, missing).items():
                found[version] = parsed[(customer_id, version)] = stored.activity
            while len(parsed) > PARSED_CACHE_SIZE:
                parsed.popitem(last=False)
        return [found[v] for v in versions]

    # -- catch-up ------------------------------------------------------------------------

    def catch_up(
        self,
        batch_size: int = DEFAULT_CATCHUP_BATCH,
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> CatchUpReport:
        """Project everything stored since the tracking position, a batch per transaction."""
        with fewer_collections(), self.engine.connect() as c:
            self._local.conn = c
            try:
                return self._catch_up(batch_size, progress, should_stop)
            except BaseException:
                # `plan` folds on from cached states in place: after a failure they may hold
                # activities that were never written, under heads that still match.
                self._cache.clear()
                raise
            finally:
                self._local.conn = None

    def _catch_up(
        self,
        batch_size: int,
        progress: Callable[[int], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> CatchUpReport:
        report = CatchUpReport()
        recorder = self.store.recorder
        pending = _Pending(self, self.position())
        last = False  # the last select found less than a batch: nothing more was stored
        while True:
            notes: Sequence[Notification] = ()
            if not last and (should_stop is None or not should_stop()):
                notes = recorder.select_notifications(
                    pending.position, batch_size, topics=[ACTIVITY_TOPIC], inclusive_of_start=False
                )
                last = len(notes) < batch_size
            if not notes:
                if pending.count and not self._flush(pending, report):
                    pending = _Pending(self, self.position())  # lost a race: read again
                    last = False
                    continue
                break
            batch = []
            inputs_at: dict[tuple[str, int], bytes | None] = {}
            parsed = self._parsed
            for n in notes:
                s = decode(n.state, n.originator_version, n.id)
                batch.append(Projected(s.activity, s.version, key_text(s.activity)))
                inputs_at[(s.activity.customer_id, s.version)] = inputs.dump(
                    s.activity, s.recorded_at
                )
                # A late activity re-folds its customer's recent tail: keep what was just
                # decoded, so that tail is not read and decoded again.
                parsed[(s.activity.customer_id, s.version)] = s.activity
            while len(parsed) > PARSED_CACHE_SIZE:
                parsed.popitem(last=False)
            changes = plan(batch, pending, self, self.interval, self._cache)
            pending.add(changes, len(batch), notes[-1].id, inputs_at)
            self._cache.update(changes.states)
            if progress is not None:
                progress(len(batch))
            if pending.count >= WRITE_EVERY:
                if not self._flush(pending, report):
                    pending = _Pending(self, self.position())
                    last = False
                    continue
                pending = _Pending(self, pending.position)
        report.position = report.position or self.position()
        return report

    def _flush(self, pending: _Pending, report: CatchUpReport) -> bool:
        """Write what `pending` holds in one transaction; False if another projector moved
        the tracking position first (then nothing is written, and the caches are dropped)."""
        kept = pending.stored_kept()
        if not self._write(
            pending.changes,
            pending.previous,
            pending.position,
            [*pending.rows, *((cid, key, text) for cid, key, text, _ in kept)],
            pending.db_heads,
            pending.key_rows,
        ):
            self._cache.clear()
            self._rows.clear()
            return False
        heads = pending.changes.states
        drops = pending.changes.drop_checkpoints_from
        for cid, old in pending.db_heads.items():
            if cid in heads:
                self.checkpoints.advance(cid, old, heads[cid][1], drops.get(cid))
        for (cid, key, state), (_, _, stored, size) in zip(pending.kept, kept, strict=True):
            self.checkpoints.put(cid, key, stored, state, heads[cid][1], size)
        report.activities += pending.count
        report.batches += pending.batches
        report.late += pending.changes.late
        report.position = pending.position
        return True

    def _write(
        self,
        changes: Changes,
        previous: int,
        position: int,
        checkpoint_rows: Sequence[tuple[str, str, str]] = (),
        db_heads: Mapping[str, Head] | None = None,
        key_rows: Sequence[tuple[str, str, int, bytes | None]] = (),
    ) -> bool:
        """`key_rows`: (customer, key, version, fold input) of each new activity."""
        t = self.t
        remember = len(changes.states) <= REMEMBER_ROWS_UPTO
        written: dict[str, dict[str, set[tuple[Any, ...]]]] = {}
        paged: dict[str, dict[str, _Paged]] = {}
        with self.engine.begin() as c:
            if not self._advance(c, previous, position):
                c.rollback()
                return False
            drop = (
                f"DELETE FROM {t.checkpoints.name} "
                f"WHERE customer_id = {self._mark} AND key >= {self._mark}"
            )
            for cid, from_key in changes.drop_checkpoints_from.items():
                c.exec_driver_sql(drop, (cid, from_key))
            # Rows go to the driver's executemany directly: SQLAlchemy's per-row parameter
            # processing cost more than the inserts themselves. A few thousand customers at
            # a time, so that their state JSON is never all in memory at once.
            states = sorted(changes.states.items())
            for chunk in _chunks(states, 2000):
                known = [cid for cid, _ in chunk if cid not in changes.new]
                mine = self._remembered(known, db_heads)
                remembered = {cid: w.rows for cid, w in mine.items()}
                same = _unchanged_sources(chunk, mine, t)
                # One decision per customer for both: the row leaves out what the pages hold.
                apart = {cid: _apart(s, self.apart_from) for cid, (s, _) in chunk}
                self._write_pages(c, chunk, apart, changes.new, mine, paged if remember else None)
                for table, rows in _index_rows(chunk, t, same, apart).items():
                    if table is t.customers:
                        rows = self._replace_customers(c, table, known, rows)
                    else:
                        unchanged = same.get(table.name, set())
                        if remember:
                            _remember(written, table, rows)
                            for cid in unchanged:
                                kept = remembered[cid].get(table.name, set())
                                written.setdefault(cid, {})[table.name] = kept
                        todo = [i for i in known if i not in unchanged] if unchanged else known
                        if todo:
                            rows = self._replace_changed(c, table, todo, rows, remembered)
                    if rows:
                        self._insert_many(c, table, rows)
            if key_rows:
                self._insert_many(c, t.keys, key_rows)
            rows = list(checkpoint_rows)
            if rows:
                self._insert_many(c, t.checkpoints, rows)
        self._cache.update(changes.states)
        if len(self._cache) > 50_000:
            self._cache.clear()
        if remember:
            if len(self._rows) > 50_000:
                self._rows.clear()
            sources = _sources(t)
            for cid, (state, head) in changes.states.items():
                copies = {name: dict(source(state)) for name, source in sources.items()}
                self._rows[cid] = _Written(head, written.get(cid, {}), copies, paged.get(cid, {}))
        else:
            for cid in changes.states:
                self._rows.pop(cid, None)
        return True

    def _write_pages(
        self,
        c: Connection,
        chunk: Sequence[tuple[str, tuple[CustomerState, Head]]],
        apart: Mapping[str, tuple[str, ...]],
        new: set[str],
        remembered: Mapping[str, _Written],
        paged: dict[str, dict[str, _Paged]] | None,
    ) -> None:
        """Store the large maps `apart` names (`_apart`) in pages. For a customer whose
        pages this process wrote last (`remembered`), only those holding entries that
        changed: a late activity or the next one of a long history changes a few of its
        thousands. `paged`: where to put what was written, to remember it."""
        pg = self.t.pages
        mark = self._mark
        wipe: list[str] = []  # customers whose stored pages are not known here
        dropped: list[tuple[str, str]] = []  # (customer, map) no longer stored apart
        gone: list[tuple[str, str, int]] = []
        rows: list[tuple[str, str, int, str]] = []
        for cid, (s, _) in chunk:
            names = apart[cid]
            w = remembered.get(cid)
            before: Mapping[str, _Paged] = {} if w is None else w.apart
            if w is None and cid not in new:
                wipe.append(cid)
            dropped += [(cid, name) for name in before if name not in names]
            after: dict[str, _Paged] = {}
            for name in names:
                now: dict[str, Any] = getattr(s, name)
                held = before.get(name)
                if held is not None and held.entries == now:  # in C, by identity first
                    after[name] = held
                    continue
                if held is None:
                    members: dict[int, list[str]] = {}
                    for k in now:
                        members.setdefault(paged_codec.page_of(k), []).append(k)
                    touched: Collection[int] = list(members)
                else:
                    members = dict(held.members)  # held stays as stored, should this write fail
                    touched = _touched(held.entries, now, members)
                    gone += [(cid, name, page) for page in touched]
                rows += [
                    (cid, name, page, paged_codec.dump_page({k: now[k] for k in members[page]}))
                    for page in touched
                    if members.get(page)
                ]
                for page in touched:
                    if not members.get(page):
                        members.pop(page, None)
                if paged is not None:
                    after[name] = _Paged(dict(now), members)
            if paged is not None:
                paged[cid] = after
        for ids in _chunks(wipe):
            c.exec_driver_sql(
                f"DELETE FROM {pg.name} WHERE customer_id IN ({self._marks(len(ids))})", tuple(ids)
            )
        if dropped:
            c.exec_driver_sql(
                f"DELETE FROM {pg.name} WHERE customer_id = {mark} AND field = {mark}", dropped
            )
        if gone:
            c.exec_driver_sql(
                f"DELETE FROM {pg.name} WHERE customer_id = {mark} AND field = {mark} "
                f"AND page = {mark}",
                gone,
            )
        if rows:
            self._insert_many(c, pg, rows)

    def _remembered(
        self, known: Sequence[str], db_heads: Mapping[str, Head] | None
    ) -> dict[str, _Written]:
        """What this process last wrote of those `known` customers whose rows it wrote last."""
        if not db_heads:
            return {}
        out: dict[str, _Written] = {}
        for cid in known:
            hit = self._rows.get(cid)
            if hit is not None and db_heads.get(cid) == hit.head:
                out[cid] = hit
        return out

    def _replace_changed(
        self,
        c: Connection,
        table: Table,
        known: Sequence[str],
        rows: list[tuple[Any, ...]],
        remembered: Mapping[str, dict[str, set[tuple[Any, ...]]]],
    ) -> list[tuple[Any, ...]]:
        """Delete the index rows of customers seen before that are no longer right, and
        return the rows still to insert. A customer's next activities mostly leave its
        index rows as they were (a long history has thousands of orders), and reading them
        (or remembering what was written) costs less than rewriting them."""
        old: set[tuple[Any, ...]] = set()
        for cid in known:
            mine = remembered.get(cid)
            if mine is not None:
                old |= mine.get(table.name, set())
        unread = [cid for cid in known if cid not in remembered]
        mark = self._mark
        cols = ", ".join(col.name for col in table.columns)
        for ids in _chunks(unread):
            # Through the driver, all rows at once: a long history has thousands of rows.
            sql = f"SELECT {cols} FROM {table.name} WHERE customer_id IN ({self._marks(len(ids))})"
            old.update(tuple(r) for r in c.exec_driver_sql(sql, tuple(ids)).fetchall())
        new = set(rows)
        gone = old - new
        if gone:
            pk = [i for i, col in enumerate(table.columns) if col.primary_key]
            where = " AND ".join(f"{table.columns[i].name} = {mark}" for i in pk)
            c.exec_driver_sql(
                f"DELETE FROM {table.name} WHERE {where}",
                [tuple(r[i] for i in pk) for r in gone],
            )
        return [r for r in rows if r not in old]

    def _replace_customers(
        self, c: Connection, table: Table, known: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Replace the rows of the `known` customers; return the new customers' rows, still to
        insert. In a small write SQLite updates them in place: a row that keeps its size is
        rewritten only where its bytes changed, and a long history's state is hundreds of
        KB that a late activity changes a few bytes of (deleting and inserting it cost six
        times as much to commit). Bulk writes (thousands of short states) and PostgreSQL
        delete them, and put every row in at once (COPY on PostgreSQL)."""
        if not known:
            return rows
        if self.engine.dialect.name == "sqlite" and len(known) <= UPDATE_IN_PLACE_UPTO:
            ids = set(known)
            cols = [col.name for col in table.columns][1:]  # customer_id is first
            sets = ", ".join(f"{name} = ?" for name in cols)
            c.exec_driver_sql(
                f"UPDATE {table.name} SET {sets} WHERE customer_id = ?",
                [(*r[1:], r[0]) for r in rows if r[0] in ids],
            )
            return [r for r in rows if r[0] not in ids]
        for chunk in _chunks(known):
            c.exec_driver_sql(
                f"DELETE FROM {table.name} WHERE customer_id IN ({self._marks(len(chunk))})",
                tuple(chunk),
            )
        return rows

    def _insert_many(self, c: Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        cols = ", ".join(col.name for col in table.columns)
        if self.engine.dialect.name == "postgresql":
            # COPY, in the same transaction: psycopg's executemany was a third of a
            # PostgreSQL catch-up (100k keys rows a 100k-activity batch).
            with (
                driver(c).cursor() as cur,
                cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as cp,
            ):
                for r in rows:
                    cp.write_row(r)
            return
        marks = self._marks(len(table.columns))
        c.exec_driver_sql(f"INSERT INTO {table.name} ({cols}) VALUES ({marks})", list(rows))

    def lag(self) -> int:
        """Activities stored but not yet projected."""
        events = self.store.url.events_table
        with self.engine.connect() as c:
            position = self._position(c)
            n = c.execute(
                text(
                    f"SELECT COUNT(*) FROM {events} WHERE topic = :t AND "
                    + ("rowid > :p" if self.store.url.kind == "sqlite" else "notification_id > :p")
                ),
                {"t": ACTIVITY_TOPIC, "p": position},
            ).scalar_one()
        return int(n)

    # -- answers -------------------------------------------------------------------------

    def last_key(self, customer_id: str) -> str | None:
        """The fold key of the last activity folded into the customer's current state;
        None for a customer the read model has not seen."""
        cu = self.t.customers
        with self.engine.connect() as c:
            row = c.execute(select(cu.c.last_key).where(cu.c.customer_id == customer_id)).first()
        return None if row is None else str(row[0])

    def current(self, customer_id: str) -> CustomerState | None:
        return self.states([customer_id]).get(customer_id)

    def gaps(self) -> Iterator[tuple[str, list[Gap]]]:
        """Each customer with balance-continuity gaps, and the gaps, in customer id order,
        from the stored states (no fold). A state with no gaps has `"gaps":[]` in
        its JSON (either stored form); only the others are parsed."""
        cu = self.t.customers
        q = (
            select(cu.c.customer_id, cu.c.state)
            .where(cu.c.state.like('%"gaps":[[%') | cu.c.state.like('%"gaps":[{%'))
            .order_by(cu.c.customer_id)
        )
        with self.engine.connect() as c:
            for cid, state in c.execute(q):
                gaps = paged_codec.load_row(state)[0].gaps
                if gaps:
                    yield cid, gaps

    def as_of(self, customer_id: str, t: datetime) -> CustomerState:
        # A checkpoint of a long history is thousands of objects: collecting while they
        # are built was the p99 (a full collection walks every cached parsed activity).
        with fewer_collections():
            return state_as_of(self, self, customer_id, t)

    def customers(
        self, q: CustomerQuery, after: str | None = None, limit: int | None = None
    ) -> list[CustomerRow]:
        """Customers matching every filter of `q`, in customer id order, from the indexes:
        a page of at most `limit` after the id `after` (keyset paging: a page costs the
        same wherever it starts)."""
        t = self.t
        cu = t.customers
        query: Select[Any] = select(cu.c.customer_id, cu.c.status, cu.c.points, cu.c.activity_count)
        # A segment drives the query from its index, which is in customer id order: a page
        # of a 100k-member segment reads a page of index rows, not every member first.
        order = cu.c.customer_id
        if q.segment is not None:
            sg = t.segments
            query = query.join(
                sg, (sg.c.customer_id == cu.c.customer_id) & (sg.c.segment_id == q.segment)
            )
            order = sg.c.customer_id
        query = self._where(query, replace(q, segment=None))
        if after is not None:
            query = query.where(order > after)
        query = query.order_by(order)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as c:
            return [CustomerRow(r[0], r[1], int(r[2]), r[3]) for r in c.execute(query)]

    def count(self, q: CustomerQuery) -> int:
        """How many customers match every filter of `q`."""
        t = self.t
        if q == CustomerQuery(segment=q.segment) and q.segment is not None:
            # Every membership row is a customer's: count the index alone.
            query = select(func.count()).where(t.segments.c.segment_id == q.segment)
        else:
            query = self._where(select(func.count()).select_from(t.customers), q)
        with self.engine.connect() as c:
            return int(c.execute(query).scalar_one())

    def _where(self, query: Select[Any], q: CustomerQuery) -> Select[Any]:
        """`query` over `customers`, narrowed by each filter of `q`. With `campaign`, `tier`
        and the points bounds look at that loyalty campaign only."""
        t = self.t
        cu = t.customers
        points: ColumnElement[Any] = cu.c.points
        # Membership as `customer_id IN (SELECT ... WHERE <indexed column> = ?)`: the index
        # finds the few members; a correlated EXISTS made SQLite probe every customer.
        if q.segment is not None:
            query = query.where(
                cu.c.customer_id.in_(
                    select(t.segments.c.customer_id).where(t.segments.c.segment_id == q.segment)
                )
            )
        if q.tier is not None or q.campaign is not None:
            cond = [t.tiers.c.customer_id == cu.c.customer_id]
            if q.tier is not None:
                cond.append(t.tiers.c.tier_id == q.tier)
            if q.campaign is not None:
                cond.append(t.tiers.c.campaign_id == q.campaign)
            in_tiers = select(t.tiers.c.customer_id).where(*cond).exists()
            if q.tier is None and q.campaign is not None:
                in_cards = (
                    select(t.cards.c.customer_id)
                    .where(
                        t.cards.c.customer_id == cu.c.customer_id,
                        t.cards.c.campaign_id == q.campaign,
                    )
                    .exists()
                )
                query = query.where(in_tiers | in_cards)
            else:
                query = query.where(in_tiers)
        if q.campaign is not None and (q.min_points is not None or q.max_points is not None):
            points = (
                select(func.coalesce(func.sum(t.cards.c.balance), 0))
                .where(
                    t.cards.c.customer_id == cu.c.customer_id, t.cards.c.campaign_id == q.campaign
                )
                .scalar_subquery()
            )
        if q.min_points is not None:
            query = query.where(points >= q.min_points)
        if q.max_points is not None:
            query = query.where(points <= q.max_points)
        if q.status is not None:
            query = query.where(cu.c.status == q.status)
        if q.order_status is not None:
            query = query.where(
                cu.c.customer_id.in_(
                    select(t.orders.c.customer_id).where(t.orders.c.status == q.order_status)
                )
            )
        return query

    def all_customer_ids(self) -> Iterator[str]:
        with self.engine.connect() as c:
            yield from (
                r[0]
                for r in c.execute(
                    select(self.t.customers.c.customer_id).order_by(self.t.customers.c.customer_id)
                )
            )


class _Pending:
    """Planned batches not yet written: several read batches go into one transaction, so a
    customer's state and index rows are written once per transaction, not once per batch.
    It is the read-model port of the next batch's plan: what it holds (heads, states, keys,
    checkpoints, checkpoints to drop) overlays what the database has."""

    def __init__(self, model: ReadModel, position: int) -> None:
        self.model = model
        self.previous = position  # the tracking position in the database
        self.position = position  # the last notification planned
        self.changes = Changes()
        self.rows: list[tuple[str, str, str]] = []  # checkpoints, serialised when planned
        self.kept: list[tuple[str, str, CustomerState]] = []  # re-folds' checkpoints, decoded
        # customer -> what its last re-fold's checkpoints are stored against
        self.bases: dict[str, delta.Base] = {}
        self.db_heads: dict[str, Head] = {}  # what the database had, as first read
        self.keys: dict[str, list[tuple[str, int]]] = {}  # customer -> (key, version)
        # The new activities' `keys` rows, each with its fold input (`adapters.codecs.foldinput`).
        self.key_rows: list[tuple[str, str, int, bytes | None]] = []
        self.count = 0
        self.batches = 0

    def add(
        self,
        changes: Changes,
        count: int,
        position: int,
        inputs_at: Mapping[tuple[str, int], bytes | None],
    ) -> None:
        """`inputs_at`: the fold input of each activity of the batch, by (customer, version).
        They are kept only in the rows (no `changes.keys`, no map): a rebuild holds those of
        100k activities until it writes them, 47 MB."""
        c = self.changes
        c.states.update(changes.states)
        for cid, key, version in changes.keys:
            self.keys.setdefault(cid, []).append((key, version))
            self.key_rows.append((cid, key, version, inputs_at[(cid, version)]))
        drops = changes.drop_checkpoints_from
        if drops:
            # Checkpoints planned earlier at or after a late key are dropped as well.
            self.rows = [r for r in self.rows if r[0] not in drops or r[1] < drops[r[0]]]
            self.kept = [r for r in self.kept if r[0] not in drops or r[1] < drops[r[0]]]
            for cid, key in drops.items():
                before = c.drop_checkpoints_from.get(cid)
                c.drop_checkpoints_from[cid] = key if before is None else min(before, key)
        self.rows.extend(
            (cid, key, state_codec.dump_text(s)) for cid, key, s in changes.checkpoints
        )
        self.kept.extend(changes.kept)
        c.late += changes.late
        c.new |= changes.new
        self.count += count
        self.batches += 1
        self.position = position

    def heads(self, customer_ids: Sequence[str]) -> dict[str, Head]:
        held = self.changes.states
        out = self.model.heads([i for i in customer_ids if i not in held])
        for i, head in out.items():
            self.db_heads.setdefault(i, head)
        out.update((i, held[i][1]) for i in customer_ids if i in held)
        return out

    def states(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        held = self.changes.states
        out = self.model.states([i for i in customer_ids if i not in held])
        out.update((i, held[i][0]) for i in customer_ids if i in held)
        return out

    def checkpoint_before(self, customer_id: str, key: str) -> tuple[str, CustomerState] | None:
        """The port's, for a re-fold: its start, and the checkpoint stored in full that
        the start is (or is stored against), are remembered as the base of what the
        re-fold stores (`stored_kept`)."""
        dropped = self.changes.drop_checkpoints_from.get(customer_id)
        planned = [r for r in self.rows if r[0] == customer_id and r[1] < key]
        kept = [r for r in self.kept if r[0] == customer_id and r[1] < key]
        k, text = max((r[1], r[2]) for r in planned) if planned else ("", "")
        k2, state = max(((r[1], r[2]) for r in kept), key=itemgetter(0)) if kept else ("", None)
        if state is not None and k2 > k:
            return k2, state.copy()
        if planned:
            whole = state_codec.load(text)
            self.bases[customer_id] = delta.Base.of(k, whole, text, len(text))
            return k, whole
        # The database's, less those a planned late activity drops.
        found = self.model._checkpoint_before(
            customer_id, key if dropped is None else min(key, dropped)
        )
        if found is None:
            return None
        at, whole, stored, size = found
        if stored is not None:
            self.bases[customer_id] = delta.Base.of(at, whole, stored, size)
        return at, whole

    def stored_kept(self) -> list[tuple[str, str, str, int]]:
        """The re-folds' checkpoints in their stored form (customer, key, text, size to count
        in the checkpoint cache): against the state their re-fold's start is stored against
        (itself, if stored in full), when that one stays."""
        out: list[tuple[str, str, str, int]] = []
        drops = self.changes.drop_checkpoints_from
        for cid, key, state in self.kept:
            base = self.bases.get(cid)
            if base is not None and base.key < key and base.key < drops.get(cid, key):
                out.append((cid, key, delta.dump_text(state, base), base.size))
            else:
                text = state_codec.dump_text(state)
                out.append((cid, key, text, len(text)))
        return out

    def keys_between(
        self, customer_id: str, after: str | None, upto: str | None = None
    ) -> list[tuple[str, int]]:
        found = self.model.keys_between(customer_id, after, upto)
        mine = self.keys.get(customer_id)
        if mine:
            found += [
                (k, v)
                for k, v in mine
                if (after is None or k > after) and (upto is None or k <= upto)
            ]
            found.sort()
        return found


@dataclass(frozen=True, slots=True)
class _Paged:
    """A large map as this process last stored it in pages: a copy of its entries, and the
    keys on each page (kept up to date from one write to the next, not computed again)."""

    entries: dict[str, Any]
    members: dict[int, list[str]]


def _touched(
    was: Mapping[str, Any], now: Mapping[str, Any], members: dict[int, list[str]]
) -> set[int]:
    """The pages of the entries that differ between `was` and `now`; `members` is brought up
    to date with the keys added and gone (its lists are replaced, not changed)."""
    touched: set[int] = set()
    stayed = 0
    for k, v in now.items():
        old = was.get(k)
        if old is None:
            page = paged_codec.page_of(k)
            members[page] = [*members.get(page, ()), k]
            touched.add(page)
            continue
        stayed += 1
        if old is not v and old != v:
            touched.add(paged_codec.page_of(k))
    if stayed < len(was):
        for k in was:
            if k not in now:
                page = paged_codec.page_of(k)
                members[page] = [m for m in members[page] if m != k]
                touched.add(page)
    return touched


@dataclass(frozen=True, slots=True)
class _Written:
    """A customer's index rows as this process last wrote them, under the head written with
    them, copies of the maps of frozen entries some of those rows came from, and the large
    maps it stored in pages."""

    head: Head
    rows: dict[str, set[tuple[Any, ...]]]  # table name -> rows
    sources: dict[str, dict[str, Any]]  # table name -> the map its rows came from
    apart: dict[str, _Paged]  # large map stored in pages -> what was stored


def _sources(t: Tables) -> dict[str, Callable[[CustomerState], Mapping[str, Any]]]:
    """The index tables whose rows come from a map of frozen entries (the fold replaces
    them, never changes one in place): while that map equals the one the remembered rows
    came from, the rows are the same, and are neither built nor compared again. A long
    history has thousands of orders, and most activities, a late one's re-fold included,
    leave them as they were."""
    return {t.orders.name: lambda s: s.orders, t.segments.name: lambda s: s.segments}


def _unchanged_sources(
    chunk: Sequence[tuple[str, tuple[CustomerState, Head]]],
    remembered: Mapping[str, _Written],
    t: Tables,
) -> dict[str, set[str]]:
    """Per table name, the remembered customers whose rows there cannot have changed."""
    same: dict[str, set[str]] = {}
    if not remembered:
        return same
    sources = _sources(t)
    for cid, (state, _) in chunk:
        w = remembered.get(cid)
        if w is None:
            continue
        for name, source in sources.items():
            old = w.sources.get(name)
            # Equal entries, compared in C (by identity first): a fraction of building
            # and comparing their rows.
            if old is not None and old == source(state):
                same.setdefault(name, set()).add(cid)
    return same


def _apart(s: CustomerState, apart_from: int) -> tuple[str, ...]:
    """The large maps of `s` that are stored in pages (see `APART_FROM`)."""
    return tuple(n for n in state_codec.LARGE_MAPS if len(getattr(s, n)) >= apart_from)


def _index_rows(
    states: Sequence[tuple[str, tuple[CustomerState, Head]]],
    t: Tables,
    same: Mapping[str, set[str]] | None = None,
    apart: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[Table, list[tuple[Any, ...]]]:
    """Each touched customer's rows, as tuples in the tables' column order; none for a
    table where `same` says the customer's rows are unchanged. The large maps `apart`
    names for a customer are left out of its state (`_write_pages` stores them)."""
    same = same or {}
    same_segments = same.get(t.segments.name, set())
    same_orders = same.get(t.orders.name, set())
    customers: list[tuple[Any, ...]] = []
    segments: list[tuple[Any, ...]] = []
    tiers: list[tuple[Any, ...]] = []
    cards: list[tuple[Any, ...]] = []
    gifts: list[tuple[Any, ...]] = []
    orders: list[tuple[Any, ...]] = []
    for cid, (s, head) in states:
        customers.append(
            (
                cid,
                s.profile.status,
                s.points,
                s.activities.count,
                head.last_key,
                head.last_version,
                paged_codec.dump_row(s, apart.get(cid, ()) if apart else ()),
            )
        )
        if cid not in same_segments:
            segments += [(sid, cid) for sid in s.segments]
        tiers += [(cid, camp, tier.tier_id) for camp, tier in s.tiers.items()]
        cards += [
            (cid, card_id, card.campaign_id, card.balance, card.pending_points)
            for card_id, card in s.cards.items()
        ]
        gifts += [(cid, gid, g.campaign_id, g.balance) for gid, g in s.gift_cards.items()]
        if cid not in same_orders:
            orders += [(cid, oid, o.status) for oid, o in s.orders.items()]
    return {
        t.customers: customers,
        t.segments: segments,
        t.tiers: tiers,
        t.cards: cards,
        t.gift_cards: gifts,
        t.orders: orders,
    }


def _remember(
    written: dict[str, dict[str, set[tuple[Any, ...]]]], table: Table, rows: list[tuple[Any, ...]]
) -> None:
    """File `rows` of `table` under their customer. `_index_rows` lists each customer's rows
    together, so each customer's are one run: a set built whole, not a row at a time (a
    long history's late activity remembers thousands)."""
    at = [col.name for col in table.columns].index("customer_id")
    for cid, run in groupby(rows, key=itemgetter(at)):
        written.setdefault(cid, {}).setdefault(table.name, set()).update(run)


def _chunks(values: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def rebuild(
    store: EventStore,
    batch_size: int = DEFAULT_CATCHUP_BATCH,
    progress: Callable[[int], None] | None = None,
    interval: int = DEFAULT_CHECKPOINT_INTERVAL,
) -> CatchUpReport:
    """Blue/green: a new generation of tables catches up from the start while the active
    one keeps answering; then one transaction makes it the active one, and the old tables
    are dropped. An interrupted rebuild resumes where its generation's tracking stands."""
    active = ReadModel(store, interval=interval)
    meta = active._meta
    with store.engine.begin() as c:
        building = active._meta_get(c, "building")
        if building is None:
            building = str(active.t.generation + 1)
            c.execute(insert(meta).values(name="building", value=building))
    fresh = ReadModel(store, generation=int(building), interval=interval)
    report = fresh.catch_up(batch_size, progress)
    with store.engine.begin() as c:
        c.execute(update(meta).where(meta.c.name == "active").values(value=building))
        c.execute(delete(meta).where(meta.c.name == "building"))
    active.t.metadata.drop_all(store.engine)
    return report


def rebuild_total(store: EventStore) -> int:
    return store.count()
