"""Hostile records, shared by the integration and the server tests: each with the field
its rejection must name. JSON text can carry every one of them."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]
RANDOM_3000 = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1000))  # 3,000 bytes

CUSTOMER = "cust_hostile"


def record(n: int | str, **changes: Any) -> Json:
    """A valid activity of CUSTOMER (segment `seg_<n>`), with `changes` applied."""
    r: Json = {
        "id": f"ev_{n}",
        "type": "customer.segment.entered",
        "created_at": "2024-01-01T10:00:00Z",
        "data": {
            "customer": {"id": CUSTOMER, "metadata": {}},
            "segment": {"id": f"seg_{n}", "name": "S"},
        },
    }
    r.update(changes)
    return r


def with_metadata(n: str, value: Any) -> Json:
    r = record(n)
    r["data"]["customer"]["metadata"] = {"x": value}
    return r


def with_points(n: str, points: int) -> Json:
    r = record(n)
    r["data"]["balance"] = {"points": points}
    return r


def with_segment_id(n: str, segment_id: str) -> Json:
    r = record(n)
    r["data"]["segment"]["id"] = segment_id
    return r


def order(n: str, status: str) -> Json:
    return {
        "id": f"ev_{n}",
        "type": "customer.order.paid",
        "created_at": "2024-01-01T10:00:00Z",
        "data": {"customer": {"id": CUSTOMER}, "order": {"id": f"ord_{n}", "status": status}},
    }


def nested(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# (name, record, the field its rejection names)
HOSTILE: list[tuple[str, Json, str]] = [
    ("nul in id", record("a\x00b"), "id"),
    ("nul in customer_id", record("nulc", customer_id="c\x00"), "customer_id"),
    ("id over the limit", record("x" * 3000), "id"),
    ("customer_id over the limit", record("longc", customer_id="é" * 300), "customer_id"),
    ("group_id over the limit", record("longg", group_id="g" * 600), "group_id"),
    ("nul in type", record("nult", type="customer.\x00"), "type"),
    ("year 10000 in UTC", record("late", created_at="9999-12-31T23:59:59-05:00"), "created_at"),
    ("year 0 in UTC", record("early", created_at="0001-01-01T00:00:00+05:00"), "created_at"),
    ("integer of 2**70", with_metadata("big", 2**70), "data.customer.metadata.x"),
    ("integer of 2**63", with_metadata("big63", 2**63), "data.customer.metadata.x"),
    ("float of 1e300", with_metadata("huge", 1e300), "data.customer.metadata.x"),
    ("nul in a string", with_metadata("nuls", "a\x00b"), "data.customer.metadata.x"),
    ("nul in a key", with_metadata("nulk", {"k\x00": 1}), "data.customer.metadata.x.k\\u0000"),
    ("300 levels deep", with_metadata("deep", nested(300)), "data.customer.metadata.x"),
    ("points of 2**70", with_points("pts", 2**70), "data.balance.points"),
    # what the read model keys its tables by: over a PostgreSQL index entry, its column
    ("segment id over the limit", with_segment_id("seg", RANDOM_3000), "data.segment.id"),
    ("order status over 32", order("st", "P" * 33), "data.order.status"),
]
