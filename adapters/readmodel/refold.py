"""Re-folding one customer's projected activities in place (after an erasure rewrote them).

`refold_customer` deletes every row the read model keeps of the customer (state row, index
rows, pages, keys with their fold inputs, checkpoints) and writes them again from the
activities as the event store now holds them, in the transaction of the connection given.
Only the activities the read model had projected are folded (its `keys` rows: their keys
as stored), so the tracking positions stay where they are and the runner neither misses
nor repeats one. The row is written under a head no process remembers (`_unremembered`). The change feed is not written: the erasure rewrites the feed's records
itself (`adapters.erase`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete

from custate.adapters.codecs import foldinput as inputs
from custate.adapters.codecs import state as state_codec
from custate.adapters.readmodel.activities import CachedActivities
from custate.adapters.readmodel.view import ReadModel
from custate.domain import Activity, CustomerState
from custate.projections.catchup import Head, Projected, plan

__all__ = ["forget", "refold_customer"]


class _Nothing:
    """A read model that holds nothing: the customer is folded from the start."""

    def heads(self, customer_ids: Sequence[str]) -> dict[str, Head]:
        return {}

    def states(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        return {}

    def checkpoint_before(self, customer_id: str, key: str) -> tuple[str, CustomerState] | None:
        return None

    def keys_between(
        self, customer_id: str, after: str | None, upto: str | None = None
    ) -> list[tuple[str, int]]:
        return []

    def activities(self, customer_id: str, versions: Sequence[int]) -> list[Activity]:
        return []


def refold_customer(view: ReadModel, c: Connection, customer_id: str) -> int:
    """Rewrite the customer's rows of `view` from the event store, in the transaction of
    `c`; the number of activities folded (0: the read model had not projected any). The
    view's memories of earlier writes are dropped."""
    keys = view._sql.keys_between(c, customer_id, None, None)
    before = view._rows.heads(c, [customer_id]).get(customer_id)
    for table in view.t.per_customer:
        c.execute(delete(table).where(table.c.customer_id == customer_id))
    forget(view)
    if not keys:
        return 0
    found = view.store.customer_versions(customer_id, [v for _, v in keys])
    batch = [Projected(found[v].activity, v, k, found[v].recorded_at) for k, v in keys]
    nothing = _Nothing()
    changes = plan(batch, nothing, nothing, view.interval, None, feed=False)
    state, head = changes.states[customer_id]
    changes.states[customer_id] = (state, Head(head.last_key, _unremembered(head, before)))
    view._rows.write(c, changes, {})
    view._sql.insert(
        c,
        view.t.keys,
        [
            (customer_id, p.key, p.version, inputs.dump(p.activity, found[p.version].recorded_at))
            for p in batch
        ],
    )
    view._checkpoint_store.insert(
        c, [(cid, key, state_codec.dump_text(s)) for cid, key, s in changes.checkpoints]
    )
    forget(view)
    return len(batch)


def _unremembered(head: Head, before: Head | None) -> int:
    """The last version to write the re-folded row under: one no process remembers a
    state, rows or checkpoints under. Every process's memory of a customer is keyed by the
    head it wrote or read (`Runner`, `CustomerRows`, `CheckpointMemory`), and the re-fold
    ends at the same key and version, so another process would fold its next activity on
    what it remembers, the erased data. The version negated (one less than the stored one
    if that is negative already: erased twice) is a head no fold ever wrote; `last_version`
    is used as nothing else, and the next activity folded writes the true one back
    (`plan` takes the highest version)."""
    if before is not None and before.last_version < 0:
        return before.last_version - 1
    return -head.last_version


def forget(view: ReadModel) -> None:
    """Drop what `view` keeps in memory of states, rows, checkpoints and parsed activities:
    after an erasure, what it kept may hold the erased values."""
    view._rows.forget()
    view.checkpoints.clear()
    view._activities = CachedActivities(view.store, erased_at=view.erased_at)
    view._runner.forget()
