"""The change feed's costs, with baselines from the same run (issue 18).

(1) catch-up throughput with the feed on and off: the same activities (in order, then 10%
    late) ingested with `project=False` into SQLite stores, each caught up by a
    `ReadModel` with `feed=True` / `feed=False`, two of each in turn; activities/s (wall
    and CPU) and the feed's cost in %. With `--postgres URL`, on PostgreSQL too.
(2) a late activity near the end of a 10k-activity history: `projections.changes.corrections`
    (the history without it against the history with it, from the checkpoint before it, as
    the catch-up does), median of repeated runs, in ms.
(3) with `--postgres URL`: follow latency, from the commit of a catch-up that wrote records
    to a follower in another process receiving them, p50/p99 in ms: `cs.follow_changes`
    told by LISTEN/NOTIFY, against the same follower polling (no channel) in the same run.

    python bench/bench_feed.py [--activities 100000] [--customers 2000] [--postgres URL]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from custate.adapters.api import Custate  # noqa: E402
from custate.adapters.readmodel.view import ReadModel  # noqa: E402
from custate.domain import CustomerState, apply, parse_activity  # noqa: E402
from custate.projections.changes import corrections  # noqa: E402
from custate.projections.keys import key_text  # noqa: E402


def catch_up(
    n: int, customers: int, late: float, rounds: int = 2, postgres: str | None = None
) -> dict[str, Any]:
    """Activities/s of a catch-up with the feed off and on, `rounds` of each, alternating
    (by wall time and by CPU time, which the machine's load disturbs less), and the feed's
    cost in % of the median rates; on SQLite, or in schemas of their own on `postgres`
    (dropped after). Every store is ingested first and the input dropped: a catch-up reads
    the store, and the input's objects held in this process made each of the collector's
    full passes a tenth of a second longer."""
    records = list(generate(n, customers, 7, late_fraction=late))
    rates: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    schemas: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        stores = []
        for i in range(rounds):
            for feed in (False, True):
                if postgres is None:
                    url = f"sqlite:///{d}/feed_{feed}_{i}.db"
                else:
                    schemas.append(f"bench_feed_{uuid.uuid4().hex[:8]}")
                    url = f"{postgres}{'&' if '?' in postgres else '?'}schema={schemas[-1]}"
                with Custate(url) as cs:
                    cs.ingest(records, project=False)
                stores.append((feed, url))
        del records
        gc.collect()
        try:
            for feed, url in stores:
                with Custate(url) as cs:
                    rm = ReadModel(cs.store, feed=feed)
                    wall, cpu = time.perf_counter(), time.process_time()
                    done = rm.catch_up().activities
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    rates[feed].append((done / wall, done / cpu))
        finally:
            if schemas:
                assert postgres is not None
                engine = sa.create_engine(
                    postgres.replace("postgresql://", "postgresql+psycopg://")
                )
                with engine.begin() as c:
                    for schema in schemas:
                        c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                engine.dispose()
    off = [statistics.median(x) for x in zip(*rates[False], strict=True)]
    on = [statistics.median(x) for x in zip(*rates[True], strict=True)]
    return {
        "catch_up": f"{n} activities / {customers} customers, {round(100 * late)}% late",
        "store": "sqlite" if postgres is None else "postgresql",
        "feed_off_per_s": round(off[0]),
        "feed_on_per_s": round(on[0]),
        "cost_percent": round(100 * (1 - on[0] / off[0]), 1),
        "cpu_feed_off_per_s": round(off[1]),
        "cpu_feed_on_per_s": round(on[1]),
        "cpu_cost_percent": round(100 * (1 - on[1] / off[1]), 1),
    }


def late_near_the_end(repeats: int = 30) -> float:
    records = [r for r in generate(10_000, 1, 3) if r.get("customer_id") or True]
    acts = sorted((parse_activity(r) for r in records), key=key_text)
    cid = acts[0].customer_id
    acts = [a for a in acts if a.customer_id == cid]
    late_at = len(acts) - len(acts) // 100  # in the last 1%
    late = acts.pop(late_at)
    checkpoint = (late_at // 100) * 100  # the checkpoint before it (every 100)
    start = CustomerState(cid)
    for a in acts[:checkpoint]:
        apply(start, a)
    tail = [(key_text(a), a) for a in acts[checkpoint:]]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        corrections(start, tail, (key_text(late), late))
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


_FOLLOWER = """
import sys, time
import custate
from custate.adapters.notify import Listener
url, listen = sys.argv[1], sys.argv[2] == "listen"
with custate.open(url) as cs:
    if not listen:
        cs._listener = lambda: Listener(None, None)  # the polling baseline
    print("ready", flush=True)
    for r in cs.follow_changes(0, poll=0.25):
        print(r.position, repr(time.time()), flush=True)
"""


def follow_latency(url: str, listen: bool, n: int = 60) -> tuple[float, float]:
    """p50/p99 ms from a catch-up's commit to a follower process printing its first record;
    one activity a write, `n` writes, 0.1 s apart."""
    schema = f"bench_follow_{uuid.uuid4().hex[:8]}"
    store = f"{url}{'&' if '?' in url else '?'}schema={schema}"
    records = list(generate(n, 1, 11))
    records.sort(key=lambda r: str(r["created_at"]))
    with Custate(store, change_feed=True) as cs:
        follower = subprocess.Popen(
            [sys.executable, "-c", _FOLLOWER, store, "listen" if listen else "poll"],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ,
        )
        assert follower.stdout is not None
        assert follower.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # the follower's first read and LISTEN are done
        lags = []
        try:
            for r in records:
                cs.ingest([r], project=False)
                cs.project()
                committed = time.time()
                last = cs.changes(0, limit=1_000_000).next
                position, at = follower.stdout.readline().split()  # the write's first record
                lags.append(1000 * (float(at) - committed))
                while int(position) < last:  # and the rest of them
                    position, _ = follower.stdout.readline().split()
                time.sleep(0.1)
        finally:
            follower.kill()
            follower.wait()
            with cs.store.engine.begin() as c:
                c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    lags.sort()
    return statistics.median(lags), lags[int(len(lags) * 0.99) - 1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--activities", type=int, default=100_000)
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--postgres", help="a PostgreSQL URL: also the follow latency")
    p.add_argument("--json", type=Path, help="also write the figures so far here, each time")
    args = p.parse_args()
    results: dict[str, Any] = {}

    def say(name: str, figures: dict[str, Any]) -> None:
        print(json.dumps(figures), flush=True)
        results[name] = figures
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=1))

    if args.postgres:
        for i, listen in enumerate((True, False, True, False)):
            p50, p99 = follow_latency(args.postgres, listen)
            how = "LISTEN/NOTIFY" if listen else "polling every 0.25 s"
            say(
                f"follow {how} {i}",
                {"follow": how, "p50_ms": round(p50, 1), "p99_ms": round(p99, 1)},
            )
    for late in (0.0, 0.1):
        say(
            f"catch_up_late_{round(100 * late)}pct", catch_up(args.activities, args.customers, late)
        )
    if args.postgres:
        for late in (0.0, 0.1):
            say(
                f"catch_up_postgresql_late_{round(100 * late)}pct",
                catch_up(args.activities, args.customers, late, postgres=args.postgres),
            )
    say("late_in_last_1pct_of_10k", {"corrections_ms": round(late_near_the_end(), 2)})


if __name__ == "__main__":
    main()
