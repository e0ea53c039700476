"""Cost against the length of one customer's history (issue 19), each size beside the same
run's baseline.

One customer with N activities (`generate(N, 1, seed=11)`: orders, vouchers and reward
redemptions pile up, so the state grows with the history: 0.37 MB at 10k, 3.7 MB at
100k), ingested into SQLite without projecting (cached under `bench/out/`), then on a
fresh copy of that store:

- first projection: `ReadModel.catch_up()` of the whole history, in us an activity, against
  a decode + fold of the same notifications in memory (no writes) in the same run;
- a late activity near the end: a `customer.custom_event` created among the last 100
  activities (the same tail at every size, so what grows is the history, not the work the
  late activity must redo), ingested, then the catch-up that absorbs it: p50 and max;
  then the same by a new `ReadModel` (a projector that did not write the history: a
  restart, another replica): its first one, then p50 and max; and one new activity, in
  order, by yet another new `ReadModel` (its first write of the customer);
- as of T: `ReadModel.as_of` at random times over the history, p50 / p99;
- `history --from T`: `Custate.history(start=T)` with T among the last 100 activities
  (from the checkpoint before T), p50; and the whole `history` in us an activity (up to
  100k; at 1M it would hold a million entries).

    python bench/bench_history.py                               # 1k, 10k, 100k
    python bench/bench_history.py --sizes 1000 10000 100000 1000000 --json bench/out/history.json
"""

from __future__ import annotations

import argparse
import bisect
import os
import random
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_readmodel import dataset, late_record, sqlite_store
from custate.adapters.api import Custate
from custate.adapters.bulk import fewer_collections
from custate.adapters.eventstore import ACTIVITY_TOPIC, decode
from custate.adapters.readmodel import ReadModel
from custate.domain import CustomerState, apply

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TAIL = 100  # a late activity lands among the last this many activities
FULL_HISTORY_UPTO = 100_000


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def pristine(n: int) -> Path:
    """An SQLite store holding one customer's `n` activities, not projected; made once
    (`bench_readmodel`'s cached inputs: `bench/out/hist_N.ndjson`, `hist_N.db`)."""
    url = sqlite_store(f"hist_{n}", dataset(f"hist_{n}", n, 1, 11))
    return Path(url.removeprefix("sqlite:///"))


def settle(db: Path) -> None:
    """Have the kernel write back what was written to the store's files so far. An SQLite
    WAL checkpoint (every 4 MB of commits) syncs the database file, and would otherwise
    pay, inside whichever timed step it falls in, for the writes of the steps before it:
    the copy of a 1M store, or its first projection (a checkpoint of 4 MB took 1.04 s after
    the copy, 7 ms once it was written back)."""
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def decode_fold(cs: Custate, cid: str) -> float:
    """Seconds to read, decode and fold every notification in memory, no writes."""
    recorder = cs.store.recorder
    state = CustomerState(cid)
    t0, at = time.perf_counter(), 0
    while True:
        notes = recorder.select_notifications(
            at, 10_000, topics=[ACTIVITY_TOPIC], inclusive_of_start=False
        )
        if not notes:
            break
        acts = [decode(n.state, n.originator_version, n.id).activity for n in notes]
        acts.sort(key=lambda a: (a.created_at, a.id))  # in order already: the fold's order
        for a in acts:
            apply(state, a)
        at = notes[-1].id
    return time.perf_counter() - t0


def absorb_late(
    cs: Custate,
    rm: ReadModel,
    template: dict[str, Any],
    times: list[int],
    rng: random.Random,
    count: int,
) -> list[float]:
    """Milliseconds `rm` takes to absorb each of `count` late activities, ingested one at a
    time among the last `TAIL` of the history; `times` (ms since the epoch, sorted) gets
    theirs."""
    out: list[float] = []
    for i in range(count):
        j = rng.randrange(max(0, len(times) - TAIL), len(times) - 1)
        at = min(rng.randint(times[j], times[j + 1]), times[-1] - 1)
        r = cs.ingest([late_record(template, at, time.time_ns() + i)], project=False)
        assert r.accepted == 1
        with fewer_collections():
            t0 = time.perf_counter()
            report = rm.catch_up()
            out.append((time.perf_counter() - t0) * 1e3)
        assert report.late == 1, report
        bisect.insort(times, at)
    return out


def absorb_next(cs: Custate, rm: ReadModel, template: dict[str, Any], times: list[int]) -> float:
    """Milliseconds `rm` takes to absorb one new activity, created after all the others;
    `times` gets its time."""
    at = times[-1] + 1
    r = cs.ingest([late_record(template, at, time.time_ns())], project=False)
    assert r.accepted == 1
    with fewer_collections():
        t0 = time.perf_counter()
        report = rm.catch_up()
        ms = (time.perf_counter() - t0) * 1e3
    assert report.activities == 1, report
    assert report.late == 0, report
    times.append(at)
    return ms


