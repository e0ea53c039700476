"""An object of the state (a card, an order, the activity counters) field by field: the
audit compares its fields' values and renders only those that changed, each as its class's
`to_json` renders it (a unit test holds every class of the state to it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from operator import attrgetter
from typing import Any

from custate.domain import format_time
from custate.projections.audit.changes import Flat, diff_json, one_sided
from custate.projections.audit.results import ADDED, CHANGED, REMOVED, FieldChange
from custate.projections.diff import flatten


def field_json(value: Any) -> Any:
    """A field's JSON value, as the state's `to_json` renders every field."""
    c = value.__class__
    if c is str or c is int or value is None:
        return value
    if isinstance(value, datetime):  # not `c is datetime`: freezegun rebinds the name
        return format_time(value)
    if c is list:
        return list(value)
    return value


_Spec = tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]], tuple[str, ...]]
_FIELDS: dict[type, _Spec] = {}  # per class: its fields, their getter, ".field" for each


def _spec(cls: type) -> _Spec:
    """A msgspec Struct's fields or a dataclass's: the state holds both."""
    spec = _FIELDS.get(cls)
    if spec is None:
        names: tuple[str, ...] = getattr(cls, "__struct_fields__", None) or tuple(
            f.name for f in dataclasses.fields(cls)
        )
        names = tuple(n for n in names if n != "pending")
        spec = _FIELDS[cls] = (names, attrgetter(*names), tuple(f".{n}" for n in names))
    return spec


def json_fields(cls: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    """The fields of a class of the state that its JSON holds, in order, and a getter of
    their values as a tuple (a card's pending entries apart: `Tracker._card`)."""
    names, get, _ = _spec(cls)
    return names, get


class Seen:
    """An object of the state as last reported: its fields' values, their JSON, and each
    one's path. Comparing the values as a tuple (in C) tells most unchanged objects apart
    without rendering them, and only the fields that changed are rendered: most activities
    change a leaf or two of the objects they touch (`activities.count`, an order's status)."""

    __slots__ = ("get", "json", "names", "path", "paths", "raw")

    def __init__(self, path: str, obj: Any) -> None:
        # `map`, not comprehensions: a long history creates thousands of these (an order
        # each), and a comprehension's frame cost more than its few items.
        self.names, self.get, suffixes = _spec(obj.__class__)
        self.path = path
        self.raw = self.get(obj)
        self.json = list(map(field_json, self.raw))
        self.paths = tuple(map(path.__add__, suffixes))

    def copy(self) -> Seen:
        """The same object as last reported, to be updated apart."""
        c = Seen.__new__(Seen)
        c.names, c.get, c.path, c.paths, c.raw = (
            self.names,
            self.get,
            self.path,
            self.paths,
            self.raw,
        )
        c.json = list(self.json)
        return c

    def flat(self) -> Flat:
        return flatten(dict(zip(self.names, self.json, strict=True)), self.path)

    def report(self, op: str, out: list[FieldChange]) -> None:
        """Every leaf, `added` or `removed` (a new object, or one gone): straight from the
        paths, without flattening into a dict first (a long history adds thousands)."""
        added = op == ADDED
        for path, value in zip(self.paths, self.json, strict=True):
            if value.__class__ is dict and value:
                for leaf, v in flatten(value, path).items():
                    out.append(one_sided(leaf, v, op))
            elif added:
                out.append(FieldChange(path, None, value, ADDED))
            else:
                out.append(FieldChange(path, value, None, REMOVED))

    def update(self, obj: Any, out: list[FieldChange]) -> None:
        """Report what changed in `obj` since last seen, and remember it."""
        raw = self.get(obj)
        old = self.raw
        if raw == old:  # element by element, identity first
            return
        js = self.json
        for i, v in enumerate(raw):
            if v is old[i]:
                continue
            before, after = js[i], field_json(v)
            if (before.__class__ is dict and before) or (after.__class__ is dict and after):
                if before != after:
                    diff_json(before, after, self.paths[i], out)
            elif before != after or type(before) is not type(after):
                out.append(FieldChange(self.paths[i], before, after, CHANGED))
            js[i] = after
        self.raw = raw
