"""The read model's issue targets, measured with baselines from the same run.

(1) catch-up: `ReadModel.catch_up()` over activities ingested with `project=False`, in
    activities/s, on SQLite (in order, and with 10% late deliveries) and PostgreSQL, against
    the library's raw notification read and a decode + fold of the same notifications with
    no writes.
(2) rebuild: `custate rebuild` of 1M activities / 20k customers in a subprocess under
    `/usr/bin/time -v` (wall time, peak RSS), against a decode + fold of the same store in a
    subprocess (no writes).
(3) point in time: `ReadModel.as_of` (and `Custate.state(as_of=...)`) for one customer with
    10k activities at random T, p50 / p99, against `Custate.replay(as_of=T)`.
(4) one late activity in the last 1% of that history: the `catch_up()` that absorbs it.
(5) segment query: `Custate.customers(segment=...)` over 100k customers, against the
    segment index read by the driver alone.

Generated inputs and stores are cached under `bench/out/` (git-ignored), so reruns skip
generating and ingesting them.

    python bench/bench_readmodel.py                        # everything, table
    python bench/bench_readmodel.py --only catchup asof    # some sections
    python bench/bench_readmodel.py --json bench/out/bench_readmodel.json
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text

from custate.adapters.api import Custate
from custate.adapters.bulk import fewer_collections
from custate.adapters.eventstore import ACTIVITY_TOPIC, EventStore, decode
from custate.adapters.readmodel import ReadModel
from custate.domain import CustomerState, apply, fold
from custate.projections.keys import key_text

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.generate import format_ms, write_ndjson

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"

CATCHUP_TARGET = 15_000  # activities/s
REBUILD_TARGET_S = 75.0
REBUILD_RSS_TARGET_MB = 500.0
ASOF_P50_TARGET_MS = 1.0
ASOF_P99_TARGET_MS = 5.0
LATE_TARGET_MS = 2.0
SEGMENT_TARGET_MS = 20.0

_generation = [1000]  # fresh read-model generations for timed catch-ups


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


# --------------------------------------------------------------------------- inputs


def dataset(name: str, n: int, m: int, seed: int, late: float = 0.0) -> Path:
    """The NDJSON file of a generated history, generated once."""
    path = OUT / f"{name}.ndjson"
    if not path.exists():
        _log(f"generating {path.name} ({n:,} activities, {m:,} customers)")
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            write_ndjson(f, n, m, seed, late_fraction=late)
        tmp.rename(path)
    return path


def sqlite_store(name: str, source: Path) -> str:
    """An SQLite store holding `source`, ingested with `project=False`, built once."""
    db = OUT / f"{name}.db"
    done = OUT / f"{name}.db.done"
    if not done.exists():
        for p in OUT.glob(f"{name}.db*"):
            p.unlink()
        _log(f"ingesting {source.name} into {db.name}")
        t0 = time.perf_counter()
        with Custate(f"sqlite:///{db}") as cs:
            r = cs.ingest([source], project=False)
        _log(f"  {r.accepted:,} accepted in {time.perf_counter() - t0:.1f} s")
        done.write_text(str(r.accepted))
    return f"sqlite:///{db}"


def pg_store(schema: str, source: Path) -> str:
    url = f"{PG_BASE}?schema={schema}"
    _log(f"ingesting {source.name} into PostgreSQL schema {schema}")
    with Custate(url) as cs:
        cs.ingest([source], project=False)
    return url


def kept_pg_store(schema: str, n: int, source: Path) -> str:
    """A PostgreSQL store of `source`'s `n` activities in `schema`, kept between runs (its
    ingest takes minutes): made anew unless it holds exactly `n`. Drop it by hand after."""
    url = f"{PG_BASE}?schema={schema}"
    with Custate(url) as cs:
        if cs.store.count() == n:
            _log(f"reusing PostgreSQL schema {schema} ({n:,} activities)")
            return url
    drop_pg_schema(schema)
    return pg_store(schema, source)


def drop_pg_schema(schema: str) -> None:
    engine = create_engine(PG_BASE.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def fresh_model(store: EventStore) -> ReadModel:
    _generation[0] += 1
    return ReadModel(store, generation=_generation[0])


def drop_model(rm: ReadModel) -> None:
    rm.t.metadata.drop_all(rm.engine)


# --------------------------------------------------------------------------- baselines


def raw_read(store: EventStore, batch: int = 5000) -> int:
    """The library's notification read alone, in catch-up sized batches."""
    pos, n = 0, 0
    rec = store.recorder
    while True:
        notes = rec.select_notifications(
            pos, batch, topics=[ACTIVITY_TOPIC], inclusive_of_start=False
        )
        if not notes:
            return n
        n += len(notes)
        pos = notes[-1].id