def measure(n: int, repeats: int) -> dict[str, Any]:
    work = OUT / f"hist_{n}.work.db"
    for p in OUT.glob(f"hist_{n}.work.db*"):
        p.unlink()
    shutil.copy(pristine(n), work)
    settle(work)
    out: dict[str, Any] = {"activities": n}
    rng = random.Random(5)
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    try:
        with Custate(f"sqlite:///{work}") as cs:
            rm = ReadModel(cs.store)
            first = cs.store.recorder.select_notifications(0, 1, topics=[ACTIVITY_TOPIC])[0]
            cid = decode(first.state, first.originator_version, first.id).activity.customer_id
            base = min(decode_fold(cs, cid) for _ in range(2 if n <= 100_000 else 1))
            out["decode_fold_us"] = base / n * 1e6
            _log(f"{n:,}: decode+fold {out['decode_fold_us']:.1f} us an activity")
            with fewer_collections():
                t0, c0 = time.perf_counter(), time.process_time()
                rm.catch_up()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out["project_us"] = wall / n * 1e6
            out["project_cpu_us"] = cpu / n * 1e6
            out["project_vs_decode_fold"] = wall / base
            _log(f"{n:,}: first projection {out['project_us']:.1f} us an activity")
            settle(work)
            stored = cs.store.customer_activities(cid)
            template = next(
                s.activity.to_record() for s in stored if s.activity.type == "customer.custom_event"
            )
            times = sorted(
                int((s.activity.created_at - epoch) / timedelta(milliseconds=1)) for s in stored
            )
            del stored
            late = absorb_late(cs, rm, template, times, rng, repeats + 1)[1:]
            out["late_p50_ms"], out["late_max_ms"] = statistics.median(late), max(late)
            _log(f"{n:,}: late {out['late_p50_ms']:.2f} ms")
            # The same by a projector that did not write the history (a restart, another
            # replica): its first late activity reads what the other one kept in memory.
            restarted = absorb_late(cs, ReadModel(cs.store), template, times, rng, repeats + 1)
            out["late_restarted_first_ms"] = restarted[0]
            out["late_restarted_p50_ms"] = statistics.median(restarted[1:])
            out["late_restarted_max_ms"] = max(restarted[1:])
            _log(
                f"{n:,}: late, restarted: first {restarted[0]:.1f} ms, then p50 "
                f"{out['late_restarted_p50_ms']:.2f} / max {out['late_restarted_max_ms']:.1f} ms"
            )
            # And a new activity, in order, by yet another: its first write of the customer.
            out["next_restarted_ms"] = absorb_next(cs, ReadModel(cs.store), template, times)
            _log(f"{n:,}: next activity, restarted: {out['next_restarted_ms']:.1f} ms")
            t_lo, t_hi = times[0], times[-1]
            asof: list[float] = []
            for _ in range(200):
                t = epoch + timedelta(milliseconds=rng.randint(t_lo, t_hi))
                t0 = time.perf_counter()
                rm.as_of(cid, t)
                asof.append((time.perf_counter() - t0) * 1e3)
            out["as_of_p50_ms"], out["as_of_p99_ms"] = statistics.median(asof), _pct(asof, 99)
            _log(f"{n:,}: as of {out['as_of_p50_ms']:.2f} / {out['as_of_p99_ms']:.2f} ms")
            tail: list[float] = []
            for _ in range(repeats):
                t = epoch + timedelta(
                    milliseconds=times[rng.randrange(len(times) - TAIL, len(times))]
                )
                t0 = time.perf_counter()
                cs.history(cid, start=t)
                tail.append((time.perf_counter() - t0) * 1e3)
            out["history_from_p50_ms"] = statistics.median(tail)
            if n <= FULL_HISTORY_UPTO:
                t0 = time.perf_counter()
                entries = cs.history(cid)
                out["history_us"] = (time.perf_counter() - t0) / len(entries) * 1e6
            _log(f"{n:,}: history --from {out['history_from_p50_ms']:.2f} ms")
    finally:
        for p in OUT.glob(f"hist_{n}.work.db*"):
            p.unlink()
    return out


def table(rows: list[dict[str, Any]]) -> str:
    ref = next((r for r in rows if r["activities"] == 10_000), rows[0])
    lines = [
        "| activities | first projection, us an activity (x 10k's) | decode+fold, us | "
        "projection / decode+fold | late activity p50 / max, ms (x 10k's p50) | "
        "late, restarted: first, then p50 / max, ms | next activity, restarted, ms | "
        "as of T p50 / p99, ms | history --from, ms | history, us an activity |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        hist = f"{r['history_us']:.1f}" if "history_us" in r else "-"
        lines.append(
            f"| {r['activities']:,} | {r['project_us']:.1f} "
            f"({r['project_us'] / ref['project_us']:.2f}x) | {r['decode_fold_us']:.1f} | "
            f"{r['project_vs_decode_fold']:.2f} | {r['late_p50_ms']:.2f} / {r['late_max_ms']:.1f} "
            f"({r['late_p50_ms'] / ref['late_p50_ms']:.2f}x) | "
            f"{r['late_restarted_first_ms']:.1f}, {r['late_restarted_p50_ms']:.2f} / "
            f"{r['late_restarted_max_ms']:.1f} | {r['next_restarted_ms']:.1f} | "
            f"{r['as_of_p50_ms']:.2f} / "
            f"{r['as_of_p99_ms']:.2f} | {r['history_from_p50_ms']:.2f} | {hist} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--repeats", type=int, default=11, help="late activities per size")
    ap.add_argument("--json", help="write the figures here as each size is measured")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        rows.append(measure(n, args.repeats))
        if args.json:
            Path(args.json).write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
