"""`custate pull` against a fake Voucherify API on loopback (a real HTTP server in a
thread): paging, 429 with Retry-After, 5xx, a 404 customer, wrong credentials, resuming
from the stored cursor, and a pull killed with SIGKILL between pages. Every activity is
stored exactly once. The pulls run in-process through the typer app (`incli`), but the one
killed with SIGKILL is a real `custate` subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import custate
from custate.adapters.pull import PullCursors
from custate.adapters.voucherify import (
    RateGate,
    VoucherifyClient,
    VoucherifyConfig,
    VoucherifyError,
    retry_after_seconds,
)
from custate.domain import parse_activity

from .fake_voucherify import APP_ID, APP_TOKEN, FakeServer, FakeVoucherify
from .histories import CUSTATE, ROOT, Json, assert_exactly_once, cli_env, generate, record

if str(ROOT) not in sys.path:  # the in-process runner the e2e suite uses, by its full name
    sys.path.insert(0, str(ROOT))

from tests.e2e.incli import Ran, invoke


def customer_of(record: Json) -> str:
    return parse_activity(record).customer_id


def by_customer(records: list[Json]) -> dict[str, list[Json]]:
    out: dict[str, list[Json]] = {}
    for r in records:
        out.setdefault(customer_of(r), []).append(r)
    return out


@pytest.fixture
def fake() -> FakeVoucherify:
    return FakeVoucherify()


@pytest.fixture
def api(fake: FakeVoucherify) -> Iterator[str]:
    with FakeServer(fake) as url:
        yield url


def credentials(api: str, token: str = APP_TOKEN) -> dict[str, str]:
    return {
        "CUSTATE_VOUCHERIFY_URL": api,
        "CUSTATE_VOUCHERIFY_APP_ID": APP_ID,
        "CUSTATE_VOUCHERIFY_APP_TOKEN": token,
    }


def pull(args: list[str], store: str, api: str, cwd: Path, token: str = APP_TOKEN) -> Ran:
    """`custate pull ARGS --json`, in-process (the fake API serves from a thread here)."""
    return invoke("pull", *args, "--store", store, "--json", cwd=cwd, env=credentials(api, token))


def lines(out: bytes) -> dict[str, Json]:
    rows = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    return {r["customer_id"]: r for r in rows}


def test_pages_faults_404_and_resume(
    fake: FakeVoucherify, api: str, store_url: str, tmp_path: Path
) -> None:
    records = generate(600, 3, seed=11)
    groups = by_customer(records)
    big, mid, small = sorted(groups, key=lambda c: -len(groups[c]))
    assert len(groups[big]) > 200  # at least three pages of 100
    fake.add(records, customer_of)
    fake.fail(big, 500)  # the first request for `big` fails with a 500
    fake.fail(mid, 429, {"Retry-After": "1"})

    started = time.monotonic()
    p = pull(
        ["--customers-file", str(_ids_file(tmp_path, [big, mid, small, "cust_nope"]))],
        store_url,
        api,
        tmp_path,
    )
    took = time.monotonic() - started
    assert p.returncode == 1, p.stderr.decode()  # one customer failed: exit 1 at the end
    out = lines(p.stdout)
    assert out["cust_nope"]["ok"] is False
    assert "404" in out["cust_nope"]["error"]
    for cid in (big, mid, small):
        assert out[cid]["ok"], out[cid]
        assert out[cid]["accepted"] == len(groups[cid])
    assert out[big]["pages"] == -(-len(groups[big]) // 100)
    assert took >= 1.0  # Retry-After: 1 was honoured
    assert_exactly_once(store_url, [r["id"] for r in records])
    with custate.open(store_url) as cs:
        assert cs.lag() == 0  # projected at the end
        cursors = PullCursors(cs.store.engine)
        for cid in (big, mid, small):
            assert cursors.get(cid) == groups[cid][-1]["id"]
        assert cursors.get("cust_nope") is None

    # A rerun asks only for what follows each cursor: one empty page per customer.
    served = len(fake.log)
    p = pull(["--customer", big, "--customer", mid], store_url, api, tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    again = fake.log[served:]
    assert [(s.customer_id, s.starting_after_id, s.count) for s in again] == [
        (big, groups[big][-1]["id"], 0),
        (mid, groups[mid][-1]["id"], 0),
    ]

    # New activities upstream: the next pull brings exactly those.
    fresh = [
        record(f"evcus_new_{cid}_{i}", cid, seconds=10**9 + i)  # 2055: after everything
        for cid in (big, mid, small)
        for i in range(40)
    ]
    fake.add(fresh, customer_of)
    p = pull(["--known"], store_url, api, tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    out = lines(p.stdout)
    assert sum(r["accepted"] for r in out.values()) == len(fresh)
    assert sum(r["duplicates"] for r in out.values()) == 0
    assert_exactly_once(store_url, [r["id"] for r in records + fresh])


def _ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "customers.txt"
    path.write_text("# customers to pull\n" + "\n".join(ids) + "\n")
    return path


def test_wrong_credentials_are_a_clear_error(
    fake: FakeVoucherify, api: str, sqlite_url: str, tmp_path: Path
) -> None:
    fake.add(generate(20, 1, seed=3), customer_of)
    cid = next(iter(fake.activities))
    p = invoke(
        "pull",
        "--customer",
        cid,
        "--store",
        sqlite_url,
        cwd=tmp_path,
        env=credentials(api, "wrong"),
    )
    assert p.returncode == 1
    assert "401 unauthorized" in p.stderr.decode()
    assert "CUSTATE_VOUCHERIFY_APP_TOKEN" in p.stderr.decode()


def test_missing_credentials_and_usage(sqlite_url: str, tmp_path: Path) -> None:
    # no CUSTATE_VOUCHERIFY_* variable: `invoke` passes on none of the test process's
    p = invoke("pull", "--customer", "c1", "--store", sqlite_url, cwd=tmp_path)
    assert p.returncode == 2
    assert "CUSTATE_VOUCHERIFY_APP_ID" in p.stderr.decode()
    p = invoke("pull", "--store", sqlite_url, cwd=tmp_path)
    assert p.returncode == 2
    assert "exactly one of" in p.stderr.decode()


def test_pull_killed_between_pages_then_rerun(
    fake: FakeVoucherify, api: str, store_url: str, tmp_path: Path
) -> None:
    records = generate(3000, 2, seed=21)  # ~15 pages per customer
    fake.add(records, customer_of)
    fake.page_delay = 0.05
    ids = sorted(fake.activities)
    args = [str(CUSTATE), "pull", "--customer", ids[0], "--customer", ids[1]]
    proc = subprocess.Popen(
        [*args, "--store", store_url, "--json"],
        cwd=tmp_path,
        env=cli_env(**credentials(api)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while fake.pages_served() < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the pull finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with custate.open(store_url) as cs:
        partial = cs.store.count()
    assert 0 < partial < len(records)

    fake.page_delay = 0.0
    served = len(fake.log)
    p = pull(["--customer", ids[0], "--customer", ids[1]], store_url, api, tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    out = lines(p.stdout)
    # The rerun started from the cursor: at most the one page in flight is fetched again.
    assert sum(r["duplicates"] for r in out.values()) <= 100
    assert sum(r["accepted"] for r in out.values()) == len(records) - partial
    first_after = fake.log[served].starting_after_id
    assert first_after is not None
    assert_exactly_once(store_url, [r["id"] for r in records])
    with custate.open(store_url) as cs:
        for cid in ids:
            assert cs.state(cid) == cs.replay(cid)


# -- the client alone ------------------------------------------------------------------------


def test_retry_after_is_honoured_and_attempts_are_bounded(fake: FakeVoucherify, api: str) -> None:
    fake.add(generate(10, 1, seed=5), customer_of)
    cid = next(iter(fake.activities))
    clock = FakeTime()
    slept = clock.slept
    config = VoucherifyConfig(api, APP_ID, APP_TOKEN)
    fake.fail(cid, 429, {"Retry-After": "7"})
    fake.fail(cid, 503, {})
    gate = RateGate(clock.now, clock.sleep)
    with VoucherifyClient(
        config, sleep=clock.sleep, gate=gate, backoff=0.25, max_attempts=4
    ) as client:
        pages = list(client.activity_pages(cid))
    assert slept[0] == 7.0
    assert 0.125 <= slept[1] <= 0.5  # exponential backoff when no Retry-After
    assert [len(p.data) for p in pages] == [10]

    for _ in range(5):
        fake.fail(cid, 500, {})
    slept.clear()
    with (
        VoucherifyClient(config, sleep=clock.sleep, gate=gate, max_attempts=3) as client,
        pytest.raises(VoucherifyError, match="gave up after 3 attempts"),
    ):
        client.activity_page(cid)
    assert len(slept) == 2


class FakeTime:
    """A clock that sleeping moves on: the client's waits, recorded, without waiting."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def test_retry_after_forms() -> None:
    from datetime import UTC, datetime

    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds("Mon, 01 Jan 2024 12:00:10 GMT", now) == 10.0
    assert retry_after_seconds("garbage", now) is None
    assert retry_after_seconds(None, now) is None


def test_records_without_a_customer_take_the_path_customer(
    fake: FakeVoucherify, api: str, sqlite_url: str
) -> None:
    """An activity whose payload names no customer belongs to the customer in the path."""
    bare: dict[str, Any] = {
        "id": "evcus_bare_1",
        "type": "customer.custom_event",
        "created_at": "2024-05-01T10:00:00Z",
        "data": {"event": {"type": "signup"}},
    }
    fake.activities["cust_path"] = [bare]
    config = VoucherifyConfig(api, APP_ID, APP_TOKEN)
    from custate.adapters.pull import pull_customer

    with custate.open(sqlite_url, catch_up_reads=True) as cs, VoucherifyClient(config) as client:
        r = pull_customer(cs, client, PullCursors(cs.store.engine), "cust_path")
        assert r.ok
        assert r.report.accepted == 1
        assert cs.state("cust_path").activities.count == 1
