"""The service layer: the one thing the library's users and custate's own entry points (the
CLI, the HTTP service, pull) call.

    import custate

    with custate.open("sqlite:///custate.db") as cs:
        report = cs.ingest([{"id": "evcus_1", "type": "customer.created", ...}])
        state = cs.state("cust_1", as_of="2024-03-01")

`Custate` stores activities (idempotently, keeping rejects), keeps the read model caught
up, and answers state as of any time, customer queries and audits. It is handed its parts
by the composition root (`custate.adapters.bootstrap`); the types it returns and the errors
it raises are named here too, so a caller needs no other module of the store. It never
changes settings of the process it runs in."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, Unpack

import sqlalchemy as sa

from custate.adapters import bootstrap
from custate.adapters.bootstrap import DEFAULT_STORE, Parts, store_file, store_url
from custate.adapters.cursors import PullCursors, PullListings
from custate.adapters.erase import ErasureReport, erase_customer
from custate.adapters.erasures import Erasure
from custate.adapters.eventstore import (
    Encoded,
    EventStore,
    StoredActivity,
    StoreError,
    StoreUnavailableError,
    store_fault,
)
from custate.adapters.forward import DeadLetter, Forwarder, ForwardError, ForwardReport
from custate.adapters.ingest import (
    DEFAULT_BATCH,
    Clock,
    IngestReport,
    ingest,
    parse_files,
    utc_now,
    write_batch,
)
from custate.adapters.notify import Bell, Listener
from custate.adapters.projector import SETTLE_FROM, Worker, WorkerEvent, sqlite_projector
from custate.adapters.readers import Item, Record, read_path, read_text, records_from_value
from custate.adapters.readmodel import (
    DEFAULT_CATCHUP_BATCH,
    CatchUpReport,
    CustomerFilters,
    CustomerQuery,
    CustomerRow,
    ReadModel,
    rebuild,
)
from custate.adapters.readmodel.feed import Page
from custate.adapters.readmodel.generations import Generations
from custate.adapters.readmodel.partitions import partition_of
from custate.adapters.readmodel.queries import GenerationMoved
from custate.adapters.rejects import Reject, RejectStore, StoredReject
from custate.adapters.upgrade import FoldStatus, fold_status, upgrade_status
from custate.domain import ActivityError, CustomerState, fold, format_time, parse_cut
from custate.domain.activity import INT_MAX, INT_MIN
from custate.domain.errors import Error
from custate.projections import audit
from custate.projections.changes import ChangeRecord
from custate.projections.keys import as_of_bound

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_CATCHUP_BATCH",
    "DEFAULT_STORE",
    "DEFAULT_WAIT",
    "CatchUpReport",
    "ChangeRecord",
    "ChangesPage",
    "ChangesPrunedError",
    "Clock",
    "Custate",
    "CustomerFilters",
    "CustomerQuery",
    "CustomerRow",
    "CustomerState",
    "DeadLetter",
    "Erasure",
    "ErasureReport",
    "Error",
    "FoldStatus",
    "ForwardError",
    "ForwardReport",
    "Forwarder",
    "Freshness",
    "IngestReport",
    "PullCursors",
    "PullListings",
    "QueryError",
    "Reject",
    "Source",
    "StaleReadError",
    "StoreError",
    "StoreUnavailableError",
    "StoredActivity",
    "StoredReject",
    "UnknownCustomerError",
    "Worker",
    "WorkerEvent",
    "open",
    "store_fault",
    "store_file",
    "store_url",
    "utc_now",
]

Source = dict[str, Any] | str | bytes | Path
ChangesPage = Page  # records after a position, and the position to ask after next

# A path glob: dotted segments of path characters and `*`, `?`, `[...]` (fnmatch's).
_GLOB = re.compile(r"^(?:[^.\s\[\]]|\[!?[^\]\s]+\])+(?:\.(?:[^.\s\[\]]|\[!?[^\]\s]+\])+)*$")


class UnknownCustomerError(Error, LookupError):
    """A customer with no stored activities."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"no activities are stored for customer {customer_id!r}")
        self.customer_id = customer_id


class QueryError(Error, ValueError):
    """A question the store cannot answer as asked (a cut without a time zone)."""


class ChangesPrunedError(QueryError):
    """Change records after the position asked for were pruned (retention): reading on
    would silently skip them. `first` is the position to ask after to read what is left."""

    def __init__(self, after: int, pruned_upto: int) -> None:
        super().__init__(
            f"after: records up to position {pruned_upto} were pruned; asking after {after} "
            f"would skip them (ask after {pruned_upto} to read what is left)"
        )
        self.after = after
        self.pruned_upto = pruned_upto


class StaleReadError(Error, TimeoutError):
    """A read asked for a position (`min_position`) the read model did not reach in time:
    no projector is running, or it is far behind."""

    def __init__(self, wanted: int, position: int, waited: float) -> None:
        super().__init__(
            f"the read model is at position {position}, not yet at {wanted}, after "
            f"{waited:g} s; is a projector running (`custate serve`, `custate project "
            "--follow`, or `cs.project()`)?"
        )
        self.wanted = wanted
        self.position = position


# Seconds a read with `min_position` waits for the read model at most, unless told.
DEFAULT_WAIT = 5.0


class StoredRecords(NamedTuple):
    """What one `Custate.store_records` write did: an outcome per record, in order, and the
    position a read waits for to see them all (`min_position`)."""

    outcomes: list[str]
    position: int


