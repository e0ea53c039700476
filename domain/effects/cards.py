"""Loyalty cards and gift cards, set from the absolute post-event values that payloads
report (SEMANTICS §4).

Voucherify reports balances after the event, so a card is set from the newest activity in
fold order, never summed from deltas. Deltas are only checked, to find missing activities."""

from __future__ import annotations

from custate.domain.activity import Activity
from custate.domain.effects.effect import writes
from custate.domain.payload import BalanceView, Payload, VoucherView
from custate.domain.state import CustomerState, Gap, GiftCard, LoyaltyCard, PendingEntry


def _balance_object(p: Payload) -> BalanceView | None:
    if p.balance is not None:
        return p.balance
    t = p.transaction
    if t is not None and t.details is not None:
        return t.details.balance
    return None


def card_id(p: Payload) -> str | None:
    """The card an activity is about: balance.related_object.id, else transaction.voucher_id,
    else voucher.id, else pending_points.voucher_id."""
    bal = _balance_object(p)
    if bal is not None and bal.related_object is not None and bal.related_object.id:
        return bal.related_object.id
    if p.transaction is not None and p.transaction.voucher_id:
        return p.transaction.voucher_id
    if p.voucher is not None and p.voucher.id:
        return p.voucher.id
    if p.pending_points is not None and p.pending_points.voucher_id:
        return p.pending_points.voucher_id
    return None


def card_ids(p: Payload) -> tuple[str, ...]:
    """The cards whose reported values a payload carries: `card_id`, and the card of its
    pending points balance."""
    cid = card_id(p)
    ppb = p.voucher_pending_points_balance
    other = ppb.related_object.id if ppb is not None and ppb.related_object is not None else None
    if not other or other == cid:
        return () if cid is None else (cid,)
    return (other,) if cid is None else (cid, other)


def _named_card(p: Payload) -> tuple[str, ...]:
    cid = card_id(p)
    return () if cid is None else (cid,)


def _pending_card_id(p: Payload) -> tuple[str, ...]:
    pp = p.pending_points
    cid = (pp.voucher_id if pp is not None else None) or card_id(p)
    return () if cid is None else (cid,)


def _campaign_id(p: Payload, v: VoucherView | None) -> str | None:
    if v is not None and v.campaign_id:
        return v.campaign_id
    if p.transaction is not None and p.transaction.campaign_id:
        return p.transaction.campaign_id
    if p.pending_points is not None and p.pending_points.campaign_id:
        return p.pending_points.campaign_id
    return p.campaign.id if p.campaign is not None else None


def _describe(card: LoyaltyCard | GiftCard, p: Payload, v: VoucherView | None) -> None:
    campaign = _campaign_id(p, v)
    if campaign is not None:
        card.campaign_id = campaign
    if v is not None and v.code is not None:
        card.code = v.code


def _loyalty_card(s: CustomerState, cid: str, p: Payload, v: VoucherView | None) -> LoyaltyCard:
    card = s.cards.get(cid)
    if card is None:
        card = s.cards[cid] = LoyaltyCard()
    _describe(card, p, v)
    return card


def _gift_card(s: CustomerState, cid: str, p: Payload, v: VoucherView | None) -> GiftCard:
    card = s.gift_cards.get(cid)
    if card is None:
        card = s.gift_cards[cid] = GiftCard()
    _describe(card, p, v)
    return card


def _check_gap(
    s: CustomerState,
    kind: str,
    cid: str,
    a: Activity,
    previous: int | None,
    previous_by: str | None,
    delta: int | None,
    new: int | None,
) -> None:
    if previous is None or delta is None or new is None:
        return
    if previous + delta != new:
        s.gaps.append(Gap(cid, kind, a.id, a.created_at, previous_by, previous, delta, new))


