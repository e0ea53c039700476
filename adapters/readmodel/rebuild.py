"""Blue/green rebuilds of the read model."""

from __future__ import annotations

from collections.abc import Callable

from custate.adapters.eventstore import EventStore
from custate.adapters.readmodel.runner import DEFAULT_CATCHUP_BATCH, CatchUpReport
from custate.adapters.readmodel.view import ReadModel
from custate.projections.catchup import DEFAULT_CHECKPOINT_INTERVAL

__all__ = ["rebuild", "rebuild_total"]


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
    building = active.generations.building(active.t.generation)
    fresh = ReadModel(store, generation=building, interval=interval)
    report = fresh.catch_up(batch_size, progress)
    active.generations.activate(building)
    active.t.metadata.drop_all(store.engine)
    return report


def rebuild_total(store: EventStore) -> int:
    """How many activities a rebuild projects."""
    return store.count()