@dataclass(frozen=True, slots=True)
class Freshness:
    """How fresh an answer of the read model is: the `position` it reflects (every activity
    stored up to it is in it), the store's `head` (the last position stored), and the lag:
    activities stored but not yet projected (counted exactly up to a bound, estimated past
    it: `lag_estimated`) and how long the oldest of them has waited, in seconds."""

    position: int
    head: int
    lag_activities: int
    lag_seconds: float
    lag_estimated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "head": self.head,
            "lag": {
                "activities": self.lag_activities,
                "seconds": self.lag_seconds,
                "estimated": self.lag_estimated,
            },
        }

    def headers(self) -> dict[str, str]:
        """The same, as HTTP response headers."""
        return {
            "X-Custate-Position": str(self.position),
            "X-Custate-Head": str(self.head),
            "X-Custate-Lag-Activities": str(self.lag_activities),
            "X-Custate-Lag-Seconds": f"{self.lag_seconds:.3f}",
        }


_T = TypeVar("_T")

# How many tries a read makes when each one fails on a generation that a rebuild retired
# under it (`Custate._retrying`): one rebuild a try, back to back.
_SWAPS_AT_MOST = 8


def _cut(value: datetime | str | None, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            raise QueryError(f"{name}: a datetime without a zone is ambiguous")
        return value
    try:
        return parse_cut(value, name)
    except ActivityError as e:  # a question, not a record: a QueryError naming the argument
        raise QueryError(
            f"{name}: {e.message}; use an ISO-8601 date-time with a zone, or a date"
        ) from None


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    """`value` an int within [low, high], else a `QueryError` naming the argument: the
    same bounds as the HTTP query parameters (points and positions within 64 bits)."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise QueryError(f"{name}: {value!r} is not an integer")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise QueryError(f"{name}: {value} is out of range; it must be {bounds}")


def _check_filters(filters: CustomerFilters) -> None:
    for name in ("min_points", "max_points"):
        _check_int(name, filters.get(name), INT_MIN, INT_MAX)
    for name in ("segment", "tier", "campaign", "status", "order_status"):
        key = filters.get(name)
        if key is not None and (not isinstance(key, str) or "\x00" in key):
            raise QueryError(f"{name}: {key!r} is not a string without NUL")


def _check_wait(wait: float | None) -> None:
    if wait is not None and not (isinstance(wait, (int, float)) and 0 <= wait < float("inf")):
        raise QueryError(f"wait: {wait!r} must be a number of seconds, at least 0")


class _Waiting:
    """One wait for a position (`Custate.wait_for`, `await_position`): `position(rings)`
    reads it, `pause(position)` says how long to wait for the bell next (None: reached), or
    raises `StaleReadError` once `bound` seconds have passed."""

    def __init__(
        self,
        cs: Custate,
        rm: ReadModel,
        part: int | None,
        min_position: int,
        bound: float,
        bell: Bell,
    ) -> None:
        self.cs, self.rm, self.part, self.min_position = cs, rm, part, min_position
        self.bound, self.bell = bound, bell
        self.start = time.monotonic()
        self._pause = 0.005

    def position(self, rings: int) -> int:
        if self.bell.live:
            return self.cs._position_since(self.rm, self.part, rings)
        return self.rm.position(self.part)

    def pause(self, position: int) -> float | None:
        if position >= self.min_position:
            return None
        waited = time.monotonic() - self.start
        if waited >= self.bound:
            raise StaleReadError(self.min_position, position, round(waited, 3))
        left = max(0.0, self.bound - waited)
        if self.bell.live:
            return min(0.25, left)
        pause, self._pause = min(self._pause, left), min(self._pause * 2, 0.05)
        return pause


class Custate:
    """One store: append activities, read customers' state as of any time.

    `Custate(url)` builds its parts from the URL (`bootstrap.build`); `Custate(parts=...)`
    takes parts built elsewhere. `store`, `rejects_store`, `clock` and `readmodel` are
    those parts, for tests and tools; entry points call the methods.

    Reads answer from the read model as it stands, never waiting for a catch-up: a
    projector keeps it up to date (`ingest` projects what it stored, unless told not to;
    `serve` and `project --follow` run projector workers). A read given `min_position` (the
    `position` an ingest returned) answers once the read model has reached it, or raises
    `StaleReadError` after `wait` seconds. `catch_up_reads=True` keeps the behaviour of
    earlier versions: every read first projects whatever is stored."""

    def __init__(
        self,
        url: str | None = None,
        clock: Clock = utc_now,
        *,
        parts: Parts | None = None,
        catch_up_reads: bool = False,
        partitions: int | None = None,
        change_feed: bool = False,
        checkpoint_cache_bytes: int | None = None,
    ) -> None:
        self._parts = (
            parts
            if parts is not None
            else bootstrap.build(url, clock, partitions, checkpoint_cache_bytes)
        )
        self.catch_up_reads = catch_up_reads
        self.store: EventStore = self._parts.store
        self.rejects_store: RejectStore = self._parts.rejects
        self.clock: Clock = self._parts.clock
        self._readmodel: ReadModel | None = None
        self._bell: Bell | None = None
        self._bell_lock = threading.Lock()
        self._positions: tuple[int, ReadModel, dict[int, int]] | None = None
        self._positions_lock = threading.Lock()
        self._head_seen = 0  # the highest head read: a position at or below it is stored
        if change_feed:
            self.enable_change_feed()

    @property
    def readmodel(self) -> ReadModel:
        """The active generation (re-read after a rebuild swapped it)."""
        rm = self._readmodel
        if rm is None or rm.t.generation != rm.active_generation():
            rm = self._readmodel = self._open_active()
        return rm

    def _open_active(self) -> ReadModel:
        """The active generation, opened; again while a rebuild's swap dropped the
        generation it found active as it opened it (its tables gone mid-open)."""
        generations = Generations(self.store.engine)
        for _ in range(_SWAPS_AT_MOST):
            before = generations.active_if_any()  # (asking `active` would make a new store's)
            try:
                return self._parts.readmodel()
            except Exception:
                if generations.active_if_any() == before:
                    raise
        return self._parts.readmodel()

    def close(self) -> None:
        with self._bell_lock:
            bell, self._bell = self._bell, None
        if bell is not None:
            bell.stop()
        self._parts.close()

    def _on_active(self, use: Callable[[ReadModel], _T]) -> _T:
        """`use(read model)`, once more on the new active generation if it failed because a
        rebuild retired (and dropped) the one it used meanwhile: `no such table` is then a
        swap, not a fault."""
        return self._retrying(self.readmodel, use)

    def _on_kept(self, use: Callable[[ReadModel], _T]) -> _T:
        """`use(read model)` on the generation this object last used, without asking which
        is active: for the customers queries, whose statements check that themselves and
        raise (`queries.GenerationMoved`) rather than answer from a retired one; then once
        more on the new active generation, as `_on_active`."""
        rm = self._readmodel
        return self._on_active(use) if rm is None else self._retrying(rm, use)

    def _retrying(self, rm: ReadModel, use: Callable[[ReadModel], _T]) -> _T:
        """`use(rm)`, and again on the generation active then for as long as each try
        failed on one that a rebuild retired meanwhile (rebuilds run back to back retire
        the one a retry moved to as well), up to `_SWAPS_AT_MOST` tries."""
        for _ in range(_SWAPS_AT_MOST - 1):
            try:
                return use(rm)
            except Exception:
                if rm.t.generation == rm.active_generation():
                    raise
                self._readmodel = None
                rm = self.readmodel
        return use(rm)

    @property
    def read_only(self) -> bool:
        """Opened read-only (`sqlite:///PATH?mode=ro`, `open(url, read_only=True)`)."""
        return self.store.url.read_only

    def _writable(self) -> None:
        if self.read_only:
            raise StoreUnavailableError(
                f"{self.store.url.url}: the store is read-only (opened with ?mode=ro); "
                "reads work, writes need a writable store"
            )

    def __enter__(self) -> Custate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        """Return if the store answers; raise what the database raised if not."""
        with self.store.engine.connect() as c:
            c.execute(sa.text("SELECT 1"))

    def count_activities(self) -> int:
        """Activities stored (each once)."""
        return self.store.count()

    def ingest(
        self,
        sources: Iterable[Source],
        customer_id: str | None = None,
        batch_size: int = DEFAULT_BATCH,
        progress: Callable[[int], None] | None = None,
        project: bool = True,
    ) -> IngestReport:
        """Store activities from dicts (an activity or any container), JSON text (str or
        bytes, any container) or files (`Path`), then bring the read model up to date
        (`project=False` leaves that to `project()`). Returns what happened to each record."""
        return self.ingest_items(_items(sources, customer_id), batch_size, progress, project)

    def ingest_paths(
        self,
        paths: Iterable[str],
        customer_id: str | None = None,
        batch_size: int = DEFAULT_BATCH,
        progress: Callable[[int], None] | None = None,
        project: bool = True,
        workers: int | None = None,
        read: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Ingest files (`-` is stdin), plain NDJSON parsed by `workers` processes
        (default: one per core; 0 parses in this process). `progress` is told how many
        records each stored batch held, `read` how many bytes of the files were read
        (`parse_files`), for a bar over the files' total size."""
        return self.ingest_items(
            parse_files(paths, customer_id, workers, read), batch_size, progress, project
        )

    def ingest_items(
        self,
        items: Iterable[Item | Encoded],
        batch_size: int = DEFAULT_BATCH,
        progress: Callable[[int], None] | None = None,
        project: bool = True,
    ) -> IngestReport:
        """Store records as the readers give them (or already encoded), then project
        (unless `project=False`)."""
        _check_int("batch_size", batch_size, 1)
        self._writable()
        report = ingest(self.store, self.rejects_store, items, batch_size, self.clock, progress)
        report.position = self.store.head()
        if project:
            self.project()
        return report

    def store_records(self, records: list[Record], rejects: list[Reject]) -> StoredRecords:
        """Store `records` and keep `rejects` in one write, now, in the caller's thread
        (the webhook group commit); the read model is left to `project()`. Says what
        became of each record, in order: `stored`, `duplicate`, `conflict` or `refused`
        (the database could not hold it; the others are stored all the same), and the
        position a read waits for to see them (`min_position`). A conflict and a refusal
        are kept as rejects too."""
        result, _ = write_batch(self.store, self.rejects_store, records, rejects, self.clock)
        return StoredRecords([o.status for o in result.outcomes], result.position)

    def project(
        self,
        batch_size: int = DEFAULT_CATCHUP_BATCH,
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> CatchUpReport:
        """Fold what was stored since the last catch-up into the read model; `should_stop`
        is asked between batches (a follower's Ctrl-C). On a read-only store it projects
        nothing: reads answer from the read model as it stands."""
        _check_int("batch_size", batch_size, 1)
        if self.read_only:
            # reads answer from the read model as it stands; nothing can be written to it
            return CatchUpReport(position=self.readmodel.position())
        return self._on_active(lambda rm: rm.catch_up(batch_size, progress, should_stop))

    def rebuild(
        self,
        batch_size: int = DEFAULT_CATCHUP_BATCH,
        progress: Callable[[int], None] | None = None,
        processes: int | None = 1,
    ) -> CatchUpReport:
        """Rebuild the read model from the store, blue/green (queries keep working).
        `processes`: how many processes decode and fold, each its own customers (None: one
        per core, for a store of 20,000 activities or more); the result is the same."""
        _check_int("batch_size", batch_size, 1)
        _check_int("processes", processes, 1)
        self._writable()
        report = rebuild(self.store, batch_size, progress, processes=processes)
        self._readmodel = None
        return report

    def lag(self) -> int:
        """Activities stored but not yet in the read model."""
        return self.readmodel.lag()

    def head(self) -> int:
        """The store's last position: what a read model reflecting everything stored so
        far is at (`min_position`)."""
        return self.store.head()

    def freshness(self, customer_id: str | None = None, count_at_most: int = 0) -> Freshness:
        """How fresh the read model is (for `customer_id`'s partition, if given), in three
        indexed queries whatever the lag: the activities behind are estimated from the
        notification ids between the position and the head (an activity and its
        idempotency marker are two; `lag_estimated`), or counted exactly when there are at
        most `count_at_most` of them."""
        rm = self._readmodel or self.readmodel
        part = None if customer_id is None else rm.partition_of(customer_id)
        # The generation's check in the position's statement (`position_if_active`).
        position = self._on_kept(lambda m: m.position_if_active(part))
        rm = self._readmodel or rm
        head = self.store.head()
        if head <= position:
            return Freshness(position, head, 0, 0.0)
        n = rm.lag(part, at_most=count_at_most + 1) if count_at_most else count_at_most + 1
        estimated = n > count_at_most
        if estimated:
            n = max(1, (head - position + 1) // 2)
        first = rm.first_unprojected(part)
        seconds = 0.0 if first is None else max(0.0, (utc_now() - first).total_seconds())
        return Freshness(position, head, n, round(seconds, 3), estimated)

    def status(self) -> dict[str, Any]:
        """What `custate status` shows: the store (password masked), its schema revision,
        its partitions, the read model's generation, the fold version it was built with
        (and this code's), position, head and lag, a rebuild in progress, and the
        projectors: on SQLite the one running (`projector`: "pid N on HOST", or None), on
        PostgreSQL each partition's lease (its worker, epoch, whether it is held now)."""
        from custate.adapters.readmodel.leases import Leases
        from custate.adapters.report import mask_password

        def read(rm: ReadModel) -> dict[str, Any]:
            fold = self.fold_status()  # of the generation active now
            if fold.generation != rm.t.generation:
                # A rebuild swapped generations since `rm` was chosen: `_on_active` reads
                # again on the new one (else a status could pair one generation's number
                # with another's fold version).
                raise GenerationMoved(f"generation {rm.t.generation} -> {fold.generation}")
            return {
                "store": mask_password(self.store.url.url),
                "backend": self.store.url.kind,
                "activities": self.store.count(),
                "partitions": rm.partitions,
                "generation": rm.t.generation,
                "rebuild_in_progress": rm.generations.building_now(),
                "fold_version": fold.to_json(),
                **upgrade_status(self.store),
                "read_model": self.freshness().to_json(),
                "positions": {str(p): at for p, at in rm.positions().items()},
            }

        # A rebuild swapping generations meanwhile: read again on the new one.
        out = self._on_active(read)
        rm = self.readmodel
        if self.store.url.kind == "sqlite" and not self.read_only:
            out["projector"] = sqlite_projector(self.store.url.env["SQLITE_DBNAME"])
        if self.store.url.kind == "postgresql":
            leases = Leases(self.store.engine, rm.partitions, 0.0)
            out["leases"] = [
                {"partition": p, "worker": w, "epoch": e, "held": held}
                for p, w, e, held in leases.table()
            ]
        return out

    def migration(self) -> dict[str, Any]:
        """The schema migration opening the store ran (migrations run on open, under the
        store's write lock): the revision it found (None: none recorded, a store of the
        release before migrations or a new one) and the one it is at now."""
        before, after = self._parts.migration
        return {"from": before, "to": after, "migrated": before != after}

    def fold_status(self) -> FoldStatus:
        """Which fold version built the active generation, and this code's: `stale` when
        older (a rebuild brings it up to date; `serve` and `project --follow` start one)."""
        return fold_status(self.readmodel)

    def partition_of(self, customer_id: str) -> int:
        """The partition `customer_id` falls in (of the store's `partitions`)."""
        return partition_of(customer_id, self.partitions)

    @property
    def partitions(self) -> int:
        """The store's partition count, fixed when it was made (so asked of the
        generation last used: no query on every read)."""
        return (self._readmodel or self.readmodel).partitions

    def wait_for(
        self, min_position: int, customer_id: str | None = None, wait: float | None = None
    ) -> None:
        """Return once the read model has projected everything up to `min_position` (for
        `customer_id`'s partition, if given: the position that customer's reads need), or
        raise `StaleReadError` after `wait` seconds (default `DEFAULT_WAIT`). A position
        past the store's head is a `QueryError`."""
        waiting = self._waiting(min_position, customer_id, wait)
        if waiting is None:
            return
        # On PostgreSQL the projectors' writes ring a bell (one LISTEN per process), so the
        # wait ends as the write commits; polled at most every 0.25 s all the same. On
        # SQLite a pause, doubling from 5 ms to 50 ms.
        while True:
            seen = waiting.bell.rings
            pause = waiting.pause(waiting.position(seen))
            if pause is None:
                return
            if waiting.bell.live:
                waiting.bell.wait_after(seen, pause)
            else:
                time.sleep(pause)

    async def await_position(
        self, min_position: int, customer_id: str | None = None, wait: float | None = None
    ) -> None:
        """`wait_for` for asyncio: the wait holds no thread (an HTTP read waiting for its
        position would hold one of the server's few), the position is read in one."""
        waiting = await asyncio.to_thread(self._waiting, min_position, customer_id, wait)
        if waiting is None:
            return
        while True:
            seen = waiting.bell.rings
            pause = waiting.pause(await asyncio.to_thread(waiting.position, seen))
            if pause is None:
                return
            if waiting.bell.live:
                await waiting.bell.wait_async(seen, pause)
            else:
                await asyncio.sleep(pause)

    def _waiting(
        self, min_position: int, customer_id: str | None, wait: float | None
    ) -> _Waiting | None:
        """What a wait for `min_position` needs, or None if the read model is there."""
        _check_int("min_position", min_position, 0, INT_MAX)
        _check_wait(wait)
        rm = self._readmodel or self.readmodel
        part = None if customer_id is None else rm.partition_of(customer_id)
        if self._on_kept(lambda m: m.position_if_active(part)) >= min_position:
            return None
        rm = self._readmodel or rm  # the one `_on_kept` found active
        if min_position > self._head_seen:  # the head only grows: asked when it may be past
            self._head_seen = head = max(self._head_seen, self.store.head())
            if min_position > head:
                raise QueryError(
                    f"min_position: {min_position} is past the last position stored ({head})"
                )
        bound = DEFAULT_WAIT if wait is None else wait
        return _Waiting(self, rm, part, min_position, bound, self._projected_bell())

    def _position_since(self, rm: ReadModel, part: int | None, rings: int) -> int:
        """`part`'s position (None: the lowest), read at most once per ring of the bell for
        all the reads of this process waiting on it: after a ring, one of them reads every
        partition's position in one statement and the others take that, so a backlog of
        waiting reads costs a query a write, not a query a read a write."""
        with self._positions_lock:
            cached = self._positions
            if cached is not None and cached[0] == rings and cached[1] is rm:
                positions = cached[2]
            else:
                positions = rm.positions()
                self._positions = (rings, rm, positions)
        return min(positions.values(), default=0) if part is None else positions.get(part, 0)

    def _projected_bell(self) -> Bell:
        """The bell rung by every write of the active read model (started on first use)."""
        with self._bell_lock:
            if self._bell is None:
                store = self.store
                channel = store.projected_channel
                self._bell = Bell(store.conninfo if channel is not None else None, channel, 1.0)
                self._bell.start()
            return self._bell

    def _ready(
        self,
        customer_id: str | None = None,
        min_position: int | None = None,
        wait: float | None = None,
    ) -> ReadModel:
        """The read model, for a read: caught up first if this store was opened so, and at
        `min_position` at least if given."""
        rm = self.readmodel
        if self.catch_up_reads:
            rm.catch_up()
        if min_position is not None:
            self.wait_for(min_position, customer_id, wait)
        return rm

    # -- the change feed (docs/CHANGES.md) -----------------------------------------------

    def enable_change_feed(self) -> None:
        """Make the store keep a change feed from now on: every projector of the store
        writes change records for what it projects after this (earlier activities get
        none). Off by default: it costs catch-up throughput (bench/README.md, Change
        feed)."""
        self.readmodel.generations.enable_feed()

    @property
    def change_feed(self) -> bool:
        """Whether the store keeps a change feed (`enable_change_feed`)."""
        return self.readmodel.generations.feed_on()

    def changes(
        self,
        after: int = 0,
        customer: str | None = None,
        paths: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> ChangesPage:
        """The change records after position `after` (of `customer`, at paths matching one
        of the globs `paths`), at most `limit`, in position order, and the position to ask
        after next: asking after it never misses a record nor repeats one. A negative
        position or limit, a position past the last record written, or a malformed glob is
        a `QueryError`."""
        globs = _check_feed(after, paths, limit)
        rm = self._ready()
        if not rm.generations.feed_on():
            raise QueryError(
                "the change feed is off for this store: custate.open(url, change_feed=True) "
                "or `custate changes --enable` turns it on (records start from then)"
            )
        feed = rm.changes
        pruned = feed.pruned_upto()
        if after < pruned:
            raise ChangesPrunedError(after, pruned)
        page = feed.page(after, customer, globs, limit)
        if after > 0 and page.next == after and not page.records:
            last = feed.last()
            if after > last:
                raise QueryError(f"after: {after} is past the last position written ({last})")
        return page

    def prune_changes(self, before: datetime | str) -> tuple[int, int]:
        """Retention: delete the change records recorded before `before` (a prefix of the
        feed). (records deleted, highest position pruned); asking after a position below
        that is a `ChangesPrunedError`."""
        cut = _cut(before, "before")
        assert cut is not None
        return self.readmodel.changes.prune(cut)

    def forwarder(
        self,
        url: str,
        *,
        secret: str = "",
        paths: Sequence[str] | None = None,
        customer: str | None = None,
        name: str | None = None,
        batch: int = 500,
        timeout: float = 10.0,
        attempts: int = 6,
        backoff: float = 0.5,
    ) -> Forwarder:
        """Outbound webhooks of the change feed (`adapters.forward`): `.run()` POSTs the
        records after its stored cursor to `url` in batches, signed with `secret`;
        `.dead_letters()` and `.replay_dead()` for the batches the receiver refused."""
        globs = _check_feed(0, paths, batch)

        def read(after: int, limit: int) -> ChangesPage:
            return self.changes(after, customer, globs, limit)

        return Forwarder(
            self.store.engine,
            read,
            url,
            secret=secret,
            name=name,
            paths=globs,
            batch=batch,
            timeout=timeout,
            attempts=attempts,
            backoff=backoff,
            listener=self._listener,
        )

    def follow_changes(
        self,
        after: int = 0,
        customer: str | None = None,
        paths: Sequence[str] | None = None,
        *,
        poll: float = 0.5,
        limit: int = 1000,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[ChangeRecord]:
        """The change records after `after`, then each one as it is written (blocking),
        until `should_stop()` is true (checked between waits) or the caller stops
        iterating. On PostgreSQL a follower is told of each write (`LISTEN`) and reads at
        once; `poll` seconds bound each wait (on SQLite it is the pause between reads)."""
        position = after
        with self._listener() as listener:
            while True:
                page = self.changes(position, customer, paths, limit)
                position = page.next
                yield from page.records
                if len(page.records) < limit:
                    if should_stop is not None and should_stop():
                        return
                    listener.wait(poll)

    def changes_bell(self) -> Bell:
        """What asyncio code waits on for the next write of change records (`bell.start()`
        first, `bell.stop()` at the end): one `LISTEN` connection in a thread, shared by
        every waiter; on SQLite it never rings and a wait is a pause."""
        store = self.store
        channel = store.changes_channel
        return Bell(store.conninfo if channel is not None else None, channel)

    def _listener(self) -> Listener:
        store = self.store
        channel = store.changes_channel
        return Listener(store.conninfo if channel is not None else None, channel)

    async def afollow_changes(
        self,
        after: int = 0,
        customer: str | None = None,
        paths: Sequence[str] | None = None,
        *,
        poll: float = 0.5,
        limit: int = 1000,
    ) -> AsyncIterator[ChangeRecord]:
        """`follow_changes` for asyncio: each page is read, and each wait made, in a worker
        thread; the event loop is never blocked."""
        position = after
        listener = await asyncio.to_thread(self._listener().__enter__)
        try:
            while True:
                page = await asyncio.to_thread(self.changes, position, customer, paths, limit)
                position = page.next
                for r in page.records:
                    yield r
                if len(page.records) < limit:
                    await asyncio.to_thread(listener.wait, poll)
        finally:
            listener.close()

    def worker(
        self,
        *,
        poll: float = 0.5,
        on_event: Callable[[WorkerEvent], None] | None = None,
        settle_from: int = SETTLE_FROM,
    ) -> Worker:
        """A projector worker on this store (`adapters.projector`): `worker.run(should_stop)`
        keeps the partitions it holds caught up until `should_stop()`. `settle_from`: after
        a catch-up of at least this many activities it pauses before the next (1: after
        every one that projected something, for a worker sharing its process with a
        server's requests)."""
        return Worker(self, poll=poll, on_event=on_event, settle_from=settle_from)

    def activities(
        self, customer_id: str, known_at: datetime | str | None = None
    ) -> list[StoredActivity]:
        """The customer's stored activities, with their record times, as the event store
        holds them (those recorded by `known_at`, if given)."""
        return self._stored(customer_id, _cut(known_at, "known_at"))

    def _stored(self, customer_id: str, known_at: datetime | None) -> list[StoredActivity]:
        stored = self.store.customer_activities(customer_id, known_at=known_at)
        if not stored and not self.store.has_customer(customer_id):
            raise UnknownCustomerError(customer_id)
        return stored

    def state(
        self,
        customer_id: str,
        as_of: datetime | str | None = None,
        known_at: datetime | str | None = None,
        *,
        min_position: int | None = None,
        wait: float | None = None,
    ) -> CustomerState:
        """The customer's state from the activities with `created_at <= as_of` that the
        store had accepted by `known_at` (both optional).

        Answered from the read model as it stands (see the class; `min_position`, `wait`):
        the current state directly, `as_of` from the checkpoint before it plus the tail.
        `known_at`, the rarer audit question, folds the fold inputs recorded by then
        (checkpoints hold what is known now)."""
        t = _cut(as_of, "as_of")
        k = _cut(known_at, "known_at")
        if k is not None:
            pairs = self._pairs(customer_id, k, min_position, wait)
            state = fold((a for a, _ in pairs), customer_id, as_of=t)
            state.known_at = k
            return state
        if self.catch_up_reads or min_position is not None:
            self._ready(customer_id, min_position, wait)
        if t is None:
            # One statement, which also checks that the generation it reads is the active
            # one (the read every service makes most; `current_if_active`).
            current = self._on_kept(lambda rm: rm.current_if_active(customer_id))
            if current is None:
                raise UnknownCustomerError(customer_id)
            return current
        return self._on_active(lambda rm: self._state_from(rm, customer_id, t))

    def _state_from(self, rm: ReadModel, customer_id: str, t: datetime | None) -> CustomerState:
        if t is None:  # the current state, in one statement
            current = rm.current(customer_id)
            if current is None:
                raise UnknownCustomerError(customer_id)
            return current
        last_key = rm.last_key(customer_id)
        if last_key is None:
            raise UnknownCustomerError(customer_id)
        # Only the state that answers is loaded: a long history's is large.
        if t is None or last_key <= as_of_bound(t):
            current = rm.current(customer_id)
            if current is None:  # rebuilt and swapped in between: not a new customer
                raise UnknownCustomerError(customer_id)
            current.as_of = t
            return current
        return rm.as_of(customer_id, t)

    def replay(
        self, customer_id: str, as_of: datetime | None = None, known_at: datetime | None = None
    ) -> CustomerState:
        """The state folded straight from the event store, bypassing the read model."""
        stored = self.activities(customer_id, known_at)
        state = fold((s.activity for s in stored), customer_id, as_of=as_of)
        state.known_at = known_at
        return state

    # -- audit (projections/audit/) ------------------------------------------------------------

    def _pairs(
        self,
        customer_id: str,
        known_at: datetime | None = None,
        min_position: int | None = None,
        wait: float | None = None,
    ) -> list[audit.Pair]:
        """What an audit folds: the customer's activities with their record times, from the
        read model's fold inputs, not the events (a fifth of the bytes:
        `adapters.codecs.foldinput`)."""
        rm = self._ready(customer_id, min_position, wait)
        pairs: list[audit.Pair] = list(rm.fold_inputs(customer_id, known_at=known_at))
        if not pairs and rm.last_key(customer_id) is None:
            # Unknown, or rebuilt and swapped in between: the events say which.
            return [(s.activity, s.recorded_at) for s in self._stored(customer_id, known_at)]
        return pairs

    def history(
        self,
        customer_id: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        known_at: datetime | str | None = None,
    ) -> list[audit.HistoryEntry]:
        """Each activity in fold order with its record time and what it changed; `start` /
        `end` (business time, inclusive) limit what is listed, `known_at` what is stored."""
        k = _cut(known_at, "known_at")
        t1, t2 = _cut(start, "from"), _cut(end, "to")
        if t1 is not None and k is None:
            # From the read model's checkpoint before `start`: only the activities after
            # it are read and folded. (Checkpoints hold what is known now, so a history
            # as known at K replays everything.)
            rm = self._ready(customer_id)
            checkpoint = rm.checkpoint_before(customer_id, format_time(t1))
            if checkpoint is not None:
                tail: list[audit.Pair] = list(rm.fold_inputs(customer_id, checkpoint[0]))
                return audit.history(tail, customer_id, t1, t2, checkpoint[1])
        return audit.history(self._pairs(customer_id, k), customer_id, t1, t2)

    def diff_as_of(
        self,
        customer_id: str,
        t1: datetime | str,
        t2: datetime | str,
        known_at: datetime | str | None = None,
    ) -> audit.StateDiff:
        """What changed in business time between `t1` and `t2`, and which activities did it."""
        a, b = _cut(t1, "as_of"), _cut(t2, "as_of")
        assert a is not None
        assert b is not None
        k = _cut(known_at, "known_at")
        return audit.diff_as_of(self._pairs(customer_id, k), customer_id, a, b, k)

    def diff_known_at(
        self,
        customer_id: str,
        as_of: datetime | str | None,
        k1: datetime | str,
        k2: datetime | str,
    ) -> audit.StateDiff:
        """What activities recorded between `k1` and `k2` changed about business time
        `as_of` (None: about now)."""
        a, b = _cut(k1, "known_at"), _cut(k2, "known_at")
        assert a is not None
        assert b is not None
        t = _cut(as_of, "as_of")
        pairs = self._pairs(customer_id, max(a, b))
        return audit.diff_known_at(pairs, customer_id, t, a, b)

    def explain(
        self,
        customer_id: str,
        path: str,
        as_of: datetime | str | None = None,
        known_at: datetime | str | None = None,
    ) -> audit.Explanation:
        """Which activity set the value at `path` (e.g. `loyalty.cards.v_1.balance`), and
        the chain of earlier values with their activities."""
        k = _cut(known_at, "known_at")
        t = _cut(as_of, "as_of")
        return audit.explain(self._pairs(customer_id, k), customer_id, path, t)

    def gaps(self, customer_id: str | None = None) -> list[audit.CardGap]:
        """Balance-continuity breaks (an activity missing upstream), per card: of one
        customer, or of every customer from the read model's stored states (no fold)."""
        if customer_id is not None:
            return audit.card_gaps(customer_id, self.state(customer_id).gaps)
        rm = self._ready()
        out: list[audit.CardGap] = []
        for cid, gaps in rm.gaps():
            out.extend(audit.card_gaps(cid, gaps))
        return out

    def customer_ids(self) -> list[str]:
        """Every customer with stored activities, from the event store."""
        return list(self.store.customers())

    def customers(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        min_position: int | None = None,
        wait: float | None = None,
        **filters: Unpack[CustomerFilters],
    ) -> list[CustomerRow]:
        """Customers matching every filter given (`segment`, `tier`, `campaign`,
        `min_points`, `max_points`, `status`, `order_status`), from the read model's indexes
        (no fold), in customer id order; `after` (the last id of the previous page) and
        `limit` page through them. An argument out of range (`limit` below 1, points
        beyond 64 bits) is a `QueryError` naming it."""
        _check_int("limit", limit, 1)
        _check_filters(filters)
        if self.catch_up_reads or min_position is not None:
            self._ready(None, min_position, wait)
        return self._on_kept(lambda rm: rm.customers(CustomerQuery(**filters), after, limit))

    def count_customers(
        self,
        *,
        min_position: int | None = None,
        wait: float | None = None,
        **filters: Unpack[CustomerFilters],
    ) -> int:
        """How many customers match every filter given (as `customers`, unpaged)."""
        _check_filters(filters)
        if self.catch_up_reads or min_position is not None:
            self._ready(None, min_position, wait)
        return self._on_kept(lambda rm: rm.count(CustomerQuery(**filters)))

    def rejects(self, include_resolved: bool = False) -> list[StoredReject]:
        """The rejected records, oldest first; resolved ones too with `include_resolved`."""
        return list(self.rejects_store.list(include_resolved))

    # -- erasure (GDPR Art. 17; adapters/erase.py) ---------------------------------------

    def erase(
        self, customer_id: str, by: str | None = None, *, vacuum: bool = True
    ) -> ErasureReport:
        """Erase the customer's personal data (profile fields in every payload) from every
        place the store keeps it, and the old bytes from the database files; balances,
        tiers, segments, orders and the audit keep working, profile fields read as erased.
        The erasure is recorded (customer, when, `by`), and the customer's activities
        stored from now on are erased on the way in until `lift_erasure`. `vacuum`: rewrite
        the database files so no old byte stays (SQLite `VACUUM`, PostgreSQL `VACUUM (FULL)`
        of the rewritten tables, which locks each while it runs); False leaves that to you
        (the report's warnings say what may remain)."""
        self._writable()
        if not isinstance(customer_id, str) or not customer_id:
            raise QueryError(f"customer_id: {customer_id!r} is not a customer id")
        report = erase_customer(
            self.store, self.rejects_store, self.readmodel, customer_id, self.clock(), by, vacuum
        )
        self._readmodel = None  # what it kept in memory may hold the erased values
        return report

    def lift_erasure(self, customer_id: str, by: str | None = None) -> Erasure:
        """Store the customer's activities as they come again (what was erased stays
        erased); the record stays, with when it was lifted. `UnknownCustomerError` if the
        customer was never erased."""
        self._writable()
        found = self.store.erasures.lift(customer_id, self.clock(), by)
        if found is None:
            raise UnknownCustomerError(customer_id)
        return found

    def erasure(self, customer_id: str) -> Erasure | None:
        """The customer's erasure record, if it was ever erased."""
        return self.store.erasures.get(customer_id)

    def pull_cursors(self) -> PullCursors:
        """Where each customer's pull from the Voucherify API stands (`adapters.pull`)."""
        return self._parts.pull_cursors()

    def pull_listings(self) -> PullListings:
        """Where each backfill's customer listing stands and the customers it listed that
        are not done yet (`adapters.pull.backfill`)."""
        return self._parts.pull_listings()


def open(
    url: str | None = None,
    clock: Clock = utc_now,
    *,
    catch_up_reads: bool = False,
    partitions: int | None = None,
    change_feed: bool = False,
    read_only: bool = False,
    checkpoint_cache_bytes: int | None = None,
) -> Custate:
    """Open (creating if needed) the store at `url`: `sqlite:///PATH` or `postgresql://...`
    (None: $CUSTATE_STORE, else ./custate.db). A URL that names no usable store, or a store
    that cannot be reached, is a `StoreError`. `catch_up_reads`: see `Custate`; `partitions`:
    the partition count of a store created now (`adapters.readmodel.partitions`);
    `change_feed=True` makes the store keep a change feed from now on (`enable_change_feed`).
    `read_only` (SQLite; the same as `?mode=ro` in the URL): reads work, whatever the
    file's permissions, nothing is created and every write is a `StoreUnavailableError`
    saying the store is read-only. `checkpoint_cache_bytes`: the budget of decoded
    checkpoints kept for points in time and late activities (None: $CUSTATE_CHECKPOINT_CACHE,
    else 32 MiB; raise it for customers of hundreds of thousands of activities, whose
    state alone is tens of MB)."""
    if read_only:
        url = _read_only_url(store_url(url))
    return Custate(
        parts=bootstrap.build(url, clock, partitions, checkpoint_cache_bytes),
        catch_up_reads=catch_up_reads,
        change_feed=change_feed,
    )


def _check_feed(after: int, paths: Sequence[str] | None, limit: int) -> list[str] | None:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise QueryError(f"after: {after!r} is not a position (an integer, 0 or more)")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise QueryError(f"limit: {limit!r} is not a positive integer")
    if paths is None:
        return None
    if isinstance(paths, str):
        paths = [paths]
    for g in paths:
        if not isinstance(g, str) or not _GLOB.match(g):
            raise QueryError(
                f"paths: {g!r} is not a path glob (dotted segments such as "
                "'segments.*' or 'loyalty.tiers.*.tier_id')"
            )
    return list(paths) or None


def _read_only_url(url: str) -> str:
    if url.startswith(("postgresql:", "postgres:")):
        from custate.adapters.report import mask_password

        raise StoreError(
            f"{mask_password(url)}: read_only is for SQLite stores; on PostgreSQL use a role"
        )
    if "://" not in url:
        url = f"sqlite:///{url}"
    return url + ("&" if "?" in url else "?") + "mode=ro"


def _items(sources: Iterable[Source], customer_id: str | None) -> Iterable[Item]:
    for i, source in enumerate(sources):
        if isinstance(source, Path):
            yield from read_path(str(source), customer_id)
        elif isinstance(source, str | bytes):
            yield from read_text(source, f"<text {i}>", customer_id)
        else:
            yield from records_from_value(source, "<api>", f"[{i}]", customer_id)
