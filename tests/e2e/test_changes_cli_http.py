"""The change feed's entry points as users run them: `custate changes` (in-process, through
the typer app) as NDJSON and as plain lines, its filters and bad input; `GET /changes` on
a real `custate serve` with a long poll that answers when a record is written and leaves
the server answering other requests meanwhile."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

import custate

from .incli import invoke
from .test_serve import Server, server  # noqa: F401  (the fixture)

LONG_ID = "cust_" + "x" * 120


def tier(aid: str, second: int, kind: str, tid: str, customer: str = "cust_1") -> dict[str, Any]:
    key = "loyalty_tier" if kind == "joined" else "loyalty_tier_to"
    return {
        "id": aid,
        "type": f"customer.loyalty.tier.{kind}",
        "created_at": f"2025-01-01T12:00:{second:02d}.000000Z",
        "customer_id": customer,
        "data": {
            "campaign": {"id": "camp_1"},
            key: {"id": tid, "name": tid.upper(), "campaign_id": "camp_1"},
        },
    }


def test_cli_prints_ndjson_and_plain_lines_with_filters(store_url: str, tmp_path: Path) -> None:
    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest([tier("a1", 10, "joined", "ltr_s", LONG_ID), tier("a2", 30, "upgraded", "ltr_g")])
        cs.ingest([tier("late", 5, "upgraded", "ltr_p", LONG_ID)])
        every = [r.to_json() for r in cs.changes().records]
    ran = invoke("changes", "--store", store_url, "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr.decode()
    lines = [orjson.loads(x) for x in ran.stdout.splitlines()]
    assert lines == every
    assert {"position", "customer_id", "path", "op", "before", "after", "activity_id"} <= set(
        lines[0]
    )

    glob = "loyalty.tiers.*.tier_id"
    ran = invoke(
        "changes",
        "--store",
        store_url,
        "--customer",
        LONG_ID,
        "--path",
        glob,
        "--json",
        cwd=tmp_path,
    )
    mine = [orjson.loads(x) for x in ran.stdout.splitlines()]
    assert [(r["after"], r["correction"]) for r in mine] == [("ltr_s", False), ("ltr_p", True)]

    after = str(every[1]["position"])
    plain = invoke("changes", "--store", store_url, "--after", after, cwd=tmp_path, columns=40)
    assert plain.returncode == 0, plain.stderr.decode()
    text = plain.stdout.decode().splitlines()
    assert len(text) == len(every) - 2  # one line a record, however narrow the terminal
    assert any(LONG_ID in t and "correction" in t for t in text)  # identifiers whole
    assert text[0].split()[0] == str(every[2]["position"])

    for args, what in [
        (["--after", "-1"], "after"),
        (["--path", "segments..x"], "not a path glob"),
        (["--after", "999999"], "past the last position"),
    ]:
        bad = invoke("changes", "--store", store_url, *args, cwd=tmp_path)
        assert bad.returncode != 0
        assert what in bad.stderr.decode()


def test_get_changes_pages_and_long_polls(server: Server) -> None:  # noqa: F811
    with custate.open(server.store, change_feed=True) as cs:
        cs.ingest([tier("a1", 10, "joined", "ltr_s")])
        first = httpx.get(f"{server.url}/changes", timeout=10).json()
        assert [r["position"] for r in first["records"]] == [
            r.position for r in cs.changes().records
        ]
        assert first["next"] == first["records"][-1]["position"]
        filtered = httpx.get(
            f"{server.url}/changes", params={"path": "loyalty.tiers.*.tier_id"}, timeout=10
        ).json()
        assert [r["after"] for r in filtered["records"]] == ["ltr_s"]

        got: dict[str, Any] = {}

        def poll() -> None:
            r = httpx.get(
                f"{server.url}/changes",
                params={"after": first["next"], "wait": 20, "path": "loyalty.tiers.*.tier_id"},
                timeout=30,
            )
            got["answer"] = r.json()
            got["at"] = time.monotonic()

        waiting = threading.Thread(target=poll)
        waiting.start()
        time.sleep(0.3)
        # The long poll holds no worker the other requests need.
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert "answer" not in got
        cs.ingest([tier("a2", 30, "upgraded", "ltr_g")])
        waiting.join(timeout=30)
        assert not waiting.is_alive()
        assert [r["after"] for r in got["answer"]["records"]] == ["ltr_g"]

        empty = httpx.get(
            f"{server.url}/changes", params={"after": got["answer"]["next"]}, timeout=10
        ).json()
        assert empty == {"records": [], "next": got["answer"]["next"]}
        cases: list[tuple[dict[str, int | str], str]] = [
            ({"after": -1}, "after"),
            ({"after": 10_000}, "after"),
            ({"path": "a..b"}, "path"),
        ]
        for params, field in cases:
            r = httpx.get(f"{server.url}/changes", params=params, timeout=10)
            assert r.status_code == 400, r.text
            assert r.json()["field"] == field
        _, upto = cs.prune_changes("2999-01-01")
        gone = httpx.get(f"{server.url}/changes", params={"after": 0}, timeout=10)
        assert gone.status_code == 410, gone.text
        assert gone.json()["pruned_upto"] == upto
        assert httpx.get(f"{server.url}/changes", params={"after": upto}).status_code == 200


def test_cli_prunes_and_then_refuses_a_pruned_position(store_url: str, tmp_path: Path) -> None:
    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest([tier("a1", 10, "joined", "ltr_s")])
        n = len(cs.changes().records)
    ran = invoke("changes", "--store", store_url, "--prune-before", "2999-01-01", "--json")
    assert ran.returncode == 0, ran.stderr.decode()
    assert orjson.loads(ran.stdout) == {"pruned": n, "pruned_upto": n}
    refused = invoke("changes", "--store", store_url, cwd=tmp_path)
    assert refused.returncode != 0
    assert f"records up to position {n} were pruned" in refused.stderr.decode()
    bad = invoke("changes", "--store", store_url, "--prune-before", "yesterday-ish")
    assert bad.returncode != 0
    assert "--prune-before" in bad.stderr.decode()
