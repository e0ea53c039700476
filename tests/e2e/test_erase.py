"""`custate erase` and `DELETE /customers/{id}/personal-data` as a user runs them: the
command erases and lifts, printing what it rewrote; the endpoint of the real server refuses
without a configured token, without the header and with a wrong token, and erases with one
of the configured tokens; afterwards the state over HTTP reads as erased with the same
points and tiers."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

import custate
from custate.domain.erasure import ERASED

from .incli import invoke
from .personal import ERASED_VALUES, NAME, ZELDA, history
from .test_serve import start_server, stop


def _store(url: str) -> custate.CustomerState:
    with custate.open(url) as cs:
        cs.ingest(history(ZELDA, NAME, "evz"))
        return cs.state(ZELDA)


def test_erase_command_erases_and_lifts(sqlite_url: str, tmp_path: Path) -> None:
    before = _store(sqlite_url)
    ran = invoke("erase", ZELDA, "--by", "dpo@shop.example", "--json", "--store", sqlite_url)
    assert ran.returncode == 0, ran.stderr
    out = orjson.loads(ran.stdout)
    assert out["customer_id"] == ZELDA
    assert out["erased_by"] == "dpo@shop.example"
    assert out["rewritten"]["activities"] == len(history(ZELDA, NAME, "evz"))
    assert not any(v.encode() in ran.stdout for v in ERASED_VALUES)
    with custate.open(sqlite_url) as cs:
        after = cs.state(ZELDA)
    assert after.profile.name == ERASED
    assert (after.points, after.tiers) == (before.points, before.tiers)

    ran = invoke("erase", ZELDA, "--lift", "--store", sqlite_url)
    assert ran.returncode == 0, ran.stderr
    assert b"erasure lifted" in ran.stdout
    ran = invoke("erase", "cust_never_erased", "--lift", "--store", sqlite_url)
    assert ran.returncode == 2
    assert b"no erasure to lift" in ran.stderr


def test_delete_personal_data_needs_a_configured_bearer_token(
    sqlite_url: str, tmp_path: Path
) -> None:
    before = _store(sqlite_url)
    path = f"/customers/{ZELDA}/personal-data"
    server = start_server(sqlite_url, tmp_path)  # no token configured: always refused
    try:
        r = httpx.delete(server.url + path, headers={"Authorization": "Bearer anything"})
        assert r.status_code == 401
        assert "CUSTATE_API_TOKENS" in r.json()["error"]
    finally:
        stop(server)
    server = start_server(
        sqlite_url, tmp_path, CUSTATE_API_TOKENS="token-one-0123456789, token-two-0123456789"
    )
    try:
        assert httpx.delete(server.url + path).status_code == 401
        wrong = httpx.delete(
            server.url + path, headers={"Authorization": "Bearer token-three-0123456789"}
        )
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        read = {"Authorization": "Bearer token-one-0123456789"}
        state = httpx.get(f"{server.url}/customers/{ZELDA}/state", headers=read).json()
        assert state["profile"]["name"] == NAME

        r = httpx.delete(
            server.url + path,
            params={"by": "dpo"},
            headers={"Authorization": "Bearer token-two-0123456789"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["erased_by"] == "dpo"
        assert not any(v in r.text for v in ERASED_VALUES)
        state = httpx.get(f"{server.url}/customers/{ZELDA}/state", headers=read).json()
        assert state["profile"]["name"] == ERASED
        assert state["loyalty"]["points"] == before.points
        assert state["loyalty"]["tiers"] == before.to_json()["loyalty"]["tiers"]
    finally:
        stop(server)
