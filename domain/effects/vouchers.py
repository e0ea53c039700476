"""Vouchers the customer holds: publication, holder roles, deletion."""

from __future__ import annotations

from custate.domain.activity import Activity
from custate.domain.payload import VoucherView
from custate.domain.state import CustomerState, Voucher


def _voucher(s: CustomerState, voucher_id: str) -> Voucher:
    """The voucher, to change: a new entry, never the one held. Copies of a state share
    their vouchers (CustomerState.copy), and a long history holds hundreds of them."""
    v = s.vouchers.get(voucher_id)
    v = Voucher() if v is None else v.copy()
    s.vouchers[voucher_id] = v
    return v


def _describe(v: Voucher, view: VoucherView) -> None:
    if view.code is not None:
        v.code = view.code
    if view.campaign_id is not None:
        v.campaign_id = view.campaign_id
    if view.type is not None:
        v.type = view.type


def publication_succeeded(s: CustomerState, a: Activity) -> None:
    p = a.payload
    views: dict[str, VoucherView | None] = {}
    if p.publication is not None:
        for vid in p.publication.vouchers_id or ():
            views.setdefault(vid, None)
        pv = p.publication.voucher
        if pv is not None and pv.id:
            views[pv.id] = pv
    if p.voucher is not None and p.voucher.id:
        views[p.voucher.id] = p.voucher
    for vid, view in views.items():
        v = _voucher(s, vid)
        if view is not None:
            _describe(v, view)
        v.published_at = a.created_at


def holder_assigned(s: CustomerState, a: Activity) -> None:
    h = a.payload.holder
    if h is None or not h.redeemable_id or not h.holder_role:
        return
    v = _voucher(s, h.redeemable_id)
    if a.payload.voucher is not None and a.payload.voucher.id == h.redeemable_id:
        _describe(v, a.payload.voucher)
    if h.holder_role not in v.roles:
        v.roles = sorted([*v.roles, h.holder_role])


def holder_unassigned(s: CustomerState, a: Activity) -> None:
    h = a.payload.holder
    if h is None or not h.redeemable_id or not h.holder_role:
        return
    v = s.vouchers.get(h.redeemable_id)
    if v is not None and h.holder_role in v.roles:
        v = _voucher(s, h.redeemable_id)
        v.roles = [r for r in v.roles if r != h.holder_role]


def deleted(s: CustomerState, a: Activity) -> None:
    view = a.payload.voucher
    if view is None or not view.id:
        return
    v = _voucher(s, view.id)
    _describe(v, view)
    v.deleted_at = a.created_at
    s.cards.pop(view.id, None)
    s.gift_cards.pop(view.id, None)