def decode_fold(store: EventStore, batch: int = 5000) -> int:
    """Read + decode + fold each batch per customer in key order into in-memory states:
    the projection's CPU work with no reads of the read model and no writes."""
    pos, n = 0, 0
    rec = store.recorder
    states: dict[str, CustomerState] = {}
    while True:
        notes = rec.select_notifications(
            pos, batch, topics=[ACTIVITY_TOPIC], inclusive_of_start=False
        )
        if not notes:
            return n
        by: dict[str, list[tuple[str, Any]]] = {}
        for note in notes:
            a = decode(note.state, note.originator_version, note.id).activity
            by.setdefault(a.customer_id, []).append((key_text(a), a))
        for cid, items in by.items():
            s = states.get(cid)
            if s is None:
                s = states[cid] = CustomerState(cid)
            for _, a in sorted(items, key=lambda x: x[0]):
                apply(s, a)
        n += len(notes)
        pos = notes[-1].id


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def check_equal_to_fold(cs: Custate, rm: ReadModel, sample: int, seed: int = 7) -> int:
    """The read model must equal the fold: compare `sample` customers' current states."""
    ids = cs.customer_ids()
    rng = random.Random(seed)
    picked = rng.sample(ids, min(sample, len(ids)))
    for cid in picked:
        got = rm.current(cid)
        want = fold((s.activity for s in cs.store.customer_activities(cid)), cid)
        if got is None or got.to_json() != want.to_json():
            raise AssertionError(f"read model differs from the fold for {cid}")
    return len(picked)


# --------------------------------------------------------------------------- (1) catch-up


def bench_catchup(url: str, repeats: int, label: str) -> dict[str, Any]:
    with Custate(url) as cs:
        store = cs.store
        n = store.count()
        raw_read(store)  # warm the page cache
        raw_t = [_timed(lambda: raw_read(store))[0] for _ in range(repeats)]
        with fewer_collections():  # as catch_up() does
            base_t = [_timed(lambda: decode_fold(store))[0] for _ in range(repeats)]
        cu_t: list[float] = []
        late = 0
        checked = 0
        for i in range(repeats):
            rm = fresh_model(store)
            try:
                with fewer_collections():  # as the programs that catch up run it (CLI, serve)
                    dt, report = _timed(rm.catch_up)
                cu_t.append(dt)
                late = report.late
                if report.activities != n:
                    raise AssertionError(f"projected {report.activities}, stored {n}")
                if i == 0:
                    checked = check_equal_to_fold(cs, rm, 25)
            finally:
                drop_model(rm)
            _log(f"  {label}: catch-up {n / dt:,.0f}/s")
    rate = n / _median(cu_t)
    base = n / _median(base_t)
    raw = n / _median(raw_t)
    return {
        "label": label,
        "activities": n,
        "late_refolds": late,
        "catchup_per_s": rate,
        "catchup_times_s": cu_t,
        "decode_fold_per_s": base,
        "decode_fold_times_s": base_t,
        "raw_read_per_s": raw,
        "raw_read_times_s": raw_t,
        "ratio_time_vs_decode_fold": base / rate,
        "ratio_time_vs_raw_read": raw / rate,
        "checked_customers": checked,
        "target_per_s": CATCHUP_TARGET,
        "met": rate >= CATCHUP_TARGET,
    }


# --------------------------------------------------------------------------- (2) rebuild

_CHILD_BASELINE = """
import sys, time
sys.path.insert(0, {root!r})
from bench.bench_readmodel import decode_fold
from custate.adapters.bulk import fewer_collections
from custate.adapters.eventstore import EventStore
store = EventStore({url!r})
t0 = time.perf_counter()
with fewer_collections():
    n = decode_fold(store)
print(n, time.perf_counter() - t0)
"""


