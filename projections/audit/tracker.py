"""A customer's state folded one activity at a time, reporting what each one changed: the
incremental diff engine under `history`, `explain` and the diffs.

After each activity it diffs only the units that activity can change (`units_of`) against
what it last saw of them: diffing the whole `to_json()` after every activity would be
quadratic. The objects of the state are compared field by field (`fields.Seen`); the rest
(the points, the gaps) are rendered whole and compared as JSON. The paths are those of
`projections.diff.flatten(state.to_json())` without the cut keys (`as_of`, `known_at`):
applying every reported change, in order, to the flattened empty state gives the flattened
state after each activity (the unit tests check it at every step)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from custate.domain import Activity, CustomerState, apply
from custate.domain.state import Json, PendingEntry
from custate.projections.audit.changes import ABSENT, Flat, by_path, diff_json
from custate.projections.audit.fields import Seen
from custate.projections.audit.results import ADDED, REMOVED, FieldChange
from custate.projections.audit.units import (
    EMPTY_UNITS,
    ENTRIES,
    FIXED,
    MAPS,
    OBJECTS,
    RENDERED_PATHS,
    SMALL_MAPS,
    Unit,
    emptiness,
    units_of,
)
from custate.projections.diff import flatten

Rendered = tuple[str, Any]  # (the path it lies under, its JSON value, or ABSENT)


def _flat(rendered: Rendered) -> Flat:
    path, value = rendered
    return {} if value is ABSENT else flatten(value, path)


# The units rendered as JSON whole (cheap, or rare), under the path where `s.to_json()` has
# them. They are kept unflattened: building prefixed paths for every leaf of every render
# was most of the audit's time, and most renders change nothing.
_RENDERERS: dict[str, Callable[[CustomerState, str], Rendered]] = {
    "empty": lambda s, key: (key, ABSENT if getattr(s, MAPS[key]) else {}),
    "points": lambda s, _: (RENDERED_PATHS["points"], s.points),
    "gaps": lambda s, _: (RENDERED_PATHS["gaps"], [g.to_json() for g in s.gaps]),
    "customer_id": lambda s, _: (RENDERED_PATHS["customer_id"], s.customer_id),
    "referrals": lambda s, _: (RENDERED_PATHS["referrals"], dict(s.referred_by)),
}


class Tracker:
    """A customer's state folded one activity at a time, reporting what each one changed."""

    def __init__(
        self,
        customer_id: str,
        start: CustomerState | None = None,
        only: Callable[[Unit], bool] | None = None,
        counters: bool = True,
        lazy: bool = False,
    ) -> None:
        """From the empty state, or from `start` (a checkpoint: folded on in place).
        `only`: report changes to the units it accepts, and render no others. `counters`:
        track the `activities` section (`history` leaves it out: see `Replay`)."""
        self._only = only
        self._counters = counters
        self.state = s = start if start is not None else CustomerState(customer_id)
        self._cache: dict[Unit, Rendered] = {}  # the units rendered whole
        self._seen: dict[Unit, Seen] = {}  # the objects, field by field
        self._keys: dict[str, set[str]] = {kind: set() for kind in SMALL_MAPS}
        # Per card: its pending entries as last seen, and each one's JSON; the cards that
        # hold none (`"pending": {}` is a leaf of its own).
        self._pending: dict[str, dict[str, PendingEntry]] = {}
        self._pending_json: dict[str, dict[str, Json]] = {}
        self._no_pending: set[str] = set()
        # The pending entry the current activity names: where to look first in its card
        # (a search hint only; what an activity can change comes from `units_of`).
        self._hint: str | None = None
        # `lazy`: a unit is looked at only when an activity names it (just before it is
        # folded), so starting from a long history's state costs nothing; `flat()` then
        # holds only those seen (the change feed's use). The gaps and the maps' emptiness,
        # which are found changed only after the fold, are looked at from the start.
        self._lazy: set[Unit] | None = set(_EAGER) if lazy else None
        ignored: list[FieldChange] = []
        for u in FIXED:
            if (counters or u[0] != "activities") and (not lazy or u in _EAGER):
                _VISIT[u[0]](self, u, ignored)
        if not lazy:
            for kind, (_, entries) in ENTRIES.items():
                for key in entries(s):
                    _VISIT[kind](self, (kind, key), ignored)
        self._gaps = len(s.gaps)
        self._empty = emptiness(s)

    def copy(self) -> Tracker:
        """A tracker that has seen what this one has, on a copy of its state: the two fold
        on apart (cheaper than a new tracker on a copy of the state, which renders every
        unit again)."""
        t = Tracker.__new__(Tracker)
        t._only, t._counters, t._hint = self._only, self._counters, self._hint
        t.state = self.state.copy()
        t._cache = dict(self._cache)
        t._seen = {u: seen.copy() for u, seen in self._seen.items()}
        t._keys = {kind: set(keys) for kind, keys in self._keys.items()}
        t._pending = {card: dict(entries) for card, entries in self._pending.items()}
        t._pending_json = {card: dict(js) for card, js in self._pending_json.items()}
        t._no_pending = set(self._no_pending)
        t._lazy = None if self._lazy is None else set(self._lazy)
        t._gaps, t._empty = self._gaps, self._empty
        return t

    def step(self, a: Activity) -> list[FieldChange]:
        """Fold `a` (it sorts after everything folded so far) and return what it changed,
        in path order."""
        s = self.state
        units = units_of(a, self._counters)
        pp = a.payload.pending_points
        self._hint = pp.id if pp is not None else None
        primed = self._lazy
        if primed is not None:
            ignored: list[FieldChange] = []
            for u in units:
                if u not in primed:
                    _VISIT[u[0]](self, u, ignored)
                    primed.add(u)
        apply(s, a)
        if len(s.gaps) != self._gaps:
            self._gaps = len(s.gaps)
            units.append(("gaps", ""))
        empty = emptiness(s)
        if empty != self._empty:
            units.extend(
                u for u, x, y in zip(EMPTY_UNITS, empty, self._empty, strict=True) if x != y
            )
            self._empty = empty
        if self._only is not None:
            units = [u for u in units if self._only(u)]
        changes: list[FieldChange] = []
        for u in units:
            _VISIT[u[0]](self, u, changes)
        if len(changes) > 1:
            changes.sort(key=by_path)
        return changes

    def _rendered(self, u: Unit, out: list[FieldChange]) -> None:
        path, after = _RENDERERS[u[0]](self.state, u[1])
        before = self._cache.get(u, _NOTHING)[1]
        if before != after:
            diff_json(before, after, path, out)
            if after is ABSENT:
                del self._cache[u]
            else:
                self._cache[u] = (path, after)

    def _object(self, u: Unit, prefix: str, obj: Any, out: list[FieldChange]) -> None:
        """The object `obj` (None: not in the state) as unit `u`, under `prefix.key`."""
        seen = self._seen.get(u)
        if seen is not None:
            if obj is not None:
                seen.update(obj, out)
            else:
                del self._seen[u]
                seen.report(REMOVED, out)
        elif obj is not None:
            key = u[1]
            seen = self._seen[u] = Seen(f"{prefix}.{key}" if key else prefix, obj)
            seen.report(ADDED, out)

    def _small_map(self, u: Unit, out: list[FieldChange]) -> None:
        prefix, kind, entries = SMALL_MAPS[u[0]]
        m = entries(self.state)
        for key, obj in m.items():
            self._object((kind, key), prefix, obj, out)
        keys = self._keys[u[0]]
        for key in keys - m.keys():
            self._object((kind, key), prefix, None, out)
        self._keys[u[0]] = set(m)

    def _card(self, u: Unit, out: list[FieldChange]) -> None:
        """A card's own fields, and its pending entries apart: a card can hold hundreds and
        most activities change none. Entries are frozen (a change is a new entry), so only
        those that are not the objects last seen are rendered."""
        key = u[1]
        card = self.state.cards.get(key)
        self._object(u, "loyalty.cards", card, out)
        pending: dict[str, PendingEntry] = {} if card is None else card.pending
        none = card is not None and not pending
        if none != (key in self._no_pending):
            path = f"loyalty.cards.{key}.pending"
            if none:
                self._no_pending.add(key)
                out.append(FieldChange(path, None, {}, ADDED))
            else:
                self._no_pending.discard(key)
                out.append(FieldChange(path, {}, None, REMOVED))
        last = self._pending.get(key)
        if last is None:
            last = self._pending[key] = {}
        if pending == last:  # the same entry objects: compared by identity first, in C
            return
        # The entry the activity names first: it is the one that changed, and a card can
        # hold hundreds. Then, should the two still differ, every entry.
        hint = self._hint
        if hint is not None:
            self._pending_entry(key, hint, pending, last, out)
            if pending == last:
                return
        for pid in pending.keys() | last.keys():
            self._pending_entry(key, pid, pending, last, out)

    def _pending_entry(
        self,
        key: str,
        pid: str,
        pending: Mapping[str, PendingEntry],
        last: dict[str, PendingEntry],
        out: list[FieldChange],
    ) -> None:
        """Card `key`'s pending entry `pid` as last seen (`last`) against now (`pending`)."""
        entry, before = pending.get(pid), last.get(pid)
        if entry is before:
            return
        seen = self._pending_json.setdefault(key, {})
        path = f"loyalty.cards.{key}.pending.{pid}"
        if entry is None:
            del last[pid]
            diff_json(seen.pop(pid), ABSENT, path, out)
        else:
            last[pid] = entry
            j = entry.to_json()
            diff_json(seen.get(pid, ABSENT), j, path, out)
            seen[pid] = j

    def flat(self) -> Flat:
        """The flattened state now (as `flatten(to_json())`, without the cut keys)."""
        out: Flat = {}
        for rendered in self._cache.values():
            out.update(_flat(rendered))
        for seen in self._seen.values():
            out.update(seen.flat())
        for card in self._no_pending:
            out[f"loyalty.cards.{card}.pending"] = {}
        for card, entries in self._pending_json.items():
            for pid, j in entries.items():
                out.update(flatten(j, f"loyalty.cards.{card}.pending.{pid}"))
        return out


