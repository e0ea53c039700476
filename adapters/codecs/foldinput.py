"""An activity's fold input: what the fold reads of a stored activity (its typed views) and
its record time, in the compact form the read model keeps beside its fold key.

Why: an audit folds a customer's whole history, and a stored activity is the whole
Voucherify record, 2.3 KB of JSON on average, of which the fold reads a fifth. Reading,
decoding and freeing a 10k history's events took 55 ms, a third of a library `history`;
this form is a fifth of the bytes and takes 27 ms (docs/DECISIONS.md, Audit). The event
store stays the record: the raw payload of an activity read from here is loaded from it
on first use, and a row without this form (written before it existed) is read from it
whole.

The form: a msgpack array `[1, id, type, created_at, recorded_at, group_id, payload]`, the
payload a msgpack map of the views' fields that are set (`View` omits defaults)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from custate.domain import Activity
from custate.domain.activity import LazyData
from custate.domain.fold import PROFILE_FIELD_TYPES
from custate.domain.payload import FullPayload, Payload

FORMAT = 1


class _Input(msgspec.Struct, array_like=True, frozen=True, gc=False):
    format: int
    id: str
    type: str
    created_at: datetime
    recorded_at: datetime
    group_id: str | None
    payload: Payload


class _FullInput(_Input, frozen=True):
    payload: FullPayload


class _Format(msgspec.Struct, array_like=True, frozen=True):
    format: int


_encoder = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder(_Input).decode
_decode_full = msgspec.msgpack.Decoder(_FullInput).decode
_decode_format = msgspec.msgpack.Decoder(_Format).decode


def dump(activity: Activity, recorded_at: datetime) -> bytes | None:
    """The fold input of `activity`, or None when msgpack cannot hold it (an integer beyond
    64 bits in a customer's metadata): the reader then reads it from the event store."""
    try:
        return _encoder.encode(
            _Input(
                FORMAT,
                activity.id,
                activity.type,
                activity.created_at,
                recorded_at,
                activity.group_id,
                activity.payload,
            )
        )
    except (OverflowError, TypeError, msgspec.EncodeError):
        return None


def load(blob: bytes, customer_id: str, raw: LazyData) -> tuple[Activity, datetime] | None:
    """The activity (its raw payload `raw`, read on first use) and its record time, or None
    when `blob` is of a format this code does not know (the caller reads the event store)."""
    try:
        i = _decode(blob)
    except msgspec.ValidationError:
        if _format(blob) == FORMAT:
            raise  # of this format, yet not decodable: not ours to hide
        return None
    if i.format != FORMAT:
        return None
    if i.type in PROFILE_FIELD_TYPES:
        i = _decode_full(blob)
    activity = Activity(
        id=i.id,
        type=i.type,
        created_at=i.created_at,
        customer_id=customer_id,
        data=raw,
        payload=i.payload,
        group_id=i.group_id,
    )
    return activity, i.recorded_at


def _format(blob: bytes) -> int | None:
    try:
        return _decode_format(blob).format
    except msgspec.DecodeError:
        return None