def _time_v(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of `cmd` under /usr/bin/time -v."""
    p = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=True, cwd=ROOT
    )
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)[1])  # type: ignore[index]
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", p.stderr)[1]  # type: ignore[index]
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    return secs, rss * 1024 / 1e6, p.stdout


def bench_rebuild(url: str, repeats: int) -> dict[str, Any]:
    with Custate(url) as cs:
        n = cs.store.count()
    custate_bin = str(Path(sys.executable).parent / "custate")
    walls, rsss = [], []
    for _ in range(repeats):
        wall, rss, out = _time_v(
            [custate_bin, "rebuild", "--json", "--processes", "1", "--store", url]
        )
        walls.append(wall)
        rsss.append(rss)
        _log(f"  rebuild: {wall:.1f} s, {rss:.0f} MB peak RSS ({out.strip()})")
    child = _CHILD_BASELINE.format(root=str(ROOT), url=url)
    bwall, brss, bout = _time_v([sys.executable, "-c", child])
    _log(f"  baseline decode+fold: {bwall:.1f} s, {brss:.0f} MB ({bout.strip()})")
    with Custate(url) as cs:
        checked = check_equal_to_fold(cs, cs.readmodel, 10)
    wall = _median(walls)
    rss = max(rsss)
    return {
        "activities": n,
        "wall_s": wall,
        "walls_s": walls,
        "peak_rss_mb": rss,
        "per_s": n / wall,
        "baseline_decode_fold_wall_s": bwall,
        "baseline_decode_fold_rss_mb": brss,
        "ratio_time_vs_decode_fold": wall / bwall,
        "checked_customers": checked,
        "target_s": REBUILD_TARGET_S,
        "target_rss_mb": REBUILD_RSS_TARGET_MB,
        "met": wall <= REBUILD_TARGET_S and rss < REBUILD_RSS_TARGET_MB,
    }


def _tree_peak_rss(cmd: list[str]) -> tuple[float, float, str]:
    """Run `cmd`; its wall time, the sum over it and every process it started of each
    one's peak RSS (VmHWM, MB, sampled every 50 ms from /proc until each ends), and its
    stdout."""
    peaks: dict[int, int] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def sample() -> None:
        todo = [proc.pid]
        while todo:
            pid = todo.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = max(peaks.get(pid, 0), int(line.split()[1]))
            todo += [int(k) for k in kids]

    while proc.poll() is None:
        sample()
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    return wall, sum(peaks.values()) / 1024, out


def bench_rebuild_processes(url: str, repeats: int) -> dict[str, Any]:
    """`custate rebuild --processes 1` and `--processes 2`, alternating (1 first, then 2
    first, ...): wall time and the sum of every process's peak RSS."""
    with Custate(url) as cs:
        n = cs.store.count()
    custate_bin = str(Path(sys.executable).parent / "custate")
    runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for i in range(repeats):
        for procs in (1, 2) if i % 2 == 0 else (2, 1):
            cmd = [custate_bin, "rebuild", "--json", "--processes", str(procs), "--store", url]
            wall, rss, out = _tree_peak_rss(cmd)
            runs[procs].append((wall, rss))
            _log(f"  rebuild --processes {procs}: {wall:.1f} s, {rss:.0f} MB ({out.strip()})")
    with Custate(url) as cs:
        checked = check_equal_to_fold(cs, cs.readmodel, 10)
    one = _median([w for w, _ in runs[1]])
    two = _median([w for w, _ in runs[2]])
    return {
        "activities": n,
        "one_process_wall_s": one,
        "two_processes_wall_s": two,
        "speedup": one / two,
        "one_process_rss_mb": max(r for _, r in runs[1]),
        "two_processes_rss_sum_mb": max(r for _, r in runs[2]),
        "runs": {str(k): v for k, v in runs.items()},
        "checked_customers": checked,
        "target_speedup": 1.6,
        "met": one / two >= 1.6,
    }


# --------------------------------------------------------------------------- (3) as of


def heavy_store() -> tuple[str, str]:
    """One customer with 10,000 activities (projected), and its id."""
    src = dataset("heavy_10k", 10_000, 1, 11)
    url = sqlite_store("heavy_10k", src)
    with Custate(url) as cs:
        cs.project()
        (cid,) = cs.customer_ids()
    return url, cid


def _random_times(acts: list[datetime], k: int, rng: random.Random) -> list[datetime]:
    lo, hi = acts[0].timestamp(), acts[-1].timestamp()
    return [datetime.fromtimestamp(rng.uniform(lo, hi), UTC) for _ in range(k)]


def bench_asof(url: str, cid: str, samples: int, replays: int) -> dict[str, Any]:
    rng = random.Random(3)
    with Custate(url) as cs:
        rm = cs.readmodel
        rm.catch_up()
        times = sorted(s.activity.created_at for s in cs.store.customer_activities(cid))
        ts = _random_times(times, samples, rng)
        for t in ts[:20]:  # correctness first, and warm-up
            if rm.as_of(cid, t).to_json() != cs.replay(cid, as_of=t).to_json():
                raise AssertionError(f"as_of differs from the replay at {t}")
        core: list[float] = []
        with fewer_collections():  # as the programs run it (the library leaves gc alone)
            for t in ts:
                t0 = time.perf_counter()
                rm.as_of(cid, t)
                core.append((time.perf_counter() - t0) * 1e3)
        api: list[float] = []
        # The library leaves the gc threshold to the program (issue 15): raised around the
        # library calls timed here, as the library raised it itself before.
        with fewer_collections():
            for t in ts:
                t0 = time.perf_counter()
                cs.state(cid, as_of=t)
                api.append((time.perf_counter() - t0) * 1e3)
        # The same questions with no decoded checkpoint kept: each answer decodes its own.
        uncached = ReadModel(cs.store, checkpoint_cache_bytes=0)
        off: list[float] = []
        for t in ts:
            t0 = time.perf_counter()
            uncached.as_of(cid, t)
            off.append((time.perf_counter() - t0) * 1e3)
        rep: list[float] = []
        for t in ts[:replays]:
            t0 = time.perf_counter()
            cs.replay(cid, as_of=t)
            rep.append((time.perf_counter() - t0) * 1e3)
    p50, p99 = _median(core), _pct(core, 99)
    return {
        "activities": len(times),
        "samples": samples,
        "as_of_p50_ms": p50,
        "as_of_p99_ms": p99,
        "state_api_p50_ms": _median(api),
        "state_api_p99_ms": _pct(api, 99),
        "cache_off_p50_ms": _median(off),
        "cache_off_p99_ms": _pct(off, 99),
        "checkpoint_cache": {"hits": rm.checkpoints.hits, "misses": rm.checkpoints.misses},
        "replay_p50_ms": _median(rep),
        "replay_samples": len(rep),
        "ratio_replay_vs_as_of_p50": _median(rep) / p50,
        "target_p50_ms": ASOF_P50_TARGET_MS,
        "target_p99_ms": ASOF_P99_TARGET_MS,
        "met": p50 <= ASOF_P50_TARGET_MS and p99 <= ASOF_P99_TARGET_MS,
    }


# --------------------------------------------------------------------------- (4) late


def late_record(template: dict[str, Any], at_ms: int, n: int) -> dict[str, Any]:
    """A copy of the activity `template` with a fresh id (from `n`) created at `at_ms`."""
    rec: dict[str, Any] = orjson.loads(orjson.dumps(template))
    at = format_ms(at_ms)
    rec["id"] = f"evcus_late{n:016x}"
    rec["created_at"] = at
    rec["data"]["created_at"] = at
    return rec


def bench_late(url: str, cid: str, repeats: int) -> dict[str, Any]:
    """A `customer.custom_event` (changes no balance) copied from the history, with a fresh
    id and a created_at in the last 1% of the history; ingested, then caught up."""
    rng = random.Random(5)
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    with Custate(url) as cs:
        rm = cs.readmodel
        rm.catch_up()
        stored = cs.store.customer_activities(cid)
        template = next(
            s.activity.to_record() for s in stored if s.activity.type == "customer.custom_event"
        )
        times = sorted(
            int((s.activity.created_at - epoch) / timedelta(milliseconds=1)) for s in stored
        )
        ms: list[float] = []
        for i in range(repeats + 1):
            j = rng.randrange(int(len(times) * 0.99), len(times) - 1)
            # strictly before the last activity: at its very time it could sort after it
            at = min(rng.randint(times[j], times[j + 1]), times[-1] - 1)
            # ids unique across runs: the store keeps the late activities of earlier runs
            late_id = time.time_ns() + i
            r = cs.ingest([late_record(template, at, late_id)], project=False)
            if r.accepted != 1:
                raise AssertionError("the late activity was not stored")
            with fewer_collections():  # as the programs run it (the library leaves gc alone)
                t0 = time.perf_counter()
                report = rm.catch_up()
                dt = (time.perf_counter() - t0) * 1e3
            if report.late != 1:
                raise AssertionError(f"expected one late re-fold, got {report.late}")
            if i:  # the first one warms up
                ms.append(dt)
            times = sorted([*times, at])
        current = rm.current(cid)
        want = fold((s.activity for s in cs.store.customer_activities(cid)), cid)
        if current is None or current.to_json() != want.to_json():
            raise AssertionError("read model differs from the fold after late activities")
        # The same-run baseline (this machine's speed varies by 2x from hour to hour): what
        # a late activity would cost without checkpoints, the customer's whole replay.
        replay: list[float] = []
        for _ in range(3):
            t0 = time.perf_counter()
            cs.replay(cid)
            replay.append((time.perf_counter() - t0) * 1e3)
    return {
        "history": len(times),
        "replay_p50_ms": _median(replay),
        "repeats": len(ms),
        "catchup_p50_ms": _median(ms),
        "catchup_max_ms": max(ms),
        "target_ms": LATE_TARGET_MS,
        "met": _median(ms) <= LATE_TARGET_MS,
    }


# --------------------------------------------------------------------------- (5) segment


PAGE = 1000  # the HTTP service's default page


def bench_segment(repeats: int) -> dict[str, Any]:
    """Over >= 100k customers: for each segment, the first page (`limit=PAGE`), the count,
    and the whole list, against the segment index read by the driver alone."""
    src = dataset("seg_400k_130k", 400_000, 130_000, 21)
    url = sqlite_store("seg_400k_130k", src)
    with Custate(url) as cs:
        rm = cs.readmodel
        t0 = time.perf_counter()
        r = rm.catch_up()
        if r.activities:
            _log(f"  projected {r.activities:,} in {time.perf_counter() - t0:.1f} s")
        with rm.engine.connect() as c:
            customers = c.execute(text(f"SELECT COUNT(*) FROM {rm.t.customers.name}")).scalar_one()
            segs = c.execute(
                text(
                    f"SELECT segment_id, COUNT(*) FROM {rm.t.segments.name} "
                    "GROUP BY segment_id ORDER BY 2 DESC"
                )
            ).all()
        seg_sql = (
            f"SELECT customer_id FROM {rm.t.segments.name} WHERE segment_id = ? "
            "ORDER BY customer_id"
        )
        per: dict[str, Any] = {}

        def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
            fn()  # warm
            xs: list[float] = []
            out: Any = None
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = fn()
                xs.append((time.perf_counter() - t0) * 1e3)
            return _median(xs), out

        def index_only(seg: str) -> list[Any]:
            with rm.engine.connect() as c:
                return list(c.exec_driver_sql(seg_sql, (seg,)).all())

        page_sql = (
            f"SELECT customer_id FROM {rm.t.segments.name} WHERE segment_id = ? "
            "AND customer_id > ? ORDER BY customer_id LIMIT ?"
        )

        def index_page(seg: str, after: str) -> list[Any]:
            # The page's index rows alone, through the driver: what a page cannot beat.
            raw = rm.engine.raw_connection()
            try:
                return list(raw.cursor().execute(page_sql, (seg, after, PAGE)).fetchall())
            finally:
                raw.close()

        for seg, size in segs:
            page_ms, page = timed(partial(cs.customers, segment=seg, limit=PAGE))
            count_ms, n = timed(partial(cs.count_customers, segment=seg))
            all_ms, rows = timed(partial(cs.customers, segment=seg))
            base_ms, ids = timed(partial(index_only, seg))
            if n != size or len(rows) != size or len(ids) != size or page != rows[:PAGE]:
                raise AssertionError("segment answers differ")
            # A page from the middle (keyset: `after` the member halfway), and its index rows.
            middle = rows[size // 2].customer_id
            mid_ms, mid = timed(partial(cs.customers, segment=seg, limit=PAGE, after=middle))
            idx_ms, idx = timed(partial(index_page, seg, middle))
            if [r.customer_id for r in mid] != [r[0] for r in idx]:
                raise AssertionError("segment page differs from its index rows")
            per[seg] = {
                "members": size,
                "first_page_ms": page_ms,
                "middle_page_ms": mid_ms,
                "index_page_ms": idx_ms,
                "ratio_middle_page_vs_index_page": mid_ms / idx_ms,
                "count_ms": count_ms,
                "all_rows_ms": all_ms,
                "index_only_ms": base_ms,
                "ratio_all_vs_index_only": all_ms / base_ms,
            }
            _log(
                f"  segment {seg}: {size:,} members, page {page_ms:.1f} ms (middle "
                f"{mid_ms:.1f} ms, its index rows {idx_ms:.2f} ms), count {count_ms:.1f} ms, "
                f"all {all_ms:.1f} ms"
            )
    worst = max(max(v["first_page_ms"], v["count_ms"]) for v in per.values())
    return {
        "customers": customers,
        "page": PAGE,
        "segments": per,
        "worst_page_or_count_ms": worst,
        "target_ms": SEGMENT_TARGET_MS,
        "met": worst <= SEGMENT_TARGET_MS,
    }


# --------------------------------------------------------------------------- main


def _machine() -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


SECTIONS = (
    "catchup",
    "catchup-late",
    "catchup-pg",
    "rebuild",
    "rebuild-processes",
    "rebuild-processes-pg",
    "asof",
    "late",
    "segment",
)


def run(only: list[str], repeats: int, quick: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    n, m = (20_000, 400) if quick else (100_000, 2_000)
    if "catchup" in only:
        url = sqlite_store(f"cu_{n}_{m}", dataset(f"cu_{n}_{m}", n, m, 1))
        yield "catchup_sqlite", bench_catchup(url, repeats, "sqlite in order")
    if "catchup-late" in only:
        src = dataset(f"cu_{n}_{m}_late10", n, m, 1, late=0.1)
        url = sqlite_store(f"cu_{n}_{m}_late10", src)
        yield "catchup_sqlite_late", bench_catchup(url, repeats, "sqlite 10% late")
    if "catchup-pg" in only:
        schema = f"bench_rm_{os.getpid()}"
        try:
            url = pg_store(schema, dataset(f"cu_{n}_{m}", n, m, 1))
            yield "catchup_postgres", bench_catchup(url, repeats, "postgresql in order")
        finally:
            drop_pg_schema(schema)
    if "rebuild" in only:
        rn, rm_ = (100_000, 2_000) if quick else (1_000_000, 20_000)
        url = sqlite_store(f"rb_{rn}_{rm_}", dataset(f"rb_{rn}_{rm_}", rn, rm_, 1))
        yield "rebuild", bench_rebuild(url, 1 if not quick else repeats)
    if "rebuild-processes" in only:
        rn, rm_ = (200_000, 4_000) if quick else (1_000_000, 20_000)
        url = sqlite_store(f"rb_{rn}_{rm_}", dataset(f"rb_{rn}_{rm_}", rn, rm_, 1))
        yield "rebuild_processes", bench_rebuild_processes(url, repeats)
    if "rebuild-processes-pg" in only:
        rn, rm_ = (200_000, 4_000) if quick else (1_000_000, 20_000)
        url = kept_pg_store(f"bench_rb_{rn}_{rm_}", rn, dataset(f"rb_{rn}_{rm_}", rn, rm_, 1))
        yield "rebuild_processes_postgres", bench_rebuild_processes(url, repeats)
    if "asof" in only or "late" in only:
        url, cid = heavy_store()
        if "asof" in only:
            yield "as_of", bench_asof(url, cid, 100 if quick else 500, 5 if quick else 30)
        if "late" in only:
            yield "late", bench_late(url, cid, 5 if quick else 21)
    if "segment" in only:
        yield "segment", bench_segment(5 if quick else 11)


def _row(what: str, value: str, target: str, base: str, met: bool) -> str:
    return f"| {what} | {value} | {target} | {base} | {'yes' if met else '**no**'} |"


def table(res: dict[str, Any]) -> str:
    lines = [
        "| what | median | target | same-run baseline | met |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for key in ("catchup_sqlite", "catchup_sqlite_late", "catchup_postgres"):
        r = res.get(key)
        if r:
            lines.append(
                _row(
                    f"catch-up, {r['label']} ({r['activities']:,})",
                    f"{r['catchup_per_s']:,.0f}/s",
                    f">= {CATCHUP_TARGET:,}/s",
                    f"decode+fold {r['decode_fold_per_s']:,.0f}/s ({r['ratio_time_vs_decode_fold']:.2f}x the time); "
                    f"raw read {r['raw_read_per_s']:,.0f}/s ({r['ratio_time_vs_raw_read']:.1f}x)",
                    r["met"],
                )
            )
    r = res.get("rebuild")
    if r:
        lines.append(
            _row(
                f"rebuild {r['activities']:,}: wall / peak RSS",
                f"{r['wall_s']:.1f} s / {r['peak_rss_mb']:.0f} MB",
                f"<= {REBUILD_TARGET_S:.0f} s / < {REBUILD_RSS_TARGET_MB:.0f} MB",
                f"decode+fold {r['baseline_decode_fold_wall_s']:.1f} s, "
                f"{r['baseline_decode_fold_rss_mb']:.0f} MB ({r['ratio_time_vs_decode_fold']:.2f}x the time)",
                r["met"],
            )
        )
    r = res.get("as_of")
    if r:
        lines.append(
            _row(
                f"as of T, {r['activities']:,} activities: p50 / p99",
                f"{r['as_of_p50_ms']:.2f} / {r['as_of_p99_ms']:.2f} ms",
                f"<= {ASOF_P50_TARGET_MS} / {ASOF_P99_TARGET_MS} ms",
                f"replay {r['replay_p50_ms']:.1f} ms ({r['ratio_replay_vs_as_of_p50']:.0f}x); "
                f"Custate.state {r['state_api_p50_ms']:.2f} / {r['state_api_p99_ms']:.2f} ms; "
                f"checkpoint cache off {r['cache_off_p50_ms']:.2f} / "
                f"{r['cache_off_p99_ms']:.2f} ms",
                r["met"],
            )
        )
    r = res.get("late")
    if r:
        lines.append(
            _row(
                "late activity in the last 1%: absorbing catch-up",
                f"{r['catchup_p50_ms']:.2f} ms",
                f"<= {LATE_TARGET_MS} ms",
                f"max {r['catchup_max_ms']:.2f} ms over {r['repeats']}; "
                f"replay {r['replay_p50_ms']:.1f} ms "
                f"({r['replay_p50_ms'] / r['catchup_p50_ms']:.0f}x)",
                r["met"],
            )
        )
    r = res.get("segment")
    if r:
        big = max(r["segments"].items(), key=lambda kv: kv[1]["members"])[1]
        lines.append(
            _row(
                f"customers in segment, {r['customers']:,} customers, {len(r['segments'])} "
                f"segments: first page of {r['page']:,} / count (worst)",
                f"{r['worst_page_or_count_ms']:.1f} ms",
                f"<= {SEGMENT_TARGET_MS:.0f} ms",
                f"largest ({big['members']:,}): page {big['first_page_ms']:.1f} ms (middle "
                f"{big['middle_page_ms']:.1f} ms, its index rows {big['index_page_ms']:.2f} ms), "
                f"count "
                f"{big['count_ms']:.1f} ms, all rows {big['all_rows_ms']:.1f} ms vs index only "
                f"{big['index_only_ms']:.1f} ms ({big['ratio_all_vs_index_only']:.1f}x)",
                r["met"],
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--repeats", type=int, default=3, help="timed catch-ups per case")
    ap.add_argument("--quick", action="store_true", help="smaller inputs")
    ap.add_argument("--json", nargs="?", const="-", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"machine": _machine()}
    for key, figures in run(args.only, args.repeats, args.quick):
        res[key] = figures
        _log(f"{key}: done")
        if args.json and args.json != "-":  # each section's figures as soon as they are in
            _write_json(Path(args.json), res)
    print(table(res))
    if args.json == "-":
        sys.stdout.buffer.write(_json_bytes(res))
    return 0


def _json_bytes(res: dict[str, Any]) -> bytes:
    return orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def _write_json(path: Path, res: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(_json_bytes(res))
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
