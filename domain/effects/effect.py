"""An effect: what folding one activity does to the state, and its declaration of the parts
of the state it writes.

Every effect is declared where it is defined, with `@writes(...)`: the sections it may
change, and the kinds of entry it may add, change or remove, each with the payload ids that
name those entries. The declaration promises a cover: folding an activity changes nothing
outside the declarations of the effects its type runs (`custate.domain.fold.STEPS`) but the
`activities` counters, which the fold keeps for every activity. The audit diffs only those
parts after each activity (`custate.projections.audit`); a unit test folds the bundled
sample activities and checks the promise."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from custate.domain.activity import Activity
from custate.domain.payload import Payload
from custate.domain.state import CustomerState

__all__ = ["Effect", "EntryKind", "Ids", "Section", "Writes", "declared", "writes"]

Effect = Callable[[CustomerState, Activity], None]

# The parts of the state an effect writes whole (each a field or a map of `CustomerState`).
Section = Literal[
    "profile",  # CustomerState.profile
    "referrals",  # .referred_by
    "custom_events",  # .custom_events
    "messaging",  # .messaging
    "redemptions",  # .redemptions
    "validations",  # .validations
    "tiers",  # .tiers
    "gaps",  # .gaps
]

# The maps whose entries an effect writes one by one, each entry named by a payload id.
EntryKind = Literal[
    "card",  # CustomerState.cards (loyalty cards)
    "gift",  # .gift_cards
    "order",  # .orders
    "segment",  # .segments
    "voucher",  # .vouchers
    "reward_redemption",  # .reward_redemptions
]

# The ids a payload names of one kind of entry (none: an empty tuple).
Ids = Callable[[Payload], tuple[str, ...]]

_E = TypeVar("_E", bound=Effect)


@dataclass(frozen=True, slots=True)
class Writes:
    """The parts of the state one or more effects write: whole `sections`, and `entries`,
    each a kind of entry and the function that gives the ids of those an activity's payload
    names (a kind may come with several functions)."""

    sections: frozenset[Section] = frozenset()
    entries: tuple[tuple[EntryKind, Ids], ...] = ()

    @staticmethod
    def of(effects: Iterable[Effect]) -> Writes:
        """What the effects write together (`declared` for each)."""
        sections: set[Section] = set()
        entries: dict[tuple[EntryKind, Ids], None] = {}
        for e in effects:
            w = declared(e)
            sections.update(w.sections)
            entries.update(dict.fromkeys(w.entries))
        return Writes(frozenset(sections), tuple(entries))

    def named(self, payload: Payload) -> set[tuple[EntryKind, str]]:
        """The entries this payload names, as (kind, id)."""
        return {(kind, i) for kind, ids in self.entries for i in ids(payload)}


_DECLARED: dict[Effect, Writes] = {}


def writes(
    *sections: Section, entries: Mapping[EntryKind, Ids] | None = None
) -> Callable[[_E], _E]:
    """Declare what the decorated effect writes (the effect itself is returned unchanged)."""
    declaration = Writes(frozenset(sections), tuple((entries or {}).items()))

    def declare(effect: _E) -> _E:
        _DECLARED[effect] = declaration
        return effect

    return declare


def declared(effect: Effect) -> Writes:
    """What `effect` declared it writes. LookupError: it declared nothing."""
    try:
        return _DECLARED[effect]
    except KeyError:
        name = getattr(effect, "__qualname__", repr(effect))
        raise LookupError(f"effect {name} declares nothing it writes (@writes)") from None
