"""The fold: customer activities in fold order (`fold_key`) -> `CustomerState`.

`EFFECTS` is the one table from activity type to what it does. Every recognised type first
sets the cards from the balances its payload reports (Voucherify puts post-event balances on
many payloads), then runs its own effects in the order listed: `STEPS` holds both. A type
not in the table hits `unrecognized`. Each effect declares what it writes (`Writes`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar, overload

from custate.domain.activity import Activity, fold_key
from custate.domain.activity_types import MESSAGING_CHANNELS
from custate.domain.activity_types import ActivityType as T
from custate.domain.effects import (
    cards,
    counters,
    messaging,
    orders,
    profile,
    segments,
    tiers,
    vouchers,
)
from custate.domain.effects.effect import Effect
from custate.domain.state import CustomerState

_T = TypeVar("_T")

# The fold's version: bump it with any change to what an activity does (an effect, the
# table below, the state's fields), so that read models built by an older fold are rebuilt
# (docs/DECISIONS.md, Upgrades). tests/unit/test_fold_version.py fails when the states of
# a fixed corpus change and this number does not.
FOLD_VERSION = 1

EFFECTS: dict[str, tuple[Effect, ...]] = {
    T.CREATED: (profile.created,),
    T.UPDATED: (profile.updated,),
    T.CONFIRMED: (profile.confirmed,),
    T.DELETED: (profile.deleted,),
    T.REFERRED: (profile.referred,),
    T.CUSTOM_EVENT: (profile.custom_event,),
    T.SEGMENT_ENTERED: (segments.entered,),
    T.SEGMENT_LEFT: (segments.left,),
    **{
        f"customer.{channel}.{outcome}": (messaging.message_effect(channel, outcome),)
        for channel in MESSAGING_CHANNELS
        for outcome in ("sent", "failed", "recovered")
    },
    T.REWARDED: (),
    T.REWARDED_LOYALTY_POINTS: (),
    T.VOUCHER_GIFT_BALANCE_ADDED: (),
    T.VOUCHER_LOYALTY_CARD_POINTS_ADDED: (),
    T.VOUCHER_LOYALTY_CARD_POINTS_TRANSFERRED: (),
    T.VOUCHER_LOYALTY_CARD_POINTS_ACTIVATED: (),
    T.VOUCHER_LOYALTY_CARD_POINTS_EXPIRED: (cards.points_expired,),
    T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED: (cards.pending_points_set,),
    T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_UPDATED: (cards.pending_points_set,),
    T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ACTIVATED: (cards.pending_points_removed,),
    T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_CANCELED: (cards.pending_points_removed,),
    T.VOUCHER_DELETED: (vouchers.deleted,),
    T.PUBLICATION_SUCCEEDED: (vouchers.publication_succeeded,),
    T.PUBLICATION_FAILED: (),
    T.VALIDATION_SUCCEEDED: (counters.validation_succeeded,),
    T.VALIDATION_FAILED: (counters.validation_failed,),
    T.REDEMPTION_SUCCEEDED: (counters.redemption_succeeded,),
    T.REDEMPTION_FAILED: (counters.redemption_failed,),
    T.REDEMPTION_ROLLBACK_SUCCEEDED: (counters.rollback_succeeded,),
    T.REDEMPTION_ROLLBACK_FAILED: (counters.rollback_failed,),
    T.ORDER_CREATED: (orders.created,),
    T.ORDER_PROCESSING: (orders.processing,),
    T.ORDER_PAID: (orders.paid,),
    T.ORDER_FULFILLED: (orders.fulfilled,),
    T.ORDER_CANCELED: (orders.canceled,),
    T.ORDER_UPDATED: (orders.updated,),
    T.REWARD_REDEMPTIONS_CREATED: (counters.reward_redemption_effect("CREATED"),),
    T.REWARD_REDEMPTIONS_PENDING: (counters.reward_redemption_effect("PENDING"),),
    T.REWARD_REDEMPTIONS_COMPLETED: (counters.reward_redemption_effect("COMPLETED"),),
    T.REWARD_REDEMPTIONS_ROLLEDBACK: (counters.reward_redemption_effect("ROLLEDBACK"),),
    T.LOYALTY_UPDATED: (),
    T.LOYALTY_TIER_JOINED: (tiers.joined,),
    T.LOYALTY_TIER_UPGRADED: (tiers.changed,),
    T.LOYALTY_TIER_DOWNGRADED: (tiers.changed,),
    T.LOYALTY_TIER_PROLONGED: (tiers.prolonged,),
    T.LOYALTY_TIER_EXPIRATION_CHANGED: (tiers.expiration_changed,),
    T.LOYALTY_TIER_LEFT: (tiers.left,),
    T.HOLDER_ASSIGNMENT_CREATED: (vouchers.holder_assigned,),
    T.HOLDER_ASSIGNMENT_DELETED: (vouchers.holder_unassigned,),
}


# Every effect folding a recognised type runs, in order: the cards' reported balances first.
STEPS: Mapping[str, tuple[Effect, ...]] = {
    t: (cards.reported_balances, *effects) for t, effects in EFFECTS.items()
}

# The types whose effects copy the customer's profile fields from the payload: only their
# stored activities are read back with those fields (`payload.FullPayload`).
PROFILE_FIELD_TYPES = frozenset(
    t for t, effects in EFFECTS.items() if any(e in profile.COPIES_FIELDS for e in effects)
)


def unrecognized(s: CustomerState, a: Activity) -> None:
    """Voucherify adds types: keep and count them, change nothing else."""
    s.activities.unrecognized += 1


def apply(s: CustomerState, a: Activity) -> None:
    """Fold one activity that sorts after everything already folded into `s`."""
    acts = s.activities
    acts.count += 1
    if acts.first_at is None:
        acts.first_at = a.created_at
    acts.last_at = a.created_at
    acts.last_id = a.id
    steps = STEPS.get(a.type)
    if steps is None:
        unrecognized(s, a)
        return
    for effect in steps:
        effect(s, a)


@overload
def ordered(items: Iterable[Activity], as_of: datetime | None = None) -> list[Activity]: ...
@overload
def ordered(
    items: Iterable[_T], as_of: datetime | None = None, *, activity: Callable[[_T], Activity]
) -> list[_T]: ...
def ordered(
    items: Iterable[Any],
    as_of: datetime | None = None,
    *,
    activity: Callable[[Any], Activity] | None = None,
) -> list[Any]:
    """Distinct ids (the first delivery of an id wins, as in the store), business time up
    to `as_of`, in fold order (`fold_key`). The items are activities, or anything that
    carries one (the audit's `(activity, recorded_at)` pairs): then `activity` gets it."""
    first: dict[str, Any] = {}
    for item in items:
        a = item if activity is None else activity(item)
        if a.id not in first and (as_of is None or a.created_at <= as_of):
            first[a.id] = item
    if activity is None:
        return sorted(first.values(), key=fold_key)
    get = activity
    return sorted(first.values(), key=lambda item: fold_key(get(item)))


def fold(
    activities: Iterable[Activity],
    customer_id: str | None = None,
    as_of: datetime | None = None,
    start: CustomerState | None = None,
) -> CustomerState:
    """The state of one customer. `start` is a state to continue from (a checkpoint); the
    activities must then all sort after it."""
    todo = ordered(activities, as_of)
    if start is not None:
        s = start
    else:
        cid = customer_id if customer_id is not None else (todo[0].customer_id if todo else None)
        if cid is None:
            raise ValueError("fold of no activities needs a customer_id")
        s = CustomerState(cid)
    for a in todo:
        if a.customer_id != s.customer_id:
            raise ValueError(
                f"activity {a.id} belongs to customer {a.customer_id}, not {s.customer_id}"
            )
        apply(s, a)
    s.as_of = as_of
    return s


def fold_all(
    activities: Iterable[Activity], as_of: datetime | None = None
) -> dict[str, CustomerState]:
    """Each customer's state, keyed and ordered by customer id."""
    by_customer: dict[str, list[Activity]] = {}
    for a in activities:
        by_customer.setdefault(a.customer_id, []).append(a)
    return {cid: fold(acts, cid, as_of) for cid, acts in sorted(by_customer.items())}
