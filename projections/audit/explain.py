"""Why a field has its value: every activity that changed it, in fold order."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from custate.projections.audit.changes import Flat, apply_changes
from custate.projections.audit.pairs import Pair, in_fold_order, late_flags
from custate.projections.audit.results import (
    ADDED,
    CHANGED,
    REMOVED,
    Explanation,
    ValueStep,
    activity_ref,
)
from custate.projections.audit.tracker import Tracker
from custate.projections.audit.units import Unit, unit_path


def _under(path: str, target: str) -> bool:
    return path == target or path.startswith(target + ".")


def explain(
    pairs: Iterable[Pair], customer_id: str, path: str, as_of: datetime | None = None
) -> Explanation:
    """The fold of `history`, rendering and diffing only the parts of the state that hold
    `path` or lie under it: the chain of one value costs little more than the fold."""

    held: dict[Unit, bool] = {}  # the same few units come up again and again

    def holds(unit: Unit) -> bool:
        answer = held.get(unit)
        if answer is None:
            p = unit_path(unit)
            answer = held[unit] = _under(p, path) or _under(path, p)
        return answer

    todo = in_fold_order(pairs)
    late = late_flags(todo)
    tracker = Tracker(customer_id, only=holds)
    flat = {p: v for p, v in tracker.flat().items() if _under(p, path)}
    chain: list[ValueStep] = []
    for (a, r), is_late in zip(todo, late, strict=True):
        if as_of is not None and a.created_at > as_of:
            break
        hit = [c for c in tracker.step(a) if _under(c.path, path)]
        if hit:
            before = _value(flat, path)
            apply_changes(flat, hit)
            after = _value(flat, path)
            op = CHANGED if before[0] and after[0] else (ADDED if after[0] else REMOVED)
            chain.append(ValueStep(activity_ref(a, r), before[1], after[1], op, is_late))
    present, value = _value(flat, path)
    return Explanation(
        customer_id, path, present, value, chain[-1].activity if chain else None, tuple(chain)
    )


def _value(flat: Flat, path: str) -> tuple[bool, Any]:
    if path in flat:
        return True, flat[path]
    prefix = path + "."
    sub = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
    return (True, sub) if sub else (False, None)
