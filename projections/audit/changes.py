"""Changes between JSON values, as leaf paths (`projections.diff.flatten`'s): each one
`changed`, `added` or `removed`, with its value before and after."""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from custate.projections.audit.results import ADDED, CHANGED, REMOVED, FieldChange
from custate.projections.diff import flatten

Flat = dict[str, Any]  # a flattened state: leaf path -> JSON value

# A part of the state that holds no path now (an entry not in its map, a map not empty).
ABSENT: Any = type("_Absent", (), {"__repr__": lambda self: "<absent>"})()


def diff_json(before: Any, after: Any, path: str, out: list[FieldChange]) -> None:
    """The changes from `flatten(before, path)` to `flatten(after, path)` (`ABSENT`: no
    paths), found without flattening the parts that are equal."""
    if before.__class__ is dict and before and after.__class__ is dict and after:
        shared = 0
        for k, new in after.items():
            old = before.get(k, ABSENT)
            if old is new:  # most leaves: the very object the state held before
                shared += 1
            elif old is ABSENT:
                diff_flat({}, flatten(new, f"{path}.{k}"), out)
            else:
                shared += 1
                if (old.__class__ is dict and old) or (new.__class__ is dict and new):
                    if old != new:
                        diff_json(old, new, f"{path}.{k}", out)
                elif old != new or type(old) is not type(new):
                    out.append(FieldChange(f"{path}.{k}", old, new, CHANGED))
        if shared != len(before):
            for k, old in before.items():
                if k not in after:
                    diff_flat(flatten(old, f"{path}.{k}"), {}, out)
    else:
        b = {} if before is ABSENT else flatten(before, path)
        diff_flat(b, {} if after is ABSENT else flatten(after, path), out)


def diff_flat(before: Flat, after: Flat, out: list[FieldChange]) -> None:
    """The changes from one flattened value to another, appended to `out`."""
    for path, new in after.items():
        if path in before:
            old = before[path]
            if old != new or type(old) is not type(new):
                out.append(FieldChange(path, old, new, CHANGED))
        else:
            out.append(FieldChange(path, None, new, ADDED))
    for path, old in before.items():
        if path not in after:
            out.append(FieldChange(path, old, None, REMOVED))


def changed(before: Flat, after: Flat) -> list[FieldChange]:
    """The changes from one flattened value to another, in path order."""
    out: list[FieldChange] = []
    diff_flat(before, after, out)
    out.sort(key=by_path)
    return out


def one_sided(path: str, value: Any, op: str) -> FieldChange:
    """A leaf that appeared (`op` added) or went (removed)."""
    if op == ADDED:
        return FieldChange(path, None, value, ADDED)
    return FieldChange(path, value, None, REMOVED)


def apply_changes(flat: Flat, changes: Iterable[FieldChange]) -> None:
    """Apply reported changes to a flattened state, in place."""
    for c in changes:
        if c.op == REMOVED:
            flat.pop(c.path, None)
        else:
            flat[c.path] = c.after


by_path = attrgetter("path")
