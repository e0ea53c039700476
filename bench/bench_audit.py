"""Audit speed: `history` and `explain` of one customer with 10k activities (pure, and through
the library on SQLite), `gaps` over every customer of a store with N customers.

    .venv/bin/python bench/bench_audit.py --activities 10000 --customers 100000

Stores are built once under bench/out/ and reused."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

import custate  # noqa: E402
from bench.generate import generate  # noqa: E402
from custate.adapters.bulk import fewer_collections  # noqa: E402
from custate.adapters.codecs import paged  # noqa: E402
from custate.domain import fold, parse_activity  # noqa: E402
from custate.projections import audit  # noqa: E402

OUT = ROOT / "bench" / "out"


def best(fn: Callable[[], Any], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def heavy(n: int) -> tuple[str, list[dict[str, Any]]]:
    records = list(generate(n, 1, seed=17, late_fraction=0.05))
    cid = records[0]["data"]["customer"]["id"]
    return cid, records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--activities", type=int, default=10_000)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument(
        "--json", type=Path, help="also write the figures (ms, s) as JSON, each when in"
    )
    args = ap.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    figures: dict[str, float] = {}

    def note(name: str, value: float) -> None:
        figures[name] = round(value, 4)
        if args.json is not None:
            tmp = args.json.with_suffix(".tmp")
            tmp.write_text(json.dumps(figures, indent=2) + "\n")
            tmp.replace(args.json)

    cid, records = heavy(args.activities)
    acts = [parse_activity(r) for r in records]
    pairs: list[audit.Pair] = [(a, None) for a in acts]
    entries = audit.history(pairs, cid)
    path = next(c.path for e in entries for c in e.changes if c.path.endswith(".balance"))
    print(f"{args.activities:,} activities, customer {cid}, explain {path}")
    # The same-run baseline: this machine's speed varies by 2x from hour to hour.
    baseline = best(lambda: fold(acts, cid))
    print(f"baseline, the plain fold: {baseline * 1000:8.1f} ms")
    note("fold_ms", baseline * 1000)
    pure = best(lambda: audit.history(pairs, cid))
    print(f"pure history:  {pure * 1000:8.1f} ms ({pure / baseline:.1f}x the fold)")
    note("history_pure_ms", pure * 1000)
    pure = best(lambda: audit.explain(pairs, cid, path))
    print(f"pure explain:  {pure * 1000:8.1f} ms ({pure / baseline:.1f}x the fold)")
    note("explain_pure_ms", pure * 1000)

    db = OUT / f"audit_heavy_{args.activities}.db"
    url = f"sqlite:///{db}"
    with custate.open(url) as cs:
        if not cs.customer_ids():
            cs.ingest(records)
        cs.project()
        # What a library audit folds: the read model's fold inputs, not the events.
        # The library leaves the gc threshold to the program (issue 15): raised around the
        # library calls timed here, as the library raised it itself before.
        with fewer_collections():
            events = best(lambda: cs.activities(cid)) * 1000
        print(f"load, the events (cs.activities):     {events:8.1f} ms")
        note("load_events_ms", events)
        kept = best(lambda: cs.readmodel.fold_inputs(cid)) * 1000
        print(f"load, the fold inputs (what audits read): {kept:8.1f} ms")
        note("load_fold_inputs_ms", kept)
        with fewer_collections():
            took = best(lambda: cs.history(cid))
            print(f"api history:   {took * 1000:8.1f} ms ({took / baseline:.1f}x the fold)")
            note("history_api_ms", took * 1000)
            times = sorted(a.created_at for a in acts)
            for share in (0.01, 0.1):
                start = times[int(len(times) * (1 - share))]
                ms = best(partial(cs.history, cid, start=start)) * 1000
                print(f"api history --from the last {share:.0%}: {ms:8.1f} ms")
                note(f"history_from_last_{share:.0%}_ms".replace("%", "pct"), ms)
            took = best(lambda: cs.explain(cid, path))
            print(f"api explain:   {took * 1000:8.1f} ms ({took / baseline:.1f}x the fold)")
            note("explain_api_ms", took * 1000)

    # The generator starts customers over the stream: 4 activities a customer and 1.3x the
    # customers asked for reach at least that many. Its balances are continuous, so 1% of
    # its activities are dropped, as if lost upstream: those that moved a balance leave gaps.
    gdb = OUT / f"audit_gaps_{args.customers}_drop1.db"
    gurl = f"sqlite:///{gdb}"
    with custate.open(gurl) as cs:
        if cs.store.count() == 0:
            t = time.perf_counter()
            rng = random.Random(29)
            stream = generate(args.customers * 4, args.customers * 13 // 10, seed=23)
            cs.ingest(r for r in stream if rng.random() >= 0.01)
            print(f"(built the gaps store in {time.perf_counter() - t:.1f} s)")
        cs.project()
        customers = len(cs.customer_ids())
        found: list[audit.CardGap] = []

        def run() -> None:
            found[:] = cs.gaps()

        took = best(run, 2)
        with_gaps = len({g.customer_id for g in found})
        print(
            f"gaps over all {customers:,} customers: {took:8.2f} s "
            f"({len(found):,} gaps, {with_gaps:,} customers with gaps)"
        )
        note("gaps_s", took)
        # The bound when every customer had gaps: every stored state read and parsed.
        rm = cs.readmodel
        cu = rm.t.customers

        def parse_all() -> None:
            with rm.engine.connect() as c:
                for (state,) in c.execute(select(cu.c.state)):
                    paged.load_row(state)

        bound = best(parse_all, 2)
        print(f"every stored state parsed (the bound): {bound:8.2f} s")
        note("parse_all_states_s", bound)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
