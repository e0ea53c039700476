"""Vouchers the customer holds: publication, holder roles, deletion."""

from __future__ import annotations

from msgspec.structs import replace

from custate.domain.activity import Activity
from custate.domain.effects.effect import writes
from custate.domain.payload import Payload, VoucherView
from custate.domain.state import CustomerState, Voucher

_NONE = Voucher()


def _described(v: Voucher, view: VoucherView | None) -> Voucher:
    """`v` with what `view` tells of it. Vouchers are frozen (copies of a state and cached
    checkpoints share them): every change is a new entry."""
    if view is None:
        return v
    return replace(
        v,
        code=v.code if view.code is None else view.code,
        campaign_id=v.campaign_id if view.campaign_id is None else view.campaign_id,
        type=v.type if view.type is None else view.type,
    )


def _published_ids(p: Payload) -> tuple[str, ...]:
    """The vouchers a publication names: its list, its voucher, the payload's voucher."""
    ids: dict[str, None] = {}
    if p.publication is not None:
        ids.update(dict.fromkeys(p.publication.vouchers_id or ()))
        pv = p.publication.voucher
        if pv is not None and pv.id:
            ids[pv.id] = None
    if p.voucher is not None and p.voucher.id:
        ids[p.voucher.id] = None
    return tuple(ids)


def _held_id(p: Payload) -> tuple[str, ...]:
    h = p.holder
    return (h.redeemable_id,) if h is not None and h.redeemable_id else ()


def _voucher_id(p: Payload) -> tuple[str, ...]:
    v = p.voucher
    return (v.id,) if v is not None and v.id else ()


@writes(entries={"voucher": _published_ids})
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
        v = _described(s.vouchers.get(vid, _NONE), view)
        s.vouchers[vid] = replace(v, published_at=a.created_at)


@writes(entries={"voucher": _held_id})
def holder_assigned(s: CustomerState, a: Activity) -> None:
    h = a.payload.holder
    if h is None or not h.redeemable_id or not h.holder_role:
        return
    view = a.payload.voucher
    v = _described(
        s.vouchers.get(h.redeemable_id, _NONE),
        view if view is not None and view.id == h.redeemable_id else None,
    )
    if h.holder_role not in v.roles:
        v = replace(v, roles=sorted([*v.roles, h.holder_role]))
    s.vouchers[h.redeemable_id] = v


@writes(entries={"voucher": _held_id})
def holder_unassigned(s: CustomerState, a: Activity) -> None:
    h = a.payload.holder
    if h is None or not h.redeemable_id or not h.holder_role:
        return
    v = s.vouchers.get(h.redeemable_id)
    if v is not None and h.holder_role in v.roles:
        s.vouchers[h.redeemable_id] = replace(v, roles=[r for r in v.roles if r != h.holder_role])


@writes(entries={"voucher": _voucher_id, "card": _voucher_id, "gift": _voucher_id})
def deleted(s: CustomerState, a: Activity) -> None:
    view = a.payload.voucher
    if view is None or not view.id:
        return
    v = _described(s.vouchers.get(view.id, _NONE), view)
    s.vouchers[view.id] = replace(v, deleted_at=a.created_at)
    s.cards.pop(view.id, None)
    s.gift_cards.pop(view.id, None)
