"""The parts of a customer's state that the audit renders and diffs one by one (units), where
each lies in `CustomerState.to_json()`, and which of them folding an activity can change.

A unit is `(kind, key)`: an entry of a map (`("order", "ord_1")`), an object or a section
of the state (`("profile", "")`), or whether a map is empty (`("empty", "orders")`: an empty
map is a leaf of its own). Which units an activity can change comes from what the effects
its type runs declare they write (`custate.domain.effects.effect.Writes`), worked out once
per type; the gaps (only ever appended) and the maps' emptiness are checked after every
activity instead (`Tracker.step`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

from custate.domain import Activity, CustomerState
from custate.domain.effects.effect import Ids, Section, Writes
from custate.domain.fold import STEPS

Unit = tuple[str, str]  # (kind, entry id or "")

# Units that are one entry of a map, by the entry kind the effects declare: (path of the
# map, the state's attribute holding it), and (path, the map).
ENTRY_MAPS: dict[str, tuple[str, str]] = {
    "card": ("loyalty.cards", "cards"),
    "order": ("orders", "orders"),
    "gift": ("gift_cards", "gift_cards"),
    "segment": ("segments", "segments"),
    "reward_redemption": ("reward_redemptions", "reward_redemptions"),
    "voucher": ("vouchers", "vouchers"),
}
ENTRIES: dict[str, tuple[str, Callable[[CustomerState], Mapping[str, Any]]]] = {
    kind: (path, attrgetter(attr)) for kind, (path, attr) in ENTRY_MAPS.items()
}

# Units that are one object of the state: (path, the object).
OBJECTS: dict[str, tuple[str, Callable[[CustomerState], Any]]] = {
    "activities": ("activities", attrgetter("activities")),
    "profile": ("profile", attrgetter("profile")),
    "redemptions": ("redemptions", attrgetter("redemptions")),
    "validations": ("validations", attrgetter("validations")),
}

# Units that are a whole map of a few entries, which the fold changes in place and the
# payload does not always name: (path, the kind of unit of each entry, the map).
SMALL_MAPS: dict[str, tuple[str, str, Callable[[CustomerState], Mapping[str, Any]]]] = {
    "tiers": ("loyalty.tiers", "tier", attrgetter("tiers")),
    "messaging": ("messaging", "channel", attrgetter("messaging")),
    "custom_events": ("custom_events", "custom_event", attrgetter("custom_events")),
}

# The maps whose emptiness is a leaf of its own (`"orders": {}`): path -> attribute.
MAPS: dict[str, str] = {
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

# Units rendered whole: their paths (`"empty"`: the key is the path).
RENDERED_PATHS: dict[str, str] = {
    "points": "loyalty.points",
    "gaps": "gaps",
    "customer_id": "customer_id",
    "referrals": "referrals.referred_by",
}

ACTIVITIES: Unit = ("activities", "")
POINTS: Unit = ("points", "")  # the sum over the loyalty cards: only a card changes it

# Every unit of the state but the entries of the maps, `activities` among them.
FIXED: tuple[Unit, ...] = (
    ("customer_id", ""),
    ("profile", ""),
    ("points", ""),
    ("tiers", ""),
    *(("empty", path) for path in MAPS),
    ("redemptions", ""),
    ("referrals", ""),
    ("messaging", ""),
    ("custom_events", ""),
    ("validations", ""),
    ACTIVITIES,
    ("gaps", ""),
)
EMPTY_UNITS: tuple[Unit, ...] = tuple(("empty", path) for path in MAPS)

# The unit of each section an effect can declare (the gaps: checked by their count).
SECTIONS: dict[Section, Unit | None] = {
    "profile": ("profile", ""),
    "referrals": ("referrals", ""),
    "custom_events": ("custom_events", ""),
    "messaging": ("messaging", ""),
    "redemptions": ("redemptions", ""),
    "validations": ("validations", ""),
    "tiers": ("tiers", ""),
    "gaps": None,
}


def emptiness(s: CustomerState) -> tuple[bool, ...]:
    """Which of the maps are empty, in `MAPS` order: one cheap check per activity instead
    of a render of each map an activity could empty or fill. Spelled out: a tuple display
    is a third the cost of mapping over `MAPS` (out of order, the step-by-step unit test
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


# Per type: the units its effects write whole, with the `activities` counters and without;
# then, per function of the payload that names entries, the kinds of entry it names and
# whether they are cards; and whether two of those can name the same unit.
_Namer = tuple[Ids, tuple[str, ...], bool]
_Plan = tuple[tuple[tuple[Unit, ...], tuple[Unit, ...]], tuple[_Namer, ...], bool]


def _plan(writes: Writes) -> _Plan:
    whole = tuple(u for sec in sorted(writes.sections) if (u := SECTIONS[sec]) is not None)
    kinds_by: dict[Ids, list[str]] = {}
    for kind, ids in writes.entries:
        if kind not in ENTRIES:
            raise LookupError(f"no unit for entries of kind {kind!r}")
        kinds_by.setdefault(ids, []).append(kind)
    namers = tuple((ids, tuple(kinds), "card" in kinds) for ids, kinds in kinds_by.items())
    named = [kind for _, kinds, _ in namers for kind in kinds]
    return ((ACTIVITIES, *whole), whole), namers, len(named) != len(set(named))


_PLANS: dict[str, _Plan] = {t: _plan(Writes.of(steps)) for t, steps in STEPS.items()}


def units_of(a: Activity, counters: bool = True) -> list[Unit]:
    """The parts of the state folding `a` can change, each once (without the `activities`
    counters unless `counters`), the gaps and the maps' emptiness apart."""
    plan = _PLANS.get(a.type)
    if plan is None:  # unrecognized: only `activities`
        return [ACTIVITIES] if counters else []
    whole, namers, repeats = plan
    units = list(whole[0] if counters else whole[1])
    p = a.payload
    for ids, kinds, cards in namers:
        for key in ids(p):
            if cards:  # the first card named: the points are their sum
                units.append(POINTS)
                cards = False
            for kind in kinds:
                units.append((kind, key))
    return list(dict.fromkeys(units)) if repeats else units


# Per type: per function of the payload that names entries, the attributes of their maps.
_NAMERS: dict[str, tuple[tuple[Ids, tuple[str, ...]], ...]] = {
    t: tuple((ids, tuple(ENTRY_MAPS[k][1] for k in kinds)) for ids, kinds, _ in plan[1])
    for t, plan in _PLANS.items()
}


def name_entries(a: Activity, into: dict[str, set[str]]) -> None:
    """Add to `into` (map attribute -> keys: `orders`, `vouchers`, ...) the entries of the
    state's maps that folding `a` can write: what its effects declare, as `units_of`."""
    namers = _NAMERS.get(a.type)
    if not namers:
        return
    p = a.payload
    for ids, maps in namers:
        for key in ids(p):
            for m in maps:
                keys = into.get(m)
                if keys is None:
                    into[m] = {key}
                else:
                    keys.add(key)


def unit_path(unit: Unit) -> str:
    """The path every value a unit renders lies under."""
    kind, key = unit
    if kind in ENTRIES:
        return f"{ENTRIES[kind][0]}.{key}"
    if kind in OBJECTS:
        return OBJECTS[kind][0]
    if kind in SMALL_MAPS:
        return SMALL_MAPS[kind][0]
    if kind == "empty":
        return key
    return RENDERED_PATHS[kind]
