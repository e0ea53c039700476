"""`custate serve` as a user runs it: the real server in a subprocess on a free loopback
port, httpx as the client. Webhooks: signatures, redelivery, concurrency, malformed and
oversized bodies, all checked against what the store holds. Reads: state over HTTP equals
`custate state` for the same customer and cuts, and diff, explain and gaps equal the CLI's
`--json` (the commands in-process, through the typer app: `incli`); customers, history,
healthz, docs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import custate

from .incli import invoke

Json = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
CUSTATE = Path(sys.executable).parent / "custate"
SAMPLES = ROOT / "tests" / "data" / "samples"
SECRET = "whsec_test_secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    store: str
    proc: subprocess.Popen[bytes]


def start_server(store: str, cwd: Path, *args: str, **env: str) -> Server:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CUSTATE_")}
    environ.update(env)
    proc = subprocess.Popen(
        [
            str(CUSTATE),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--store",
            store,
            *args,
        ],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"custate serve exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Server(url, store, proc)
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("custate serve did not come up")


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[Server]:
    s = start_server(store_url, tmp_path, CUSTATE_WEBHOOK_SECRET=SECRET)
    yield s
    stop(s)


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sample(activity_type: str) -> Json:
    data: Json = orjson.loads((SAMPLES / f"{activity_type}.json").read_bytes())
    return data


def delivery(
    activity_id: str,
    customer_id: str,
    activity_type: str = "customer.custom_event",
    created_at: str = "2024-03-01T10:00:00.000Z",
    data: Json | None = None,
) -> Json:
    """A v2024-01-01 webhook envelope for one customer activity."""
    return {
        "id": f"wh_{activity_id}",
        "project_id": "proj_test",
        "created_at": created_at,
        "type": activity_type,
        "data": data if data is not None else sample(activity_type),
        "source": {"object_id": "whk_1", "object_type": "webhook"},
        "event": {
            "id": activity_id,
            "type": activity_type,
            "created_at": created_at,
            "entity_id": customer_id,
            "category": "ACTION",
        },
    }


def post(server: Server, body: bytes, signature: str | None = "auto", **kw: Any) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature == "auto":
        headers["x-voucherify-signature"] = sign(body)
    elif signature is not None:
        headers["x-voucherify-signature"] = signature
    return httpx.post(f"{server.url}/webhooks/voucherify", content=body, headers=headers, **kw)


def settle(server: Server, position: int) -> None:
    """Wait until the server's read model has reached `position` (read your writes)."""
    r = httpx.get(f"{server.url}/customers/count", params={"min_position": position, "wait": 20})
    assert r.status_code == 200, r.text


def stored_ids(store: str) -> list[str]:
    with custate.open(store) as cs:
        return [s.activity.id for c in cs.customer_ids() for s in cs.activities(c)]


