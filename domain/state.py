"""Customer state (SEMANTICS §3): its classes, declared once.

Each class below declares its fields in order, with their types; its public JSON
(`to_json`, `from_json`), its copy and the stored forms (`custate.adapters.codecs`) are
derived from that declaration (`custate.domain.shape`), so a new field is one line here.

The fold mutates one working `CustomerState` in place for speed; nothing outside the
fold sees it half-built. The maps that grow with a history (orders, vouchers, reward
redemptions, segments, pending points) are the exception: the fold replaces their entries
and never changes one in place, so `CustomerState.copy` can share them, and a decoded
checkpoint can be folded on many times without being decoded again. Times are kept as
aware datetimes and turned into ISO strings only in `to_json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import msgspec

from custate.domain import shape
from custate.domain.shape import Json

__all__ = [
    "Activities",
    "CustomEvent",
    "CustomerState",
    "Gap",
    "GiftCard",
    "Json",
    "LoyaltyCard",
    "Messaging",
    "Order",
    "PendingEntry",
    "Profile",
    "Redemptions",
    "RewardRedemption",
    "Segment",
    "Tier",
    "Validations",
    "Voucher",
]


class _Shared(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An entry of a map that grows with the history. The fold replaces these and never
    changes one in place, so copies of a state and cached checkpoints share them; and they
    hold plain values only, so the cyclic garbage collector need not track them
    (`gc=False`): a cache of long histories' checkpoints is hundreds of thousands of them,
    and walking those made the slowest point-in-time answers ten times slower.
    `frozen`: a change is a new entry (`msgspec.structs.replace`), so nobody, a caller
    holding a returned state included, can change one that others share. `array_like`:
    their stored form (`adapters.codecs.state`) is an array in field order, which msgspec
    writes and reads without a line of Python per entry."""

    def to_json(self) -> Json:
        return shape.render(self)


class _Own:
    """An object of the state that the fold changes in place (a card's balance, the
    activity counters): a copy of the state copies it (`CustomerState.copy`). A slotted
    dataclass, not a Struct: the fold sets its fields in its hot loop, and a Struct's
    attribute assignment costs twice a slot's. Its stored form is an array of its fields
    in order all the same (`adapters.codecs.state`)."""

    __slots__ = ()

    def to_json(self) -> Json:
        return shape.render(self)


@dataclass(slots=True)
class Profile(_Own):
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


class PendingEntry(_Shared, frozen=True):
    points: int | None
    activates_at: str | None
    order_id: str | None


@dataclass(slots=True)
class LoyaltyCard(_Own):
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
class GiftCard(_Own):
    campaign_id: str | None = None
    code: str | None = None
    balance: int | None = None
    total: int | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


@dataclass(slots=True)
class Tier(_Own):
    tier_id: str | None
    tier_name: str | None
    since: datetime
    expires_at: str | None


class Segment(_Shared, frozen=True):
    name: str | None
    entered_at: datetime


class Order(_Shared, frozen=True):
    status: str | None = None
    source_id: str | None = None
    amount: int | None = None
    total_amount: int | None = None
    updated_at: datetime | None = None


@dataclass(slots=True)
class Redemptions(_Own):
    succeeded: int = 0
    failed: int = 0
    rollback_succeeded: int = 0
    rollback_failed: int = 0


class RewardRedemption(_Shared, frozen=True):
    state: str
    reward_id: str | None
    updated_at: datetime


class Voucher(_Shared, frozen=True):
    code: str | None = None
    campaign_id: str | None = None
    type: str | None = None
    roles: list[str] = []
    published_at: datetime | None = None
    deleted_at: datetime | None = None


@dataclass(slots=True)
class Messaging(_Own):
    status: str
    at: datetime
    sent: int = 0
    failed: int = 0
    recovered: int = 0


@dataclass(slots=True)
class CustomEvent(_Own):
    count: int
    last_at: datetime


@dataclass(slots=True)
class Validations(_Own):
    succeeded: int = 0
    failed: int = 0


@dataclass(slots=True)
class Activities(_Own):
    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    last_id: str | None = None
    unrecognized: int = 0


@dataclass(frozen=True, slots=True)
class Gap:
    """A balance-continuity break: previous balance plus this activity's delta is not the
    balance it reports, so an activity between the two is missing upstream.

    A frozen dataclass, not a Struct: `projections.audit.CardGap` extends it as one. Its
    stored form is an array in field order all the same (`row`)."""

    card_id: str
    kind: str  # "loyalty_card" | "gift_card"
    activity_id: str
    at: datetime
    previous_activity_id: str | None
    previous_balance: int
    delta: int
    balance: int

    json_computed: ClassVar[tuple[str, ...]] = ("missing",)

    @property
    def missing(self) -> int:
        return self.balance - (self.previous_balance + self.delta)

    def row(self) -> tuple[str, str, str, datetime, str | None, int, int, int]:
        """The fields in order: the stored form (`adapters.codecs.state`), `Gap(*row)`."""
        return _gap_row(self)

    def to_json(self) -> Json:
        return _render_gap(self)


class CustomerState(msgspec.Struct):
    """One customer's state. The stored form's top-level names are these fields' names, in
    this order; the public JSON groups some of them (`json_layout`)."""

    customer_id: str
    as_of: datetime | None = None
    known_at: datetime | None = None
    profile: Profile = msgspec.field(default_factory=Profile)
    cards: dict[str, LoyaltyCard] = {}
    tiers: dict[str, Tier] = {}
    gift_cards: dict[str, GiftCard] = {}
    segments: dict[str, Segment] = {}
    orders: dict[str, Order] = {}
    redemptions: Redemptions = msgspec.field(default_factory=Redemptions)
    reward_redemptions: dict[str, RewardRedemption] = {}
    referred_by: dict[str, str] = {}
    vouchers: dict[str, Voucher] = {}
    messaging: dict[str, Messaging] = {}
    custom_events: dict[str, CustomEvent] = {}
    validations: Validations = msgspec.field(default_factory=Validations)
    activities: Activities = msgspec.field(default_factory=Activities)
    gaps: list[Gap] = []

    # The public JSON, in order: (dotted path, field or computed attribute).
    json_layout: ClassVar[tuple[tuple[str, str], ...]] = (
        ("customer_id", "customer_id"),
        ("as_of", "as_of"),
        ("known_at", "known_at"),
        ("profile", "profile"),
        ("loyalty.points", "points"),
        ("loyalty.cards", "cards"),
        ("loyalty.tiers", "tiers"),
        ("gift_cards", "gift_cards"),
        ("segments", "segments"),
        ("orders", "orders"),
        ("redemptions", "redemptions"),
        ("reward_redemptions", "reward_redemptions"),
        ("referrals.referred_by", "referred_by"),
        ("vouchers", "vouchers"),
        ("messaging", "messaging"),
        ("custom_events", "custom_events"),
        ("validations", "validations"),
        ("activities", "activities"),
        ("gaps", "gaps"),
    )

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
        return _copy_state(self)

    def to_json(self) -> Json:
        return _render_state(self)

    @classmethod
    def from_json(cls, j: Json) -> CustomerState:
        """Inverse of `to_json`: checkpoints and read-model rows come back through here."""
        return _read_state(j)


_gap_row = shape.getter(Gap)
_render_gap = shape.renderer(Gap)
_copy_state = shape.copier(CustomerState)
_render_state = shape.renderer(CustomerState)
_read_state = shape.reader(CustomerState)
