"""A compact stored form of `CustomerState`, for checkpoints and the read model's rows.

`CustomerState.to_json` is the public, self-describing form. Stored states are read far
more often than anyone looks at them (a checkpoint for every point-in-time answer, a state
for every late activity), and a long history holds thousands of orders and vouchers, so
this form keeps each entry as an array in field order, written and read typed by msgspec
(times included, and the entries that grow with a history are array-like Structs, built
in C): a heavy state loads about ten times faster than through `from_json`.

It is still JSON, with the top-level names of the public form (`"gaps":[...]` included, so
a stored state can be searched for gaps as text), and `"format"` names it:

- `FORMAT` (1): the whole state. `load` reads it, and the public form.
- `DELTA_FORMAT` (2): a checkpoint stored against another (`Base`): its large maps hold
  only what differs. `load_delta`, then `rebase`.
- `APART_FORMAT` (3): a read model's row whose large maps are stored in pages
  (`dump_page`). `load_row`, then `load_map`.

`load` refuses the other two rather than hand out a partial state."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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
# A state stored against a `Base`: a number of its own, so that a reader that knows only
# `FORMAT` rejects it rather than read its few entries as the whole maps.
DELTA_FORMAT = 2
# A state row whose large maps are stored apart, in pages (`null` here; `dump_text(apart=)`,
# `load_row`): a number of its own, for the same reason.
APART_FORMAT = 3

# The maps that grow with a history: a stored state may hold only what changed in them
# since another stored state (`Base`), or leave them to be stored in pages.
LARGE_MAPS = ("orders", "vouchers", "reward_redemptions")


@dataclass(frozen=True, slots=True)
class Base:
    """A state stored in full under `key`, that states stored later may be written against:
    their large maps then hold only the entries that differ from its (`dump_text(base=)`).
    A late activity's re-fold starts from a checkpoint and changes a few of a long
    history's thousands of orders; writing each checkpoint it makes in full (233 KB for a
    10k-activity customer) was most of absorbing the activity.

    A re-fold may start from a checkpoint that is itself stored against a base: what it
    writes is then stored against that same base (never a chain, so a read is one base
    deep), as what differs from its start plus what its start held apart from the base
    (`changed`, `removed`). `maps` are copies of the start's large maps, taken before the
    fold went on from it."""

    key: str  # where the state it is written against is stored in full
    maps: dict[str, dict[str, Any]]
    size: int  # that state's stored size
    changed: dict[str, set[str]]  # entries where the start differs from that state
    removed: dict[str, list[str]]  # and those it lacks

    @classmethod
    def of(cls, key: str, s: CustomerState, stored: bytes | str, size: int) -> Base:
        """`s`: the state stored as `stored` under `key`, before anything is folded on it."""
        maps = {name: dict(getattr(s, name)) for name in LARGE_MAPS}
        if not is_delta(stored):
            return cls(key, maps, size, {}, {})
        partial, delta = load_delta(stored)  # a few KB
        assert delta is not None
        changed = {name: set(getattr(partial, name)) for name in LARGE_MAPS}
        return cls(delta.base, maps, size, changed, delta.removed)


@dataclass(frozen=True, slots=True)
class Delta:
    """What a state stored against a `Base` needs from it: the base's key, and the entries
    of its large maps that are gone."""

    base: str
    removed: dict[str, list[str]]


def dump(s: CustomerState) -> bytes:
    return _encode(_compact(s))


def is_delta(stored: bytes | str) -> bool:
    """Whether `stored` was written against a `Base` (and `load_delta` must read it)."""
    head = _DELTA_HEAD if isinstance(stored, str) else _DELTA_HEAD_BYTES
    return stored.startswith(head)  # type: ignore[arg-type]


_scratch = threading.local()  # `buffer`: this thread's
SCRATCH_BYTES = 4 << 20  # a larger buffer, an outlier's, is not kept


def dump_text(s: CustomerState, base: Base | None = None, apart: Iterable[str] = ()) -> str:
    """`dump` as text, as the stores take it, encoded into this thread's scratch buffer: a
    long history's state is hundreds of KB, and growing a fresh buffer for each, then
    copying it into text, took longer than encoding it. `base`: write the large maps as
    what differs from the base's (read back with `load_delta` and `rebase`). `apart`: large
    maps the caller stores in pages (`dump_page`), left out (read back with `load_row`,
    then `load_map`)."""
    buffer: bytearray | None = getattr(_scratch, "buffer", None)
    if buffer is None:
        buffer = _scratch.buffer = bytearray()
    compact = _compact(s)
    if base is not None:
        compact = _against(compact, base)
    else:
        for name in apart:
            compact["format"] = APART_FORMAT
            compact[name] = None
    _encoder.encode_into(compact, buffer)
    text = buffer.decode()
    if len(buffer) > SCRATCH_BYTES:
        _scratch.buffer = None
    return text


# A large map stored apart is stored in pages, by a stable hash of the entry's key: a write
# rewrites only the pages of the entries that changed (a few KB), and a read is a few dozen
# rows, joined into one JSON object and parsed in one pass (an entry a row, 2,474 rows for
# a 10k history, made reading its state three times slower).
ENTRY_PAGES = 64


def page_of(key: str) -> int:
    return zlib.crc32(key.encode()) % ENTRY_PAGES


def dump_page(entries: Mapping[str, Any]) -> str:
    """Entries of a large map (at least one) as the members of a JSON object."""
    return _encode(entries)[1:-1].decode()


def _compact(s: CustomerState) -> dict[str, Any]:
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


def _against(compact: dict[str, Any], base: Base) -> dict[str, Any]:
    removed: dict[str, list[str]] = {}
    out = {"format": DELTA_FORMAT, "base": base.key, **compact}  # `is_delta` reads the head
    out["format"] = DELTA_FORMAT
    for name in LARGE_MAPS:
        now: dict[str, Any] = compact[name]
        was = base.maps[name]
        # The fold replaces entries and never changes one, and the re-fold's state shares
        # the base's: by identity is enough (an equal copy is only written again).
        changed = {k: v for k, v in now.items() if was.get(k) is not v}
        kept = len(now) - sum(1 for k in changed if k not in was)
        gone = [k for k in was if k not in now] if kept < len(was) else []
        for k in base.changed.get(name, ()):
            if k in now:
                changed.setdefault(k, now[k])
        gone += [k for k in base.removed.get(name, ()) if k not in now]
        out[name] = changed
        if gone:
            removed[name] = gone
    out["removed"] = removed
    return out


def _time_subclass(value: object) -> str:
    # msgspec encodes `datetime` itself, but not subclasses (freezegun's FakeDatetime).
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Optional time, text, number: the compact form's cells.
_T = datetime | None
_S = str | None
_N = int | None


class _Stored(msgspec.Struct):
    """The compact form, typed: msgspec parses it and its times in one pass."""

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
    base: str | None = None  # stored against this key's state (`Base`)
    removed: dict[str, list[str]] = msgspec.field(default_factory=dict)


_DELTA_HEAD = f'{{"format":{DELTA_FORMAT},"base":'
_DELTA_HEAD_BYTES = _DELTA_HEAD.encode()
_decode = msgspec.json.Decoder(_Stored).decode
_encoder = msgspec.json.Encoder(enc_hook=_time_subclass)
_encode = _encoder.encode


def load(stored: bytes | str) -> CustomerState:
    """A state stored in full (either form)."""
    state, j = _read(stored)
    if j is not None and j.format != FORMAT:
        raise ValueError(f"a stored state of format {j.format}: see load_delta and load_row")
    return state


def load_delta(stored: bytes | str) -> tuple[CustomerState, Delta | None]:
    """A stored checkpoint, and, if it was stored against a `Base`, what `rebase` needs:
    the state's large maps then hold only what differs from the base's."""
    state, j = _read(stored)
    if j is None or j.format == FORMAT:
        return state, None
    if j.format == DELTA_FORMAT and j.base is not None:
        return state, Delta(j.base, j.removed)
    raise ValueError(f"not a checkpoint: a stored state of format {j.format}")


def load_row(stored: bytes | str) -> tuple[CustomerState, tuple[str, ...]]:
    """A stored state row, with the large maps it left to be stored in pages empty, and
    their names (see `dump_text(apart=)`)."""
    state, j = _read(stored)
    if j is None or j.format == FORMAT:
        return state, ()
    if j.format == APART_FORMAT:
        return state, tuple(name for name in LARGE_MAPS if getattr(j, name) is None)
    raise ValueError(f"not a state row: a stored state of format {j.format}")


_MAPS: dict[str, Callable[[str], dict[str, Any]]] = {
    "orders": msgspec.json.Decoder(dict[str, Order]).decode,
    "vouchers": msgspec.json.Decoder(dict[str, Voucher]).decode,
    "reward_redemptions": msgspec.json.Decoder(dict[str, RewardRedemption]).decode,
}


def load_map(name: str, pages: Iterable[str]) -> dict[str, Any]:
    """The large map `name` from its pages as `dump_page` wrote them, in one pass."""
    return _MAPS[name]("{" + ",".join(pages) + "}")


def _read(stored: bytes | str) -> tuple[CustomerState, _Stored | None]:
    try:
        j = _decode(stored)
    except msgspec.ValidationError:
        return CustomerState.from_json(orjson.loads(stored)), None  # the public form
    if j.format not in (FORMAT, DELTA_FORMAT, APART_FORMAT):
        return CustomerState.from_json(orjson.loads(stored)), None
    return _state(j), j


def rebase(partial: CustomerState, delta: Delta, base: CustomerState) -> CustomerState:
    """`partial` (from `load_delta`) made whole with the large maps of `base`, the state
    stored under `delta.base`."""
    for name in LARGE_MAPS:
        entries = dict(getattr(base, name))
        entries.update(getattr(partial, name))
        for k in delta.removed.get(name, ()):
            entries.pop(k, None)  # gone since the re-fold's start, which had it and the base not
        setattr(partial, name, entries)
    return partial


def _state(j: _Stored) -> CustomerState:
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
