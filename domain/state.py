"""Customer state (SEMANTICS §3) and its stable JSON form.

The fold mutates one working `CustomerState` in place for speed; nothing outside the
fold sees it half-built. Times are kept as aware datetimes and turned into ISO strings
only in `to_json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from custate.domain.activity import format_time, parse_time

Json = dict[str, Any]


def _t(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _pt(value: Any) -> datetime | None:
    return None if value is None else parse_time(value, "time")


@dataclass(slots=True)
class Profile:
    status: str = "active"
    source_id: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    confirmed_at: datetime | None = None


@dataclass(slots=True)
class PendingEntry:
    points: int | None
    activates_at: str | None
    order_id: str | None


@dataclass(slots=True)
class LoyaltyCard:
    campaign_id: str | None = None
    code: str | None = None
    balance: int | None = None
    total: int | None = None
    pending_points: int = 0
    expired_points: int = 0
    next_expiration_date: str | None = None
    next_expiration_points: int | None = None
    pending: dict[str, PendingEntry] = field(default_factory=dict)
    updated_at: datetime | None = None
    updated_by: str | None = None  # the activity whose snapshot set the balance


@dataclass(slots=True)
class GiftCard:
    campaign_id: str | None = None
    code: str | None = None
    balance: int | None = None
    total: int | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


@dataclass(slots=True)
class Tier:
    tier_id: str | None
    tier_name: str | None
    since: datetime
    expires_at: str | None


@dataclass(slots=True)
class Segment:
    name: str | None
    entered_at: datetime


@dataclass(slots=True)
class Order:
    status: str | None = None
    source_id: str | None = None
    amount: int | None = None
    total_amount: int | None = None
    updated_at: datetime | None = None


@dataclass(slots=True)
class Redemptions:
    succeeded: int = 0
    failed: int = 0
    rollback_succeeded: int = 0
    rollback_failed: int = 0


@dataclass(slots=True)
class RewardRedemption:
    state: str
    reward_id: str | None
    updated_at: datetime


@dataclass(slots=True)
class Voucher:
    code: str | None = None
    campaign_id: str | None = None
    type: str | None = None
    roles: list[str] = field(default_factory=list)
    published_at: datetime | None = None
    deleted_at: datetime | None = None


@dataclass(slots=True)
class Messaging:
    status: str
    at: datetime
    sent: int = 0
    failed: int = 0
    recovered: int = 0


@dataclass(slots=True)
class CustomEvent:
    count: int
    last_at: datetime


@dataclass(slots=True)
class Validations:
    succeeded: int = 0
    failed: int = 0


@dataclass(slots=True)
class Activities:
    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    last_id: str | None = None
    unrecognized: int = 0


@dataclass(frozen=True, slots=True)
class Gap:
    """A balance-continuity break: previous balance plus this activity's delta is not the
    balance it reports, so an activity between the two is missing upstream."""

    card_id: str
    kind: str  # "loyalty_card" | "gift_card"
    activity_id: str
    at: datetime
    previous_activity_id: str | None
    previous_balance: int
    delta: int
    balance: int

    @property
    def missing(self) -> int:
        return self.balance - (self.previous_balance + self.delta)


@dataclass(slots=True)
class CustomerState:
    customer_id: str
    as_of: datetime | None = None
    known_at: datetime | None = None
    profile: Profile = field(default_factory=Profile)
    cards: dict[str, LoyaltyCard] = field(default_factory=dict)
    tiers: dict[str, Tier] = field(default_factory=dict)
    gift_cards: dict[str, GiftCard] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    redemptions: Redemptions = field(default_factory=Redemptions)
    reward_redemptions: dict[str, RewardRedemption] = field(default_factory=dict)
    referred_by: dict[str, str] = field(default_factory=dict)
    vouchers: dict[str, Voucher] = field(default_factory=dict)
    messaging: dict[str, Messaging] = field(default_factory=dict)
    custom_events: dict[str, CustomEvent] = field(default_factory=dict)
    validations: Validations = field(default_factory=Validations)
    activities: Activities = field(default_factory=Activities)
    gaps: list[Gap] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(c.balance or 0 for c in self.cards.values())

    def to_json(self) -> Json:
        p = self.profile
        a = self.activities
        return {
            "customer_id": self.customer_id,
            "as_of": _t(self.as_of),
            "known_at": _t(self.known_at),
            "profile": {
                "status": p.status,
                "source_id": p.source_id,
                "name": p.name,
                "email": p.email,
                "phone": p.phone,
                "metadata": p.metadata,
                "created_at": _t(p.created_at),
                "updated_at": _t(p.updated_at),
                "deleted_at": _t(p.deleted_at),
                "confirmed_at": _t(p.confirmed_at),
            },
            "loyalty": {
                "points": self.points,
                "cards": {
                    cid: {
                        "campaign_id": c.campaign_id,
                        "code": c.code,
                        "balance": c.balance,
                        "total": c.total,
                        "pending_points": c.pending_points,
                        "expired_points": c.expired_points,
                        "next_expiration_date": c.next_expiration_date,
                        "next_expiration_points": c.next_expiration_points,
                        "pending": {
                            pid: {
                                "points": e.points,
                                "activates_at": e.activates_at,
                                "order_id": e.order_id,
                            }
                            for pid, e in sorted(c.pending.items())
                        },
                        "updated_at": _t(c.updated_at),
                        "updated_by": c.updated_by,
                    }
                    for cid, c in sorted(self.cards.items())
                },
                "tiers": {
                    camp: {
                        "tier_id": t.tier_id,
                        "tier_name": t.tier_name,
                        "since": _t(t.since),
                        "expires_at": t.expires_at,
                    }
                    for camp, t in sorted(self.tiers.items())
                },
            },
            "gift_cards": {
                gid: {
                    "campaign_id": g.campaign_id,
                    "code": g.code,
                    "balance": g.balance,
                    "total": g.total,
                    "updated_at": _t(g.updated_at),
                    "updated_by": g.updated_by,
                }
                for gid, g in sorted(self.gift_cards.items())
            },
            "segments": {
                sid: {"name": s.name, "entered_at": _t(s.entered_at)}
                for sid, s in sorted(self.segments.items())
            },
            "orders": {
                oid: {
                    "status": o.status,
                    "source_id": o.source_id,
                    "amount": o.amount,
                    "total_amount": o.total_amount,
                    "updated_at": _t(o.updated_at),
                }
                for oid, o in sorted(self.orders.items())
            },
            "redemptions": {
                "succeeded": self.redemptions.succeeded,
                "failed": self.redemptions.failed,
                "rollback_succeeded": self.redemptions.rollback_succeeded,
                "rollback_failed": self.redemptions.rollback_failed,
            },
            "reward_redemptions": {
                rid: {"state": r.state, "reward_id": r.reward_id, "updated_at": _t(r.updated_at)}
                for rid, r in sorted(self.reward_redemptions.items())
            },
            "referrals": {"referred_by": dict(sorted(self.referred_by.items()))},
            "vouchers": {
                vid: {
                    "code": v.code,
                    "campaign_id": v.campaign_id,
                    "type": v.type,
                    "roles": list(v.roles),
                    "published_at": _t(v.published_at),
                    "deleted_at": _t(v.deleted_at),
                }
                for vid, v in sorted(self.vouchers.items())
            },
            "messaging": {
                ch: {
                    "status": m.status,
                    "at": _t(m.at),
                    "sent": m.sent,
                    "failed": m.failed,
                    "recovered": m.recovered,
                }
                for ch, m in sorted(self.messaging.items())
            },
            "custom_events": {
                name: {"count": e.count, "last_at": _t(e.last_at)}
                for name, e in sorted(self.custom_events.items())
            },
            "validations": {
                "succeeded": self.validations.succeeded,
                "failed": self.validations.failed,
            },
            "activities": {
                "count": a.count,
                "first_at": _t(a.first_at),
                "last_at": _t(a.last_at),
                "last_id": a.last_id,
                "unrecognized": a.unrecognized,
            },
            "gaps": [
                {
                    "card_id": g.card_id,
                    "kind": g.kind,
                    "activity_id": g.activity_id,
                    "at": _t(g.at),
                    "previous_activity_id": g.previous_activity_id,
                    "previous_balance": g.previous_balance,
                    "delta": g.delta,
                    "balance": g.balance,
                    "missing": g.missing,
                }
                for g in self.gaps
            ],
        }

    @classmethod
    def from_json(cls, j: Json) -> CustomerState:
        """Inverse of `to_json`: checkpoints and read-model rows come back through here."""
        p = j["profile"]
        a = j["activities"]
        return cls(
            customer_id=j["customer_id"],
            as_of=_pt(j.get("as_of")),
            known_at=_pt(j.get("known_at")),
            profile=Profile(
                status=p["status"],
                source_id=p["source_id"],
                name=p["name"],
                email=p["email"],
                phone=p["phone"],
                metadata=p["metadata"],
                created_at=_pt(p["created_at"]),
                updated_at=_pt(p["updated_at"]),
                deleted_at=_pt(p["deleted_at"]),
                confirmed_at=_pt(p["confirmed_at"]),
            ),
            cards={
                cid: LoyaltyCard(
                    campaign_id=c["campaign_id"],
                    code=c["code"],
                    balance=c["balance"],
                    total=c["total"],
                    pending_points=c["pending_points"],
                    expired_points=c["expired_points"],
                    next_expiration_date=c["next_expiration_date"],
                    next_expiration_points=c["next_expiration_points"],
                    pending={
                        pid: PendingEntry(e["points"], e["activates_at"], e["order_id"])
                        for pid, e in c["pending"].items()
                    },
                    updated_at=_pt(c["updated_at"]),
                    updated_by=c.get("updated_by"),
                )
                for cid, c in j["loyalty"]["cards"].items()
            },
            tiers={
                camp: Tier(t["tier_id"], t["tier_name"], _req(t["since"]), t["expires_at"])
                for camp, t in j["loyalty"]["tiers"].items()
            },
            gift_cards={
                gid: GiftCard(
                    g["campaign_id"],
                    g["code"],
                    g["balance"],
                    g["total"],
                    _pt(g["updated_at"]),
                    g.get("updated_by"),
                )
                for gid, g in j["gift_cards"].items()
            },
            segments={
                sid: Segment(s["name"], _req(s["entered_at"])) for sid, s in j["segments"].items()
            },
            orders={
                oid: Order(
                    o["status"],
                    o["source_id"],
                    o["amount"],
                    o["total_amount"],
                    _pt(o["updated_at"]),
                )
                for oid, o in j["orders"].items()
            },
            redemptions=Redemptions(**j["redemptions"]),
            reward_redemptions={
                rid: RewardRedemption(r["state"], r["reward_id"], _req(r["updated_at"]))
                for rid, r in j["reward_redemptions"].items()
            },
            referred_by=dict(j["referrals"]["referred_by"]),
            vouchers={
                vid: Voucher(
                    v["code"],
                    v["campaign_id"],
                    v["type"],
                    list(v["roles"]),
                    _pt(v["published_at"]),
                    _pt(v["deleted_at"]),
                )
                for vid, v in j["vouchers"].items()
            },
            messaging={
                ch: Messaging(m["status"], _req(m["at"]), m["sent"], m["failed"], m["recovered"])
                for ch, m in j["messaging"].items()
            },
            custom_events={
                name: CustomEvent(e["count"], _req(e["last_at"]))
                for name, e in j["custom_events"].items()
            },
            validations=Validations(**j["validations"]),
            activities=Activities(
                a["count"], _pt(a["first_at"]), _pt(a["last_at"]), a["last_id"], a["unrecognized"]
            ),
            gaps=[
                Gap(
                    g["card_id"],
                    g["kind"],
                    g["activity_id"],
                    _req(g["at"]),
                    g["previous_activity_id"],
                    g["previous_balance"],
                    g["delta"],
                    g["balance"],
                )
                for g in j.get("gaps", [])
            ],
        )


def _req(value: Any) -> datetime:
    return parse_time(value, "time")
