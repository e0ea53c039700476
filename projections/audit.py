"""Audit: what each activity changed, why a field has its value, what changed between two
cuts. Pure functions over `(activity, recorded_at)` pairs; the adapters load the pairs.

`history` folds a customer's activities in fold order and, after each one, diffs only the
parts of the state that activity can touch (the entries its payload names, the sections its
effects write) against what it last saw of them. Diffing the whole `to_json()` after every
activity would be quadratic. The objects of the state (a card, an order, the activity
counters) are compared field by field, and only the fields that changed are rendered, as
their class's `to_json` renders them (a unit test holds every class to it); the rest (the
points, the gaps) are rendered whole and compared as JSON. The flattened paths are those of
`projections.diff.flatten(state.to_json())`, without the cut keys (`as_of`, `known_at`):
applying every reported change, in order, to the flattened empty state gives the flattened
state after each activity (the unit tests check it at every step).

A change is `changed` (the path had a value before and after), `added` (the path did not
exist before) or `removed` (it no longer exists). Values are JSON values; an empty object is
a leaf of its own, as in `flatten`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter, itemgetter
from typing import Any

import msgspec

from custate.domain import (
    EFFECTS,
    Activity,
    CustomerState,
    apply,
    format_time,
    ordered,
)
from custate.domain.effects.cards import card_id
from custate.domain.state import Gap, Json, PendingEntry
from custate.projections.diff import flatten

Flat = dict[str, Any]
Unit = tuple[str, str]  # (kind, entry id or "")

CHANGED, ADDED, REMOVED = "changed", "added", "removed"


# -- typed results -------------------------------------------------------------------------


class _Result(msgspec.Struct, frozen=True, gc=False):
    """Audit results are msgspec Structs, not dataclasses: a long history is tens of
    thousands of changes, and a frozen dataclass took a tenth of `history` to build them.
    They hold JSON values only (no cycles), so the cyclic GC need not track them."""


def _t(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


class FieldChange(_Result, frozen=True):
    path: str
    before: Any  # None when op is "added"
    after: Any  # None when op is "removed"
    op: str  # "changed" | "added" | "removed"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "op": self.op, "before": self.before, "after": self.after}


class ActivityRef(_Result, frozen=True):
    id: str
    type: str
    created_at: datetime
    recorded_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "created_at": _t(self.created_at),
            "recorded_at": _t(self.recorded_at),
        }


class HistoryEntry(_Result, frozen=True):
    """One activity in fold order and what folding it changed. `late`: it was recorded
    after an activity that sorts after it (it corrected what had been shown)."""

    activity: ActivityRef
    changes: tuple[FieldChange, ...]
    late: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            **self.activity.to_json(),
            "late": self.late,
            "changes": [c.to_json() for c in self.changes],
        }


class DiffEntry(_Result, frozen=True):
    path: str
    before: Any
    after: Any
    op: str
    activities: tuple[str, ...]  # ids of the activities responsible

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "op": self.op,
            "before": self.before,
            "after": self.after,
            "activities": list(self.activities),
        }


class StateDiff(_Result, frozen=True):
    """`kind` "as_of": state at `as_of[0]` vs `as_of[1]` (both known now, or at `known_at[0]`).
    `kind` "known_at": state about `as_of[0]` as known at `known_at[0]` vs `known_at[1]`.
    `activities`: those between the two cuts (all of them, also those that changed nothing)."""

    customer_id: str
    kind: str
    as_of: tuple[datetime | None, ...]
    known_at: tuple[datetime | None, ...]
    changes: tuple[DiffEntry, ...]
    activities: tuple[ActivityRef, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "kind": self.kind,
            "as_of": [_t(t) for t in self.as_of],
            "known_at": [_t(t) for t in self.known_at],
            "changes": [c.to_json() for c in self.changes],
            "activities": [a.to_json() for a in self.activities],
        }


class ValueStep(_Result, frozen=True):
    """One activity that changed the explained path, with the value before and after."""

    activity: ActivityRef
    before: Any
    after: Any
    op: str
    late: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "activity": self.activity.to_json(),
            "op": self.op,
            "before": self.before,
            "after": self.after,
            "late": self.late,
        }


class Explanation(_Result, frozen=True):
    """Why `path` has its value. `value` is the leaf's value, or for a path above leaves the
    flattened subtree (relative paths); `present` is False when the path is not in the state.
    `set_by` is the last activity in fold order that changed it; `chain` every one, oldest
    first (the last step is `set_by`)."""

    customer_id: str
    path: str
    present: bool
    value: Any
    set_by: ActivityRef | None
    chain: tuple[ValueStep, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "path": self.path,
            "present": self.present,
            "value": self.value,
            "set_by": self.set_by.to_json() if self.set_by else None,
            "chain": [s.to_json() for s in self.chain],
        }


# -- rendering parts of the state ---------------------------------------------------------------

# A unit that holds no path now (an entry not in its map, a map that is not empty).
_ABSENT: Any = type("_Absent", (), {"__repr__": lambda self: "<absent>"})()

Rendered = tuple[str, Any]  # (the path it lies under, its JSON value, or _ABSENT)


def _flat(rendered: Rendered) -> Flat:
    path, value = rendered
    return {} if value is _ABSENT else flatten(value, path)


def _diff_json(before: Any, after: Any, path: str, out: list[FieldChange]) -> None:
    """The changes from `flatten(before, path)` to `flatten(after, path)` (`_ABSENT`: no
    paths), found without flattening the parts that are equal."""
    if before.__class__ is dict and before and after.__class__ is dict and after:
        shared = 0
        for k, new in after.items():
            old = before.get(k, _ABSENT)
            if old is new:  # most leaves: the very object the state held before
                shared += 1
            elif old is _ABSENT:
                _diff({}, flatten(new, f"{path}.{k}"), out)
            else:
                shared += 1
                if (old.__class__ is dict and old) or (new.__class__ is dict and new):
                    if old != new:
                        _diff_json(old, new, f"{path}.{k}", out)
                elif old != new or type(old) is not type(new):
                    out.append(FieldChange(f"{path}.{k}", old, new, CHANGED))
        if shared != len(before):
            for k, old in before.items():
                if k not in after:
                    _diff(flatten(old, f"{path}.{k}"), {}, out)
    else:
        b = {} if before is _ABSENT else flatten(before, path)
        _diff(b, {} if after is _ABSENT else flatten(after, path), out)


# Units that are one entry of a map: (path of the map, the map).
_ENTRIES: dict[str, tuple[str, Callable[[CustomerState], Mapping[str, Any]]]] = {
    "card": ("loyalty.cards", attrgetter("cards")),
    "order": ("orders", attrgetter("orders")),
    "gift": ("gift_cards", attrgetter("gift_cards")),
    "segment": ("segments", attrgetter("segments")),
    "reward_redemption": ("reward_redemptions", attrgetter("reward_redemptions")),
    "voucher": ("vouchers", attrgetter("vouchers")),
}

# Units that are one object of the state: (path, the object).
_OBJECTS: dict[str, tuple[str, Callable[[CustomerState], Any]]] = {
    "activities": ("activities", attrgetter("activities")),
    "profile": ("profile", attrgetter("profile")),
    "redemptions": ("redemptions", attrgetter("redemptions")),
    "validations": ("validations", attrgetter("validations")),
}

# Units that are a whole map of a few entries, which the fold changes in place and the
# payload does not always name: (path, the kind of unit of each entry, the map).
_SMALL_MAPS: dict[str, tuple[str, str, Callable[[CustomerState], Mapping[str, Any]]]] = {
    "tiers": ("loyalty.tiers", "tier", attrgetter("tiers")),
    "messaging": ("messaging", "channel", attrgetter("messaging")),
    "custom_events": ("custom_events", "custom_event", attrgetter("custom_events")),
}


# The maps whose emptiness is a leaf of its own (`"orders": {}`): path -> attribute.
_MAPS: dict[str, str] = {
    "loyalty.cards": "cards",
    "loyalty.tiers": "tiers",
    "gift_cards": "gift_cards",
    "segments": "segments",
    "orders": "orders",
    "reward_redemptions": "reward_redemptions",
    "vouchers": "vouchers",
    "messaging": "messaging",
    "custom_events": "custom_events",
}


# The units rendered as JSON whole (cheap, or rare), under the path where `s.to_json()` has
# them. They are kept unflattened: building prefixed paths for every leaf of every render
# was most of the audit's time, and most renders change nothing.
_RENDERERS: dict[str, Callable[[CustomerState, str], Rendered]] = {
    "empty": lambda s, key: (key, _ABSENT if getattr(s, _MAPS[key]) else {}),
    "points": lambda s, _: ("loyalty.points", s.points),
    "gaps": lambda s, _: ("gaps", [g.to_json() for g in s.gaps]),
    "customer_id": lambda s, _: ("customer_id", s.customer_id),
    "referrals": lambda s, _: ("referrals.referred_by", dict(s.referred_by)),
}


# -- objects of the state, field by field ----------------------------------------------------


def _leaf(value: Any) -> Any:
    """A field's JSON value, as the state's `to_json` renders every field (a unit test holds
    each class of the state to it)."""
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


class _Seen:
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
        self.json = list(map(_leaf, self.raw))
        self.paths = tuple(map(path.__add__, suffixes))

    def flat(self) -> Flat:
        return flatten(dict(zip(self.names, self.json, strict=True)), self.path)

    def report(self, op: str, out: list[FieldChange]) -> None:
        """Every leaf, `added` or `removed` (a new object, or one gone): straight from the
        paths, without flattening into a dict first (a long history adds thousands)."""
        added = op == ADDED
        for path, value in zip(self.paths, self.json, strict=True):
            if value.__class__ is dict and value:
                for leaf, v in flatten(value, path).items():
                    out.append(_one_sided(leaf, v, op))
            elif added:
                out.append(FieldChange(path, None, value, ADDED))
            else:
                out.append(FieldChange(path, value, None, REMOVED))

    def update(self, obj: Any, out: list[FieldChange]) -> None:
        raw = self.get(obj)
        old = self.raw
        if raw == old:  # element by element, identity first
            return
        js = self.json
        for i, v in enumerate(raw):
            if v is old[i]:
                continue
            before, after = js[i], _leaf(v)
            if (before.__class__ is dict and before) or (after.__class__ is dict and after):
                if before != after:
                    _diff_json(before, after, self.paths[i], out)
            elif before != after or type(before) is not type(after):
                out.append(FieldChange(self.paths[i], before, after, CHANGED))
            js[i] = after
        self.raw = raw


_FIXED: tuple[Unit, ...] = (
    ("customer_id", ""),
    ("profile", ""),
    ("points", ""),
    ("tiers", ""),
    *(("empty", path) for path in _MAPS),
    ("redemptions", ""),
    ("referrals", ""),
    ("messaging", ""),
    ("custom_events", ""),
    ("validations", ""),
    ("activities", ""),
    ("gaps", ""),
)

# Which parts of the state each effect module writes (besides the entries a payload names).
# (Whether a map is empty is checked after every activity, not listed here: see `_emptiness`.)
_MODULE_UNITS: dict[str, tuple[Unit, ...]] = {
    "profile": (("profile", ""), ("referrals", ""), ("custom_events", "")),
    "messaging": (("messaging", ""),),
    "counters": (("redemptions", ""), ("validations", "")),
    "orders": (),
    "tiers": (("tiers", ""),),
    "segments": (),
    "vouchers": (),
    "cards": (),
}
_ALWAYS: tuple[Unit, ...] = (("activities", ""),)
_EMPTY_UNITS: tuple[Unit, ...] = tuple(("empty", path) for path in _MAPS)


def _emptiness(s: CustomerState) -> tuple[bool, ...]:
    """Which of the maps are empty, in `_MAPS` order: one cheap check per activity instead
    of a render of each map an activity could empty or fill. Spelled out: a tuple display
    is a third the cost of mapping over `_MAPS` (out of order, the step-by-step unit test
    of `Tracker.flat` fails)."""
    return (
        not s.cards,
        not s.tiers,
        not s.gift_cards,
        not s.segments,
        not s.orders,
        not s.reward_redemptions,
        not s.vouchers,
        not s.messaging,
        not s.custom_events,
    )


_modules_cache: dict[str, tuple[frozenset[str], tuple[Unit, ...]] | None] = {}


def _modules(activity_type: str) -> tuple[frozenset[str], tuple[Unit, ...]] | None:
    """The effect modules of a type and the units they write, each once (or None when the
    type is unrecognized)."""
    if activity_type not in _modules_cache:
        effects = EFFECTS.get(activity_type)
        if effects is None:
            _modules_cache[activity_type] = None
        else:
            mods = frozenset(e.__module__.rsplit(".", 1)[-1] for e in effects)
            units = dict.fromkeys(
                [*_ALWAYS, *(u for m in sorted(mods) for u in _MODULE_UNITS.get(m, ()))]
            )
            _modules_cache[activity_type] = (mods, tuple(units))
    return _modules_cache[activity_type]


def _units(a: Activity, counters: bool = True) -> list[Unit]:
    """The parts of the state folding `a` can change, each once (without the `activities`
    counters unless `counters`)."""
    known = _modules(a.type)
    if known is None:  # unrecognized: only `activities`
        return list(_ALWAYS) if counters else []
    mods, static = known
    units = list(static) if counters else list(static[len(_ALWAYS) :])
    p = a.payload
    cards: set[str] = set()
    cid = card_id(p)
    if cid:
        cards.add(cid)
    ppb = p.voucher_pending_points_balance
    if ppb is not None and ppb.related_object is not None and ppb.related_object.id:
        cards.add(ppb.related_object.id)
    if p.pending_points is not None and p.pending_points.voucher_id:
        cards.add(p.pending_points.voucher_id)
    if "vouchers" in mods:
        vids: set[str] = set()
        if p.voucher is not None and p.voucher.id:
            vids.add(p.voucher.id)
            cards.add(p.voucher.id)
        if p.publication is not None:
            if p.publication.voucher is not None and p.publication.voucher.id:
                vids.add(p.publication.voucher.id)
            vids.update(p.publication.vouchers_id or ())
        if p.holder is not None and p.holder.redeemable_id:
            vids.add(p.holder.redeemable_id)
        units.extend(("voucher", v) for v in vids)
    if "orders" in mods and p.order is not None and p.order.id:
        units.append(("order", p.order.id))
    if "segments" in mods and p.segment is not None and p.segment.id:
        units.append(("segment", p.segment.id))
    if "counters" in mods and p.reward_redemption is not None and p.reward_redemption.id:
        units.append(("reward_redemption", p.reward_redemption.id))
    if cards:
        units.append(("points", ""))  # the sum over cards: only a card can change it
        for c in cards:
            units.append(("card", c))
            units.append(("gift", c))
    return units


def _one_sided(path: str, value: Any, op: str) -> FieldChange:
    if op == ADDED:
        return FieldChange(path, None, value, ADDED)
    return FieldChange(path, value, None, REMOVED)


def _diff(before: Flat, after: Flat, out: list[FieldChange]) -> None:
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


class Tracker:
    """A customer's state folded one activity at a time, reporting what each one changed."""

    def __init__(
        self,
        customer_id: str,
        start: CustomerState | None = None,
        only: Callable[[Unit], bool] | None = None,
        counters: bool = True,
    ) -> None:
        """From the empty state, or from `start` (a checkpoint: folded on in place).
        `only`: report changes to the units it accepts, and render no others. `counters`:
        track the `activities` section (`history` leaves it out: see `Replay`)."""
        self._only = only
        self._counters = counters
        self.state = s = start if start is not None else CustomerState(customer_id)
        self._cache: dict[Unit, Rendered] = {}  # the units rendered whole
        self._seen: dict[Unit, _Seen] = {}  # the objects, field by field
        self._keys: dict[str, set[str]] = {kind: set() for kind in _SMALL_MAPS}
        # Per card: its pending entries as last seen, and each one's JSON; the cards that
        # hold none (`"pending": {}` is a leaf of its own).
        self._pending: dict[str, dict[str, PendingEntry]] = {}
        self._pending_json: dict[str, dict[str, Json]] = {}
        self._no_pending: set[str] = set()
        self._hint: str | None = None  # the pending entry the current activity names
        ignored: list[FieldChange] = []
        for u in _FIXED:
            if counters or u[0] != "activities":
                _VISIT[u[0]](self, u, ignored)
        for kind, (_, entries) in _ENTRIES.items():
            for key in entries(s):
                _VISIT[kind](self, (kind, key), ignored)
        self._gaps = len(s.gaps)
        self._empty = _emptiness(s)

    def step(self, a: Activity) -> list[FieldChange]:
        s = self.state
        units = _units(a, self._counters)
        pp = a.payload.pending_points
        self._hint = pp.id if pp is not None else None
        apply(s, a)
        if len(s.gaps) != self._gaps:
            self._gaps = len(s.gaps)
            units.append(("gaps", ""))
        empty = _emptiness(s)
        if empty != self._empty:
            units.extend(
                u for u, x, y in zip(_EMPTY_UNITS, empty, self._empty, strict=True) if x != y
            )
            self._empty = empty
        if self._only is not None:
            units = [u for u in units if self._only(u)]
        changes: list[FieldChange] = []
        for u in units:
            _VISIT[u[0]](self, u, changes)
        if len(changes) > 1:
            changes.sort(key=_path)
        return changes

    def _rendered(self, u: Unit, out: list[FieldChange]) -> None:
        path, after = _RENDERERS[u[0]](self.state, u[1])
        before = self._cache.get(u, _NOTHING)[1]
        if before != after:
            _diff_json(before, after, path, out)
            if after is _ABSENT:
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
            seen = self._seen[u] = _Seen(f"{prefix}.{key}" if key else prefix, obj)
            seen.report(ADDED, out)

    def _small_map(self, u: Unit, out: list[FieldChange]) -> None:
        prefix, kind, entries = _SMALL_MAPS[u[0]]
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
            _diff_json(seen.pop(pid), _ABSENT, path, out)
        else:
            last[pid] = entry
            j = entry.to_json()
            _diff_json(seen.get(pid, _ABSENT), j, path, out)
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
    prefix, entries = _ENTRIES[kind]
    return lambda t, u, out: t._object(u, prefix, entries(t.state).get(u[1]), out)