def test_good_signature_is_stored_bad_or_missing_is_401(server: Server) -> None:
    body = orjson.dumps(delivery("evcus_wh_1", "cust_wh_1"))
    r = post(server, body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "stored"
    assert stored_ids(server.store) == ["evcus_wh_1"]  # durable before the 200

    other = orjson.dumps(delivery("evcus_wh_2", "cust_wh_1"))
    for sig in ["0" * 64, sign(other, "another-secret"), None, sign(body)]:
        r = post(server, other, signature=sig)
        assert r.status_code == 401, r.text
        assert r.json()["field"] == "x-voucherify-signature"
    assert stored_ids(server.store) == ["evcus_wh_1"]
    with custate.open(server.store) as cs:
        assert cs.rejects() == []  # unauthenticated bodies are not kept


def test_compact_reserialised_signature_is_accepted(server: Server) -> None:
    value = delivery("evcus_wh_c", "cust_wh_c")
    pretty = orjson.dumps(value, option=orjson.OPT_INDENT_2)
    r = post(server, pretty, signature=sign(orjson.dumps(value)))
    assert r.status_code == 200, r.text


def test_redelivery_is_2xx_and_stored_once_conflict_is_409(server: Server) -> None:
    body = orjson.dumps(delivery("evcus_wh_r", "cust_wh_r"))
    first, second = post(server, body), post(server, body)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["status"] == "duplicate"
    assert stored_ids(server.store) == ["evcus_wh_r"]

    changed = delivery("evcus_wh_r", "cust_wh_r")
    changed["data"]["event"] = {"type": "something_else"}
    r = post(server, orjson.dumps(changed))
    assert r.status_code == 409, r.text
    assert r.json()["field"] == "id"
    with custate.open(server.store) as cs:
        assert [x.reject.kind for x in cs.rejects()] == ["conflict"]
    assert stored_ids(server.store) == ["evcus_wh_r"]


def test_fifty_concurrent_deliveries_all_stored(server: Server) -> None:
    bodies = [
        orjson.dumps(
            delivery(
                f"evcus_cc_{i:03d}",
                f"cust_cc_{i % 7}",
                created_at=f"2024-03-01T10:{i % 60:02d}:00Z",
            )
        )
        for i in range(50)
    ]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            rs = await asyncio.gather(
                *[
                    client.post(
                        f"{server.url}/webhooks/voucherify",
                        content=b,
                        headers={"x-voucherify-signature": sign(b)},
                    )
                    for b in bodies + bodies[:10]  # ten of them twice
                ]
            )
        return list(rs)

    answers = asyncio.run(run())
    assert [r.status_code for r in answers] == [200] * 60
    assert sorted(stored_ids(server.store)) == [f"evcus_cc_{i:03d}" for i in range(50)]
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok"
    # Read your writes: the highest position answered, as min_position.
    position = max(r.json()["position"] for r in answers)
    r = httpx.get(f"{server.url}/customers/cust_cc_3/state", params={"min_position": position})
    assert r.json()["activities"]["count"] == len(range(3, 50, 7))
    assert r.json()["read_model"]["position"] >= position
    assert int(r.headers["x-custate-position"]) >= position


def test_malformed_json_is_400_and_kept_invalid_activity_is_422(server: Server) -> None:
    body = b'{"id": "wh_broken", "event": {"id": "evcus_broken"'
    r = post(server, body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "body"
    assert "malformed JSON" in r.json()["error"]

    bad = delivery("evcus_nozone", "cust_x", created_at="2024-03-01T10:00:00")
    r = post(server, orjson.dumps(bad))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "created_at"
    with custate.open(server.store) as cs:
        kept = cs.rejects()
        assert [k.reject.raw for k in kept if k.reject.field == "body"] == [body.decode()]
        assert any(k.reject.activity_id == "evcus_nozone" for k in kept)
    assert stored_ids(server.store) == []


def test_oversized_body_is_413(store_url: str, tmp_path: Path) -> None:
    s = start_server(store_url, tmp_path, CUSTATE_MAX_BODY_BYTES="2048")
    try:
        big = delivery(
            "evcus_big",
            "cust_big",
            "customer.updated",
            data={"customer": {"id": "cust_big"}, "pad": "x" * 4000},
        )
        body = orjson.dumps(big)
        r = post(s, body, signature=None)
        assert r.status_code == 413, r.text
        assert r.json()["field"] == "body"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the actual size is checked
            for i in range(0, len(body), 500):
                yield body[i : i + 500]

        r = httpx.post(f"{s.url}/webhooks/voucherify", content=chunks())
        assert r.status_code == 413, r.text
        small = orjson.dumps(
            delivery(
                "evcus_small", "cust_big", "customer.updated", data={"customer": {"id": "cust_big"}}
            )
        )
        assert post(s, small, signature=None).status_code == 200  # no secret set: unchecked
        assert stored_ids(s.store) == ["evcus_small"]
    finally:
        stop(s)


def custate_state(store: str, customer_id: str, *cuts: str) -> Json:
    return custate_json(store, "state", customer_id, *cuts)


def custate_json(store: str, *args: str) -> Json:
    """What a `custate` command prints as JSON for the same store (`--json` where needed)."""
    p = invoke(*args, "--store", store)
    assert p.returncode == 0, p.stderr.decode()
    value: Json = orjson.loads(p.stdout)
    return value


def test_state_over_http_equals_the_cli(server: Server) -> None:
    cid = "cust_same"
    types = [
        ("customer.created", "2024-03-01T09:00:00Z"),
        ("customer.segment.entered", "2024-03-02T09:00:00Z"),
        ("customer.loyalty.tier.joined", "2024-03-03T09:00:00Z"),
        ("customer.custom_event", "2024-03-04T09:00:00Z"),
        ("customer.order.paid", "2024-03-05T09:00:00Z"),
    ]
    for i, (t, at) in enumerate(types[:3]):
        assert post(server, orjson.dumps(delivery(f"evcus_s{i}", cid, t, at))).status_code == 200
    time.sleep(0.02)
    k1 = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.02)
    for i, (t, at) in enumerate(types[3:], start=3):
        last = post(server, orjson.dumps(delivery(f"evcus_s{i}", cid, t, at)))
        assert last.status_code == 200
    settle(server, last.json()["position"])

    for cuts in [
        {},
        {"as_of": "2024-03-02"},
        {"known_at": k1},
        {"as_of": "2024-03-04T12:00:00Z", "known_at": k1},
    ]:
        r = httpx.get(f"{server.url}/customers/{cid}/state", params=cuts)
        assert r.status_code == 200, r.text
        args = [a for k, v in cuts.items() for a in (f"--{k.replace('_', '-')}", v)]
        answer = r.json()
        assert answer.pop("read_model")["lag"]["activities"] == 0
        assert answer == custate_state(server.store, cid, *args), cuts
    assert httpx.get(f"{server.url}/customers/{cid}/state").json()["activities"]["count"] == 5

    assert httpx.get(f"{server.url}/customers/cust_unknown/state").status_code == 404
    r = httpx.get(f"{server.url}/customers/{cid}/state", params={"as_of": "yesterday"})
    assert r.status_code == 400
    assert r.json()["field"] == "as_of"

    seg = sample("customer.segment.entered")["segment"]["id"]
    rows = httpx.get(f"{server.url}/customers", params={"segment": seg}).json()
    assert [row["customer_id"] for row in rows] == [cid]
    assert httpx.get(f"{server.url}/customers", params={"segment": "seg_none"}).json() == []
    count = httpx.get(f"{server.url}/customers/count", params={"segment": seg}).json()
    assert count["count"] == len(rows)
    page = httpx.get(
        f"{server.url}/customers", params={"segment": seg, "after": rows[0]["customer_id"]}
    ).json()
    assert page == rows[1:]

    history = httpx.get(f"{server.url}/customers/{cid}/history").json()
    assert len(history) == 5

    # The audit over HTTP equals the CLI's `--json`.
    k2 = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    audits: list[tuple[str, dict[str, Any], list[str]]] = [
        (
            "diff",
            {"as_of": ["2024-03-01", "2024-03-04"]},
            ["--as-of", "2024-03-01", "--as-of", "2024-03-04"],
        ),
        ("diff", {"known_at": [k1, k2]}, ["--known-at", k1, "--known-at", k2]),
        (
            "diff",
            {"as_of": "2024-03-10", "known_at": [k1, k2]},
            ["--as-of", "2024-03-10", "--known-at", k1, "--known-at", k2],
        ),
        ("explain", {"path": "activities.count"}, ["activities.count"]),
        ("explain", {"path": "profile.name", "known_at": k1}, ["profile.name", "--known-at", k1]),
    ]
    for kind, params, args in audits:
        r = httpx.get(f"{server.url}/customers/{cid}/{kind}", params=params)
        assert r.status_code == 200, r.text
        assert r.json() == custate_json(server.store, kind, cid, *args, "--json"), params
    corrections = httpx.get(
        f"{server.url}/customers/{cid}/diff", params={"known_at": [k1, k2]}
    ).json()
    assert {a["id"] for a in corrections["activities"]} == {"evcus_s3", "evcus_s4"}
    explained = httpx.get(
        f"{server.url}/customers/{cid}/explain", params={"path": "activities.count"}
    ).json()
    assert explained["set_by"]["id"] == "evcus_s4"

    def points(aid: str, at: str, balance: int, added: int) -> bytes:
        data = {
            "customer": {"id": "cust_gap"},
            "balance": {
                "type": "loyalty_card",
                "balance": balance,
                "total": balance,
                "points": added,
                "related_object": {"id": "v_gap", "type": "voucher"},
            },
        }
        kind = "customer.voucher.loyalty_card.points_added"
        return orjson.dumps(delivery(aid, "cust_gap", kind, at, data))

    assert post(server, points("evcus_g1", "2024-03-01T09:00:00Z", 100, 100)).status_code == 200
    second = post(server, points("evcus_g2", "2024-03-02T09:00:00Z", 190, 50))
    assert second.status_code == 200
    settle(server, second.json()["position"])
    found = httpx.get(f"{server.url}/gaps", params={"customer_id": "cust_gap"}).json()
    assert [(g["previous_activity_id"], g["activity_id"], g["missing"]) for g in found] == [
        ("evcus_g1", "evcus_g2", 40)
    ]
    gaps = invoke("gaps", "--json", "--store", server.store)
    assert httpx.get(f"{server.url}/gaps").json() == [
        orjson.loads(line)
        for line in gaps.stdout.splitlines()  # NDJSON: one gap a line
    ]
    assert httpx.get(f"{server.url}/gaps", params={"customer_id": cid}).json() == []
    bad = httpx.get(f"{server.url}/customers/{cid}/diff", params={"as_of": "2024-03-01"})
    assert bad.status_code == 400
    assert bad.json()["field"] == "as_of"
    assert (
        httpx.get(
            f"{server.url}/customers/cust_unknown/explain", params={"path": "profile"}
        ).status_code
        == 404
    )
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["store"] == "reachable"
    assert ready["read_model"]["lag"]["activities"] == 0
    assert httpx.get(f"{server.url}/docs").status_code == 200
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/webhooks/voucherify" in spec["paths"]


def _activity(i: int) -> Json:
    return {
        "id": f"act_wait_{i}",
        "type": "customer.updated" if i else "customer.created",
        "created_at": f"2024-05-01T00:00:{i:02d}Z",
        "data": {"customer": {"id": "cust_wait", "metadata": {"n": i}}},
    }


def test_reads_waiting_for_a_position_hold_no_thread_and_others_answer_meanwhile(
    store_url: str, tmp_path: Path
) -> None:
    """No projector runs, so reads asking for a position not projected yet wait: a hundred
    of them (more than the server's threads) wait at once, and a read that asks for no
    position answers meanwhile; they get 503 with Retry-After when their wait is over, and
    once the activities are projected the same read answers 200."""
    with custate.open(store_url) as cs:
        assert cs.ingest([_activity(0)]).ok
        late = cs.ingest([_activity(i) for i in range(1, 4)], project=False)
    s = start_server(store_url, tmp_path, "--no-project", CUSTATE_WEBHOOK_SECRET=SECRET)
    try:
        url = f"{s.url}/customers/cust_wait/state"

        async def run() -> tuple[list[httpx.Response], httpx.Response, int]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                waiting = [
                    asyncio.create_task(
                        client.get(url, params={"min_position": late.position, "wait": 6})
                    )
                    for _ in range(100)
                ]
                await asyncio.sleep(1.0)  # they are all waiting now
                plain = await client.get(url)
                still_waiting = sum(not t.done() for t in waiting)
                return await asyncio.gather(*waiting), plain, still_waiting

        waited, plain, still_waiting = asyncio.run(run())
        assert plain.status_code == 200, plain.text
        assert plain.json()["activities"]["count"] == 1
        assert still_waiting == 100
        assert {r.status_code for r in waited} == {503}
        assert waited[0].headers["retry-after"] == "1"
        with custate.open(store_url) as cs:
            cs.project()
        r = httpx.get(url, params={"min_position": late.position, "wait": 6})
        assert r.status_code == 200, r.text
        assert r.json()["activities"]["count"] == 4
    finally:
        stop(s)
