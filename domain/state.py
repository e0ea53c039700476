"""Customer state (SEMANTICS §3) and its stable JSON form.

The fold mutates one working `CustomerState` in place for speed; nothing outside the
fold sees it half-built. The maps that grow with a history (orders, vouchers, reward
redemptions, segments, pending points) are the exception: the fold replaces their entries
and never changes one in place, so `CustomerState.copy` can share them, and a decoded
checkpoint can be folded on many times without being decoded again. Times are kept as
aware datetimes and turned into ISO strings only in `to_json`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any, Protocol, TypeVar

import msgspec

from custate.domain.activity import format_time, parse_time

Json = dict[str, Any]


def _t(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


class _Entry(Protocol):
    def to_json(self) -> Json: ...


def entries_json(entries: Mapping[str, _Entry]) -> Json:
    """A map of state entries in its JSON form: keys sorted, so the JSON is stable."""
    return {k: v.to_json() for k, v in sorted(entries.items())}


def _pt(value: Any) -> datetime | None:
    return None if value is None else parse_time(value, "time")


class _Shared(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An entry of a map that grows with the history. The fold replaces these and never
    changes one in place, so copies of a state and cached checkpoints share them; and they
    hold plain values only, so the cyclic garbage collector need not track them
    (`gc=False`): a cache of long histories' checkpoints is hundreds of thousands of them,
    and walking those made the slowest point-in-time answers ten times slower.
    `frozen`: a change is a new entry (`msgspec.structs.replace`), so nobody, a caller
    holding a returned state included, can change one that others share. `array_like`:
    their stored form (`adapters.codecs.state`) is an array in field order, which msgspec writes
    and reads without a line of Python per entry."""


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

    def to_json(self) -> Json:
        return {
            "status": self.status,
            "source_id": self.source_id,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "metadata": self.metadata,
            "created_at": _t(self.created_at),
            "updated_at": _t(self.updated_at),
            "deleted_at": _t(self.deleted_at),
            "confirmed_at": _t(self.confirmed_at),
        }


class PendingEntry(_Shared, frozen=True):
    points: int | None
    activates_at: str | None
    order_id: str | None

    def to_json(self) -> Json:
        return {"points": self.points, "activates_at": self.activates_at, "order_id": self.order_id}


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

    def to_json(self, pending: bool = True) -> Json:
        """`pending=False`: without the pending entries, which the audit diffs one by one
        (a card can hold hundreds, and most activities change none of them)."""
        return {
            "campaign_id": self.campaign_id,
            "code": self.code,
            "balance": self.balance,
            "total": self.total,
            "pending_points": self.pending_points,
            "expired_points": self.expired_points,
            "next_expiration_date": self.next_expiration_date,
            "next_expiration_points": self.next_expiration_points,
            **({"pending": entries_json(self.pending)} if pending else {}),
            "updated_at": _t(self.updated_at),
            "updated_by": self.updated_by,
        }


@dataclass(slots=True)
class GiftCard:
    campaign_id: str | None = None
    code: str | None = None
    balance: int | None = None
    total: int | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None

    def to_json(self) -> Json:
        return {
            "campaign_id": self.campaign_id,
            "code": self.code,
            "balance": self.balance,
            "total": self.total,
            "updated_at": _t(self.updated_at),
            "updated_by": self.updated_by,
        }


@dataclass(slots=True)
class Tier:
    tier_id: str | None
    tier_name: str | None
    since: datetime
    expires_at: str | None

    def to_json(self) -> Json:
        return {
            "tier_id": self.tier_id,
            "tier_name": self.tier_name,
            "since": _t(self.since),
            "expires_at": self.expires_at,
        }


class Segment(_Shared, frozen=True):
    name: str | None
    entered_at: datetime

    def to_json(self) -> Json:
        return {"name": self.name, "entered_at": _t(self.entered_at)}


class Order(_Shared, frozen=True):
    status: str | None = None
    source_id: str | None = None
    amount: int | None = None
    total_amount: int | None = None
    updated_at: datetime | None = None

    def to_json(self) -> Json:
        return {
            "status": self.status,
            "source_id": self.source_id,
            "amount": self.amount,
            "total_amount": self.total_amount,
            "updated_at": _t(self.updated_at),
        }


@dataclass(slots=True)
class Redemptions:
    succeeded: int = 0
    failed: int = 0
    rollback_succeeded: int = 0
    rollback_failed: int = 0

    def to_json(self) -> Json:
        return {
            "succeeded": self.succeeded,
            "failed": self.failed,
            "rollback_succeeded": self.rollback_succeeded,
            "rollback_failed": self.rollback_failed,
        }


class RewardRedemption(_Shared, frozen=True):
    state: str
    reward_id: str | None
    updated_at: datetime

    def to_json(self) -> Json:
        return {"state": self.state, "reward_id": self.reward_id, "updated_at": _t(self.updated_at)}


