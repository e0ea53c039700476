"""Parsed activities read back from the event store for re-folds and points in time, kept
in memory: stored events never change but by an erasure (`adapters.erase`), and `Activity`
is immutable, so a kept one stays right while its customer's erasure record is the one
seen when it was kept."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from custate.adapters.eventstore import EventStore
from custate.domain import Activity
from custate.projections.catchup import Projected

__all__ = ["PARSED_CACHE_SIZE", "CachedActivities"]

# Parsed activities kept (about 4.5 KiB each, stored bytes included).
PARSED_CACHE_SIZE = 4096


class CachedActivities:
    """The event store's activities by (customer, stream version), through a least recently
    used memory of `size` parsed activities. Implements `projections.catchup.ActivityPort`.

    `erased_at(customer)`: when the customer was erased (None: never), asked whenever kept
    activities of hers would answer. An erasure, in this process or another, rewrote her
    stored activities: what was kept before it is dropped and read again, so a re-fold or
    a point in time never shows (or writes back) erased data."""

    def __init__(
        self,
        store: EventStore,
        size: int = PARSED_CACHE_SIZE,
        erased_at: Callable[[str], object] | None = None,
    ) -> None:
        self.store = store
        self.size = size
        self.erased_at = erased_at
        self._parsed: OrderedDict[tuple[str, int], Activity] = OrderedDict()
        self._seen: dict[str, object] = {}  # customer -> the erasure time kept ones follow

    def activities(self, customer_id: str, versions: Sequence[int]) -> list[Activity]:
        """The customer's activities at these stream versions, in the order asked."""
        parsed = self._parsed
        found: dict[int, Activity] = {}
        for v in versions:
            hit = parsed.get((customer_id, v))
            if hit is not None:
                parsed.move_to_end((customer_id, v))
                found[v] = hit
        if found and self.erased_at is not None:
            mark = self.erased_at(customer_id)
            if mark is not None and self._seen.get(customer_id) != mark:
                for k in [k for k in parsed if k[0] == customer_id]:
                    del parsed[k]
                found.clear()
                self._seen[customer_id] = mark
        missing = [v for v in versions if v not in found]
        if missing:
            for version, stored in self.store.customer_versions(customer_id, missing).items():
                found[version] = parsed[(customer_id, version)] = stored.activity
            self._trim()
        return [found[v] for v in versions]

    def keep(self, batch: Sequence[Projected]) -> None:
        """Keep activities just read and decoded (a catch-up's batch): a late activity
        re-folds its customer's recent tail, which then is not read and decoded again."""
        parsed = self._parsed
        for p in batch:
            parsed[(p.activity.customer_id, p.version)] = p.activity
        self._trim()

    def _trim(self) -> None:
        parsed = self._parsed
        while len(parsed) > self.size:
            parsed.popitem(last=False)