def _entry_visitor(kind: str) -> Callable[[Tracker, Unit, list[FieldChange]], None]:
    prefix, entries = ENTRIES[kind]
    return lambda t, u, out: t._object(u, prefix, entries(t.state).get(u[1]), out)


def _object_visitor(kind: str) -> Callable[[Tracker, Unit, list[FieldChange]], None]:
    path, obj = OBJECTS[kind]
    return lambda t, u, out: t._object(u, path, obj(t.state), out)


# How the tracker diffs each kind of unit: one lookup per unit (an audit visits tens of
# thousands).
_VISIT: dict[str, Callable[[Tracker, Unit, list[FieldChange]], None]] = {
    **{kind: _entry_visitor(kind) for kind in ENTRIES},
    "card": Tracker._card,
    **{kind: _object_visitor(kind) for kind in OBJECTS},
    **dict.fromkeys(SMALL_MAPS, Tracker._small_map),
    **dict.fromkeys(_RENDERERS, Tracker._rendered),
}


_NOTHING: Rendered = ("", ABSENT)
# What a lazy tracker looks at from the start: what `step` finds changed only after the
# fold (the gaps by their count, a map's emptiness), and the id, which never changes.
_EAGER: frozenset[Unit] = frozenset({("customer_id", ""), ("gaps", ""), *EMPTY_UNITS})


def empty_flat(customer_id: str) -> Flat:
    """The flattened empty state of a customer (without the cut keys)."""
    return Tracker(customer_id).flat()
