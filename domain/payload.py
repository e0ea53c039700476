"""Typed, lenient views of the parts of an activity payload that change customer state.

Lenient: unknown keys are ignored and missing keys are None, because Voucherify adds fields
and omits empty ones. Strict where it matters: a value of the wrong type is an error that
names its field path. Times inside payloads stay strings (dates such as `activates_at` are
days, not instants, and some documented examples carry malformed nested timestamps that
no effect reads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class View(BaseModel):
    # strict: "12" or true is not a number of points; a wrong type is an error, not a guess.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class Ref(View):
    id: str | None = None
    name: str | None = None


class CustomerView(View):
    id: str | None = None
    source_id: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    metadata: dict[str, Any] | None = None


class RelatedObject(View):
    id: str | None = None
    type: str | None = None


class BalanceView(View):
    """A `balance` object: absolute post-event values plus the delta that produced them."""

    type: str | None = None
    balance: int | None = None
    total: int | None = None
    points: int | None = None
    amount: int | None = None
    related_object: RelatedObject | None = None


class TransactionDetails(View):
    balance: BalanceView | None = None


class TransactionView(View):
    id: str | None = None
    voucher_id: str | None = None
    campaign_id: str | None = None
    type: str | None = None
    details: TransactionDetails | None = None


class LoyaltyCardBlock(View):
    points: int | None = None
    balance: int | None = None
    pending_points: int | None = None
    expired_points: int | None = None
    next_expiration_date: str | None = None
    next_expiration_points: int | None = None


class GiftBlock(View):
    amount: int | None = None
    balance: int | None = None


class VoucherView(View):
    id: str | None = None
    code: str | None = None
    type: str | None = None
    campaign_id: str | None = None
    loyalty_card: LoyaltyCardBlock | None = None
    gift: GiftBlock | None = None


class PendingBalanceView(View):
    total: int | None = None
    points: int | None = None
    related_object: RelatedObject | None = None


class PendingEntryView(View):
    id: str | None = None
    voucher_id: str | None = None
    campaign_id: str | None = None
    order_id: str | None = None
    points: int | None = None
    activates_at: str | None = None


class TierExpiration(View):
    expiration_date: str | None = None


class TierView(View):
    id: str | None = None
    name: str | None = None
    campaign_id: str | None = None
    expiration: TierExpiration | None = None


class OrderView(View):
    id: str | None = None
    status: str | None = None
    source_id: str | None = None
    amount: int | None = None
    total_amount: int | None = None


class RewardRedemptionView(View):
    id: str | None = None
    state: str | None = None


class HolderView(View):
    holder_role: str | None = None
    redeemable_id: str | None = None


class PublicationView(View):
    voucher: VoucherView | None = None
    vouchers_id: list[str] | None = None


class EventView(View):
    type: str | None = None


class Payload(View):
    """Everything any effect reads. Which parts a given type must carry is in `REQUIRED`."""

    customer: CustomerView | None = None
    campaign: Ref | None = None
    balance: BalanceView | None = None
    transaction: TransactionView | None = None
    voucher: VoucherView | None = None
    voucher_pending_points_balance: PendingBalanceView | None = None
    pending_points: PendingEntryView | None = None
    points: int | None = None
    segment: Ref | None = None
    loyalty_tier: TierView | None = None
    loyalty_tier_to: TierView | None = None
    expiration_date: str | None = None
    order: OrderView | None = None
    reward_redemption: RewardRedemptionView | None = None
    reward: Ref | None = None
    referrer: Ref | None = None
    holder: HolderView | None = None
    publication: PublicationView | None = None
    event: EventView | None = None


# The payload paths each type cannot do its job without. A record that lacks one is
# rejected with that path named, instead of silently folding to nothing.
REQUIRED: dict[str, tuple[str, ...]] = {
    "customer.referred": ("campaign.id", "referrer.id"),
    "customer.custom_event": ("event.type",),
    "customer.segment.entered": ("segment.id",),
    "customer.segment.left": ("segment.id",),
    "customer.voucher.loyalty_card.pending_points.added": ("pending_points.id",),
    "customer.voucher.loyalty_card.pending_points.updated": ("pending_points.id",),
    "customer.voucher.loyalty_card.pending_points.activated": ("pending_points.id",),
    "customer.voucher.loyalty_card.pending_points.canceled": ("pending_points.id",),
    "customer.voucher.deleted": ("voucher.id",),
    "customer.order.created": ("order.id",),
    "customer.order.processing": ("order.id",),
    "customer.order.paid": ("order.id",),
    "customer.order.fulfilled": ("order.id",),
    "customer.order.canceled": ("order.id",),
    "customer.order.updated": ("order.id",),
    "customer.reward_redemptions.created": ("reward_redemption.id",),
    "customer.reward_redemptions.pending": ("reward_redemption.id",),
    "customer.reward_redemptions.completed": ("reward_redemption.id",),
    "customer.reward_redemptions.rolledback": ("reward_redemption.id",),
    "customer.loyalty.tier.joined": ("loyalty_tier.id",),
    "customer.loyalty.tier.left": ("loyalty_tier.id",),
    "customer.loyalty.tier.upgraded": ("loyalty_tier_to.id",),
    "customer.loyalty.tier.downgraded": ("loyalty_tier_to.id",),
    "customer.holder.assignment.created": ("holder.redeemable_id", "holder.holder_role"),
    "customer.holder.assignment.deleted": ("holder.redeemable_id", "holder.holder_role"),
}


def missing_required(activity_type: str, payload: Payload) -> str | None:
    """The first required path of this type that the payload lacks, or None."""
    for path in REQUIRED.get(activity_type, ()):
        node: Any = payload
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                return path
    return None
