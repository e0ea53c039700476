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
