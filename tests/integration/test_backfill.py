"""`custate pull --all` (the backfill) against the fake Voucherify API on loopback: the
customer listing paged as the API pages it (with ties at a page's edge), several customers
at once, a 5xx retried, a 429 pausing every worker, a customer that 404s failing alone, a
real `custate pull --all` process killed with SIGKILL between pages and run again, `--since`,
and webhooks storing some of the same activities before and during a backfill. Every
activity is stored exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

import custate
from custate.adapters.http import create_app
from custate.adapters.pull import backfill
from custate.adapters.voucherify import VoucherifyClient, VoucherifyConfig
from custate.domain import parse_activity

from .fake_voucherify import APP_ID, APP_TOKEN, LISTING, FakeServer, FakeVoucherify
from .histories import CUSTATE, ROOT, Json, assert_exactly_once, cli_env, generate

if str(ROOT) not in sys.path:  # the in-process runner the e2e suite uses, by its full name
    sys.path.insert(0, str(ROOT))

from tests.e2e.incli import Ran, invoke


def customer_of(record: Json) -> str:
    return parse_activity(record).customer_id


@pytest.fixture
def fake() -> FakeVoucherify:
    return FakeVoucherify()


@pytest.fixture
def api(fake: FakeVoucherify) -> Iterator[str]:
    with FakeServer(fake) as url:
        yield url


def credentials(api: str) -> dict[str, str]:
    return {
        "CUSTATE_VOUCHERIFY_URL": api,
        "CUSTATE_VOUCHERIFY_APP_ID": APP_ID,
        "CUSTATE_VOUCHERIFY_APP_TOKEN": APP_TOKEN,
    }


def pull_all(store: str, api: str, cwd: Path, *args: str) -> tuple[Ran, Json]:
    """`custate pull --all ARGS --json`, in-process; its summary."""
    p = invoke("pull", "--all", *args, "--store", store, "--json", cwd=cwd, env=credentials(api))
    summary: Json = orjson.loads(p.stdout) if p.stdout.strip() else {}
    return p, summary


def project(n_activities: int, n_customers: int, seed: int, fake: FakeVoucherify) -> list[Json]:
    records = generate(n_activities, n_customers, seed=seed)
    fake.add(records, customer_of)
    fake.list_customers()
    return records


def test_every_customer_pulled_at_once_with_paging_ties_and_a_5xx(
    fake: FakeVoucherify, api: str, store_url: str, tmp_path: Path
) -> None:
    records = project(400, 12, 31, fake)
    # Nine more customers created in one millisecond: more than a page (4) of ties.
    ties = {f"cust_tie_{i}": "2020-01-01T00:00:00.000Z" for i in range(9)}
    fake.list_customers(ties)
    fake.fail_listing(503)  # the first listing request fails once: retried
    fake.fail(sorted(fake.activities)[0], 500)  # so does one customer's first page
    fake.page_delay = 0.01  # long enough for the workers to overlap
    for cid in ties:
        fake.activities[cid] = []

    p, out = pull_all(store_url, api, tmp_path, "--concurrency", "4", "--page-size", "4")
    assert p.returncode == 0, p.stderr.decode()
    n = len(fake.customers)
    assert out["customers"] == {"listed": n, "resumed": 0, "pulled": n, "failed": 0, "total": n}
    assert out["activities"]["accepted"] == len(records)
    assert out["activities"]["duplicates"] == 0
    assert out["retries"] >= 2
    assert out["listing"]["complete"] is True
    assert_exactly_once(store_url, [r["id"] for r in records])
    # Several customers were pulled at once, never more than asked.
    assert 2 <= fake.most_in_flight <= 4 + 1  # the workers and the listing
    # The listing went page by page: each customer asked for once.
    asked = [s.customer_id for s in fake.served(status=200) if s.customer_id != LISTING]
    assert set(asked) == set(fake.customers)
    listing = fake.served(LISTING, 200)
    assert len(listing) >= n // 4
    assert any(s.page > 1 for s in listing)  # through the ties, by page
    with custate.open(store_url) as cs:
        assert cs.lag() == 0

    # Run again: nothing new is listed or stored; the listing goes on from its cursor.
    before = len(fake.served(LISTING))
    p, out = pull_all(store_url, api, tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    assert out["customers"]["listed"] == 0
    assert out["activities"]["accepted"] == 0
    assert fake.served(LISTING)[before].starting_after_id is not None


def test_a_429_pauses_every_worker_for_its_retry_after(
    fake: FakeVoucherify, api: str, sqlite_url: str, tmp_path: Path
) -> None:
    records = project(300, 16, 41, fake)
    fake.page_delay = 0.01

    def throttle_soon() -> None:  # once the workers are busy, the project hits its limit
        while len(fake.served(status=200)) < 8:
            time.sleep(0.005)
        fake.throttle(1.0)

    threading.Thread(target=throttle_soon, daemon=True).start()
    started = time.monotonic()
    p, out = pull_all(sqlite_url, api, tmp_path, "--concurrency", "4", "--page-size", "10")
    took = time.monotonic() - started
    assert p.returncode == 0, p.stderr.decode()
    assert out["rate_limit_pauses"] >= 1
    assert took >= 1.0
    limited = fake.served(status=429)
    assert limited, "the fake never throttled"
    first = limited[0].at
    # Only requests already on their way when the 429 came back met the window; after
    # that every worker waited the Retry-After out: nothing arrived until it had passed.
    assert len(limited) <= 4
    during = [s for s in fake.served() if first + 0.3 < s.at < first + 1.0]
    assert during == []
    assert_exactly_once(sqlite_url, [r["id"] for r in records])


def test_a_customer_that_404s_fails_alone(
    fake: FakeVoucherify, api: str, sqlite_url: str, tmp_path: Path
) -> None:
    records = project(120, 6, 51, fake)
    fake.list_customers({"cust_gone": "2024-03-01T09:00:00.000Z"})  # listed, then deleted
    p, out = pull_all(sqlite_url, api, tmp_path, "--page-size", "3")
    assert p.returncode == 1
    assert out["customers"]["pulled"] == len(fake.customers) - 1
    assert [f["customer_id"] for f in out["failed"]] == ["cust_gone"]
    assert "404" in out["failed"][0]["error"]
    assert_exactly_once(sqlite_url, [r["id"] for r in records])

    # Human output: the failure on stderr, the summary on stdout, exit 1.
    p = invoke("pull", "--all", "--store", sqlite_url, cwd=tmp_path, env=credentials(api))
    assert p.returncode == 1
    assert "cust_gone" in p.stderr.decode()
    assert "404" in p.stderr.decode()
    text = p.stdout.decode()
    assert "1 resumed" in text
    assert "1 failed" in text


def test_backfill_killed_between_pages_then_rerun(
    fake: FakeVoucherify, api: str, store_url: str, tmp_path: Path
) -> None:
    records = project(600, 30, 61, fake)
    fake.page_delay = 0.03
    proc = subprocess.Popen(
        [
            str(CUSTATE),
            "pull",
            "--all",
            "--page-size",
            "5",
            "--concurrency",
            "3",
            "--store",
            store_url,
            "--json",
        ],
        cwd=tmp_path,
        env=cli_env(**credentials(api)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while (
        len(fake.served(LISTING, 200)) < 3 and time.monotonic() < deadline and proc.poll() is None
    ):
        time.sleep(0.01)
    assert proc.poll() is None, "the backfill finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with custate.open(store_url) as cs:
        partial = cs.count_activities()
        left = cs.pull_listings().unfinished("customers?order=created_at&since=")
    assert 0 < partial < len(records)
    assert left, "the customers listed and not done are kept"

    fake.page_delay = 0.0
    served = len(fake.served())
    listed_before = len(fake.served(LISTING, 200))
    p, out = pull_all(store_url, api, tmp_path, "--page-size", "5")
    assert p.returncode == 0, p.stderr.decode()
    assert out["customers"]["resumed"] == len(left)
    # The listing resumed from its cursor: not from the start, and no customer listed twice.
    again = [s for s in fake.served()[served:] if s.customer_id == LISTING]
    assert again[0].starting_after_id is not None
    assert out["customers"]["listed"] + len(left) <= len(fake.customers)
    assert listed_before * 5 + out["customers"]["listed"] >= len(fake.customers)
    assert out["activities"]["accepted"] == len(records) - partial
    assert out["activities"]["duplicates"] <= 3 * 5  # a page in flight per worker at most
    assert_exactly_once(store_url, [r["id"] for r in records])
    with custate.open(store_url) as cs:
        for cid in sorted(fake.activities)[:5]:
            assert cs.state(cid) == cs.replay(cid)


def test_since_limits_customers_and_activities(
    fake: FakeVoucherify, api: str, sqlite_url: str, tmp_path: Path
) -> None:
    records = project(200, 8, 71, fake)
    times = sorted(r["created_at"] for r in records)
    since = times[len(times) // 2]
    p, out = pull_all(sqlite_url, api, tmp_path, "--since", since, "--page-size", "3")
    assert p.returncode == 0, p.stderr.decode()
    wanted = [r for r in records if r["created_at"] >= since]
    active = {c for c, v in fake.customers.items() if v["updated_at"] > since}
    assert out["customers"]["listed"] == len(active)
    assert all(s.starting_after_id is not None for s in fake.served(LISTING))
    assert_exactly_once(sqlite_url, [r["id"] for r in wanted if customer_of(r) in active])


def _delivery(record: Json) -> Json:
    """The webhook (v2024-01-01 envelope) that delivered this activity."""
    a = parse_activity(record)
    return {
        "id": f"wh_{a.id}",
        "project_id": "proj_test",
        "created_at": record["created_at"],
        "type": a.type,
        "data": record["data"],
        "source": {"object_id": "whk_1", "object_type": "webhook"},
        "event": {
            "id": a.id,
            "type": a.type,
            "created_at": record["created_at"],
            "entity_id": a.customer_id,
            "category": "ACTION",
        },
    }


def test_webhooks_before_and_during_a_backfill_store_the_overlap_once(
    fake: FakeVoucherify, api: str, store_url: str
) -> None:
    records = project(160, 8, 81, fake)
    before, during = records[::4], records[1::4]
    fake.page_delay = 0.005
    config = VoucherifyConfig(api, APP_ID, APP_TOKEN)
    with custate.open(store_url) as cs, TestClient(create_app(cs, secret="")) as http:
        for r in before:  # the service received these before the backfill started
            assert http.post("/webhooks/voucherify", json=_delivery(r)).status_code == 200

        failures: list[int] = []

        def deliver() -> None:
            for r in during:
                status = http.post("/webhooks/voucherify", json=_delivery(r)).status_code
                if status != 200:
                    failures.append(status)

        t = threading.Thread(target=deliver)
        with VoucherifyClient(config, page_limit=20) as client:
            t.start()
            report = backfill(cs, client, concurrency=3)
            t.join()
        assert failures == []
        assert report.ok
        assert report.activities.accepted + report.activities.duplicates == len(records)
        assert report.activities.duplicates >= len(before)
    assert_exactly_once(store_url, [r["id"] for r in records])
    with custate.open(store_url) as cs:
        cs.project()
        for cid in sorted(fake.activities)[:4]:
            assert cs.state(cid) == cs.replay(cid)
