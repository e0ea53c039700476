"""Typed, lenient views of the parts of an activity payload that change customer state.

Lenient: unknown keys are ignored and missing keys are None, because Voucherify adds fields
and omits empty ones. Strict where it matters: a value of the wrong type is an error that
names its field path (msgspec, like pydantic's strict mode, takes no "12" or true for a
number). msgspec Structs rather than pydantic models because decoding stored activities is
most of a catch-up: from the stored bytes, msgspec builds these views in a fifth of the time
(docs/DECISIONS.md, Decoding). Times inside payloads stay strings (dates such as `activates_at` are
days, not instants, and some documented examples carry malformed nested timestamps that
no effect reads)."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class View(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """Unknown keys are ignored (msgspec's default); every field has a default. Views hold
    plain values (and plain `metadata`), never themselves: the cyclic garbage collector need
    not track them (`gc=False`), and a catch-up makes millions. Encoded, they leave out
    what is at its default (`omit_defaults`): the read model keeps every activity's views
    (`adapters.codecs.foldinput`), and most of a payload's views are None."""


class Ref(View, frozen=True):
    id: str | None = None
    name: str | None = None


class CustomerRef(View, frozen=True):
    """The customer an activity names: all that most effects need of `data.customer`."""

    id: str | None = None


class CustomerView(CustomerRef, frozen=True):
    """The customer's profile fields, for the types that copy them into the profile. An
    absent key is UNSET and keeps the profile's value; a key sent as null clears it."""

    source_id: str | UnsetType | None = UNSET
    name: str | UnsetType | None = UNSET
    email: str | UnsetType | None = UNSET
    phone: str | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType | None = UNSET


class RelatedObject(View, frozen=True):
    id: str | None = None
    type: str | None = None


class BalanceView(View, frozen=True):
    """A `balance` object: absolute post-event values plus the delta that produced them."""

    type: str | None = None
    balance: int | None = None
    total: int | None = None
    points: int | None = None
    amount: int | None = None
    related_object: RelatedObject | None = None


class TransactionDetails(View, frozen=True):
    balance: BalanceView | None = None


class TransactionView(View, frozen=True):
    id: str | None = None
    voucher_id: str | None = None
    campaign_id: str | None = None
    type: str | None = None
    details: TransactionDetails | None = None


class LoyaltyCardBlock(View, frozen=True):
    points: int | None = None
    balance: int | None = None
    pending_points: int | None = None
    expired_points: int | None = None
    next_expiration_date: str | None = None
    next_expiration_points: int | None = None


class GiftBlock(View, frozen=True):
    amount: int | None = None
    balance: int | None = None


class VoucherView(View, frozen=True):
    id: str | None = None
    code: str | None = None
    type: str | None = None
    campaign_id: str | None = None
    loyalty_card: LoyaltyCardBlock | None = None
    gift: GiftBlock | None = None


class PendingBalanceView(View, frozen=True):
    total: int | None = None
    points: int | None = None
    related_object: RelatedObject | None = None


class PendingEntryView(View, frozen=True):
    id: str | None = None
    voucher_id: str | None = None
    campaign_id: str | None = None
    order_id: str | None = None
    points: int | None = None
    activates_at: str | None = None


class TierExpiration(View, frozen=True):
    expiration_date: str | None = None


class TierView(View, frozen=True):
    id: str | None = None
    name: str | None = None
    campaign_id: str | None = None
    expiration: TierExpiration | None = None


class OrderView(View, frozen=True):
    id: str | None = None
    status: str | None = None
    source_id: str | None = None
    amount: int | None = None
    total_amount: int | None = None


class RewardRedemptionView(View, frozen=True):
    id: str | None = None
    state: str | None = None


class HolderView(View, frozen=True):
    holder_role: str | None = None
    redeemable_id: str | None = None


class PublicationView(View, frozen=True):
    voucher: VoucherView | None = None
    vouchers_id: list[str] | None = None


class EventView(View, frozen=True):
    type: str | None = None


class Payload(View, frozen=True):
    """Everything any effect reads. Which parts a given type must carry is in `REQUIRED`.
    `customer` is only its id here: a stored activity whose type leaves the profile alone
    is read back without the profile fields, a fifth of decoding it (`FullPayload` has
    them, and is what `parse_activity` builds)."""

    customer: CustomerRef | None = None
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


class FullPayload(Payload, frozen=True):
    """A payload with the customer's profile fields: every parsed activity's, and a stored
    one's when its type copies them into the profile (`domain.fold.PROFILE_FIELD_TYPES`)."""

    customer: CustomerView | None = None


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


MAX_KEY_BYTES = 512
"""The longest identifier the fold reads from a payload (`id`, `*_id`, `code`), in UTF-8
bytes: the read model keys its tables by them (segment, tier, campaign, card and order
ids), and a PostgreSQL index entry holds about 2,700 bytes."""

MAX_STATUS_CHARS = 32
"""The longest `order.status`: the read model keeps it in a column of 32 characters."""

# The payload strings the fold keys state by, and so the read model its tables: per view,
# the fields that are identifiers.
_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("segment", ("id",)),
    ("campaign", ("id",)),
    ("loyalty_tier", ("id", "campaign_id")),
    ("loyalty_tier_to", ("id", "campaign_id")),
    ("voucher", ("id", "code", "campaign_id")),
    ("transaction", ("id", "voucher_id", "campaign_id")),
    ("pending_points", ("id", "voucher_id", "campaign_id", "order_id")),
    ("order", ("id",)),
    ("reward_redemption", ("id",)),
    ("reward", ("id",)),
    ("referrer", ("id",)),
    ("holder", ("redeemable_id",)),
)


def oversized_key(payload: Payload) -> tuple[str, str] | None:
    """(path, message) of the first identifier in the payload too long to key the read
    model by (an `order.status` over `MAX_STATUS_CHARS` too), or None. A few attribute
    reads for the views a payload has; the byte count only for a long string."""
    for view_name, fields in _KEYS:
        view = getattr(payload, view_name)
        if view is None:
            continue
        for name in fields:
            value = getattr(view, name)
            if value is not None and _too_long(value):
                return f"{view_name}.{name}", _over(value)
    order = payload.order
    if order is not None and order.status is not None and len(order.status) > MAX_STATUS_CHARS:
        n = len(order.status)
        return "order.status", f"{n} characters long, over the limit of {MAX_STATUS_CHARS}"
    extra: list[tuple[str, str | None]] = []
    if payload.balance is not None and payload.balance.related_object is not None:
        extra.append(("balance.related_object.id", payload.balance.related_object.id))
    publication = payload.publication
    if publication is not None:
        if publication.voucher is not None:
            extra.append(("publication.voucher.id", publication.voucher.id))
        for i, vid in enumerate(publication.vouchers_id or ()):
            extra.append((f"publication.vouchers_id.{i}", vid))
    for path, value in extra:
        if value is not None and _too_long(value):
            return path, _over(value)
    return None


def _too_long(s: str) -> bool:
    return len(s) > MAX_KEY_BYTES // 4 and len(s.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES


def _over(s: str) -> str:
    size = len(s.encode("utf-8", "surrogatepass"))
    return f"{size} UTF-8 bytes long, over the limit of {MAX_KEY_BYTES}"
