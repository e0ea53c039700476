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

MAX_ID_BYTES = 512
"""The longest `id`, `customer_id`, `group_id` or `type`, in UTF-8 bytes: well inside what
a PostgreSQL index entry holds (about 2,700 bytes), where ids are keys."""

MAX_DEPTH = 200
"""The deepest nesting of objects and arrays in `data` (`data` itself is level 1): what
orjson writes is 255 levels, and the stored event and state wrap the payload in a few more."""

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""The integers a record may carry, anywhere: signed 64-bit, what every JSON parser on the
way (orjson's, SQLite's, PostgreSQL's bigint) keeps exact. A number of magnitude 2**63 or
more is refused, integer or not: parsers silently turn such integers into rounded floats,
so a float there cannot be told from an integer that lost its digits."""


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
    try:
        return t.astimezone(UTC)
    except OverflowError:
        raise ActivityError(
            field, f"date-time is outside the years 1 to 9999 once in UTC: {value!r}"
        ) from None


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
    webhook's `event.entity_id`), used when the record names none of its own.

    Ids are 1 to `MAX_ID_BYTES` UTF-8 bytes with no NUL, and `created_at` is a date-time
    that exists in UTC. Whether `data` can be stored exactly is `check_data`'s to say: the
    readers, which every input path goes through, ask it (docs/DECISIONS.md, Input)."""
    if not isinstance(record, dict):
        raise ActivityError("<record>", f"expected a JSON object, got {_kind(record)}")
    activity_id = check_id(record.get("id"), "id")
    activity_type = check_id(record.get("type"), "type")
    if "created_at" not in record:
        raise ActivityError("created_at", "required")
    created_at = parse_time(record["created_at"], "created_at")
    group_id = record.get("group_id")
    if group_id is not None:
        if not isinstance(group_id, str):
            raise ActivityError("group_id", f"expected a string, got {_kind(group_id)}")
        check_id(group_id, "group_id")
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
    customer = _customer_id(record, customer_id, payload, prefix)
    return Activity(
        id=activity_id,
        type=activity_type,
        created_at=created_at,
        customer_id=customer,
        data=data,
        payload=payload,
        group_id=group_id,
    )


def check_id(value: object, field: str) -> str:
    """An identifier as the store keys it: a non-empty string of at most `MAX_ID_BYTES`
    UTF-8 bytes, without NUL (PostgreSQL text cannot hold one)."""
    if not isinstance(value, str) or not value:
        raise ActivityError(field, "required: a non-empty string")
    if not value.isascii() or len(value) > MAX_ID_BYTES:
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            raise ActivityError(field, "not valid UTF-8 (a lone surrogate)") from None
        if size > MAX_ID_BYTES:
            raise ActivityError(
                field,
                f"{size} UTF-8 bytes long, over the limit of {MAX_ID_BYTES}: {value[:40]!r}...",
            )
    if "\x00" in value:
        raise ActivityError(field, f"contains a NUL character (U+0000): {value[:80]!r}")
    return value


def check_data(data: Mapping[str, Any], field: str = "data") -> None:
    """A payload that is stored exactly on every backend, or an `ActivityError` naming the
    path of the first part that is not: nested at most `MAX_DEPTH` levels, numbers within
    `INT_MIN`..`INT_MAX` (and finite), strings and keys valid UTF-8 without NUL, nothing but
    JSON values. The common case costs one encoding and three scans of its bytes, in C; the
    walk that names the culprit runs only when those flag something (an integer beyond
    2**53, a number written with an exponent of 16 or more, 200 brackets, an escaped NUL)."""
    try:
        encoded = orjson.dumps(data, option=orjson.OPT_STRICT_INTEGER)
    except TypeError:  # orjson.JSONEncodeError: what orjson cannot write
        _raise_problem(data, field)
        return
    if (
        encoded.count(b"{") + encoded.count(b"[") > MAX_DEPTH
        or b"\\u0000" in encoded
        or b"e+" in encoded
    ):
        _raise_problem(data, field)


def _raise_problem(data: object, field: str) -> None:
    problem = _problem(data, field, 1)
    if problem is not None:
        raise ActivityError(*problem)


def _problem(value: object, path: str, depth: int) -> tuple[str, str] | None:
    """(path, message) of the first part of `value` that cannot be stored exactly."""
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            return _elide(path), f"nested more than {MAX_DEPTH} levels deep"
        for k, v in value.items():
            if not isinstance(k, str):
                return path, f"key {k!r} is not a string"
            here = f"{path}.{_printable(k)}"
            bad = _string_problem(k, "key")
            if bad is not None:
                return here, bad
            found = _problem(v, here, depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        if depth > MAX_DEPTH:
            return _elide(path), f"nested more than {MAX_DEPTH} levels deep"
        for i, v in enumerate(value):
            found = _problem(v, f"{path}.{i}", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, str):
        bad = _string_problem(value, "string")
        return None if bad is None else (path, bad)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if INT_MIN <= value <= INT_MAX:
            return None
        return path, f"integer {value} {_OUT_OF_RANGE}"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return path, f"not a finite number: {value!r}"
        if abs(value) >= 2.0**63:
            return path, f"number {value!r} {_OUT_OF_RANGE}"
        return None
    return path, f"not a JSON value: {type(value).__name__}"


_OUT_OF_RANGE = (
    "is outside the signed 64-bit range, where it is not kept exactly (send it as a string)"
)


def _string_problem(s: str, what: str) -> str | None:
    if "\x00" in s:
        return f"{what} contains a NUL character (U+0000)"
    try:
        s.encode()
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8 (a lone surrogate)"
    return None


def _elide(path: str) -> str:
    return path if len(path) <= 120 else f"{path[:60]}...{path[-40:]}"


def _printable(key: str) -> str:
    """A key as a path shows it: NUL and lone surrogates escaped, at most 100 characters."""
    shown = key[:100].replace("\x00", "\\u0000")
    return shown.encode("utf-8", "backslashreplace").decode()


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


def _customer_id(
    record: Mapping[str, Any], given: str | None, payload: Payload, prefix: str
) -> str:
    explicit = record.get("customer_id")
    if explicit is not None:
        if not isinstance(explicit, str) or not explicit:
            raise ActivityError("customer_id", "expected a non-empty string")
        return check_id(explicit, "customer_id")
    if given:
        return check_id(given, "customer_id")
    if payload.customer is not None and payload.customer.id:
        return check_id(payload.customer.id, f"{prefix}.customer.id")
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
