"""Hostile input against `custate serve` on loopback, SQLite and PostgreSQL: every bad
delivery is a 4xx and a kept reject, valid deliveries sent at the same moment (the same
group commits) are all stored, and out-of-range or NUL-carrying parameters are 4xx, never
5xx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import custate

from .test_serve import SECRET, Server, sign, start_server, stop

# The cases the integration tests use. pytest puts tests/ on the path (tests/ is no
# package), mypy names modules from the project root.
if TYPE_CHECKING:
    from tests.integration.hostile import CUSTOMER, HOSTILE, Json, record
else:
    from integration.hostile import CUSTOMER, HOSTILE, Json, record

URL_LIMIT = 2**70


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[Server]:
    s = start_server(store_url, tmp_path, CUSTATE_WEBHOOK_SECRET=SECRET)
    yield s
    stop(s)


def envelope(r: Json) -> bytes:
    """The record as a v2024-01-01 delivery (the standard library writes 2**70 as is)."""
    event: Json = {
        "id": r["id"],
        "type": r["type"],
        "created_at": r["created_at"],
        "entity_id": r.get("customer_id", CUSTOMER),
    }
    if "group_id" in r:
        event["group_id"] = r["group_id"]
    body = {"id": f"wh_{r['id']}", "project_id": "proj_test", "event": event, "data": r["data"]}
    return json.dumps(body).encode()


def test_hostile_deliveries_are_422_and_kept_beside_valid_ones(server: Server) -> None:
    valid = [envelope(record(f"ok_{i}")) for i in range(150)]
    hostile = [envelope(r) for _, r, _ in HOSTILE]
    bodies = valid + hostile + valid[:20]  # twenty valid ones delivered twice
    malformed = b'{"id": "wh_\x00\x00", "event": '  # NUL bytes in a body that is not JSON

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            url = f"{server.url}/webhooks/voucherify"
            return list(
                await asyncio.gather(
                    *[
                        client.post(url, content=b, headers={"x-voucherify-signature": sign(b)})
                        for b in [*bodies, malformed]
                    ]
                )
            )

    answers = asyncio.run(send())
    assert [a.status_code for a in answers[: len(valid)]] == [200] * len(valid)
    assert [a.status_code for a in answers[len(valid) + len(hostile) : -1]] == [200] * 20
    for a, (name, _, field) in zip(answers[len(valid) :], HOSTILE, strict=False):
        assert a.status_code == 422, (name, a.text)
        body: dict[str, Any] = a.json()
        assert body["field"].startswith(field), (name, body)
        assert body["kept_as_reject"] is True
    assert answers[-1].status_code == 400
    with custate.open(server.store) as cs:
        stored = {s.activity.id for s in cs.activities(CUSTOMER)}
        assert stored == {f"ev_ok_{i}" for i in range(150)}
        kept = [r.reject for r in cs.rejects()]
        assert len(kept) == len(HOSTILE) + 1
        answered = [a.json()["field"] for a in answers[len(valid) : len(valid) + len(hostile)]]
        assert sorted(r.field for r in kept if r.field != "body") == sorted(answered)
        assert all(r.kind == "invalid" and r.raw for r in kept)


BAD_QUERIES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("/customers", {"min_points": URL_LIMIT}, 422, None),
    ("/customers", {"max_points": -URL_LIMIT}, 422, None),
    ("/customers", {"limit": URL_LIMIT}, 422, None),
    ("/customers/count", {"min_points": URL_LIMIT}, 422, None),
    (f"/customers/{CUSTOMER}/state", {"as_of": "9999-12-31T23:59:59-05:00"}, 400, "as_of"),
    (f"/customers/{CUSTOMER}/state", {"known_at": "0001-01-01T00:00:00+05:00"}, 400, "known_at"),
    (f"/customers/{CUSTOMER}/history", {"from": "9999-12-31T23:59:59-05:00"}, 400, "from"),
    # NUL, which PostgreSQL text cannot hold, in ids and filters
    ("/customers/c%00/state", {}, 422, None),
    ("/customers/c%00/history", {}, 422, None),
    ("/customers/c%00/explain", {"path": "profile.name"}, 422, None),
    ("/customers", {"segment": "s\x00"}, 422, None),
    ("/customers", {"after": "c\x00"}, 422, None),
    ("/customers/count", {"order_status": "P\x00"}, 422, None),
    ("/gaps", {"customer_id": "c\x00"}, 422, None),
    (
        f"/customers/{CUSTOMER}/explain",
        {"path": "profile.name", "as_of": "0001-01-01T00:00:00+01:00"},
        400,
        "as_of",
    ),
]


def test_out_of_range_query_parameters_are_4xx(server: Server) -> None:
    body = envelope(record("q"))
    headers = {"x-voucherify-signature": sign(body)}
    r = httpx.post(f"{server.url}/webhooks/voucherify", content=body, headers=headers)
    assert r.status_code == 200, r.text
    for path, params, status, field in BAD_QUERIES:
        r = httpx.get(f"{server.url}{path}", params=params, timeout=60)
        assert r.status_code == status, (path, params, r.text)
        if field is not None:
            assert r.json()["field"] == field
    # the extremes themselves are answered
    extremes = {"min_points": -(2**63), "max_points": 2**63 - 1}
    r = httpx.get(f"{server.url}/customers", params=extremes, timeout=60)
    assert r.status_code == 200, r.text
    assert [c["customer_id"] for c in r.json()] == [CUSTOMER]
    r = httpx.get(f"{server.url}/customers/{CUSTOMER}/state", params={"as_of": "9999-12-31"})
    assert r.status_code == 200, r.text
