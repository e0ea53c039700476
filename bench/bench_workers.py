"""Several processes on one PostgreSQL store (issue 17): projector workers and serve.

(1) catch-up: N generated activities (default 200k) stored once; each run starts one
    `custate project --follow` worker, or two, waits until they hold their share of the
    partitions, then points the store at a fresh read-model generation and times its
    catch-up; one and two alternate (`--runs` each). Reports activities/s, the ratio
    two/one of the medians, and how long the workers took to start and split.
(2) reads during a catch-up: in a run of its own, while two workers catch up, `/healthz`
    and a projected customer's `/customers/{id}/state` from a `serve --no-project`
    process, one after the other; p50/p99/max.
(3) webhooks: two `serve` processes (each its group commit and projector worker) take
    signed deliveries from an httpx async client (C concurrent, S seconds, alternating
    between the two); deliveries/s, p50/p99, every 2xx durable.
(4) webhook to query: deliveries at a fixed rate (default 300/s) to one process; as each is
    answered, the customer's state is read from the other with `min_position` (read your
    writes); the time from the 2xx to that answer, p50/p99, after 2 s of deliveries at the
    same rate (reported apart: new processes, empty pools and caches).

    CUSTATE_BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
        python bench/bench_workers.py --json bench/out/bench_workers.json

Each section's result is written to --json as soon as it has it. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

import custate
from custate.adapters.readmodel.tables import META_TABLE
from custate.domain.fold import FOLD_VERSION

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.generate import generate  # noqa: E402
from bench.rawhttp import Pool  # noqa: E402

CUSTATE = Path(sys.executable).parent / "custate"
SECRET = "bench-secret"
Json = dict[str, Any]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTATE_")}
    env["CUSTATE_WEBHOOK_SECRET"] = SECRET
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(1000 * v[min(len(v) - 1, int(q * (len(v) - 1)))], 2)


@contextmanager
def _proc(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield p
    finally:
        p.terminate()
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def serve(url: str, *extra: str) -> Iterator[str]:
    port = _port()
    with _proc([str(CUSTATE), "serve", "--port", str(port), "--store", url, *extra]):
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield base


def worker(url: str) -> Any:
    return _proc([str(CUSTATE), "project", "--follow", "--poll", "0.2", "--store", url])


def fresh_generation(cs: custate.Custate, generation: int) -> None:
    """Point the store at a new, empty read-model generation (a catch-up from 0)."""
    cs.readmodel.position()  # the settings table exists
    meta = sa.table(META_TABLE, sa.column("name"), sa.column("value"))
    with cs.store.engine.begin() as c:
        c.execute(sa.update(meta).where(meta.c.name == "active").values(value=str(generation)))
        # built by this code's fold: else the workers would rebuild it (adapters.upgrade)
        c.execute(sa.delete(meta).where(meta.c.name == f"fold_version:{generation}"))
        c.execute(
            sa.insert(meta).values(name=f"fold_version:{generation}", value=str(FOLD_VERSION))
        )
    cs.readmodel.position()  # creates its tables, in this process, before the workers race


def bench_catch_up(url: str, n: int, runs: int, out: Json, write: Any) -> None:
    with custate.open(url) as cs:
        t = time.monotonic()
        cs.ingest(generate(n, max(1, n // 50), seed=5), project=False)
        out["catch_up"] = {"activities": n, "ingest_s": round(time.monotonic() - t, 1)}
        write()
        results: dict[str, list[float]] = {"one": [], "two": []}
        started: dict[str, list[float]] = {"one": [], "two": []}
        generation = 100
        # Each run: the workers start on a generation that is caught up, split the
        # partitions, and then the store is pointed at a fresh one (as a rebuild's swap
        # does): the rate is the catch-up's own, without the processes' start. Each run
        # also says how long the workers took from their start to holding their share.
        fresh_generation(cs, generation)
        with worker(url):  # the first generation, caught up untimed
            while cs.readmodel.position() < cs.head():
                time.sleep(0.1)
        for _ in range(runs):
            for kind, k in (("one", 1), ("two", 2)):
                generation += 1
                results[kind].append(_timed_catch_up(cs, url, k, generation, n, started[kind]))
                print(f"catch-up {kind}: {results[kind][-1]:,.0f}/s", file=sys.stderr)
        one, two = statistics.median(results["one"]), statistics.median(results["two"])
        out["catch_up"] |= {
            "one_worker_per_s": [round(x) for x in results["one"]],
            "two_workers_per_s": [round(x) for x in results["two"]],
            "two_over_one": round(two / one, 2),
            "workers_ready_s": {k: [round(x, 2) for x in v] for k, v in started.items()},
        }
        write()
        # The reads, in a run of their own (their serve process and client take CPU from
        # the workers on this machine's two cores).
        with serve(url, "--no-project") as base:
            generation += 1
            reads: Json = {}
            _timed_catch_up(
                cs, url, 2, generation, n, [], lambda: reads.update(_reads_during(cs, base))
            )
        out["reads_during_catch_up"] = reads
        write()


def _timed_catch_up(
    cs: custate.Custate,
    url: str,
    k: int,
    generation: int,
    n: int,
    started: list[float],
    during: Callable[[], None] | None = None,
) -> float:
    """Activities/s of `k` running workers catching up a fresh generation."""
    t = time.monotonic()
    with contextlib.ExitStack() as stack:
        for _ in range(k):
            stack.enter_context(worker(url))
        _settled(url, k)
        started.append(time.monotonic() - t)
        head = cs.head()
        t = time.monotonic()
        fresh_generation(cs, generation)
        rm = cs.readmodel
        if during is not None:
            during()
        while rm.position() < head:
            time.sleep(0.05)
        return n / (time.monotonic() - t)


def _reads_during(cs: custate.Custate, base: str) -> Json:
    """Healthz and a state read, alternately, while the workers catch up (`base`: a serve
    process on the store)."""
    rm = cs.readmodel
    head = cs.head()
    someone = None
    while someone is None:
        someone = next(iter(rm.all_customer_ids()), None)
        time.sleep(0.05)
    health: list[float] = []
    state: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        while rm.position() < head and len(health) < 5000:
            t = time.perf_counter()
            client.get("/healthz").raise_for_status()
            health.append(time.perf_counter() - t)
            t = time.perf_counter()
            client.get(f"/customers/{someone}/state").raise_for_status()
            state.append(time.perf_counter() - t)
    return {
        "samples": len(health),
        "healthz_p50_ms": _pct(health, 0.5),
        "healthz_p99_ms": _pct(health, 0.99),
        "healthz_max_ms": _pct(health, 1.0),
        "state_p50_ms": _pct(state, 0.5),
        "state_p99_ms": _pct(state, 0.99),
        "state_max_ms": _pct(state, 1.0),
    }


def _bodies(n: int, seed: int) -> list[tuple[str, str, bytes, str]]:
    out = []
    for r in generate(n, max(1, n // 20), seed=seed):
        body = orjson.dumps(r)
        sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        out.append((r["id"], r["data"]["customer"]["id"], body, sig))
    return out


def bench_webhooks(url: str, seconds: float, concurrency: int, out: Json, write: Any) -> None:
    bodies = _bodies(int(seconds * 4000), seed=8)
    with custate.open(url) as cs:
        before = cs.count_activities()
    with serve(url) as a, serve(url) as b:
        latencies: list[float] = []
        ok: list[str] = []
        errors: dict[int, int] = {}
        next_i = 0

        async def one(pools: tuple[Pool, Pool], stop_at: float) -> None:
            nonlocal next_i
            while time.monotonic() < stop_at and next_i < len(bodies):
                i = next_i
                next_i += 1
                aid, _, body, sig = bodies[i]
                t0 = time.perf_counter()
                r = await pools[i % 2].request(
                    "POST", "/webhooks/voucherify", body, {"x-voucherify-signature": sig}
                )
                latencies.append(time.perf_counter() - t0)
                if r.status == 200:
                    ok.append(aid)
                else:
                    errors[r.status] = errors.get(r.status, 0) + 1

        async def run() -> float:
            pools = (Pool(a, concurrency), Pool(b, concurrency))
            t0 = time.monotonic()
            await asyncio.gather(*[one(pools, t0 + seconds) for _ in range(concurrency)])
            took = time.monotonic() - t0
            for p in pools:
                await p.close()
            return took

        took = asyncio.run(run())
    with custate.open(url) as cs:
        stored = cs.count_activities() - before
    out["webhooks_two_serve"] = {
        "seconds": round(took, 1),
        "concurrency": concurrency,
        "ok": len(ok),
        "errors": errors,
        "per_second": round(len(ok) / took, 1),
        "p50_ms": _pct(latencies, 0.5),
        "p99_ms": _pct(latencies, 0.99),
        "every_2xx_durable": stored == len(set(ok)),
    }
    write()


def _settled(url: str, projectors: int, within: float = 60) -> None:
    """Wait until every partition is held and split between `projectors` workers, as in a
    deployment running for a while (else the first deliveries measure the lease split)."""
    deadline = time.monotonic() + within
    with custate.open(url) as cs:
        while time.monotonic() < deadline:
            leases = cs.status().get("leases", [])
            owners = {lease["worker"] for lease in leases if lease["held"]}
            if leases and all(lease["held"] for lease in leases) and len(owners) == projectors:
                return
            time.sleep(0.2)
    raise SystemExit(f"the partitions were not split between {projectors} workers")


WARMUP = 2.0  # seconds of deliveries before the webhook-to-query figures count


def bench_visibility(
    url: str, rate: float, seconds: float, workers: int, out: Json, write: Any
) -> None:
    """`workers` 0: each serve process projects in-process (the default); N: two `serve
    --no-project` and N `project --follow` workers (the production roles). The first
    `WARMUP` seconds of deliveries (new processes: empty pools and caches) are reported
    apart."""
    warm = int(rate * WARMUP)
    bodies = _bodies(int(rate * seconds) + warm, seed=9)
    extra = ("--no-project",) if workers else ()
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(serve(url, *extra))
        b = stack.enter_context(serve(url, *extra))
        for _ in range(workers):
            stack.enter_context(worker(url))
        _settled(url, workers or 2)
        delays: list[tuple[int, float]] = []  # (the delivery's index, its delay)
        errors = 0
        kinds: dict[str, int] = {}

        async def deliver(pa: Pool, pb: Pool, i: int, item: tuple[str, str, bytes, str]) -> None:
            nonlocal errors
            _, cid, body, sig = item
            r = await pa.request(
                "POST", "/webhooks/voucherify", body, {"x-voucherify-signature": sig}
            )
            if r.status != 200:
                errors += 1
                kinds[f"POST {r.status}"] = kinds.get(f"POST {r.status}", 0) + 1
                return
            t = time.perf_counter()
            position = orjson.loads(r.body)["position"]
            q = await pb.request(
                "GET", f"/customers/{cid}/state", params={"min_position": position, "wait": 10}
            )
            if q.status != 200:
                errors += 1
                kinds[f"GET {q.status}"] = kinds.get(f"GET {q.status}", 0) + 1
                return
            delays.append((i, time.perf_counter() - t))

        async def run() -> None:
            pa, pb = Pool(a, 256), Pool(b, 256)
            tasks = []
            t0 = time.monotonic()
            for i, item in enumerate(bodies):
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                tasks.append(asyncio.create_task(deliver(pa, pb, i, item)))
            await asyncio.gather(*tasks)
            await pa.close()
            await pb.close()

        asyncio.run(run())
    measured = [d for i, d in delays if i >= warm]
    warming = [d for i, d in delays if i < warm]
    out[f"webhook_to_query_{workers}_workers" if workers else "webhook_to_query"] = {
        "rate_per_s": rate,
        "projectors": f"{workers} project --follow" if workers else "in each serve",
        "error_kinds": kinds,
        "deliveries": len(bodies) - warm,
        "errors": errors,
        "p50_ms": _pct(measured, 0.5),
        "p99_ms": _pct(measured, 0.99),
        "warmup_s": WARMUP,
        "warmup_p50_ms": _pct(warming, 0.5),
        "warmup_p99_ms": _pct(warming, 0.99),
    }
    write()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--activities", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rate", type=float, default=300)
    p.add_argument(
        "--visibility-workers",
        type=int,
        default=0,
        help="0: serve projects in-process; N: serve --no-project and N project workers",
    )
    p.add_argument("--only", choices=["catch_up", "webhooks", "visibility"], action="append")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    base = os.environ.get("CUSTATE_BENCH_POSTGRES_URL") or os.environ.get(
        "CUSTATE_TEST_POSTGRES_URL"
    )
    if not base:
        sys.exit("set CUSTATE_BENCH_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    out: Json = {"cpus": os.cpu_count()}

    def write() -> None:
        text = orjson.dumps(out, option=orjson.OPT_INDENT_2).decode()
        print(text, file=sys.stderr)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")

    only = set(args.only or ["catch_up", "webhooks", "visibility"])
    admin = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    sections: list[tuple[str, Callable[[str], None]]] = [
        ("catch_up", lambda u: bench_catch_up(u, args.activities, args.runs, out, write)),
        ("webhooks", lambda u: bench_webhooks(u, args.seconds, args.concurrency, out, write)),
        (
            "visibility",
            lambda u: bench_visibility(u, args.rate, 10, args.visibility_workers, out, write),
        ),
    ]
    for name, run in sections:
        if name not in only:
            continue
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        try:
            run(f"{base}?schema={schema}")
        finally:
            with admin.begin() as c:
                c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