def _object_visitor(kind: str) -> Callable[[Tracker, Unit, list[FieldChange]], None]:
    path, obj = _OBJECTS[kind]
    return lambda t, u, out: t._object(u, path, obj(t.state), out)


# How the tracker diffs each kind of unit: one lookup per unit (an audit visits tens of
# thousands).
_VISIT: dict[str, Callable[[Tracker, Unit, list[FieldChange]], None]] = {
    **{kind: _entry_visitor(kind) for kind in _ENTRIES},
    "card": Tracker._card,
    **{kind: _object_visitor(kind) for kind in _OBJECTS},
    **dict.fromkeys(_SMALL_MAPS, Tracker._small_map),
    **dict.fromkeys(_RENDERERS, Tracker._rendered),
}


_NOTHING: Rendered = ("", _ABSENT)


_path = attrgetter("path")


def empty_flat(customer_id: str) -> Flat:
    return Tracker(customer_id).flat()


def apply_changes(flat: Flat, changes: Iterable[FieldChange]) -> None:
    """Apply reported changes to a flattened state, in place."""
    for c in changes:
        if c.op == REMOVED:
            flat.pop(c.path, None)
        else:
            flat[c.path] = c.after


# -- history ----------------------------------------------------------------------------------

Pair = tuple[Activity, datetime | None]


