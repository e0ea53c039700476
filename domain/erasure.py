"""Erasing a customer's personal data from an activity payload (GDPR Art. 17), pure.

`scrub(data, customer_id, values)` returns the payload with the customer's personal data
replaced by markers and everything the fold keys or counts by left as it was: ids, codes,
types, statuses, amounts, points, balances, tiers, segments and times. Folding the scrubbed
activities gives the same balances, tiers, segments and orders; the profile's fields read
as erased (`ERASED`; `metadata` as `ERASED_METADATA`).

Two passes, both deterministic (a redelivered activity scrubbed on the way in gets the
stored one's digest):

- Structural: every customer object of this customer (a `customer` key, or an object with
  `"object": "customer"`, whose `id` is the customer's or absent) has its profile fields
  (`PROFILE_FIELDS`: name, email, phone, address, birthdate, metadata, ...) replaced, when
  present and not null. Customer objects of other people (a referrer) are left alone.
- By value: every other string in the payload that contains one of `values` (the
  customer's personal values, `personal_values`, gathered over the whole history) has it
  replaced, except under the keys the fold reads identifiers from (`PROTECTED`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ERASED",
    "ERASED_METADATA",
    "MIN_VALUE_CHARS",
    "PROFILE_FIELDS",
    "erased_value",
    "personal_values",
    "scrub",
    "scrub_text",
]

ERASED = "[erased]"
"""What an erased profile string (name, email, phone, ...) reads as."""

ERASED_METADATA: dict[str, Any] = {"erased": True}
"""What an erased `metadata` object reads as (the fold's typed view wants an object)."""

PROFILE_FIELDS = frozenset(
    {
        "name",
        "first_name",
        "last_name",
        "email",
        "phone",
        "source_id",
        "description",
        "address",
        "birthdate",
        "birthday",
        "metadata",
        "system_metadata",
        "assets",
    }
)
"""The fields of a customer object that are personal data: replaced whenever present."""

MIN_VALUE_CHARS = 4
"""A personal value shorter than this is erased where it is a profile field, but not
searched for inside other strings (a two-letter country code would match everywhere)."""

# The keys whose values the fold reads as identifiers or kinds (`payload._KEYS` and the
# views' other fields), and times: never rewritten by value, so the state keeps its keys.
# Other identifiers (`tracking_id`, an order's `source_id`) are rewritten when they hold a
# personal value: Voucherify's tracking id is often the customer's source id.
_PROTECTED = frozenset(
    {
        "id",
        "object",
        "type",
        "code",
        "status",
        "customer_id",
        "campaign_id",
        "voucher_id",
        "vouchers_id",
        "order_id",
        "reward_id",
        "redeemable_id",
        "holder_role",
        "activates_at",
        "expiration_date",
    }
)


def _protected(key: str) -> bool:
    return key in _PROTECTED or key.endswith("_at")


def erased_value(field: str, value: Any) -> Any:
    """The marker a profile `field` holding `value` is erased to (None stays None)."""
    if value is None:
        return None
    if field == "metadata":
        return dict(ERASED_METADATA)
    return ERASED


def _own(obj: Mapping[str, Any], key: str | None, customer_id: str) -> bool:
    """Whether `obj` (found under `key`) is a customer object of this customer."""
    if key != "customer" and obj.get("object") != "customer":
        return False
    found = obj.get("id")
    return found is None or found == customer_id


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)


def personal_values(data: Any, customer_id: str) -> set[str]:
    """The strings of this customer's profile fields anywhere in `data` (the ones a value
    search then looks for), markers excluded."""
    out: set[str] = set()

    def walk(node: Any, key: str | None) -> None:
        if isinstance(node, Mapping):
            if _own(node, key, customer_id):
                for f in PROFILE_FIELDS:
                    if f in node:
                        out.update(s for s in _leaves(node[f]) if s and s != ERASED)
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)

    walk(data, None)
    return out


def scrub_text(text: str, values: Iterable[str]) -> str:
    """`text` with every occurrence of each value (of at least `MIN_VALUE_CHARS`) replaced
    by `ERASED`, and `text` itself erased if it is one of the shorter values."""
    ordered = sorted(values, key=len, reverse=True)  # a longer value first: "Ann Lee" > "Ann"
    for v in ordered:
        if text == v:
            return ERASED
    for v in ordered:
        if len(v) >= MIN_VALUE_CHARS and v in text:
            text = text.replace(v, ERASED)
    return text


def scrub(data: Any, customer_id: str, values: Iterable[str] = ()) -> Any:
    """`data` (a JSON-native payload) with this customer's personal data erased, as a new
    value (`data` is left as it was). `values`: personal values known from elsewhere (the
    rest of the history); those of `data` itself are always included."""
    known = set(values) | personal_values(data, customer_id)

    def walk(node: Any, key: str | None) -> Any:
        if isinstance(node, Mapping):
            own = _own(node, key, customer_id)
            out: dict[str, Any] = {}
            for k, v in node.items():
                if own and k in PROFILE_FIELDS:
                    out[k] = erased_value(k, v)
                elif _protected(k) and not isinstance(v, Mapping | list):
                    out[k] = v
                else:
                    out[k] = walk(v, k)
            return out
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str) and known:
            return scrub_text(node, known)
        return node

    return walk(data, None)
