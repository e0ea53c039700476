"""The read model on SQLAlchemy: tracked, batched, exactly-once catch-up from the event
store, current state and indexed queries without folding, point in time from checkpoints,
and blue/green rebuilds.

Three roles, as `eventsourcing.projection` names them: the view (`view.ReadModel`: the
tables, what the projection reads and writes through, and the answers), the projection
(`projections.catchup.plan`, pure: what a batch changes) and the runner (`runner`: reads
the event store after the tracking position, plans, writes). Beside them: `sql` (every raw
SQL statement), `tables`, `tracking` (the exactly-once position), `checkpoints`, `rows`
(customers' state and index rows), `pages` (long histories' large maps), `queries`,
`activities` (parsed activities kept for re-folds) and `rebuild`.

The tuning constants are re-exported to be read; each is read from the module that defines
it (`runner.WRITE_EVERY`, `pages.PAGED_FROM`, ...), so that is where to change one."""

from custate.adapters.readmodel.activities import PARSED_CACHE_SIZE
from custate.adapters.readmodel.checkpoints import DEFAULT_CHECKPOINT_CACHE_BYTES
from custate.adapters.readmodel.pages import PAGED_FROM
from custate.adapters.readmodel.queries import CustomerFilters, CustomerQuery, CustomerRow
from custate.adapters.readmodel.rebuild import rebuild, rebuild_total
from custate.adapters.readmodel.rows import REMEMBER_ROWS_UPTO, UPDATE_IN_PLACE_UPTO
from custate.adapters.readmodel.runner import (
    DEFAULT_CATCHUP_BATCH,
    WRITE_EVERY,
    CatchUpReport,
    Overlay,
    Write,
)
from custate.adapters.readmodel.view import ReadModel

__all__ = [
    "DEFAULT_CATCHUP_BATCH",
    "DEFAULT_CHECKPOINT_CACHE_BYTES",
    "PAGED_FROM",
    "PARSED_CACHE_SIZE",
    "REMEMBER_ROWS_UPTO",
    "UPDATE_IN_PLACE_UPTO",
    "WRITE_EVERY",
    "CatchUpReport",
    "CustomerFilters",
    "CustomerQuery",
    "CustomerRow",
    "Overlay",
    "ReadModel",
    "Write",
    "rebuild",
    "rebuild_total",
]
