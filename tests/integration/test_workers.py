"""Projector workers and serve processes sharing one store: partitions split between
workers by leases, a killed or hung worker's partitions taken over, a worker whose lease
was taken unable to commit, reads that answer during a catch-up, and on SQLite one
projector at a time. Real processes (`custate serve`, `custate project --follow`), real
PostgreSQL (a schema per test), signals sent for real (SIGKILL, SIGSTOP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import text

import custate
from custate.adapters.readmodel.leases import LeaseLost, Leases

from .histories import cli_env, contents, generate

CUSTATE = Path(sys.executable).parent / "custate"
SECRET = "whsec_workers"


@pytest.fixture
def pg_url(store_url: str) -> str:
    if not store_url.startswith("postgresql"):
        pytest.skip("leases and several projector workers are PostgreSQL's")
    return store_url


def _wait(check: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    """Seconds until `check()` held; fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


@contextmanager
def worker(url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        p = subprocess.Popen(
            [str(CUSTATE), "project", "--follow", "--poll", "0.2", "--store", url],
            env=cli_env(),
            stdout=out,
            stderr=out,
        )
    try:
        yield p
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def owners(cs: custate.Custate) -> Counter[str | None]:
    """How many partitions each worker holds now (those nobody holds are not counted)."""
    leases = Leases(cs.store.engine, cs.partitions, 6.0)
    return Counter(owner for _, owner, _, held in leases.table() if held)


def epochs(cs: custate.Custate) -> dict[int, tuple[str | None, int]]:
    leases = Leases(cs.store.engine, cs.partitions, 6.0)
    return {p: (owner, epoch) for p, owner, epoch, _ in leases.table()}


def assert_states_are_the_fold(cs: custate.Custate) -> None:
    for cid in cs.customer_ids():
        assert cs.state(cid).to_json() == cs.replay(cid).to_json(), cid


def test_two_workers_split_the_partitions_and_take_over_a_killed_ones(
    pg_url: str, tmp_path: Path
) -> None:
    records = generate(3000, 60, seed=11)
    with custate.open(pg_url) as cs:
        assert cs.partitions == 16
        assert cs.ingest(records[:1500], project=False).ok
        with worker(pg_url, tmp_path / "w1.log") as w1, worker(pg_url, tmp_path / "w2.log"):
            _wait(lambda: sorted(owners(cs).values()) == [8, 8], "8 partitions each")
            _wait(lambda: cs.lag() == 0, "caught up by two workers")
            status = cs.status()  # what `custate status` shows
            assert status["partitions"] == 16
            held = Counter(row["worker"] for row in status["leases"] if row["held"])
            assert sorted(held.values()) == [8, 8]
            assert status["read_model"]["lag"]["activities"] == 0
            w1.kill()  # SIGKILL: its leases lapse, nobody releases them
            report = cs.ingest(records[1500:], project=False)
            took = _wait(lambda: list(owners(cs).values()) == [16], "one worker holds all")
            cs.wait_for(report.position, wait=30)
            assert took < 20, f"takeover took {took:.1f} s"
        assert_states_are_the_fold(cs)
        assert contents(pg_url).ids == Counter(r["id"] for r in records)


def test_a_hung_worker_loses_its_leases_and_gets_them_back_only_by_acquiring(
    pg_url: str, tmp_path: Path
) -> None:
    records = generate(1200, 40, seed=12)
    with custate.open(pg_url) as cs:
        assert cs.ingest(records[:400], project=False).ok
        with worker(pg_url, tmp_path / "w1.log") as w1, worker(pg_url, tmp_path / "w2.log"):
            _wait(lambda: sorted(owners(cs).values()) == [8, 8], "8 partitions each")
            before = epochs(cs)
            # Worker names are host:pid:nonce: the partitions of the one about to hang.
            hung = next((o for o, _ in before.values() if o and f":{w1.pid}:" in o), None)
            assert hung is not None, (w1.pid, before)
            mine = {p for p, (o, _) in before.items() if o == hung}
            assert len(mine) == 8
            os.kill(w1.pid, signal.SIGSTOP)
            try:
                # Whichever of the two is w1, the stopped one's 8 go to the other.
                _wait(lambda: list(owners(cs).values()) == [16], "the other holds all 16", 30)
                report = cs.ingest(records[400:], project=False)
                cs.wait_for(report.position, wait=30)
            finally:
                os.kill(w1.pid, signal.SIGCONT)
            _wait(lambda: sorted(owners(cs).values()) == [8, 8], "shared again after resuming")
            after = epochs(cs)
            # The hung worker's partitions were all taken (a higher epoch each), and what
            # it holds again it acquired anew: none under the epoch it held when it hung.
            for p in mine:
                assert after[p][1] > before[p][1], (p, before[p], after[p])
        assert_states_are_the_fold(cs)


def test_a_worker_whose_lease_was_taken_cannot_commit(pg_url: str) -> None:
    records = generate(300, 20, seed=13)
    with custate.open(pg_url) as cs:
        rm = cs.readmodel
        leases = Leases(cs.store.engine, rm.partitions, ttl=6.0)
        held = leases.acquire("worker-a", rm.partitions)
        assert sorted(held) == list(range(rm.partitions))
        assert cs.ingest(records, project=False).ok
        # worker-a hangs past its leases; worker-b takes them over.
        with cs.store.engine.begin() as c:
            c.execute(text("UPDATE custate_leases SET expires_at = now() - interval '1 second'"))
        taken = leases.acquire("worker-b", rm.partitions)
        assert sorted(taken) == sorted(held)
        with pytest.raises(LeaseLost):
            rm.catch_up(partitions=sorted(held), fence=lambda c: leases.check(c, "worker-a", held))
        assert set(rm.positions().values()) == {0}  # nothing of a's committed
        assert cs.lag() == len(records)
        # Renewing does not give them back either: they are b's.
        assert leases.heartbeat("worker-a", held) == {}
        rm.catch_up(partitions=sorted(taken), fence=lambda c: leases.check(c, "worker-b", taken))
        assert cs.lag() == 0
        assert_states_are_the_fold(cs)


# -- serve processes and workers under webhook load -------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(url: str, log: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    with log.open("ab") as out:
        p = subprocess.Popen(
            [str(CUSTATE), "serve", "--port", str(port), "--store", url, *extra],
            env=cli_env(CUSTATE_WEBHOOK_SECRET=SECRET),
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if p.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text()}")
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    _wait(up, "serve is up")
    try:
        yield base, p
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _sign(body: bytes) -> str:
    import hashlib
    import hmac

    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.slow
def test_two_serve_and_two_workers_survive_sigkill_under_load(pg_url: str, tmp_path: Path) -> None:
    """Every acknowledged delivery stored exactly once and every state the fold of its
    activities, though one serve process and one worker are SIGKILLed mid-run and restarted
    (deliveries a dead server did not acknowledge are redelivered, as Voucherify does)."""
    records = generate(600, 50, seed=14)
    bodies = {r["id"]: orjson.dumps(r) for r in records}  # plain records: any container
    acknowledged: set[str] = set()
    lock = threading.Lock()
    with custate.open(pg_url) as cs:
        cs.ping()  # the store, made before four processes race to make it
        assert cs.partitions == 16
    with (
        serving(pg_url, tmp_path / "s1.log", "--no-project") as (a, serve_a),
        serving(pg_url, tmp_path / "s2.log", "--no-project") as (b, _),
        worker(pg_url, tmp_path / "w1.log") as w1,
        worker(pg_url, tmp_path / "w2.log"),
    ):
        targets = [a, b]
        killed = threading.Event()

        def deliver(aid: str, i: int) -> None:
            body = bodies[aid]
            for attempt in range(50):
                base = targets[(i + attempt) % 2]
                if killed.is_set() and base == a:
                    base = b
                try:
                    r = httpx.post(
                        f"{base}/webhooks/voucherify",
                        content=body,
                        headers={"x-voucherify-signature": _sign(body)},
                        timeout=30,
                    )
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    with lock:
                        acknowledged.add(aid)
                    return
                assert r.status_code >= 500, r.text
                time.sleep(0.05)
            raise AssertionError(f"{aid} never acknowledged")

        ids = list(bodies)
        with ThreadPoolExecutor(8) as pool:
            first = [pool.submit(deliver, aid, i) for i, aid in enumerate(ids[:300])]
            time.sleep(0.3)
            serve_a.kill()
            killed.set()
            w1.kill()
            for f in first:
                f.result()
            rest = [pool.submit(deliver, aid, i) for i, aid in enumerate(ids[300:])]
            for f in rest:
                f.result()
        with worker(pg_url, tmp_path / "w1b.log"), custate.open(pg_url) as cs:
            _wait(lambda: sorted(owners(cs).values()) == [8, 8], "the restarted worker shares")
            cs.wait_for(cs.head(), wait=60)
            assert acknowledged == set(ids)
            assert contents(pg_url).ids == Counter(ids)  # each stored exactly once
            assert_states_are_the_fold(cs)


def test_reads_and_healthz_answer_during_a_long_catch_up(pg_url: str, tmp_path: Path) -> None:
    records = generate(20_000, 400, seed=15)
    with custate.open(pg_url) as cs:
        assert cs.ingest(records[:200]).ok
        someone = next(iter(cs.customer_ids()))
        assert cs.ingest(records[200:], project=False).ok
        with serving(pg_url, tmp_path / "s.log", "--no-project") as (base, _):
            lagging = httpx.get(f"{base}/readyz", timeout=5)
            assert lagging.json()["read_model"]["lag"]["activities"] > 0
            with worker(pg_url, tmp_path / "w.log"):
                slowest = 0.0
                answered = 0
                while cs.lag() > 0 and answered < 200:
                    for path in ("/healthz", f"/customers/{someone}/state"):
                        t = time.monotonic()
                        r = httpx.get(f"{base}{path}", timeout=5)
                        slowest = max(slowest, time.monotonic() - t)
                        assert r.status_code == 200, r.text
                        answered += 1
                assert answered > 0
                # Not a timing test (bench/ measures): no read waited for the catch-up.
                assert slowest < 5
                _wait(lambda: cs.lag() == 0, "caught up", 120)
            ready = httpx.get(f"{base}/readyz", timeout=5).json()
            assert ready["status"] == "ok"
            assert ready["read_model"]["lag"]["activities"] == 0


def test_on_sqlite_a_second_projector_waits_and_says_so(sqlite_url: str, tmp_path: Path) -> None:
    records = generate(400, 20, seed=16)
    with custate.open(sqlite_url) as cs:
        assert cs.ingest(records[:200], project=False).ok
        with worker(sqlite_url, tmp_path / "w1.log") as w1:
            _wait(lambda: cs.lag() == 0, "the first projector caught up")
            with worker(sqlite_url, tmp_path / "w2.log"):
                _wait(
                    lambda: (
                        "another projector is running"
                        in (tmp_path / "w2.log").read_text(errors="replace")
                    ),
                    "the second one says it waits",
                )
                w1.kill()
                report = cs.ingest(records[200:], project=False)
                cs.wait_for(report.position, wait=30)  # the second took over
        assert_states_are_the_fold(cs)


def test_reads_answer_as_the_read_model_stands_and_wait_for_min_position(
    store_url: str,
) -> None:
    records = generate(200, 10, seed=17)
    with custate.open(store_url) as cs:
        first = cs.ingest(records[:100])
        someone = next(iter(cs.customer_ids()))
        before = cs.state(someone).to_json()
        later = cs.ingest(records[100:], project=False)
        assert later.position > first.position
        # Not caught up: the answer is the read model's as it stands, and says so.
        fresh = cs.freshness(count_at_most=1000)
        assert fresh.position == first.position < fresh.head == later.position
        assert (fresh.lag_activities, fresh.lag_estimated) == (100, False)
        estimate = cs.freshness()  # from the positions alone: an activity and its marker
        assert estimate.lag_estimated
        assert abs(estimate.lag_activities - 100) <= 1
        assert cs.state(someone).to_json() == before
        with pytest.raises(custate.StaleReadError, match="not yet at"):
            cs.state(someone, min_position=later.position, wait=0.2)
        with pytest.raises(custate.QueryError, match="min_position"):
            cs.state(someone, min_position=later.position + 10**6)
        with pytest.raises(custate.QueryError, match="min_position"):
            cs.customers(min_position=-1)
        # A projector elsewhere (here: a thread) catches up while the read waits.
        t = threading.Thread(target=cs.project)
        t.start()
        state = cs.state(someone, min_position=later.position, wait=30)
        t.join()
        assert state.to_json() == cs.replay(someone).to_json()
        assert cs.freshness().lag_activities == 0
    with custate.open(store_url, catch_up_reads=True) as cs:
        more = cs.ingest(generate(20, 2, seed=18), project=False)
        assert more.accepted == 20
        assert cs.count_customers() == len(cs.customer_ids())  # caught up first


def test_serve_with_two_worker_processes_answers_what_either_stored(
    store_url: str, tmp_path: Path
) -> None:
    """`serve --workers 2`: two server processes on one port, each with its group commit
    and projector (on SQLite one projects, the other waits); every delivery readable,
    through either, once its position is reached."""
    records = generate(60, 6, seed=19)
    with custate.open(store_url) as cs:
        cs.ping()
    with serving(store_url, tmp_path / "s.log", "--workers", "2") as (base, _):
        positions = []
        with httpx.Client(base_url=base, timeout=30) as client:
            for r in records:
                body = orjson.dumps(r)
                answer = client.post(
                    "/webhooks/voucherify",
                    content=body,
                    headers={"x-voucherify-signature": _sign(body)},
                )
                assert answer.status_code == 200, answer.text
                positions.append(answer.json()["position"])
            again = client.post(
                "/webhooks/voucherify",
                content=orjson.dumps(records[0]),
                headers={"x-voucherify-signature": _sign(orjson.dumps(records[0]))},
            )
            assert again.json()["status"] == "duplicate"
            count = client.get("/customers/count", params={"min_position": max(positions)})
            assert count.status_code == 200, count.text
            assert int(count.headers["x-custate-position"]) >= max(positions)
    with custate.open(store_url) as cs:
        assert contents(store_url).ids == Counter(r["id"] for r in records)
        assert count.json()["count"] == len(cs.customer_ids())
        assert_states_are_the_fold(cs)


def test_a_catch_up_leaves_idle_partitions_where_they_are_when_told_to(pg_url: str) -> None:
    """`move_idle=False` (what a worker woken by another worker's activities asks): with
    nothing new in its partitions their positions stay, no write; with something new they
    move past everything read, as a plain catch-up moves idle ones too."""

    def record(cid: str, n: int) -> dict[str, object]:
        return {
            "id": f"act_idle_{cid}_{n}",
            "type": "customer.created" if n == 0 else "customer.updated",
            "created_at": f"2024-06-01T00:00:{n:02d}Z",
            "data": {"customer": {"id": cid}},
        }

    with custate.open(pg_url) as cs:
        cids = [f"cust_idle_{i}" for i in range(64)]
        mine = next(c for c in cids if cs.partition_of(c) == 0)
        other = next(c for c in cids if cs.partition_of(c) != 0)
        assert cs.ingest([record(mine, 0)]).ok
        rm = cs.readmodel
        before = rm.position(0)
        head = cs.ingest([record(other, 0)], project=False).position
        r = rm.catch_up(partitions=[0], move_idle=False)
        assert (r.activities, rm.position(0)) == (0, before)
        rm.catch_up(partitions=[0])
        assert rm.position(0) >= head
        cs.ingest([record(other, 1)], project=False)
        head = cs.ingest([record(mine, 1)], project=False).position
        r = rm.catch_up(partitions=[0], move_idle=False)
        assert r.activities == 1
        assert rm.position(0) >= head
        assert cs.state(mine).activities.count == 2


def test_a_joining_worker_gets_its_share_at_once_not_at_the_next_heartbeat(pg_url: str) -> None:
    """Heartbeats 60 s apart: without the workers' channel the second worker would wait a
    minute for the first to give up half of its partitions."""
    with custate.open(pg_url) as a, custate.open(pg_url) as b:
        stop = threading.Event()
        workers = [custate.Worker(cs, ttl=120, heartbeat=60, poll=0.2) for cs in (a, b)]
        threads = [threading.Thread(target=w.run, args=(stop.is_set,)) for w in workers]
        try:
            threads[0].start()
            _wait(lambda: len(workers[0].held) == 16, "the first worker holds all")
            threads[1].start()
            took = _wait(
                lambda: sorted(owners(a).values()) == [8, 8], "8 partitions each", timeout=30
            )
            assert took < 10, f"the split took {took:.1f} s"
            assert len(workers[1].held) == 8
        finally:
            stop.set()
            for t in threads:
                if t.is_alive():
                    t.join(timeout=90)
        # and one that leaves hands its partitions back at once too
        assert sum(owners(a).values()) == 0


def test_a_catch_up_after_a_bulk_ingest_brings_the_planner_statistics_up_to_date(
    pg_url: str,
) -> None:
    """Autovacuum analyzes a table at its next round only: until then a catch-up's reads of
    a bulk ingest are planned as for an empty table (each batch reads every row after it)."""
    records = generate(1500, 30, seed=12)

    def analyzed(cs: custate.Custate) -> bool:
        with cs.store.engine.connect() as c:
            return bool(
                c.execute(
                    text(
                        "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() "
                        "AND tablename = 'custate_events'"
                    )
                ).scalar()
            )

    with custate.open(pg_url) as cs:
        assert cs.ingest(records, project=False).ok
    with custate.open(pg_url) as cs:  # a projector worker, in a process of its own
        assert not analyzed(cs)
        cs.project()
        assert analyzed(cs)
        assert_states_are_the_fold(cs)
