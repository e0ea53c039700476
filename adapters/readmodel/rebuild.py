"""Blue/green rebuilds of the read model."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

from custate.adapters.eventstore import EventStore
from custate.adapters.readmodel.parallel import parallel_catch_up, processes_for, unfinished
from custate.adapters.readmodel.runner import DEFAULT_CATCHUP_BATCH, CatchUpReport
from custate.adapters.readmodel.tables import tables
from custate.adapters.readmodel.view import ReadModel
from custate.domain.fold import FOLD_VERSION
from custate.projections.catchup import DEFAULT_CHECKPOINT_INTERVAL
from custate.projections.changes import ChangeRecord, differences

__all__ = ["rebuild", "rebuild_total"]


def rebuild(
    store: EventStore,
    batch_size: int = DEFAULT_CATCHUP_BATCH,
    progress: Callable[[int], None] | None = None,
    interval: int = DEFAULT_CHECKPOINT_INTERVAL,
    should_stop: Callable[[], bool] | None = None,
    processes: int | None = 1,
) -> CatchUpReport:
    """Blue/green: a new generation of tables catches up from the start while the active
    one keeps answering; then one transaction makes it the active one, and the old tables
    are dropped. An interrupted rebuild resumes where its generation's tracking stands
    (under the same fold version; one left by another is started again). `should_stop()`
    is asked between batches: True leaves the rebuild unfinished, to resume later.
    `processes`: how many processes decode and fold (`parallel`; None: one per core for a
    store of `parallel.PARALLEL_FROM` activities or more); the tables they build are the
    ones one process builds."""
    if processes is not None and (isinstance(processes, bool) or processes < 1):
        raise ValueError(f"processes: {processes!r} must be a whole number, at least 1")
    active = ReadModel(store, interval=interval)
    generations = active.generations
    building = generations.building(active.t.generation)
    if generations.fold_version(building) != FOLD_VERSION:
        # Left unfinished by another fold: what it projected is not this fold's.
        generations.abandon(building)
        tables(building).metadata.drop_all(store.engine)
        building = generations.building(active.t.generation)
    fresh = ReadModel(store, generation=building, interval=interval)
    if unfinished(fresh):
        # An interrupted parallel rebuild's rows, which no tracking position covers.
        fresh.t.metadata.drop_all(store.engine)
        fresh = ReadModel(store, generation=building, interval=interval)
    n = processes_for(processes, store.count() if processes is None else 0, os.cpu_count())
    split = parallel_catch_up(fresh, n, batch_size, interval, progress) if n > 1 else None
    # What was stored since the split started, or everything (one process).
    report = fresh.catch_up(batch_size, progress, should_stop)
    if split is not None:
        report = CatchUpReport(
            activities=split.activities + report.activities,
            batches=split.batches + report.batches,
            late=split.late + report.late,
            position=report.position,
        )
    if should_stop is not None and should_stop():
        return report
    records = _differences(active, fresh) if active.feed else []
    generations.activate(building, lambda c: active.changes.insert(c, records))
    active.t.metadata.drop_all(store.engine)
    return report


def _differences(active: ReadModel, fresh: ReadModel) -> list[ChangeRecord]:
    """The change records of the swap (`cause` rebuild): a path per customer whose current
    value the new generation holds differently. None under the same fold."""
    ids = sorted(set(active.all_customer_ids()) | set(fresh.all_customer_ids()))
    at = datetime.now(UTC)
    out: list[ChangeRecord] = []
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        old, new = active.states(chunk), fresh.states(chunk)
        for cid in chunk:
            a, b = old.get(cid), new.get(cid)
            if a is not None and b is not None and a.to_json() == b.to_json():
                continue
            found = differences(cid, a, b, "rebuild", at)
            out.extend(r.stamped(0, at) for r in found)
    return out


def rebuild_total(store: EventStore) -> int:
    """How many activities a rebuild projects."""
    return store.count()
