"""A projector worker: keeps the read model caught up for the partitions it holds.

Any number of workers run against one PostgreSQL store (`custate project --follow`, or a
`serve` process's own): each holds a fair share of the store's partitions through leases
(`readmodel.leases`), renewed by a heartbeat thread; it projects its partitions' activities
after their own tracking positions, every write fenced by its leases, and is woken by
`LISTEN`/`NOTIFY` when activities are stored (and by polling, should a notification be
lost). A worker that dies or hangs loses its leases once they expire, and the others take
them over, each from that partition's tracking position.

On SQLite one projector runs at a time: a worker holds the store's one partition through
a lock file (`<store>.projector.lock`), and a second worker waits for it, saying so."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from sqlalchemy import Connection

from custate.adapters.notify import Listener
from custate.adapters.readmodel import CatchUpReport
from custate.adapters.readmodel.leases import LeaseLost, Leases
from custate.adapters.upgrade import BackgroundRebuild

if TYPE_CHECKING:
    from custate.adapters.api import Custate

__all__ = [
    "DEFAULT_HEARTBEAT",
    "DEFAULT_LEASE_TTL",
    "SETTLE_FROM",
    "Worker",
    "WorkerEvent",
    "sqlite_projector",
]

# Leases last 6 s from their last renewal, renewed every 2 s: a dead or hung worker's
# partitions are taken over within ttl + heartbeat = 8 s (the bound is 10 s).
DEFAULT_LEASE_TTL = 6.0
DEFAULT_HEARTBEAT = 2.0
# After a catch-up that projected at least `settle_from` activities, wait as long as it
# took, up to DEFAULT_SETTLE, before the next: under more writes than the worker keeps up
# with, each catch-up then folds (and commits) a batch, not every few activities, and
# leaves the CPU and the database to the writers in between. Below SETTLE_FROM a worker of
# its own keeps up: the next catch-up starts at once, and a read waiting for its write
# waits for one catch-up, not two and a pause. A worker in a `serve` process settles after
# every catch-up (`settle_from=1`): back to back, its catch-ups held the interpreter's lock
# against the requests (bench/README.md, webhook to query).
DEFAULT_SETTLE = 0.05
SETTLE_FROM = 64
# A worker's partitions with nothing new are moved past the other workers' activities at
# most this often (a read of one customer waits for its own partition only; the lowest
# position, which a read of all customers waits for, lags idle partitions this much more).
IDLE_MOVE = 0.25

_log = logging.getLogger("custate.projector")


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """What a worker tells its caller: `kind` is `projected` (with the report), `waiting`
    (another projector holds the SQLite store), `leases` (the partitions it holds changed),
    `rebuild` (a stale read model is being rebuilt: started, done, failed) or `error` (a
    failed catch-up, retried). `seconds`: how long a `projected` catch-up took."""

    kind: str
    message: str
    report: CatchUpReport | None = None
    partitions: tuple[int, ...] = ()
    seconds: float = 0.0


def _caught_up(r: CatchUpReport, seconds: float, worker: str) -> None:
    """The log line of one catch-up that projected something."""
    ms = round(seconds * 1000, 3)
    _log.info(
        "projected %d activities (%d late) to position %d in %.1f ms",
        r.activities,
        r.late,
        r.position,
        ms,
        extra={
            "activities": r.activities,
            "late": r.late,
            "batches": r.batches,
            "position": r.position,
            "duration_ms": ms,
            "worker": worker,
        },
    )


class Worker:
    """One projector worker on the store `cs` opened. `run(should_stop)` works until
    `should_stop()` is true; `wake()` (from another thread) makes it look at once."""

    def __init__(
        self,
        cs: Custate,
        *,
        poll: float = 0.5,
        settle: float = DEFAULT_SETTLE,
        settle_from: int = SETTLE_FROM,
        ttl: float = DEFAULT_LEASE_TTL,
        heartbeat: float = DEFAULT_HEARTBEAT,
        on_event: Callable[[WorkerEvent], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.cs = cs
        self.poll = poll
        self.settle = settle
        self.settle_from = max(1, settle_from)
        self.ttl = ttl
        self.heartbeat_every = heartbeat
        self.on_event = on_event or (lambda _e: None)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._changed = threading.Event()  # the partitions held changed
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # the heartbeat's and the loop's, one at a time
        # A catch-up is running over the partitions held: partitions to give up are given
        # up after it has written what it planned for them (else that work is lost).
        self._busy = False
        self._held: dict[int, int] = {}  # partition -> epoch
        self._stopping = threading.Event()
        # Renew and rebalance now (another worker joined, left or gave up partitions).
        self._beat = threading.Event()
        self.postgresql = cs.store.url.kind == "postgresql"

    @property
    def held(self) -> tuple[int, ...]:
        """The partitions this worker holds now."""
        with self._lock:
            return tuple(sorted(self._held))

    def wake(self) -> None:
        """Look for new activities now (e.g. after this process stored some)."""
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool]) -> CatchUpReport:
        """Project until `should_stop()`; returns what was projected in all."""
        total = CatchUpReport()

        def stop() -> bool:
            return self._stopping.is_set() or should_stop()

        # A read model built by an older fold is rebuilt beside the active generation,
        # which this worker keeps catching up meanwhile (adapters.upgrade).
        upgrade = BackgroundRebuild(self.cs, self.on_event, stop)
        # Listening before taking partitions: a worker that gives some up for this one
        # says so as this one joins, and this one takes them at once.
        with self._listener(stop), self._partitions(stop) as leases, _joined(upgrade):
            upgrade.start_if_stale()
            moved = float("-inf")  # when the idle partitions' positions were last moved
            while not stop():
                upgrade.poll()
                held = self._snapshot()
                if held:
                    self._changed.clear()
                    try:
                        self._busy = True
                        began = time.perf_counter()
                        # Every write of the store wakes every worker: the partitions
                        # with nothing new are moved on at most every IDLE_MOVE seconds,
                        # not in a write transaction (and a NOTIFY) for each.
                        move_idle = began - moved >= IDLE_MOVE
                        try:
                            r = self.cs.readmodel.catch_up(
                                should_stop=lambda: stop() or self._changed.is_set(),
                                partitions=sorted(held),
                                fence=self._fence(leases, held),
                                move_idle=move_idle,
                            )
                        finally:
                            self._busy = False
                        if move_idle or r.activities:
                            moved = began
                        if self._changed.is_set() and leases is not None:
                            self._refresh(leases)  # give up what it was asked to, now
                    except LeaseLost as e:
                        self.on_event(WorkerEvent("leases", str(e), partitions=self.held))
                        if leases is not None:
                            self._refresh(leases)
                        continue
                    except Exception as e:
                        # A database restart, a rebuild swapping generations: say so, retry.
                        self.on_event(WorkerEvent("error", f"{type(e).__name__}: {e}"))
                        self._wait(stop)
                        continue
                    total.activities += r.activities
                    total.batches += r.batches
                    total.late += r.late
                    total.position = r.position
                    if r.activities:
                        took = time.perf_counter() - began
                        _caught_up(r, took, self.name)
                        self.on_event(
                            WorkerEvent("projected", "", r, tuple(sorted(held)), seconds=took)
                        )
                    if self._changed.is_set():
                        continue
                    if r.activities >= self.settle_from and self.settle:
                        # at most as long as the catch-up took: under a stream of writes
                        # the worker is busy half the time at most, and batches what came
                        self._stopping.wait(min(self.settle, took))
                self._wait(stop)
        return total

    def _wait(self, stop: Callable[[], bool]) -> None:
        self._wake.wait(self.poll)
        self._wake.clear()

    def _snapshot(self) -> dict[int, int]:
        with self._lock:
            return dict(self._held)

    def _fence(
        self, leases: Leases | None, held: dict[int, int]
    ) -> Callable[[Connection], None] | None:
        if leases is None:
            return None
        return lambda c: leases.check(c, self.name, held)

    # -- partitions: leases on PostgreSQL, a lock file on SQLite ---------------------------

    @contextlib.contextmanager
    def _partitions(self, stop: Callable[[], bool]) -> Iterator[Leases | None]:
        if not self.postgresql:
            with self._sqlite_lock(stop):
                yield None
            return
        rm = self.cs.readmodel
        store = self.cs.store
        leases = Leases(store.engine, rm.partitions, self.ttl, store.workers_channel)
        self._refresh(leases)
        beat = threading.Thread(
            target=self._heartbeats, args=(leases, stop), name="custate-lease", daemon=True
        )
        beat.start()
        try:
            yield leases
        finally:
            self._stopping.set()
            self._beat.set()
            beat.join(timeout=self.heartbeat_every + 5)
            with contextlib.suppress(Exception):
                leases.leave(self.name, self.held)

    def _heartbeats(self, leases: Leases, stop: Callable[[], bool]) -> None:
        while not stop():
            self._beat.wait(self.heartbeat_every)
            self._beat.clear()
            if stop():
                return
            try:
                self._refresh(leases)
            except Exception as e:  # the database is away: the leases lapse by themselves
                self.on_event(WorkerEvent("error", f"heartbeat: {type(e).__name__}: {e}"))

    def _refresh(self, leases: Leases) -> None:
        """Renew, then take or give up partitions towards a fair share."""
        with self._refreshing:
            self._refresh_now(leases)

    def _refresh_now(self, leases: Leases) -> None:
        before = self._snapshot()
        held = leases.heartbeat(self.name, before)
        share = leases.fair_share()
        if len(held) > share:
            if self._busy:
                # Stop the catch-up at its next batch; the loop then writes and gives up.
                self._changed.set()
            else:
                extra = sorted(held)[share:]
                leases.release(self.name, extra)
                for p in extra:
                    held.pop(p)
        elif len(held) < share:
            held.update(leases.acquire(self.name, share - len(held)))
        with self._lock:
            self._held = held
        if held != before:
            self._changed.set()
            self._wake.set()
            self.on_event(
                WorkerEvent("leases", f"holds {len(held)} partition(s)", partitions=self.held)
            )

    @contextlib.contextmanager
    def _sqlite_lock(self, stop: Callable[[], bool]) -> Iterator[None]:
        path = self.cs.store.url.env["SQLITE_DBNAME"] + ".projector.lock"
        f: IO[str] = open(path, "a+")  # noqa: SIM115
        try:
            said = False
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not said:
                        f.seek(0)
                        who = f.read().strip() or "another process"
                        self.on_event(
                            WorkerEvent(
                                "waiting",
                                f"another projector is running on this store ({who}); "
                                "waiting for it to stop",
                            )
                        )
                        said = True
                    if stop():
                        yield
                        return
                    self._stopping.wait(self.poll)
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            with self._lock:
                self._held = {0: 0}
            try:
                yield
            finally:
                with self._lock:
                    self._held = {}
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)
        finally:
            f.close()

    # -- waking: LISTEN on PostgreSQL ------------------------------------------------------

    @contextlib.contextmanager
    def _listener(self, stop: Callable[[], bool]) -> Iterator[None]:
        channel = self.cs.store.channel
        if channel is None:
            yield
            return
        t = threading.Thread(
            target=self._listen, args=(channel, stop), name="custate-listen", daemon=True
        )
        t.start()
        try:
            yield
        finally:
            self._stopping.set()
            t.join(timeout=self.poll + 5)

    def _listen(self, channel: str, stop: Callable[[], bool]) -> None:
        # A dropped connection is made again at the next wait; polling carries on meanwhile.
        workers = self.cs.store.workers_channel
        also = () if workers is None else (workers,)
        with Listener(self.cs.store.conninfo, channel, also) as listener:
            while not stop():
                told = listener.wait_any(self.poll)
                if channel in told:
                    self._wake.set()
                if workers in told:
                    self._beat.set()


@contextlib.contextmanager
def _joined(upgrade: BackgroundRebuild) -> Iterator[None]:
    """Wait for the background rebuild (told to stop with the worker) before leaving."""
    try:
        yield
    finally:
        upgrade.join()


def sqlite_projector(dbname: str) -> str | None:
    """Who runs the projector of the SQLite store `dbname` now ("pid N on HOST", as its
    lock file says), None when no projector holds its lock."""
    path = dbname + ".projector.lock"
    if not os.path.exists(path):
        return None
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None
