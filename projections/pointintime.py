"""State as of a business time T: the latest checkpoint at or before T, plus the tail.

Library snapshots are keyed by arrival order and give wrong answers once activities arrive
late; these checkpoints are keyed by the fold key, so "before T" means before T in
business time."""

from __future__ import annotations

from datetime import datetime

from custate.domain import CustomerState, apply
from custate.projections.catchup import ActivityPort, ReadModelPort
from custate.projections.keys import as_of_bound


def state_as_of(
    model: ReadModelPort, source: ActivityPort, customer_id: str, t: datetime
) -> CustomerState:
    bound = as_of_bound(t)
    checkpoint = model.checkpoint_before(customer_id, bound)
    after = checkpoint[0] if checkpoint else None
    versions = [v for _, v in model.keys_between(customer_id, after, bound)]
    tail = source.activities(customer_id, versions) if versions else []
    state = checkpoint[1] if checkpoint else CustomerState(customer_id)
    for a in tail:  # in key order: the versions are, and the port keeps their order
        apply(state, a)
    state.as_of = t
    return state