@writes("gaps", entries={"card": card_ids, "gift": card_ids})
def reported_balances(s: CustomerState, a: Activity) -> None:
    """Set the card this activity names from every absolute (post-event) value its payload
    reports, and record a gap where the balance does not follow from the last one. The fold
    runs this for every recognised type, before the type's own effects."""
    p = a.payload
    cid = card_id(p)
    if cid is None:
        return
    bal = _balance_object(p)
    v = p.voucher if p.voucher is not None and p.voucher.id == cid else None
    at = a.created_at

    if bal is not None and bal.type == "loyalty_card":
        card = _loyalty_card(s, cid, p, v)
        _check_gap(
            s, "loyalty_card", cid, a, card.balance, card.updated_by, bal.points, bal.balance
        )
        if bal.balance is not None:
            card.balance, card.updated_by = bal.balance, a.id
        if bal.total is not None:
            card.total = bal.total
        card.updated_at = at
    elif bal is not None and bal.type == "gift_voucher":
        gift = _gift_card(s, cid, p, v)
        _check_gap(s, "gift_card", cid, a, gift.balance, gift.updated_by, bal.amount, bal.balance)
        if bal.balance is not None:
            gift.balance, gift.updated_by = bal.balance, a.id
        if bal.total is not None:
            gift.total = bal.total
        gift.updated_at = at

    if v is not None and v.type == "LOYALTY_CARD" and v.loyalty_card is not None:
        block = v.loyalty_card
        card = _loyalty_card(s, cid, p, v)
        # Absent keys mean "not reported", not zero: a points_added payload carries no
        # pending_points, and must not wipe them.
        if block.pending_points is not None:
            card.pending_points = block.pending_points
        if block.expired_points is not None:
            card.expired_points = block.expired_points
        if block.next_expiration_date is not None:
            card.next_expiration_date = block.next_expiration_date
        if block.next_expiration_points is not None:
            card.next_expiration_points = block.next_expiration_points
        if bal is None:
            # The voucher block is pre-event in some payloads (customer.rewarded.loyalty_points
            # shows 0 beside a balance of 900): trust it only when nothing better is given.
            if block.balance is not None:
                card.balance, card.updated_by = block.balance, a.id
            if block.points is not None:
                card.total = block.points
        card.updated_at = at
    elif (
        v is not None
        and v.type == "GIFT_VOUCHER"
        and v.gift is not None
        and (bal is None or bal.type != "gift_voucher")
    ):
        gift = _gift_card(s, cid, p, v)
        if v.gift.balance is not None:
            gift.balance, gift.updated_by = v.gift.balance, a.id
        if v.gift.amount is not None:
            gift.total = v.gift.amount
        gift.updated_at = at

    ppb = p.voucher_pending_points_balance
    if ppb is not None and ppb.total is not None:
        pid = ppb.related_object.id if ppb.related_object and ppb.related_object.id else cid
        card = _loyalty_card(s, pid, p, v if pid == cid else None)
        card.pending_points = ppb.total
        card.updated_at = at


@writes(entries={"card": _named_card})
def points_expired(s: CustomerState, a: Activity) -> None:
    """Without an `expired_points` figure in the voucher block, count the expired points."""
    p = a.payload
    cid = card_id(p)
    if cid is None or p.points is None:
        return
    v = p.voucher
    if v is not None and v.loyalty_card is not None and v.loyalty_card.expired_points is not None:
        return
    card = _loyalty_card(s, cid, p, v if v is not None and v.id == cid else None)
    card.expired_points += abs(p.points)
    card.updated_at = a.created_at


def _pending_card(s: CustomerState, a: Activity) -> LoyaltyCard | None:
    p = a.payload
    pp = p.pending_points
    cid = (pp.voucher_id if pp is not None else None) or card_id(p)
    if cid is None:
        return None
    return _loyalty_card(
        s, cid, p, p.voucher if p.voucher is not None and p.voucher.id == cid else None
    )


@writes(entries={"card": _pending_card_id})
def pending_points_set(s: CustomerState, a: Activity) -> None:
    pp = a.payload.pending_points
    card = _pending_card(s, a)
    if pp is None or pp.id is None or card is None:
        return
    card.pending[pp.id] = PendingEntry(pp.points, pp.activates_at, pp.order_id)
    card.updated_at = a.created_at


@writes(entries={"card": _pending_card_id})
def pending_points_removed(s: CustomerState, a: Activity) -> None:
    pp = a.payload.pending_points
    card = _pending_card(s, a)
    if pp is None or pp.id is None or card is None:
        return
    card.pending.pop(pp.id, None)
    card.updated_at = a.created_at
