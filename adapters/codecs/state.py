"""The stored form of a whole `CustomerState` (format 1), for checkpoints and the read
model's rows, and the typed reader that the delta and paged forms share.

`CustomerState.to_json` is the public, self-describing form. This one keeps each entry as
an array in field order and is written and read typed by msgspec, times included. It is
still JSON with the public form's top-level names (`"gaps":[...]` included, so a stored
state can be searched for gaps as text), and `"format"` names it:

- `FORMAT` (1): the whole state (`dump`, `dump_text`, `load`; `load` also reads the
  public form).
- `codecs.delta.DELTA_FORMAT` (2): a checkpoint stored against another.
- `codecs.paged.PAGED_FORMAT` (3): a row whose large maps are stored in pages.

`load` refuses the other two rather than hand out a partial state. Why this form, and
its figures: docs/DECISIONS.md (Read model)."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import msgspec
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
# The format numbers of the other two forms, known here so that the one reader below can
# tell them apart (their codecs: `codecs.delta`, `codecs.paged`).
DELTA_FORMAT = 2
PAGED_FORMAT = 3

# The maps that grow with a history: a stored state may hold only what changed in them
# since another stored state (`codecs.delta`), or leave them to pages (`codecs.paged`).
LARGE_MAPS = ("orders", "vouchers", "reward_redemptions")


def dump(s: CustomerState) -> bytes:
    """The whole state in its stored form."""
    return encode(compact(s))


def dump_text(s: CustomerState) -> str:
    """`dump` as text, as the stores take it."""
    return encode_text(compact(s))


_scratch = threading.local()  # `buffer`: this thread's
SCRATCH_BYTES = 4 << 20  # a larger buffer, an outlier's, is not kept


def encode_text(compact_form: dict[str, Any]) -> str:
    """A compact form (`compact`, possibly reshaped by the delta or paged codec) as JSON
    text, encoded into this thread's scratch buffer (docs/DECISIONS.md, Read model)."""
    buffer: bytearray | None = getattr(_scratch, "buffer", None)
    if buffer is None:
        buffer = _scratch.buffer = bytearray()
    _encoder.encode_into(compact_form, buffer)
    text = buffer.decode()
    if len(buffer) > SCRATCH_BYTES:
        _scratch.buffer = None
    return text


def compact(s: CustomerState) -> dict[str, Any]:
    p = s.profile
    a = s.activities
    r = s.redemptions
    return {
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
                c.pending,
                c.updated_at,
                c.updated_by,
            ]
            for k, c in s.cards.items()
        },
        "tiers": {k: [t.tier_id, t.tier_name, t.since, t.expires_at] for k, t in s.tiers.items()},
        "gift_cards": {
            k: [g.campaign_id, g.code, g.balance, g.total, g.updated_at, g.updated_by]
            for k, g in s.gift_cards.items()
        },
        "segments": s.segments,
        "orders": s.orders,
        "redemptions": [r.succeeded, r.failed, r.rollback_succeeded, r.rollback_failed],
        "reward_redemptions": s.reward_redemptions,
        "referred_by": s.referred_by,
        "vouchers": s.vouchers,
        "messaging": {
            k: [m.status, m.at, m.sent, m.failed, m.recovered] for k, m in s.messaging.items()
        },
        "custom_events": {k: [e.count, e.last_at] for k, e in s.custom_events.items()},
        "validations": [s.validations.succeeded, s.validations.failed],
        "activities": [a.count, a.first_at, a.last_at, a.last_id, a.unrecognized],
        "gaps": [g.row() for g in s.gaps],
    }


def _time_subclass(value: object) -> str:
    # msgspec encodes `datetime` itself, but not subclasses (freezegun's FakeDatetime).
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Optional time, text, number: the compact form's cells.
_T = datetime | None
_S = str | None
_N = int | None


class Stored(msgspec.Struct):
    """The compact form of any of the three formats, typed: msgspec parses it and its times
    in one pass. A large map is None where the paged form left it to pages."""

    format: int
    customer_id: str
    as_of: _T
    known_at: _T
    profile: tuple[str, _S, _S, _S, _S, dict[str, Any] | None, _T, _T, _T, _T]
    cards: dict[str, tuple[_S, _S, _N, _N, int, int, _S, _N, dict[str, PendingEntry], _T, _S]]
    tiers: dict[str, tuple[_S, _S, datetime, _S]]
    gift_cards: dict[str, tuple[_S, _S, _N, _N, _T, _S]]
    segments: dict[str, Segment]
    orders: dict[str, Order] | None  # None: stored apart
    redemptions: tuple[int, int, int, int]
    reward_redemptions: dict[str, RewardRedemption] | None
    referred_by: dict[str, str]
    vouchers: dict[str, Voucher] | None
    messaging: dict[str, tuple[str, datetime, int, int, int]]
    custom_events: dict[str, tuple[int, datetime]]
    validations: tuple[int, int]
    activities: tuple[int, _T, _T, _S, int]
    gaps: list[tuple[str, str, str, datetime, _S, int, int, int]]
    base: str | None = None  # the delta form: stored against this key's state
    removed: dict[str, list[str]] = msgspec.field(default_factory=dict)


_decode = msgspec.json.Decoder(Stored).decode
_encoder = msgspec.json.Encoder(enc_hook=_time_subclass)
encode = _encoder.encode


def load(stored: bytes | str) -> CustomerState:
    """A state stored in full (either form)."""
    state, j = read(stored)
    if j is not None and j.format != FORMAT:
        raise ValueError(f"a stored state of format {j.format}: see codecs.delta and codecs.paged")
    return state


def read(stored: bytes | str) -> tuple[CustomerState, Stored | None]:
    """The state `stored` holds, and its typed compact form (None for the public form)."""
    try:
        j = _decode(stored)
    except msgspec.ValidationError:
        return CustomerState.from_json(orjson.loads(stored)), None  # the public form
    if j.format not in (FORMAT, DELTA_FORMAT, PAGED_FORMAT):
        return CustomerState.from_json(orjson.loads(stored)), None
    return _state(j), j


def _state(j: Stored) -> CustomerState:
    return CustomerState(
        customer_id=j.customer_id,
        as_of=j.as_of,
        known_at=j.known_at,
        profile=Profile(*j.profile),
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
                c[8],
                c[9],
                c[10],
            )
            for k, c in j.cards.items()
        },
        tiers={k: Tier(*x) for k, x in j.tiers.items()},
        gift_cards={k: GiftCard(*g) for k, g in j.gift_cards.items()},
        segments=j.segments,
        orders=j.orders if j.orders is not None else {},
        redemptions=Redemptions(*j.redemptions),
        reward_redemptions=j.reward_redemptions if j.reward_redemptions is not None else {},
        referred_by=j.referred_by,
        vouchers=j.vouchers if j.vouchers is not None else {},
        messaging={k: Messaging(*m) for k, m in j.messaging.items()},
        custom_events={k: CustomEvent(*e) for k, e in j.custom_events.items()},
        validations=Validations(*j.validations),
        activities=Activities(*j.activities),
        gaps=[Gap(*g) for g in j.gaps],
    )
