"""Server faults over HTTP: a 5xx body is generic (no exception text, no SQL, no path),
the details go to the log under the request id the response carries in `X-Request-ID`
(the client's own, if it sent a sane one)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import custate
from custate.adapters.http import create_app

DELIVERY = json.dumps(
    {
        "id": "wh_1",
        "project_id": "proj_test",
        "event": {
            "id": "ev_1",
            "type": "customer.created",
            "created_at": "2024-01-01T10:00:00Z",
            "entity_id": "cust_1",
        },
        "data": {"customer": {"id": "cust_1"}},
    }
).encode()


def test_a_store_failure_is_a_generic_503_with_the_request_id_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "s.db"
    with custate.open(f"sqlite:///{db}") as cs:
        cs.ingest(
            [
                {
                    "id": "ev_0",
                    "type": "customer.created",
                    "created_at": "2024-01-01T00:00:00Z",
                    "data": {"customer": {"id": "cust_0"}},
                }
            ]
        )
    # a read-only store: every write fails in the store, as a full or lost one does
    app = create_app(f"sqlite:///{db}?mode=ro", secret="", project=False)
    with caplog.at_level(logging.ERROR, logger="custate.http"), TestClient(app) as client:
        r = client.post(
            "/webhooks/voucherify", content=DELIVERY, headers={"X-Request-ID": "req-42"}
        )
        assert r.status_code == 503
        assert r.json() == {
            "error": "the store is unavailable",
            "field": None,
            "request_id": "req-42",
        }
        assert r.headers["x-request-id"] == "req-42"
        assert str(db) not in r.text
        # the details are in the log, under the same id
        logged = "\n".join(rec.getMessage() + str(rec.exc_info) for rec in caplog.records)
        assert "req-42" in logged
        assert "read-only" in logged

        # reads still answer, each with a request id: a new one when the client's is not sane
        r = client.get("/customers/cust_0/state", headers={"X-Request-ID": "bad id\twith spaces"})
        assert r.status_code == 200
        assert r.headers["x-request-id"] != "bad id\twith spaces"
        assert len(r.headers["x-request-id"]) == 32
        assert client.get("/healthz").headers["x-request-id"]


def test_a_body_that_never_arrives_whole_is_a_408_after_the_bound(tmp_path: Path) -> None:
    import asyncio
    from collections.abc import MutableMapping
    from typing import Any

    app = create_app(f"sqlite:///{tmp_path / 's.db'}", secret="", project=False, body_timeout=0.2)
    sent: list[MutableMapping[str, Any]] = []
    parts = [{"type": "http.request", "body": DELIVERY[:20], "more_body": True}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await asyncio.sleep(3600)  # the rest of the body never comes
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/webhooks/voucherify",
        "raw_path": b"/webhooks/voucherify",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
        "root_path": "",
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=60))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["field"] == "body"
    assert any(k == b"x-request-id" for k, _ in start["headers"])
