"""The read model's view: one generation of its tables, what the projection reads through
(the ports of `projections.catchup` and `projections.pointintime`), what it writes (one
transaction per `Write`, with the tracking position), and the answers: current state and
indexed queries without folding, state as of T from checkpoints.

It implements the library's `TrackingRecorder`. It composes one store per kind of row
(`tracking`, `rows`, `pages`, `checkpoints`, `queries`) and the caches wrapping them
(`checkpoints.CachedCheckpoints`, `activities.CachedActivities`); `runner` catches it up."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from functools import partial

from eventsourcing.persistence import Tracking as LibTracking
from eventsourcing.persistence import TrackingRecorder
from sqlalchemy import Connection, Engine, text

from custate.adapters.codecs import foldinput as inputs
from custate.adapters.erasures import ERASURES_TABLE
from custate.adapters.eventstore import ACTIVITY_TOPIC, EventStore, decode
from custate.adapters.readmodel import pages as pages_module
from custate.adapters.readmodel.activities import CachedActivities
from custate.adapters.readmodel.checkpoints import (
    DEFAULT_CHECKPOINT_CACHE_BYTES,
    CachedCheckpoints,
    Checkpoint,
    CheckpointStore,
)
from custate.adapters.readmodel.connections import Connections
from custate.adapters.readmodel.feed import ChangeFeed
from custate.adapters.readmodel.generations import Generations
from custate.adapters.readmodel.pages import PageStore
from custate.adapters.readmodel.partitions import (
    DEFAULT_PARTITIONS_POSTGRESQL,
    DEFAULT_PARTITIONS_SQLITE,
    partition_of,
)
from custate.adapters.readmodel.queries import CustomerQuery, CustomerRow, GenerationMoved, Queries
from custate.adapters.readmodel.rows import CustomerRows
from custate.adapters.readmodel.runner import (
    DEFAULT_CATCHUP_BATCH,
    CatchUpReport,
    Fence,
    Runner,
    Write,
)
from custate.adapters.readmodel.sql import Statements, add_input_column, chunks
from custate.adapters.readmodel.tables import Tables, tables
from custate.adapters.readmodel.tracking import TrackingPosition
from custate.adapters.sqlschema import create_all, driver, reading
from custate.domain import Activity, CustomerState
from custate.domain.activity import LazyData
from custate.domain.state import Gap
from custate.projections.catchup import DEFAULT_CHECKPOINT_INTERVAL, Head, Projected
from custate.projections.pointintime import state_as_of

__all__ = ["ReadModel"]

_NOTIFY = text("SELECT pg_notify(:ch, '')")


class ReadModel(TrackingRecorder):
    """One generation of the read model (the active one, unless `generation` is given).
    `interval`: a checkpoint after every this many activities of a customer, in fold order.
    `checkpoint_cache_bytes`: the budget of decoded checkpoints kept (0: none). `paged_from`:
    the size from which a large map is stored in pages (`pages.PAGED_FROM`)."""

    def __init__(
        self,
        store: EventStore,
        generation: int | None = None,
        interval: int = DEFAULT_CHECKPOINT_INTERVAL,
        checkpoint_cache_bytes: int = DEFAULT_CHECKPOINT_CACHE_BYTES,
        paged_from: int | None = None,
        partitions: int | None = None,
        feed: bool | None = None,
        engine: Engine | None = None,
        tracking_row: str | None = None,
    ) -> None:
        self.store = store
        # `engine`: where the tables are, when not beside the events.
        self.engine = store.engine if engine is None else engine
        self.interval = interval
        self.paged_from = pages_module.PAGED_FROM if paged_from is None else paged_from
        self.generations = Generations(self.engine)
        default = (
            DEFAULT_PARTITIONS_POSTGRESQL
            if store.url.kind == "postgresql"
            else DEFAULT_PARTITIONS_SQLITE
        )
        # The store's own count; `partitions` only sets it for a store made now.
        self.partitions = self.generations.partitions(partitions or default)
        self.t: Tables = tables(generation if generation is not None else self.active_generation())
        create_all(self.engine, self.t.metadata)
        add_input_column(self.engine, self.t)
        stable = generation is None and not store.url.read_only
        if stable and self.generations.views_on() != self.t.generation:
            self.generations.ensure_views(self.t.generation)
        sql = self._sql = Statements(self.t, self.engine)
        self._connections = Connections(self.engine)
        # `tracking_row`: a parallel rebuild's process keeps its position in a row of its own.
        self._tracking = TrackingPosition(self.engine, self.t, sql, self.partitions, tracking_row)
        self._rows = CustomerRows(sql, self.t, PageStore(sql), self.paged_from)
        self._checkpoint_store = CheckpointStore(sql)
        self.checkpoints = CachedCheckpoints(
            self._checkpoint_store, self._connections, checkpoint_cache_bytes
        )
        self._erasures = _erasures_query(store)
        self._erased_ids = f"SELECT customer_id FROM {ERASURES_TABLE}"
        self._activities = CachedActivities(store, erased_at=self.erased_at)
        # The active generation's queries check, in their own statement, that it still is.
        self._queries = Queries(self.engine, self.t, guarded=generation is None)
        self._runner = Runner(self)
        self.checkpoints.bases = self._runner.chain_base
        # The change feed is written by the active generation's catch-ups, when the store
        # keeps one (`feed_on`; None: ask the store at each catch-up); a rebuild's new
        # generation writes none while it builds.
        self._feed = False if generation is not None and feed is None else feed
        self.changes = ChangeFeed(self.engine, store.changes_channel)
        # Reads waiting for a position are told of the active generation's writes.
        self._projected = store.projected_channel if generation is None else None

    def active_generation(self) -> int:
        return self.generations.active()

    @property
    def feed(self) -> bool:
        """Whether this generation's catch-ups write change records (docs/CHANGES.md):
        when the store keeps a change feed, unless told at construction."""
        return self.generations.feed_on() if self._feed is None else self._feed

    # -- TrackingRecorder ----------------------------------------------------------------

    def insert_tracking(self, tracking: LibTracking) -> None:
        with self.engine.begin() as c:
            self._tracking.advance(c, self._tracking.read_all(c), tracking.notification_id)

    def max_tracking_id(self, application_name: str) -> int | None:
        with reading(self.engine) as c:
            return self._tracking.read(c) or None

    def position(self, partition: int | None = None) -> int:
        """The tracking position of `partition` (None: the lowest of all, the position the
        whole read model reflects): every activity up to it is projected."""
        with self._connections.reading() as c:
            return self._tracking.read(c, partition)

    def positions(self) -> dict[int, int]:
        """Every partition's tracking position."""
        with self._connections.reading() as c:
            return self._tracking.read_all(c)

    def partition_of(self, customer_id: str) -> int:
        """The partition `customer_id` falls in."""
        return partition_of(customer_id, self.partitions)

    # -- the projection's ports (`projections.catchup`, `projections.pointintime`) --------

    def heads(self, customer_ids: Sequence[str]) -> dict[str, Head]:
        with self._connections.reading() as c:
            return self._rows.heads(c, customer_ids)

    def states(
        self, customer_ids: Sequence[str], remember: bool = False
    ) -> dict[str, CustomerState]:
        """The customers' stored states (no row: left out). `remember`: for a write of
        them this process plans (`CustomerRows.states`)."""
        with reading(self.engine) as c:
            return self._rows.states(c, customer_ids, remember)

    def checkpoint_before(self, customer_id: str, key: str) -> tuple[str, CustomerState] | None:
        found = self.checkpoints.before(customer_id, key)
        return None if found is None else (found.key, found.state)

    def stored_checkpoint_before(
        self, customer_id: str, key: str, borrow: bool = False
    ) -> Checkpoint | None:
        """`checkpoint_before`, with the checkpoint's stored form and the size memory counts
        it at, when known (for a `codecs.delta.Base` of what a re-fold from it stores).
        `borrow`: see `CachedCheckpoints.before`."""
        return self.checkpoints.before(customer_id, key, borrow)

    def checkpoint_at(self, customer_id: str, key: str) -> CustomerState | None:
        """The checkpoint stored under exactly `key`, whole."""
        head = self.heads([customer_id]).get(customer_id)
        return None if head is None else self.checkpoints.at(customer_id, key, head)

    def keys_between(
        self, customer_id: str, after: str | None, upto: str | None = None
    ) -> list[tuple[str, int]]:
        """(key, version) of projected activities with `after < key <= upto`, in key order."""
        with self._connections.reading() as c:
            return self._sql.keys_between(c, customer_id, after, upto)

    def activities(self, customer_id: str, versions: Sequence[int]) -> list[Activity]:
        """The customer's activities at these stream versions, in the order asked."""
        return self._activities.activities(customer_id, versions)

    def fold_inputs(
        self, customer_id: str, after: str | None = None, known_at: datetime | None = None
    ) -> list[tuple[Activity, datetime]]:
        """The projected activities with a key after `after` (and recorded by `known_at`),
        in fold order, with their record times: from their fold inputs
        (`adapters.codecs.foldinput`), what an audit folds at a fraction of the bytes of the
        events. Those without one are read from the event store. Pairs, not
        `StoredActivity`s: a long history is tens of thousands, and every object more was
        time to build and to free."""
        with self._connections.reading() as c:
            rows = self._sql.fold_inputs(c, customer_id, after)
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

    # -- catching up ---------------------------------------------------------------------

    def catch_up(
        self,
        batch_size: int = DEFAULT_CATCHUP_BATCH,
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        partitions: Sequence[int] | None = None,
        fence: Fence | None = None,
        share: tuple[int, int] | None = None,
        upto: int | None = None,
        move_idle: bool = True,
    ) -> CatchUpReport:
        """Project everything stored since the tracking positions of `partitions` (None:
        all; `share`, `upto`, `move_idle`: see `runner.Runner`)."""
        return self._runner.catch_up(
            batch_size, progress, should_stop, partitions, fence, share, upto, move_idle
        )

    def one_connection(self) -> AbstractContextManager[None]:
        """This thread's reads go through one connection until the block ends."""
        return self._connections.held()

    def erased_at(self, customer_id: str) -> object:
        """When the customer was erased (`adapters.erasures`), None if never: one primary-key
        look, which the parsed-activity memory asks before answering from what it kept."""
        if self._erasures is None:
            return None
        with self._connections.reading() as c:
            row = driver(c).execute(self._erasures, (customer_id,)).fetchone()
        return None if row is None else row[0]

    def _erased_hold(self, c: Connection, w: Write) -> bool:
        """Whether every customer of `w` with an erasure record still has, in the
        transaction of `c`, the head the plan of `w` read: an erasure re-folds her rows
        under a head of its own (`readmodel.refold`), and a plan made before it must not
        write her unerased state back (it is made again). Erasure records are few, so
        they are read whole; the heads checked are locked to the commit on PostgreSQL."""
        if self._erasures is None or not w.changes.states:
            return True
        erased = {str(r[0]) for r in driver(c).execute(self._erased_ids).fetchall()}
        mine = [cid for cid in w.changes.states if cid in erased]
        found: dict[str, Head] = {}
        for chunk in chunks(mine):
            found.update(
                (r[0], Head(r[1], r[2])) for r in self._sql.heads(c, chunk, for_update=True)
            )
        return all(found.get(cid) == w.db_heads.get(cid) for cid in mine)

    def keep_parsed(self, batch: Sequence[Projected]) -> None:
        """Keep the activities of `batch`, just decoded, for re-folds and points in time."""
        self._activities.keep(batch)

    def write(self, w: Write, fence: Fence | None = None) -> bool:
        """Write `w` in one transaction, moving the tracking positions from `w.previous` to
        `w.position`; False if another projector moved one first: then nothing is written,
        and what this process remembers of its writes is dropped. `fence(c)` runs first in
        the transaction; what it raises ends the write the same way, and is raised."""
        changes = w.changes
        try:
            with self.engine.begin() as c:
                if fence is not None:
                    fence(c)
                moved = not self._tracking.advance(c, w.previous, w.position)
                if moved or not self._erased_hold(c, w):
                    c.rollback()
                    self._rows.forget()
                    return False
                for cid, from_key in changes.drop_checkpoints_from.items():
                    self._checkpoint_store.drop_from(c, cid, from_key)
                written = self._rows.write(c, changes, w.db_heads, w.touched)
                if w.keys:
                    self._sql.insert(c, self.t.keys, w.keys)
                self._checkpoint_store.insert(
                    c,
                    [*w.checkpoints, *((cid, key, stored) for cid, key, _, stored, _ in w.refolds)],
                )
                if self._projected is not None:  # delivered when this commits
                    c.execute(_NOTIFY, {"ch": self._projected})
                # Last: on PostgreSQL it locks the feed's table until the commit.
                self.changes.insert(c, changes.feed)
        except BaseException:
            # The rows' memory is brought up to date during the write: it no longer
            # describes what the database holds.
            self._rows.forget()
            raise
        self._rows.committed(changes, written)
        self.checkpoints.written(
            w.db_heads, changes.states, changes.drop_checkpoints_from, w.refolds
        )
        return True

    def lag(self, partition: int | None = None, at_most: int | None = None) -> int:
        """Activities stored after the tracking position of `partition` (None: the lowest),
        counted up to `at_most` if given. With several partitions that counts some
        projected already: a bound, exact when every partition is at the same position."""
        url = self.store.url
        with reading(self.engine) as c:
            position = self._tracking.read(c, partition)
            return self._sql.activities_after(
                c, url.events_table, ACTIVITY_TOPIC, url.kind == "sqlite", position, at_most
            )

    def first_unprojected(self, partition: int | None = None) -> datetime | None:
        """The record time of the first activity stored after the tracking position of
        `partition` (None: the lowest); None when there is none."""
        notes = self.store.recorder.select_notifications(
            self.position(partition), 1, topics=[ACTIVITY_TOPIC], inclusive_of_start=False
        )
        if not notes:
            return None
        return decode(notes[0].state, notes[0].originator_version, notes[0].id).recorded_at

    # -- answers -------------------------------------------------------------------------

    def last_key(self, customer_id: str) -> str | None:
        """The fold key of the last activity folded into the customer's current state;
        None for a customer the read model has not seen."""
        return self._queries.last_key(customer_id)

    def current(self, customer_id: str) -> CustomerState | None:
        """The customer's current state, as stored (no fold)."""
        return self.states([customer_id]).get(customer_id)

    def current_if_active(self, customer_id: str) -> CustomerState | None:
        """`current`, read in the statement that asks which generation is active: raises
        `GenerationMoved` if this one no longer is (the active read model's; one opened
        on a given generation answers as `current`). One round trip, not two."""
        with reading(self.engine) as c:
            active, state = self._rows.state_and_active(c, customer_id)
        self._unless_retired(active)
        return state

    def position_if_active(self, partition: int | None = None) -> int:
        """`position`, read in the statement that asks which generation is active (see
        `current_if_active`)."""
        with self._connections.reading() as c:
            active, rows = self._sql.positions_and_active(c)
        self._unless_retired(active)
        return self._tracking.of_rows(rows, partition)

    def _unless_retired(self, active: str | None) -> None:
        if self._queries.guarded and active is not None and active != str(self.t.generation):
            raise GenerationMoved(f"generation {self.t.generation} is no longer active")

    def as_of(self, customer_id: str, t: datetime) -> CustomerState:
        """The customer's state as of business time `t`: the checkpoint before it, and the
        tail folded on."""
        return state_as_of(self, self._activities, customer_id, t)

    def gaps(self) -> Iterator[tuple[str, list[Gap]]]:
        """Each customer with balance-continuity gaps, and the gaps, in customer id order."""
        return self._queries.gaps()

    def customers(
        self, q: CustomerQuery, after: str | None = None, limit: int | None = None
    ) -> list[CustomerRow]:
        """Customers matching every filter of `q`, in customer id order, a page of at most
        `limit` after the id `after`."""
        return self._queries.customers(q, after, limit)

    def count(self, q: CustomerQuery) -> int:
        """How many customers match every filter of `q`."""
        return self._queries.count(q)

    def all_customer_ids(self) -> Iterator[str]:
        """Every customer with a state, in customer id order."""
        return self._queries.all_customer_ids()


def _erasures_query(store: EventStore) -> str | None:
    """The driver's statement reading a customer's erasure time, None on a read-only store
    that has no erasure records (nothing of it was ever erased)."""
    if store.url.read_only:
        from sqlalchemy import inspect

        if not inspect(store.engine).has_table(ERASURES_TABLE):
            return None
    else:
        _ = store.erasures  # made on first use
    mark = "?" if store.engine.dialect.paramstyle == "qmark" else "%s"
    return f"SELECT erased_at FROM {ERASURES_TABLE} WHERE customer_id = {mark}"
