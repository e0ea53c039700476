"""What changed between two states: leaf paths with their before and after values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Keys that describe the question asked, not the customer.
CUT_KEYS = frozenset({"as_of", "known_at"})


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    before: Any
    after: Any


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf paths of a JSON value. An empty object or list is a leaf of its own."""
    if not (isinstance(value, dict) and value):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, path))
        else:
            out[path] = v  # a leaf: no call, no dict of its own (the audit's hot path)
    return out


def diff_states(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Changed leaves, in path order; a path only one side has is `None` on the other."""
    a = {k: v for k, v in flatten(before).items() if k.split(".")[0] not in CUT_KEYS}
    b = {k: v for k, v in flatten(after).items() if k.split(".")[0] not in CUT_KEYS}
    return [
        Change(path, a.get(path), b.get(path))
        for path in sorted(a.keys() | b.keys())
        if a.get(path) != b.get(path)
    ]