class Voucher(_Shared, frozen=True):
    code: str | None = None
    campaign_id: str | None = None
    type: str | None = None
    roles: list[str] = msgspec.field(default_factory=list)
    published_at: datetime | None = None
    deleted_at: datetime | None = None

    def to_json(self) -> Json:
        return {
            "code": self.code,
            "campaign_id": self.campaign_id,
            "type": self.type,
            "roles": list(self.roles),
            "published_at": _t(self.published_at),
            "deleted_at": _t(self.deleted_at),
        }


@dataclass(slots=True)
class Messaging:
    status: str
    at: datetime
    sent: int = 0
    failed: int = 0
    recovered: int = 0

    def to_json(self) -> Json:
        return {
            "status": self.status,
            "at": _t(self.at),
            "sent": self.sent,
            "failed": self.failed,
            "recovered": self.recovered,
        }


@dataclass(slots=True)
class CustomEvent:
    count: int
    last_at: datetime

    def to_json(self) -> Json:
        return {"count": self.count, "last_at": _t(self.last_at)}


@dataclass(slots=True)
class Validations:
    succeeded: int = 0
    failed: int = 0

    def to_json(self) -> Json:
        return {"succeeded": self.succeeded, "failed": self.failed}


@dataclass(slots=True)
class Activities:
    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    last_id: str | None = None
    unrecognized: int = 0

    def to_json(self) -> Json:
        return {
            "count": self.count,
            "first_at": _t(self.first_at),
            "last_at": _t(self.last_at),
            "last_id": self.last_id,
            "unrecognized": self.unrecognized,
        }


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

    def row(self) -> tuple[str, str, str, datetime, str | None, int, int, int]:
        """The fields in order: the stored form (`adapters.codecs.state`), `Gap(*row)`."""
        return (
            self.card_id,
            self.kind,
            self.activity_id,
            self.at,
            self.previous_activity_id,
            self.previous_balance,
            self.delta,
            self.balance,
        )

    def to_json(self) -> Json:
        return {
            "card_id": self.card_id,
            "kind": self.kind,
            "activity_id": self.activity_id,
            "at": _t(self.at),
            "previous_activity_id": self.previous_activity_id,
            "previous_balance": self.previous_balance,
            "delta": self.delta,
            "balance": self.balance,
            "missing": self.missing,
        }


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
        # A loop, not `sum` over a generator: an audit asks after every card activity.
        total = 0
        for c in self.cards.values():
            if c.balance:
                total += c.balance
        return total

    def copy(self) -> CustomerState:
        """A state to fold on that leaves this one as it is. The entries that the fold only
        ever replaces are shared (see the module's docstring); the rest, a few objects
        whatever the history's length, are copied."""
        cards = {k: _copy(c) for k, c in self.cards.items()}
        for c in cards.values():
            c.pending = dict(c.pending)
        return CustomerState(
            customer_id=self.customer_id,
            as_of=self.as_of,
            known_at=self.known_at,
            profile=_copy(self.profile),
            cards=cards,
            tiers={k: _copy(t) for k, t in self.tiers.items()},
            gift_cards={k: _copy(g) for k, g in self.gift_cards.items()},
            segments=dict(self.segments),
            orders=dict(self.orders),
            redemptions=_copy(self.redemptions),
            reward_redemptions=dict(self.reward_redemptions),
            referred_by=dict(self.referred_by),
            vouchers=dict(self.vouchers),
            messaging={k: _copy(m) for k, m in self.messaging.items()},
            custom_events={k: _copy(e) for k, e in self.custom_events.items()},
            validations=_copy(self.validations),
            activities=_copy(self.activities),
            gaps=list(self.gaps),
        )

    def to_json(self) -> Json:
        return {
            "customer_id": self.customer_id,
            "as_of": _t(self.as_of),
            "known_at": _t(self.known_at),
            "profile": self.profile.to_json(),
            "loyalty": {
                "points": self.points,
                "cards": entries_json(self.cards),
                "tiers": entries_json(self.tiers),
            },
            "gift_cards": entries_json(self.gift_cards),
            "segments": entries_json(self.segments),
            "orders": entries_json(self.orders),
            "redemptions": self.redemptions.to_json(),
            "reward_redemptions": entries_json(self.reward_redemptions),
            "referrals": {"referred_by": dict(sorted(self.referred_by.items()))},
            "vouchers": entries_json(self.vouchers),
            "messaging": entries_json(self.messaging),
            "custom_events": entries_json(self.custom_events),
            "validations": self.validations.to_json(),
            "activities": self.activities.to_json(),
            "gaps": [g.to_json() for g in self.gaps],
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


_T = TypeVar("_T")
_FIELDS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _copy(obj: _T) -> _T:
    """A shallow copy of one of the dataclasses above, through its constructor: a state's
    copy (every late activity makes two) copied a dozen of them, and `copy.copy`, through
    `__reduce_ex__`, took 1.9 us each against 0.2 us."""
    cls = type(obj)
    fields = _FIELDS.get(cls)
    if fields is None:
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        fields = _FIELDS[cls] = _tuple_of(names)
    return cls(*fields(obj))


def _tuple_of(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    get = attrgetter(*names)
    if len(names) == 1:  # attrgetter of one name returns the value, not a tuple
        return lambda o: (get(o),)
    return get
