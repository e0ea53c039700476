"""One customer activity, parsed and validated at the edge (SEMANTICS §1)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime, time
from typing import Any

import msgspec
import orjson

from custate.domain.activity_types import KNOWN_TYPES, ActivityType, rank
from custate.domain.errors import Error
from custate.domain.payload import CustomerView, FullPayload, Payload, missing_required

FoldKey = tuple[datetime, int, str]
"""Fold order: business time, then `rank` (created < other < deleted), then id. The one
definition of the order; its stored text form (`projections.keys.key_text`) is made from it."""


def fold_key(a: Activity) -> FoldKey:
    """An activity's place in fold order. The rank is looked up, not computed: the sort is a
    fifth of a fold."""
    return (a.created_at, _RANKS.get(a.type, _OTHER_RANK), a.id)


_RANKS: dict[str, int] = {t.value: rank(t.value) for t in ActivityType}
_OTHER_RANK = rank("")  # a type Voucherify added since: neither created nor deleted


class ActivityError(Error, ValueError):
    """A record that is not a valid activity. `field` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Activity(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A msgspec Struct, not a dataclass: a catch-up or an audit builds one per stored
    activity, and a frozen dataclass took a microsecond each, ten times as long. Equality
    is by the record (`payload` is derived from `data`); it holds JSON values only, never
    itself, so the cyclic garbage collector need not track it."""

    id: str
    type: str
    created_at: datetime  # aware, UTC
    customer_id: str
    data: Mapping[str, Any]  # the payload, unwrapped from `data.data` where nested
    payload: Payload
    group_id: str | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Activity):
            return NotImplemented
        return (
            self.id == other.id
            and self.type == other.type
            and self.created_at == other.created_at
            and self.customer_id == other.customer_id
            and self.group_id == other.group_id
            and self.data == other.data
        )

    __hash__ = None  # type: ignore[assignment]  # `data` is a mapping

    def __repr__(self) -> str:
        return (
            f"Activity(id={self.id!r}, type={self.type!r}, created_at={self.created_at!r}, "
            f"customer_id={self.customer_id!r}, group_id={self.group_id!r})"
        )

    @property
    def key(self) -> FoldKey:
        """Its place in fold order (`fold_key`)."""
        return fold_key(self)

    @property
    def recognized(self) -> bool:
        return self.type in KNOWN_TYPES

    def to_record(self) -> dict[str, Any]:
        """The JSON-native form that is stored and that `parse_activity` reads back."""
        return {
            "id": self.id,
            "type": self.type,
            "created_at": format_time(self.created_at),
            "customer_id": self.customer_id,
            "group_id": self.group_id,
            "data": self.data if isinstance(self.data, dict) else dict(self.data),
        }

    def content(self) -> bytes:
        """Canonical JSON of what makes two deliveries of one id the same activity.
        `group_id` is left out: some sources (webhook envelopes) do not carry it."""
        data = self.data
        return orjson.dumps(
            {
                "id": self.id,
                "type": self.type,
                "created_at": format_time(self.created_at),
                "customer_id": self.customer_id,
                "data": data if isinstance(data, dict) else dict(data),
            },
            option=orjson.OPT_SORT_KEYS,
        )


class LazyData(Mapping[str, Any]):
    """A payload read on first use: `load(source)`. Activities read back from the store are
    folded from their typed views alone; their raw payload is wanted only to show or
    re-export them, so it is not built for each of the millions a rebuild reads. `load` is
    a plain function and `source` plain data (the stored bytes), not a closure: one object
    for the garbage collector to track per activity instead of three."""

    __slots__ = ("_load", "_source", "_value")

    def __init__(self, load: Callable[[Any], Mapping[str, Any]], source: Any) -> None:
        self._load: Callable[[Any], Mapping[str, Any]] | None = load
        self._source: Any = source
        self._value: Mapping[str, Any] | None = None

    def _get(self) -> Mapping[str, Any]:
        if self._value is None:
            assert self._load is not None
            self._value = self._load(self._source)
            self._load = self._source = None
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __eq__(self, other: object) -> bool:
        return self._get() == other

    def __repr__(self) -> str:
        return repr(self._get())


_to_builtins = msgspec.to_builtins
# In a tuple, out of reach of freezegun, which rebinds every module's `datetime` to its own.
_PLAIN = (datetime,)


def format_time(t: datetime) -> str:
    """ISO-8601 UTC with microseconds and `Z`: one fixed width, so strings sort as times."""
    u = t if t.tzinfo is UTC else t.astimezone(UTC)
    if u.__class__ is not _PLAIN[0]:  # a subclass (freezegun's, pendulum's): msgspec refuses
        return u.isoformat("T", "microseconds")[:-6] + "Z"
    # msgspec writes RFC 3339 in C, 15 times faster than `isoformat` here (which took most
    # of an audit's time), but leaves out a zero fraction.
    s: str = _to_builtins(u)
    return s if len(s) == 27 else s[:-1] + ".000000Z"


def parse_time(value: object, field: str) -> datetime:
    """An aware date-time, normalised to UTC. A naive one is ambiguous and refused."""
    if isinstance(value, datetime):
        t = value
    elif isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise ActivityError(field, f"not an ISO-8601 date-time: {value!r}") from None
    else:
        raise ActivityError(field, f"expected an ISO-8601 date-time string, got {_kind(value)}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ActivityError(field, f"date-time has no zone (add Z or an offset): {value!r}")
    return t.astimezone(UTC)


def parse_cut(text: str, field: str = "as_of") -> datetime:
    """A cut (as_of T, known_at K): an ISO-8601 date-time with a zone, or a bare date,
    meaning the end of that day in UTC."""
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ActivityError(field, f"not a date or date-time: {text!r}") from None
        return datetime.combine(day, time.max, UTC)
    return parse_time(text, field)


def unwrap(data: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """The current API spec nests the payload as {"data": {...}, "event_source": {...}}."""
    inner = data.get("data")
    if isinstance(inner, dict) and data.keys() <= {"data", "event_source"}:
        return inner, True
    return data, False


def parse_activity(record: object, customer_id: str | None = None) -> Activity:
    """Validate one raw record. `customer_id` is the caller's customer (an API path, a
    webhook's `event.entity_id`), used when the record names none of its own."""
    if not isinstance(record, dict):
        raise ActivityError("<record>", f"expected a JSON object, got {_kind(record)}")
    activity_id = record.get("id")
    if not isinstance(activity_id, str) or not activity_id:
        raise ActivityError("id", "required: a non-empty string")
    activity_type = record.get("type")
    if not isinstance(activity_type, str) or not activity_type:
        raise ActivityError("type", "required: a non-empty string")
    if "created_at" not in record:
        raise ActivityError("created_at", "required")
    created_at = parse_time(record["created_at"], "created_at")
    group_id = record.get("group_id")
    if group_id is not None and not isinstance(group_id, str):
        raise ActivityError("group_id", f"expected a string, got {_kind(group_id)}")
    raw = record.get("data")
    if not isinstance(raw, dict):
        raise ActivityError("data", f"expected a JSON object, got {_kind(raw)}")
    data, nested = unwrap(raw)
    prefix = "data.data" if nested else "data"
    try:
        payload = msgspec.convert(data, FullPayload)
    except msgspec.ValidationError as e:
        if activity_type not in KNOWN_TYPES:
            # An unknown type is accepted and stored (SEMANTICS §1): no effect reads its
            # payload, which may give a familiar key another shape. Keep only the customer.
            payload = _customer_only(data)
        else:
            path, message = _error_path(e)
            raise ActivityError(f"{prefix}{path}", message) from None
    if activity_type in KNOWN_TYPES:
        missing = missing_required(activity_type, payload)
        if missing is not None:
            raise ActivityError(f"{prefix}.{missing}", f"required for {activity_type}")
    customer = _customer_id(record, customer_id, payload)
    return Activity(
        id=activity_id,
        type=activity_type,
        created_at=created_at,
        customer_id=customer,
        data=data,
        payload=payload,
        group_id=group_id,
    )


def _error_path(e: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.balance.points[0]`" as
    (".balance.points.0", "Expected `int`, got `str`")."""
    message, sep, at = str(e).rpartition(" - at `$")
    if not sep:
        return "", str(e)
    return re.sub(r"\[(\d+)\]", r".\1", at.rstrip("`")), message


def _customer_only(data: Mapping[str, Any]) -> FullPayload:
    customer = data.get("customer")
    cid = customer.get("id") if isinstance(customer, dict) else None
    return FullPayload(customer=CustomerView(id=cid)) if isinstance(cid, str) else FullPayload()


def _customer_id(record: Mapping[str, Any], given: str | None, payload: Payload) -> str:
    explicit = record.get("customer_id")
    if explicit is not None:
        if not isinstance(explicit, str) or not explicit:
            raise ActivityError("customer_id", "expected a non-empty string")
        return explicit
    if given:
        return given
    if payload.customer is not None and payload.customer.id:
        return payload.customer.id
    raise ActivityError(
        "data.customer.id",
        "no customer: the record has no customer_id, none was given, and the payload "
        "has no customer.id",
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