def _ordered(pairs: Iterable[Pair], as_of: datetime | None = None) -> list[Pair]:
    """As `ordered`, keeping each activity's record time beside it."""
    return ordered(pairs, as_of, activity=_activity_of)


_activity_of: Callable[[Pair], Activity] = itemgetter(0)


def _late_flags(todo: Sequence[Pair]) -> list[bool]:
    """Late: recorded after some activity that sorts after it."""
    flags = [False] * len(todo)
    latest_min: datetime | None = None
    for i in range(len(todo) - 1, -1, -1):
        r = todo[i][1]
        if r is None:
            continue
        if latest_min is not None and r > latest_min:
            flags[i] = True
        if latest_min is None or r < latest_min:
            latest_min = r
    return flags


def _ref(a: Activity, r: datetime | None) -> ActivityRef:
    return ActivityRef(a.id, a.type, a.created_at, r)


def history(
    pairs: Iterable[Pair],
    customer_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    checkpoint: CustomerState | None = None,
) -> list[HistoryEntry]:
    """Every activity in fold order with what it changed in the customer's state, apart from
    the `activities` counters: those count the very list this is, and reported on every
    entry, they would hide which activities changed nothing (`Replay` adds them back).
    `start`/`end` (inclusive, business time) only limit what is reported. The fold starts from the first activity, or from
    `checkpoint`, the state after every activity that sorts before all of `pairs` (then
    `pairs` must be all the others: whether one is late depends only on those after it)."""
    todo = _ordered(pairs)
    late = _late_flags(todo)  # over everything stored, also what sorts after `end`
    tracker = Tracker(customer_id, checkpoint, counters=False)
    out: list[HistoryEntry] = []
    for (a, r), is_late in zip(todo, late, strict=True):
        if end is not None and a.created_at > end:
            break
        changes = tracker.step(a)
        if start is None or a.created_at >= start:
            out.append(HistoryEntry(_ref(a, r), tuple(changes), is_late))
    return out


