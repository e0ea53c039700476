"""Loyalty tiers, one per loyalty campaign."""

from __future__ import annotations

from custate.domain.activity import Activity
from custate.domain.effects.effect import writes
from custate.domain.payload import Payload, TierView
from custate.domain.state import CustomerState, Tier


def _campaign(p: Payload, tier: TierView | None) -> str | None:
    if p.campaign is not None and p.campaign.id:
        return p.campaign.id
    return tier.campaign_id if tier is not None else None


def _expires(tier: TierView) -> str | None:
    return tier.expiration.expiration_date if tier.expiration is not None else None


def _enter(s: CustomerState, a: Activity, tier: TierView | None) -> None:
    campaign = _campaign(a.payload, tier)
    if tier is None or campaign is None:
        return
    s.tiers[campaign] = Tier(tier.id, tier.name, a.created_at, _expires(tier))


@writes("tiers")
def joined(s: CustomerState, a: Activity) -> None:
    _enter(s, a, a.payload.loyalty_tier)


@writes("tiers")
def changed(s: CustomerState, a: Activity) -> None:
    """Upgraded or downgraded: the customer now holds `loyalty_tier_to`."""
    _enter(s, a, a.payload.loyalty_tier_to)


@writes("tiers")
def prolonged(s: CustomerState, a: Activity) -> None:
    tier = a.payload.loyalty_tier
    campaign = _campaign(a.payload, tier)
    if tier is None or campaign is None:
        return
    held = s.tiers.get(campaign)
    if held is None:
        _enter(s, a, tier)
    elif tier.expiration is not None:
        held.expires_at = tier.expiration.expiration_date


@writes("tiers")
def expiration_changed(s: CustomerState, a: Activity) -> None:
    p = a.payload
    tier = p.loyalty_tier
    campaign = _campaign(p, tier)
    if campaign is None:
        return
    held = s.tiers.get(campaign)
    if held is None and tier is not None:
        _enter(s, a, tier)
        held = s.tiers[campaign]
    if held is None:
        return
    if p.expiration_date is not None:
        held.expires_at = p.expiration_date
    elif tier is not None and tier.expiration is not None:
        held.expires_at = tier.expiration.expiration_date


@writes("tiers")
def left(s: CustomerState, a: Activity) -> None:
    """Only the tier named is left: a `left` that sorts after a newer `joined` of another
    tier in the same campaign must not remove that one."""
    tier = a.payload.loyalty_tier
    campaign = _campaign(a.payload, tier)
    if tier is None or campaign is None:
        return
    held = s.tiers.get(campaign)
    if held is not None and held.tier_id == tier.id:
        del s.tiers[campaign]
