"""The change feed's costs, with baselines from the same run (issue 18).

(1) catch-up throughput with the feed on and off: the same activities (10% late) ingested
    with `project=False` into two SQLite stores, each caught up by a `ReadModel` with
    `feed=True` / `feed=False`; activities/s and the feed's cost in %.
(2) a late activity near the end of a 10k-activity history: `projections.changes.corrections`
    (the history without it against the history with it, from the checkpoint before it, as
    the catch-up does), median of repeated runs, in ms.
(3) with `--postgres URL`: follow latency, from the commit of a catch-up that wrote records
    to a follower in another process receiving them, p50/p99 in ms: `cs.follow_changes`
    told by LISTEN/NOTIFY, against the same follower polling (no channel) in the same run.

    python bench/bench_feed.py [--activities 100000] [--customers 2000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from custate.adapters.api import Custate  # noqa: E402
from custate.adapters.readmodel.view import ReadModel  # noqa: E402
from custate.domain import CustomerState, apply, parse_activity  # noqa: E402
from custate.projections.changes import corrections  # noqa: E402
from custate.projections.keys import key_text  # noqa: E402


def catch_up(n: int, customers: int) -> dict[str, float]:
    records = list(generate(n, customers, 7, late_fraction=0.1))
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        for feed in (False, True):
            url = f"sqlite:///{d}/feed_{feed}.db"
            with Custate(url) as cs:
                cs.ingest(records, project=False)
                rm = ReadModel(cs.store, feed=feed)
                start = time.perf_counter()
                report = rm.catch_up()
                rates[f"feed_{'on' if feed else 'off'}"] = report.activities / (
                    time.perf_counter() - start
                )
    rates["cost_percent"] = 100 * (1 - rates["feed_on"] / rates["feed_off"])
    return rates


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
    args = p.parse_args()
    if args.postgres:
        for listen in (True, False, True, False):
            p50, p99 = follow_latency(args.postgres, listen)
            how = "LISTEN/NOTIFY" if listen else "polling every 0.25 s"
            print(json.dumps({"follow": how, "p50_ms": round(p50, 1), "p99_ms": round(p99, 1)}))
    rates = catch_up(args.activities, args.customers)
    print(
        f"catch-up, {args.activities:,} activities / {args.customers:,} customers, 10% late:"
        f" feed off {rates['feed_off']:,.0f}/s, feed on {rates['feed_on']:,.0f}/s,"
        f" cost {rates['cost_percent']:.1f}%"
    )
    print(
        f"late activity in the last 1% of a 10k history: corrections {late_near_the_end():.2f} ms median"
    )


if __name__ == "__main__":
    main()