class Replay:
    """The flattened state that a history's entries add up to, one entry at a time: each
    entry's changes, and the `activities` counters that the entry is (as the fold counts)."""

    def __init__(self, customer_id: str) -> None:
        self.flat = empty_flat(customer_id)

    def apply(self, entry: HistoryEntry) -> None:
        apply_changes(self.flat, entry.changes)
        f, a = self.flat, entry.activity
        at = format_time(a.created_at)
        f["activities.count"] += 1
        if f["activities.first_at"] is None:
            f["activities.first_at"] = at
        f["activities.last_at"] = at
        f["activities.last_id"] = a.id
        if a.type not in EFFECTS:
            f["activities.unrecognized"] += 1


def replay_history(customer_id: str, entries: Iterable[HistoryEntry]) -> Flat:
    """The flattened state a whole history adds up to."""
    replay = Replay(customer_id)
    for e in entries:
        replay.apply(e)
    return replay.flat


# -- explain ----------------------------------------------------------------------------------


def _under(path: str, target: str) -> bool:
    return path == target or path.startswith(target + ".")


def _unit_path(unit: Unit) -> str:
    """The path every value a unit renders lies under."""
    kind, key = unit
    if kind in _ENTRIES:
        return f"{_ENTRIES[kind][0]}.{key}"
    if kind in _OBJECTS:
        return _OBJECTS[kind][0]
    if kind in _SMALL_MAPS:
        return _SMALL_MAPS[kind][0]
    if kind == "empty":
        return key
    return {
        "points": "loyalty.points",
        "gaps": "gaps",
        "customer_id": "customer_id",
        "referrals": "referrals.referred_by",
    }[kind]


