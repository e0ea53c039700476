"""Ingest throughput on SQLite and PostgreSQL, against the raw `eventsourcing` append of the
same payloads, measured in the same run.

For each backend and batch size (activities per transaction):

(a) library path: `EventStore.append` over already-parsed activities (parse excluded);
(b) whole process: `custate ingest FILE --store URL --batch-size N --no-project --json` as
    a subprocess, timed end to end (start, imports, parse, validate, probe, write);
(c) baseline: a plain `eventsourcing.application.Application` (pinned `name`) saving one
    `DomainEvent` per activity (the record dict as its payload, uuid5 originator id per
    customer) with `app.save(*events)`: the library's own mapper and JSON transcoder, no
    validation, no dedupe; batch = events per `save` (one transaction).

Also: a duplicate-heavy run (the same file ingested a second time), whether the writer
thread of `custate.adapters.ingest` helps, and a cProfile of the whole ingest by stage.
Every store is fresh (an SQLite file in a temp dir, a PostgreSQL schema) and is deleted
afterwards.

    python bench/bench_ingest.py                              # everything, ~15 min
    python bench/bench_ingest.py --json bench/out/bench_ingest.json
    python bench/bench_ingest.py --activities 5000 --batch1-activities 500 --repeats 1
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import itertools
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson
import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import DomainEvent
from sqlalchemy.engine import make_url

from custate.adapters.api import Custate
from custate.adapters.bulk import fewer_collections
from custate.adapters.eventstore import EventStore
from custate.adapters.readers import Record, read_path
from custate.domain import Activity

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.generate import write_ndjson

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
CUSTATE = str(Path(sys.executable).with_name("custate"))
TARGET_RATIO = 0.6  # whole `custate ingest` at batch 1,000 / raw append, per backend
_ids = itertools.count()


# --------------------------------------------------------------------------- stores


class Backend:
    """Fresh stores of one kind, each removed after use."""

    def __init__(self, kind: str, tmp: Path, pg_url: str) -> None:
        self.kind = kind
        self.tmp = tmp
        self.pg_url = pg_url

    @contextmanager
    def fresh(self) -> Iterator[tuple[str, dict[str, str]]]:
        """(custate store URL, eventsourcing env for the raw baseline) of a new empty store."""
        tag = f"bench_{os.getpid()}_{next(_ids)}"
        if self.kind == "sqlite":
            path = self.tmp / f"{tag}.db"
            try:
                yield (
                    f"sqlite:///{path}",
                    {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)},
                )
            finally:
                for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        u = make_url(self.pg_url)
        with psycopg.connect(self._dsn(), autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{tag}"')
        try:
            yield (
                f"{self.pg_url}?schema={tag}",
                {
                    "PERSISTENCE_MODULE": "eventsourcing.postgres",
                    "POSTGRES_DBNAME": u.database or "postgres",
                    "POSTGRES_HOST": u.host or "127.0.0.1",
                    "POSTGRES_PORT": str(u.port or 5432),
                    "POSTGRES_USER": u.username or "postgres",
                    "POSTGRES_PASSWORD": u.password or "",
                    "POSTGRES_SCHEMA": tag,
                },
            )
        finally:
            with psycopg.connect(self._dsn(), autocommit=True) as c:
                c.execute(f'DROP SCHEMA IF EXISTS "{tag}" CASCADE')

    def _dsn(self) -> str:
        return make_url(self.pg_url).set(drivername="postgresql").render_as_string(False)


# --------------------------------------------------------------------------- (c) raw


@dataclass(frozen=True)
class RawRecorded(DomainEvent):
    payload: dict[str, Any]


class RawLog(Application[UUID]):
    name = "rawbench"  # pinned: PostgreSQL table names follow it


def raw_append(env: dict[str, str], records: list[dict[str, Any]], batch: int) -> float:
    """Seconds to save every record as one event, `batch` events per `app.save`."""
    app = RawLog(env=env)
    try:
        ids: dict[str, UUID] = {}
        versions: dict[UUID, int] = {}
        t0 = time.perf_counter()
        for i in range(0, len(records), batch):
            events = []
            for rec in records[i : i + batch]:
                cust = rec["data"]["customer"]["id"]
                oid = ids.get(cust)
                if oid is None:
                    oid = ids[cust] = uuid5(NAMESPACE_URL, f"customer:{cust}")
                v = versions[oid] = versions.get(oid, 0) + 1
                events.append(
                    RawRecorded(
                        originator_id=oid,
                        originator_version=v,
                        timestamp=RawRecorded.create_timestamp(),
                        payload=rec,
                    )
                )
            app.save(*events)
        return time.perf_counter() - t0
    finally:
        app.close()


# --------------------------------------------------------------------------- (a), (b)


def lib_append(url: str, activities: list[Activity], batch: int) -> float:
    """Seconds for `EventStore.append` of every activity, `batch` per call."""
    store = EventStore(url)
    try:
        t0 = time.perf_counter()
        for i in range(0, len(activities), batch):
            result = store.append(activities[i : i + batch], datetime.now(UTC))
            assert len(result.accepted) == len(activities[i : i + batch]), "not all accepted"
        return time.perf_counter() - t0
    finally:
        store.close()


def cli_ingest(url: str, path: Path, batch: int, expect: dict[str, int]) -> float:
    """Seconds for the whole `custate ingest` process."""
    cmd = [CUSTATE, "ingest", str(path), "--store", url, "--batch-size", str(batch)]
    t0 = time.perf_counter()
    out = subprocess.run([*cmd, "--no-project", "--json"], capture_output=True, check=False)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.decode()}")
    report = orjson.loads(out.stdout)
    for key, value in expect.items():
        assert report[key] == value, (key, report[key], value)
    return seconds


# --------------------------------------------------------------------------- writer thread


def inprocess_ingest(url: str, path: Path, batch: int, workers: int, n: int) -> float:
    """Seconds for `Custate.ingest_paths([FILE], workers=...)`, store already open."""
    # The library leaves the gc threshold to the program (issue 15): raised around the
    # library calls timed here, as the library raised it itself before.
    with Custate(url) as cs, fewer_collections():
        t0 = time.perf_counter()
        report = cs.ingest_paths([str(path)], batch_size=batch, project=False, workers=workers)
        seconds = time.perf_counter() - t0
    assert report.accepted == n, report.to_json()
    return seconds


# --------------------------------------------------------------------------- profile

# (stage, file suffix, function): cumulative time of that function
STAGES: tuple[tuple[str, str, str], ...] = (
    ("parse: readers._ndjson (readline, orjson.loads, and the next line)", "readers.py", "_ndjson"),
    ("  validate: parse_activity (within parse)", "activity.py", "parse_activity"),
    ("canonical content: Activity.content", "activity.py", "content"),
    ("probe: EventStore._drop_stored", "eventstore.py", "_drop_stored"),
    ("events: EventStore._events (heads query + dumps + sha256)", "eventstore.py", "_events"),
    ("insert: recorder.insert_events (incl. commit)", "", "insert_events"),
    ("rejects: RejectStore.resolve", "rejects.py", "resolve"),
    ("whole ingest", "ingest.py", "ingest"),
)
LEAVES: tuple[tuple[str, str, str], ...] = (
    ("  orjson.loads (all)", "", "orjson.loads"),
    ("  orjson.dumps (all)", "", "orjson.dumps"),
    ("  pydantic validate_python", "", "validate_python"),
    ("  sha256 (all)", "", "sha256"),
    ("  sqlite3 execute (one per event, in the library)", "", "'execute' of 'sqlite3.Cursor'"),
    ("  sqlite3 commit", "", "'commit' of 'sqlite3.Connection'"),
    ("  psycopg: composite text dump of the events (library)", "array.py", "_dump_list"),
    (
        "  psycopg: wait loop (all queries; includes the dump above)",
        "psycopg/connection.py",
        "wait",
    ),
)


def profile_ingest(url: str, path: Path, batch: int) -> tuple[dict[str, float], str]:
    """cProfile of one in-process ingest, parsed in this process (cProfile sees one)."""
    prof = cProfile.Profile()
    with Custate(url) as cs, fewer_collections():  # as in inprocess_ingest
        prof.enable()
        cs.ingest_paths([str(path)], batch_size=batch, project=False, workers=0)
        prof.disable()
    st = pstats.Stats(prof)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = st.stats  # type: ignore[attr-defined]
    stages: dict[str, float] = {}
    for name, suffix, func in STAGES:
        stages[name] = sum(
            v[3] for (f, _, fn), v in raw.items() if fn == func and f.endswith(suffix)
        )
    # the leaf costs under insert/commit/probe that matter: (label, file suffix, name part)
    for label, suffix, part in LEAVES:
        stages[label] = sum(
            v[3] for (f, _, fn), v in raw.items() if part in fn and f.endswith(suffix)
        )
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
    return stages, buf.getvalue()


# --------------------------------------------------------------------------- runner


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "args": vars(args),
        "throughput": [],
    }
    try:
        big = tmp / "acts.ndjson"
        with big.open("wb") as f:
            write_ndjson(f, args.activities, args.customers, seed=args.seed)
        small = tmp / "acts_small.ndjson"
        with big.open("rb") as src, small.open("wb") as dst:
            for line in itertools.islice(src, args.batch1_activities):
                dst.write(line)
        empty = tmp / "empty.ndjson"
        empty.write_bytes(b"")
        nbytes = big.stat().st_size
        print(
            f"data: {args.activities:,} activities, {args.customers:,} customers, "
            f"{nbytes / args.activities:,.0f} B/line; batch 1 uses the first "
            f"{args.batch1_activities:,}",
            flush=True,
        )
        records = [orjson.loads(line) for line in big.open("rb")]
        parsed = [item for item in read_path(str(big))]
        activities = [r.activity for r in parsed if isinstance(r, Record)]
        assert len(activities) == args.activities
        del parsed
        gc.collect()
        gc.freeze()  # the held data sets are not re-walked by the collector in timed runs
        backends = [Backend(k, tmp, args.pg) for k in args.backends]
        for be in backends:
            # fixed cost of a whole process: start, imports, open (create) the store
            starts = []
            for _ in range(args.repeats):
                with be.fresh() as (url, _env):
                    starts.append(cli_ingest(url, empty, 1000, {"read": 0}))
            results.setdefault("startup_s", {})[be.kind] = median(starts)
            print(f"{be.kind}: `custate ingest` of an empty file: {median(starts):.2f} s")
            for batch in args.batches:
                n = args.batch1_activities if batch == 1 else args.activities
                path = small if batch == 1 else big
                times: dict[str, list[float]] = {"raw": [], "lib": [], "cli": []}
                for _ in range(args.repeats):  # interleaved, so noise hits all three alike
                    with be.fresh() as (_url, env):
                        times["raw"].append(raw_append(env, records[:n], batch))
                    with be.fresh() as (url, _env):
                        times["lib"].append(lib_append(url, activities[:n], batch))
                    with be.fresh() as (url, _env):
                        times["cli"].append(cli_ingest(url, path, batch, {"accepted": n}))
                row = {
                    "backend": be.kind,
                    "batch": batch,
                    "n": n,
                    **{f"{k}_per_s": n / median(v) for k, v in times.items()},
                    "times_s": times,
                }
                row["lib_ratio"] = row["lib_per_s"] / row["raw_per_s"]
                row["cli_ratio"] = row["cli_per_s"] / row["raw_per_s"]
                results["throughput"].append(row)
                print(
                    f"{be.kind:10} batch {batch:>5}: raw {row['raw_per_s']:>8,.0f}/s  "
                    f"lib {row['lib_per_s']:>8,.0f}/s ({row['lib_ratio']:.2f})  "
                    f"cli {row['cli_per_s']:>8,.0f}/s ({row['cli_ratio']:.2f})",
                    flush=True,
                )
        # duplicate-heavy: the same file a second time, every record a duplicate
        for be in backends:
            dup = []
            for _ in range(args.repeats):
                with be.fresh() as (url, _env):
                    cli_ingest(url, big, 1000, {"accepted": args.activities})
                    dup.append(cli_ingest(url, big, 1000, {"duplicates": args.activities}))
            results.setdefault("duplicates_per_s", {})[be.kind] = args.activities / median(dup)
            print(
                f"{be.kind:10} all duplicates, batch 1000: {args.activities / median(dup):,.0f}/s"
            )
        # parsing in worker processes vs in the writing process, batch 1,000
        for be in backends:
            wt: dict[str, list[float]] = {"workers": [], "serial": []}
            for _ in range(args.repeats):
                for mode in ("workers", "serial"):
                    with be.fresh() as (url, _env):
                        workers = (os.cpu_count() or 1) if mode == "workers" else 0
                        wt[mode].append(inprocess_ingest(url, big, 1000, workers, args.activities))
            rates = {k: args.activities / median(v) for k, v in wt.items()}
            results.setdefault("parse_workers", {})[be.kind] = rates
            print(
                f"{be.kind:10} in-process ingest, batch 1000: parse workers "
                f"{rates['workers']:,.0f}/s, serial {rates['serial']:,.0f}/s "
                f"({rates['workers'] / rates['serial']:.2f}x)",
                flush=True,
            )
        if args.profile:
            for be in backends:
                with be.fresh() as (url, _env):
                    stages, top = profile_ingest(url, big, 1000)
                results.setdefault("profile_s", {})[be.kind] = stages
                total = stages["whole ingest"]
                print(f"\nprofile, {be.kind}, batch 1000 (cProfile, parsed in process):")
                for name, secs in stages.items():
                    print(f"  {name:62} {secs:7.2f} s {100 * secs / total:5.1f}%")
                if args.verbose:
                    print(top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--activities", type=int, default=50_000)
    ap.add_argument("--customers", type=int, default=1_000)
    ap.add_argument("--batch1-activities", type=int, default=3_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100, 1000]
    )
    ap.add_argument("--backends", type=lambda s: s.split(","), default=["sqlite", "postgresql"])
    ap.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL database (a schema per run)")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--verbose", action="store_true", help="also the top functions of the profile")
    ap.add_argument("--json", nargs="?", const="-", help="write the figures as JSON (- = stdout)")
    args = ap.parse_args(argv)
    results = run(args)
    if args.json:
        blob = orjson.dumps(results, option=orjson.OPT_INDENT_2)
        if args.json == "-":
            sys.stdout.buffer.write(blob + b"\n")
        else:
            Path(args.json).write_bytes(blob + b"\n")
    for row in results["throughput"]:
        if row["batch"] == 1000:
            ok = row["cli_ratio"] >= TARGET_RATIO
            print(
                f"target {row['backend']}: whole ingest / raw at batch 1000 = "
                f"{row['cli_ratio']:.2f} ({'met' if ok else 'MISSED'}, >= {TARGET_RATIO})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
