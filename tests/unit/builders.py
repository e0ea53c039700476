"""Builders for domain unit tests: activity records, payload fragments and bundled samples."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from custate.domain import Activity, CustomerState, fold, parse_activity

Json = dict[str, Any]

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
CUSTOMER = "cust_test"
T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

_ids = itertools.count(1)


def at(seconds: float = 0) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(seconds: float = 0) -> str:
    """`T0 + seconds` as the state renders times: UTC, microseconds, `Z`."""
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(
    activity_type: str,
    data: Json | None = None,
    *,
    id: str | None = None,
    t: float = 0,
    customer_id: str | None = CUSTOMER,
) -> Json:
    """A raw activity record as a user hands it over."""
    rec: Json = {
        "id": id if id is not None else f"evcus_{next(_ids):06d}",
        "type": activity_type,
        "created_at": iso(t),
        "data": data if data is not None else {},
    }
    if customer_id is not None:
        rec["customer_id"] = customer_id
    return rec


def act(
    activity_type: str,
    data: Json | None = None,
    *,
    id: str | None = None,
    t: float = 0,
    customer_id: str | None = CUSTOMER,
) -> Activity:
    return parse_activity(record(activity_type, data, id=id, t=t, customer_id=customer_id))


def run(*activities: Activity, customer_id: str = CUSTOMER) -> CustomerState:
    return fold(list(activities), customer_id)


def state_json(activities: Iterable[Activity], customer_id: str = CUSTOMER) -> Json:
    return fold(list(activities), customer_id).to_json()


def dig(j: Any, path: str) -> Any:
    """`j["a"]["b"]` for path "a.b" (ids used in tests contain no dots)."""
    for part in path.split("."):
        j = j[part]
    return j


def without_activities(j: Json) -> Json:
    return {k: v for k, v in j.items() if k != "activities"}


# --- payload fragments -------------------------------------------------------------


def loyalty_balance(
    card: str, balance: int, points: int | None = None, total: int | None = None
) -> Json:
    """`{"balance": ...}` of a loyalty card, absolute post-event values plus the delta."""
    return {
        "balance": {
            "type": "loyalty_card",
            "object": "balance",
            "balance": balance,
            "total": total if total is not None else balance,
            "points": points,
            "related_object": {"id": card, "type": "voucher"},
        }
    }


def gift_balance(
    card: str, balance: int, amount: int | None = None, total: int | None = None
) -> Json:
    return {
        "balance": {
            "type": "gift_voucher",
            "object": "balance",
            "balance": balance,
            "total": total if total is not None else balance,
            "amount": amount,
            "related_object": {"id": card, "type": "voucher"},
        }
    }


def loyalty_voucher(
    card: str, campaign: str = "camp_loyal", code: str = "CARD", **block: Any
) -> Json:
    """`{"voucher": ...}` of type LOYALTY_CARD with a `loyalty_card` block."""
    return {
        "voucher": {
            "id": card,
            "code": code,
            "type": "LOYALTY_CARD",
            "campaign_id": campaign,
            "loyalty_card": block,
        }
    }


def gift_voucher(card: str, balance: int, amount: int, code: str = "GIFT") -> Json:
    return {
        "voucher": {
            "id": card,
            "code": code,
            "type": "GIFT_VOUCHER",
            "campaign_id": "camp_gift",
            "gift": {"amount": amount, "balance": balance},
        }
    }


def tier(tier_id: str, name: str, campaign: str = "camp_loyal", expires: str | None = None) -> Json:
    t: Json = {"id": tier_id, "name": name, "campaign_id": campaign, "object": "loyalty_tier"}
    if expires is not None:
        t["expiration"] = {"expiration_date": expires}
    return t


def pending(
    entry: str,
    card: str,
    points: int = 10,
    activates_at: str = "2025-02-01",
    order_id: str = "ord_1",
    total: int | None = None,
) -> Json:
    data: Json = {
        "pending_points": {
            "id": entry,
            "voucher_id": card,
            "campaign_id": "camp_loyal",
            "order_id": order_id,
            "points": points,
            "activates_at": activates_at,
        }
    }
    if total is not None:
        data["voucher_pending_points_balance"] = {
            "total": total,
            "points": points,
            "related_object": {"id": card, "type": "voucher"},
        }
    return data


def merge(*parts: Json) -> Json:
    out: Json = {}
    for p in parts:
        out.update(p)
    return out


# --- bundled samples ---------------------------------------------------------------


def sample_names() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.json"))


def load_sample(name: str) -> Json:
    data: Json = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def sample_record(
    name: str, *, id: str = "evcus_sample", t: float = 0, customer_id: str | None = None
) -> Json:
    """The sample file wrapped as an activity record whose type is the file name."""
    rec: Json = {"id": id, "type": name, "created_at": iso(t), "data": load_sample(name)}
    if customer_id is not None:
        rec["customer_id"] = customer_id
    return rec


def sample_activity(
    name: str, *, id: str = "evcus_sample", t: float = 0, customer_id: str | None = None
) -> Activity:
    return parse_activity(sample_record(name, id=id, t=t, customer_id=customer_id))