def explain(
    pairs: Iterable[Pair], customer_id: str, path: str, as_of: datetime | None = None
) -> Explanation:
    """The fold of `history`, rendering and diffing only the parts of the state that hold
    `path` or lie under it: the chain of one value costs little more than the fold."""

    held: dict[Unit, bool] = {}  # the same few units come up again and again

    def holds(unit: Unit) -> bool:
        answer = held.get(unit)
        if answer is None:
            p = _unit_path(unit)
            answer = held[unit] = _under(p, path) or _under(path, p)
        return answer

    todo = _ordered(pairs)
    late = _late_flags(todo)
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
            chain.append(ValueStep(_ref(a, r), before[1], after[1], op, is_late))
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


# -- diffs ------------------------------------------------------------------------------------


def _changed(a: Flat, b: Flat) -> list[FieldChange]:
    out: list[FieldChange] = []
    _diff(a, b, out)
    out.sort(key=_path)
    return out


def diff_as_of(
    pairs: Iterable[Pair],
    customer_id: str,
    t1: datetime,
    t2: datetime,
    known_at: datetime | None = None,
) -> StateDiff:
    """State at business time `t1` vs `t2`, each path with the activities (t1 < created_at <=
    t2) whose fold touched it."""
    lo, hi = (t1, t2) if t1 <= t2 else (t2, t1)
    todo = _ordered(pairs, hi)
    tracker = Tracker(customer_id)
    at_lo: Flat | None = None
    touched: dict[str, list[str]] = {}
    between: list[ActivityRef] = []
    for a, r in todo:
        if a.created_at > lo and at_lo is None:
            at_lo = tracker.flat()
        changes = tracker.step(a)
        if a.created_at > lo:
            between.append(_ref(a, r))
            for c in changes:
                touched.setdefault(c.path, []).append(a.id)
    if at_lo is None:
        at_lo = tracker.flat()
    at_hi = tracker.flat()
    before, after = (at_lo, at_hi) if t1 <= t2 else (at_hi, at_lo)
    entries = tuple(
        DiffEntry(c.path, c.before, c.after, c.op, tuple(touched.get(c.path, ())))
        for c in _changed(before, after)
    )
    return StateDiff(customer_id, "as_of", (t1, t2), (known_at,), entries, tuple(between))


