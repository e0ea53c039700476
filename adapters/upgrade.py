"""Upgrades of the read model: which fold built the stored states, and the rebuild that
brings them to this code's fold on its own.

Each generation records the fold version it was built with (`Generations.fold_version`);
`FoldStatus` compares it with this code's (`domain.FOLD_VERSION`). A read model built by
an older fold (or before versions were recorded) is stale: `serve` and `project --follow`
rebuild it in the background (`BackgroundRebuild`, started by every projector worker)
while the old generation keeps answering, and the CLI's read commands say so. One built
by a newer fold is left alone: during a rolling upgrade an older process must not rebuild
what a newer one built (docs/DECISIONS.md, Upgrades)."""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import NoSuchTableError

from custate.adapters.eventstore import EventStore
from custate.adapters.migrations import schema_status
from custate.adapters.readmodel import ReadModel, rebuild
from custate.adapters.readmodel.tables import tables
from custate.domain.fold import FOLD_VERSION

if TYPE_CHECKING:
    from custate.adapters.api import Custate
    from custate.adapters.projector import WorkerEvent

__all__ = [
    "RETRY_EVERY",
    "BackgroundRebuild",
    "FoldStatus",
    "fold_status",
    "missing_columns",
    "rebuild_lock",
    "upgrade_status",
]

# How often a worker looks again whether the read model is still stale and nobody is
# rebuilding it (a rebuilding process that stopped or died hands the work on).
RETRY_EVERY = 30.0


@dataclass(frozen=True, slots=True)
class FoldStatus:
    """The fold version the active generation was built with (None: not recorded, a
    read model made before versions were) and this code's."""

    generation: int
    built_with: int | None
    current: int = FOLD_VERSION
    # What its tables lack of this code's layout ("custate_rm1_customers.points"), looked
    # at only when stale: a generation of an older release may be of an older layout.
    missing: tuple[str, ...] = ()

    @property
    def stale(self) -> bool:
        """Built by an older fold (or an unknown one): its states may be wrong."""
        return self.built_with is None or self.built_with < self.current

    @property
    def newer(self) -> bool:
        """Built by a newer fold than this code's (an older process during an upgrade)."""
        return self.built_with is not None and self.built_with > self.current

    def built_by(self) -> str:
        return (
            "an unrecorded fold version" if self.built_with is None else f"fold v{self.built_with}"
        )

    def warning(self) -> str | None:
        """What a read should tell its user, or None when the states are this fold's."""
        if self.stale:
            return (
                f"the read model (generation {self.generation}) was built by {self.built_by()}; "
                f"this code's fold is v{self.current}, so its states may be stale. "
                "`custate rebuild` rebuilds it (serve and project --follow do on their own)"
                + (
                    f"; its tables are of an older layout (no column {', '.join(self.missing)}): "
                    "reads that need those fail until then"
                    if self.missing
                    else ""
                )
            )
        if self.newer:
            return (
                f"the read model (generation {self.generation}) was built by {self.built_by()}, "
                f"newer than this code's fold v{self.current}: upgrade custate"
            )
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "built_with": self.built_with,
            "current": self.current,
            "stale": self.stale,
        }


def upgrade_status(store: EventStore) -> dict[str, Any]:
    """The store's schema revision, for `custate status`."""
    return {"schema": schema_status(store).to_json()}


def fold_status(rm: ReadModel) -> FoldStatus:
    """The fold status of the store's active generation (`rm` is any generation of it)."""
    g, built_with = rm.generations.active_fold()
    status = FoldStatus(g, built_with)
    if not status.stale:
        return status
    return FoldStatus(g, built_with, missing=tuple(missing_columns(rm.engine, g)))


def missing_columns(engine: Engine, generation: int) -> list[str]:
    """The columns of this code's layout that the tables of `generation` lack, as
    `table.column` (a table a rebuild has just dropped lacks nothing)."""
    inspector = inspect(engine)
    out: list[str] = []
    for table in tables(generation).metadata.sorted_tables:
        try:
            have = {c["name"] for c in inspector.get_columns(table.name)}
        except NoSuchTableError:
            continue
        out.extend(f"{table.name}.{c.name}" for c in table.columns if c.name not in have)
    return out


@contextlib.contextmanager
def rebuild_lock(store: EventStore) -> Iterator[bool]:
    """Try to take the store's automatic-rebuild lock without waiting; yields whether it
    was taken (held until the block ends). A lock file beside an SQLite store, an advisory
    lock on PostgreSQL: of all the processes that find the read model stale, one rebuilds."""
    if store.url.kind == "sqlite":
        path = store.url.env["SQLITE_DBNAME"] + ".rebuild.lock"
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    key = {"k": f"custate-rebuild:{store.url.schema or 'public'}"}
    with store.engine.connect() as c:
        got = bool(c.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), key).scalar())
        c.commit()
        try:
            yield got
        finally:
            if got:
                c.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), key)
                c.commit()


class BackgroundRebuild:
    """A rebuild of a stale read model in a thread of its own, while the active generation
    keeps answering (and being caught up); `on_event` is told when it starts, ends or
    fails, as a `WorkerEvent` of kind `rebuild`."""

    def __init__(
        self,
        cs: Custate,
        on_event: Callable[[WorkerEvent], None],
        should_stop: Callable[[], bool],
    ) -> None:
        self.cs = cs
        self.on_event = on_event
        self.should_stop = should_stop
        self.thread: threading.Thread | None = None
        self._looked = time.monotonic()
        self._said_other = False

    def start_if_stale(self) -> bool:
        """Start the rebuild if the read model is stale (and the store writable) and none
        runs in this process; whether it started."""
        self._looked = time.monotonic()
        if self.thread is not None and self.thread.is_alive():
            return False
        if self.cs.read_only or not fold_status(self.cs.readmodel).stale:
            return False
        self.thread = threading.Thread(target=self._run, name="custate-rebuild", daemon=True)
        self.thread.start()
        return True

    def poll(self) -> None:
        """Look again every `RETRY_EVERY` seconds: the process that was rebuilding may
        have stopped or died, leaving the read model stale and the lock free."""
        if time.monotonic() - self._looked >= RETRY_EVERY:
            self.start_if_stale()

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def _say(self, message: str) -> None:
        from custate.adapters.projector import WorkerEvent

        self.on_event(WorkerEvent("rebuild", message))

    def _run(self) -> None:
        store = self.cs.store
        try:
            with rebuild_lock(store) as got:
                if not got:
                    if not self._said_other:
                        self._say("the read model is stale; another process is rebuilding it")
                        self._said_other = True
                    return
                status = fold_status(self.cs.readmodel)
                if not status.stale:  # another process rebuilt it meanwhile
                    return
                self._say(
                    f"the read model (generation {status.generation}) was built by "
                    f"{status.built_by()}, this code's fold is v{status.current}: rebuilding "
                    f"it into a new generation while generation {status.generation} answers"
                )
                started = time.monotonic()
                report = rebuild(store, should_stop=self.should_stop)
                if self.should_stop() and fold_status(self.cs.readmodel).stale:
                    self._say("rebuild stopped; it resumes at the next start")
                    return
                self._say(
                    f"rebuild done: generation {fold_status(self.cs.readmodel).generation} answers, "
                    f"built by fold v{FOLD_VERSION} from {report.activities:,} activities "
                    f"in {time.monotonic() - started:.1f} s"
                )
        except Exception as e:  # the old generation keeps answering; say why
            self._say(f"rebuild failed: {type(e).__name__}: {e}")
