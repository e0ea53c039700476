"""The customer's own record: profile, lifecycle, referral, custom events."""

from __future__ import annotations

from msgspec import UnsetType

from custate.domain.activity import Activity
from custate.domain.effects.effect import writes
from custate.domain.payload import CustomerView
from custate.domain.state import CustomerState, CustomEvent


def _copy_fields(s: CustomerState, a: Activity) -> None:
    c = a.payload.customer
    if c is None:
        return
    # Every type whose effects come here is in `fold.PROFILE_FIELD_TYPES`, whose stored
    # activities are read back with these fields: a bare `CustomerRef` is a bug upstream.
    if not isinstance(c, CustomerView):
        raise TypeError(f"{a.type} {a.id}: payload read without the customer's fields")
    # A key sent as null clears the field; an absent key (UNSET) keeps it.
    prof = s.profile
    if not isinstance(c.source_id, UnsetType):
        prof.source_id = c.source_id
    if not isinstance(c.name, UnsetType):
        prof.name = c.name
    if not isinstance(c.email, UnsetType):
        prof.email = c.email
    if not isinstance(c.phone, UnsetType):
        prof.phone = c.phone
    if not isinstance(c.metadata, UnsetType):
        prof.metadata = c.metadata


@writes("profile")
def created(s: CustomerState, a: Activity) -> None:
    _copy_fields(s, a)
    prof = s.profile
    prof.status = "active"
    prof.created_at = prof.updated_at = a.created_at
    prof.deleted_at = None


@writes("profile")
def updated(s: CustomerState, a: Activity) -> None:
    _copy_fields(s, a)
    s.profile.updated_at = a.created_at


@writes("profile")
def confirmed(s: CustomerState, a: Activity) -> None:
    _copy_fields(s, a)
    s.profile.confirmed_at = a.created_at


@writes("profile")
def deleted(s: CustomerState, a: Activity) -> None:
    s.profile.status = "deleted"
    s.profile.deleted_at = a.created_at


@writes("referrals")
def referred(s: CustomerState, a: Activity) -> None:
    p = a.payload
    if p.campaign is not None and p.campaign.id and p.referrer is not None and p.referrer.id:
        s.referred_by[p.campaign.id] = p.referrer.id


@writes("custom_events")
def custom_event(s: CustomerState, a: Activity) -> None:
    ev = a.payload.event
    if ev is None or not ev.type:
        return
    known = s.custom_events.get(ev.type)
    if known is None:
        s.custom_events[ev.type] = CustomEvent(1, a.created_at)
    else:
        known.count += 1
        known.last_at = a.created_at


# The effects that read the customer's profile fields (see `_copy_fields`).
COPIES_FIELDS = (created, updated, confirmed)