def diff_known_at(
    pairs: Iterable[Pair],
    customer_id: str,
    as_of: datetime | None,
    k1: datetime,
    k2: datetime,
) -> StateDiff:
    """State about `as_of` as known at `k1` vs at `k2`, each path with the activities recorded
    in (k1, k2] (and created by `as_of`) that touched it; a path they changed only through
    other activities (a late activity can change what a later one does) names them all."""
    lo, hi = (k1, k2) if k1 <= k2 else (k2, k1)
    todo = _ordered(pairs, as_of)
    old = Tracker(customer_id)
    new = Tracker(customer_id)
    touched: dict[str, list[str]] = {}
    arrived: list[ActivityRef] = []
    for a, r in todo:
        if r is None or r > hi:
            continue
        if r <= lo:
            old.step(a)
        changes = new.step(a)
        if r > lo:
            arrived.append(_ref(a, r))
            for c in changes:
                touched.setdefault(c.path, []).append(a.id)
    f_lo, f_hi = old.flat(), new.flat()
    before, after = (f_lo, f_hi) if k1 <= k2 else (f_hi, f_lo)
    every = tuple(a.id for a in arrived)
    entries = tuple(
        DiffEntry(c.path, c.before, c.after, c.op, tuple(touched.get(c.path, ())) or every)
        for c in _changed(before, after)
    )
    return StateDiff(customer_id, "known_at", (as_of,), (k1, k2), entries, tuple(arrived))


def corrections(entries: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """The late activities (recorded after one that sorts after them) and what they changed."""
    return [e for e in entries if e.late]


# -- gaps ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardGap(Gap):
    """A balance-continuity break on one customer's card: an activity is missing upstream
    between `previous_activity_id` and `activity_id`."""

    customer_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, **Gap.to_json(self)}


def card_gaps(customer_id: str, gaps: Iterable[Gap]) -> list[CardGap]:
    return [CardGap(*g.row(), customer_id) for g in gaps]
