"""A compact stored form of `CustomerState`, for checkpoints and the read model's rows.

`CustomerState.to_json` is the public, self-describing form. Stored states are read far
more often than anyone looks at them (a checkpoint for every point-in-time answer, a state
for every late activity), and a long history holds thousands of orders and vouchers, so
this form keeps each entry as an array in field order and leaves times to orjson's own
encoder: a heavy state loads about three times faster than through `from_json`.

It is still JSON, with the top-level names of the public form (`"gaps":[...]` included, so
a stored state can be searched for gaps as text), and `FORMAT` names it: `load` reads
either form."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from custate.domain.state import (
    Activities,
    CustomerState,
    CustomEvent,
    Gap,
    GiftCard,
    LoyaltyCard,
    Messaging,
    Order,
    PendingEntry,
    Profile,
    Redemptions,
    RewardRedemption,
    Segment,
    Tier,
    Validations,
    Voucher,
)

FORMAT = 1
_time = datetime.fromisoformat


def _opt(value: str | None) -> datetime | None:
    return None if value is None else _time(value)


def dump(s: CustomerState) -> bytes:
    p = s.profile
    a = s.activities
    r = s.redemptions
    return orjson.dumps(
        {
            "format": FORMAT,
            "customer_id": s.customer_id,
            "as_of": s.as_of,
            "known_at": s.known_at,
            "profile": [
                p.status,
                p.source_id,
                p.name,
                p.email,
                p.phone,
                p.metadata,
                p.created_at,
                p.updated_at,
                p.deleted_at,
                p.confirmed_at,
            ],
            "cards": {
                k: [
                    c.campaign_id,
                    c.code,
                    c.balance,
                    c.total,
                    c.pending_points,
                    c.expired_points,
                    c.next_expiration_date,
                    c.next_expiration_points,
                    {i: [e.points, e.activates_at, e.order_id] for i, e in c.pending.items()},
                    c.updated_at,
                    c.updated_by,
                ]
                for k, c in s.cards.items()
            },
            "tiers": {
                k: [t.tier_id, t.tier_name, t.since, t.expires_at] for k, t in s.tiers.items()
            },
            "gift_cards": {
                k: [g.campaign_id, g.code, g.balance, g.total, g.updated_at, g.updated_by]
                for k, g in s.gift_cards.items()
            },
            "segments": {k: [g.name, g.entered_at] for k, g in s.segments.items()},
            "orders": {
                k: [o.status, o.source_id, o.amount, o.total_amount, o.updated_at]
                for k, o in s.orders.items()
            },
            "redemptions": [r.succeeded, r.failed, r.rollback_succeeded, r.rollback_failed],
            "reward_redemptions": {
                k: [x.state, x.reward_id, x.updated_at] for k, x in s.reward_redemptions.items()
            },
            "referred_by": s.referred_by,
            "vouchers": {
                k: [v.code, v.campaign_id, v.type, v.roles, v.published_at, v.deleted_at]
                for k, v in s.vouchers.items()
            },
            "messaging": {
                k: [m.status, m.at, m.sent, m.failed, m.recovered] for k, m in s.messaging.items()
            },
            "custom_events": {k: [e.count, e.last_at] for k, e in s.custom_events.items()},
            "validations": [s.validations.succeeded, s.validations.failed],
            "activities": [a.count, a.first_at, a.last_at, a.last_id, a.unrecognized],
            "gaps": [
                [
                    g.card_id,
                    g.kind,
                    g.activity_id,
                    g.at,
                    g.previous_activity_id,
                    g.previous_balance,
                    g.delta,
                    g.balance,
                ]
                for g in s.gaps
            ],
        },
        default=_time_subclass,
        option=orjson.OPT_UTC_Z,
    )


def _time_subclass(value: object) -> str:
    # orjson encodes `datetime` itself, but not subclasses (freezegun's FakeDatetime).
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def load(stored: bytes | str) -> CustomerState:
    j: dict[str, Any] = orjson.loads(stored)
    if j.get("format") != FORMAT:
        return CustomerState.from_json(j)  # the public form
    p = j["profile"]
    a = j["activities"]
    t = _time
    return CustomerState(
        customer_id=j["customer_id"],
        as_of=_opt(j["as_of"]),
        known_at=_opt(j["known_at"]),
        profile=Profile(
            p[0], p[1], p[2], p[3], p[4], p[5], _opt(p[6]), _opt(p[7]), _opt(p[8]), _opt(p[9])
        ),
        cards={
            k: LoyaltyCard(
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                c[6],
                c[7],
                {i: PendingEntry(*e) for i, e in c[8].items()},
                _opt(c[9]),
                c[10],
            )
            for k, c in j["cards"].items()
        },
        tiers={k: Tier(x[0], x[1], t(x[2]), x[3]) for k, x in j["tiers"].items()},
        gift_cards={
            k: GiftCard(g[0], g[1], g[2], g[3], _opt(g[4]), g[5])
            for k, g in j["gift_cards"].items()
        },
        segments={k: Segment(x[0], t(x[1])) for k, x in j["segments"].items()},
        orders={
            k: Order(o[0], o[1], o[2], o[3], None if o[4] is None else t(o[4]))
            for k, o in j["orders"].items()
        },
        redemptions=Redemptions(*j["redemptions"]),
        reward_redemptions={
            k: RewardRedemption(x[0], x[1], t(x[2])) for k, x in j["reward_redemptions"].items()
        },
        referred_by=j["referred_by"],
        vouchers={
            k: Voucher(
                v[0],
                v[1],
                v[2],
                v[3],
                None if v[4] is None else t(v[4]),
                None if v[5] is None else t(v[5]),
            )
            for k, v in j["vouchers"].items()
        },
        messaging={
            k: Messaging(m[0], t(m[1]), m[2], m[3], m[4]) for k, m in j["messaging"].items()
        },
        custom_events={k: CustomEvent(e[0], t(e[1])) for k, e in j["custom_events"].items()},
        validations=Validations(*j["validations"]),
        activities=Activities(a[0], _opt(a[1]), _opt(a[2]), a[3], a[4]),
        gaps=[Gap(g[0], g[1], g[2], t(g[3]), g[4], g[5], g[6], g[7]) for g in j["gaps"]],
    )
