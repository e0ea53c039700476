"""The read model through the console script: `ingest` projects unless `--no-project`,
`project` catches up (once, or `--follow` until SIGTERM/SIGINT), `customers` filters from
the indexes, `state --verify` checks the read model against the event store, `rebuild`
changes no answer. On real SQLite files; the commands in-process through the typer app
(`incli`), the follower a real `custate` subprocess, since it is about signals."""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

import custate
from custate.adapters.codecs import state as snapshot
from custate.adapters.readmodel import ReadModel
from custate.domain import CustomerState, fold_all, parse_activity

from .incli import Ran, invoke

Json = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
CUSTATE = Path(sys.executable).parent / "custate"


@cache
def _generate() -> Callable[..., Iterable[Json]]:
    spec = importlib.util.spec_from_file_location(
        "custate_bench_generate", ROOT / "bench" / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    generate: Callable[..., Iterable[Json]] = module.generate
    return generate


def history(n: int, customers: int, seed: int) -> list[Json]:
    """Generated activities in arrival order: 20% late, 10% delivered twice."""
    return list(_generate()(n, customers, seed, late_fraction=0.2, duplicate_fraction=0.1))


def folded(records: Iterable[Json]) -> dict[str, CustomerState]:
    return fold_all(parse_activity(r) for r in records)


def write_ndjson(path: Path, records: Iterable[Json]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("CUSTATE_STORE", "COLUMNS")}
    out["COLUMNS"] = "200"
    return out


def run(*args: str | Path, cwd: Path) -> Ran:
    return invoke(*args, cwd=cwd)


def ok(p: Ran) -> Ran:
    assert p.returncode == 0, (p.args, p.stdout.decode()[-2000:], p.stderr.decode()[-2000:])
    return p


def json_lines(out: bytes) -> list[Json]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def lag(url: str) -> int:
    with custate.open(url) as cs:
        return cs.lag()


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


# -- ingest projects; --no-project leaves it to project --------------------------------------


def test_ingest_projects_by_default_and_no_project_leaves_a_lag(store: str, tmp_path: Path) -> None:
    records = history(600, 30, seed=41)
    first, second = records[:300], records[300:]
    ok(run("ingest", write_ndjson(tmp_path / "a.ndjson", first), "--store", store, cwd=tmp_path))
    assert lag(store) == 0
    with custate.open(store) as cs:
        assert cs.readmodel.position() > 0
        expected = folded(first)
        for cid in list(expected)[:5]:
            current = cs.readmodel.current(cid)
            assert current is not None
            assert current.to_json() == expected[cid].to_json()

    b = write_ndjson(tmp_path / "b.ndjson", second)
    report = orjson.loads(
        ok(run("ingest", b, "--store", store, "--no-project", "--json", cwd=tmp_path)).stdout
    )
    waiting = lag(store)
    assert waiting == report["accepted"] > 0

    summary = orjson.loads(ok(run("project", "--store", store, "--json", cwd=tmp_path)).stdout)
    assert summary["projected"] == waiting
    assert summary["late"] > 0  # the second file holds activities that sort before the first's
    assert lag(store) == 0
    with custate.open(store) as cs:
        for cid, state in folded(records).items():
            current = cs.readmodel.current(cid)
            assert current is not None
            assert current.to_json() == state.to_json(), cid


# -- customers ----------------------------------------------------------------------------------


def brute_force(states: dict[str, CustomerState], **f: Any) -> list[Json]:
    out = []
    for cid, s in sorted(states.items()):
        if "segment" in f and f["segment"] not in s.segments:
            continue
        if "tier" in f and not any(t.tier_id == f["tier"] for t in s.tiers.values()):
            continue
        if "min_points" in f and s.points < f["min_points"]:
            continue
        if "status" in f and s.profile.status != f["status"]:
            continue
        if "order_status" in f and not any(
            o.status == f["order_status"] for o in s.orders.values()
        ):
            continue
        out.append(
            {
                "customer_id": cid,
                "status": s.profile.status,
                "points": s.points,
                "activity_count": s.activities.count,
            }
        )
    return out[: f["limit"]] if "limit" in f else out


def test_customers_filters(store: str, tmp_path: Path) -> None:
    records = history(1200, 60, seed=42)
    states = folded(records)
    ok(run("ingest", write_ndjson(tmp_path / "h.ndjson", records), "--store", store, cwd=tmp_path))
    segment = max(
        {sid for s in states.values() for sid in s.segments},
        key=lambda sid: sum(sid in s.segments for s in states.values()),
    )
    tier = sorted({t.tier_id for s in states.values() for t in s.tiers.values() if t.tier_id})[0]
    points = sorted(s.points for s in states.values())[len(states) // 2]

    def customers(*args: str) -> list[Json]:
        return json_lines(
            ok(run("customers", *args, "--store", store, "--json", cwd=tmp_path)).stdout
        )

    # each flag once, a few to a call (the semantics of each are in the integration tests)
    cases: list[tuple[list[str], dict[str, Any]]] = [
        (["--segment", segment], {"segment": segment}),
        (["--tier", tier, "--status", "active"], {"tier": tier, "status": "active"}),
        (
            ["--min-points", str(points), "--order-status", "paid"],  # any case
            {"min_points": points, "order_status": "PAID"},
        ),
        (
            ["--segment", segment, "--min-points", str(points), "--limit", "3"],
            {"segment": segment, "min_points": points, "limit": 3},
        ),
    ]
    for args, f in cases:
        want = brute_force(states, **f)
        assert want, f"the case selects nobody: {f}"
        assert customers(*args) == want, args

    table = ok(run("customers", "--segment", segment, "--store", store, cwd=tmp_path))
    shown = table.stdout.decode()
    want = brute_force(states, segment=segment)
    assert f"{len(want):,} customer(s)" in shown
    assert want[0]["customer_id"] in shown

    # a count, and the second page of two
    counted = ok(
        run("customers", "--segment", segment, "--count", "--json", "--store", store, cwd=tmp_path)
    )
    assert orjson.loads(counted.stdout) == {"count": len(want)}
    after = want[1]["customer_id"]
    assert customers("--segment", segment, "--after", after, "--limit", "2") == want[2:4]

    bad = run("customers", "--status", "asleep", "--store", store, cwd=tmp_path)
    assert bad.returncode == 2
    assert "--status" in bad.stderr.decode()


def test_customers_table_shows_a_screenful_and_how_to_get_the_rest(
    store: str, tmp_path: Path
) -> None:
    records = history(1000, 400, seed=44)
    states = folded(records)
    assert len(states) > 150
    ok(run("ingest", write_ndjson(tmp_path / "h.ndjson", records), "--store", store, cwd=tmp_path))
    ids = sorted(states)

    shown = ok(run("customers", "--store", store, cwd=tmp_path)).stdout.decode()
    assert f"100 of {len(ids):,} customers" in shown
    assert ids[0] in shown
    assert ids[99] in shown
    assert ids[100] not in shown
    assert f"--after {ids[99]}" in shown

    # --json is for programs: every row; --limit is honoured as given
    everything = json_lines(ok(run("customers", "--store", store, "--json", cwd=tmp_path)).stdout)
    assert [r["customer_id"] for r in everything] == ids
    limited = ok(run("customers", "--limit", "120", "--store", store, cwd=tmp_path))
    assert "120 customer(s)" in limited.stdout.decode()


# -- state --verify -----------------------------------------------------------------------------


def test_state_verify_agrees_and_catches_a_tampered_read_model(store: str, tmp_path: Path) -> None:
    records = history(500, 20, seed=43)
    states = folded(records)
    ok(run("ingest", write_ndjson(tmp_path / "h.ndjson", records), "--store", store, cwd=tmp_path))
    cid = max(states, key=lambda c: states[c].points)
    assert states[cid].points > 0

    good = ok(run("state", cid, "--store", store, "--verify", cwd=tmp_path))
    assert orjson.loads(good.stdout) == states[cid].to_json()
    assert "verify: the read model agrees with the event store" in good.stderr.decode()

    # tamper with the read model's row directly: one card's balance
    with custate.open(store) as cs:
        table = ReadModel(cs.store).t.customers.name
    db = sqlite3.connect(tmp_path / "store.db")
    try:
        (raw,) = db.execute(f"SELECT state FROM {table} WHERE customer_id = ?", (cid,)).fetchone()
        state = snapshot.load(raw)
        card = next(iter(state.cards.values()))
        assert card.balance is not None
        card.balance += 1000
        db.execute(
            f"UPDATE {table} SET state = ? WHERE customer_id = ?",
            (snapshot.dump(state).decode(), cid),
        )
        db.commit()
    finally:
        db.close()

    bad = run("state", cid, "--store", store, "--verify", cwd=tmp_path)
    assert bad.returncode == 1, bad.stderr.decode()
    shown = orjson.loads(bad.stdout)
    assert shown["loyalty"]["points"] == states[cid].points + 1000  # what the read model says
    stderr = bad.stderr.decode()
    assert "difference(s) from the event store" in stderr
    assert "points" in stderr
    assert "agrees" not in stderr


# -- project --follow -----------------------------------------------------------------------------


def wait_for(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the follower ended before {what}: {out!r} {err!r}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("sig", "as_json"), [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["SIGTERM", "SIGINT"]
)
def test_project_follow_picks_up_new_activities_and_stops_cleanly(
    store: str, tmp_path: Path, sig: signal.Signals, as_json: bool
) -> None:
    records = history(700, 30, seed=44)
    first, second = records[:400], records[400:]
    ok(
        run(
            "ingest",
            write_ndjson(tmp_path / "a.ndjson", first),
            "--store",
            store,
            "--no-project",
            cwd=tmp_path,
        )
    )
    follower = subprocess.Popen(
        [
            str(CUSTATE),
            *("project", "--follow", "--poll", "0.1", "--store", store),
            *(["--json"] if as_json else []),
        ],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: lag(store) == 0, follower, "the first file was projected")
        second_file = write_ndjson(tmp_path / "b.ndjson", second)
        ok(run("ingest", second_file, "--store", store, "--no-project", cwd=tmp_path))
        wait_for(lambda: lag(store) == 0, follower, "the second file was projected")
        assert follower.poll() is None, "the follower stopped by itself"
        follower.send_signal(sig)
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, err.decode()
    assert "following new activities" in err.decode()
    assert "Traceback" not in err.decode()
    with custate.open(store) as cs:
        total = cs.store.count()
        position = cs.readmodel.position()
        for cid, state in folded(records).items():
            current = cs.readmodel.current(cid)
            assert current is not None
            assert current.to_json() == state.to_json(), cid
    if as_json:
        summary = orjson.loads(out)
        assert summary["projected"] == total
        assert summary["position"] == position
        assert summary["late"] > 0
        assert summary["batches"] >= 2
    else:
        text = " ".join(out.decode().split())
        assert f"projected {total:,} activities" in text
        assert f"read model at position {position:,}" in text


# -- rebuild ------------------------------------------------------------------------------------


def test_rebuild_then_every_answer_is_as_before(store: str, tmp_path: Path) -> None:
    records = history(800, 40, seed=46)
    states = folded(records)
    ok(run("ingest", write_ndjson(tmp_path / "h.ndjson", records), "--store", store, cwd=tmp_path))
    cids = [max(states, key=lambda c: states[c].activities.count)]

    def answers() -> tuple[bytes, list[bytes]]:
        listing = ok(run("customers", "--store", store, "--json", cwd=tmp_path)).stdout
        return listing, [ok(run("state", c, "--store", store, cwd=tmp_path)).stdout for c in cids]

    before = answers()
    with custate.open(store) as cs:
        generation = cs.readmodel.t.generation
    rebuilt = orjson.loads(ok(run("rebuild", "--store", store, "--json", cwd=tmp_path)).stdout)
    assert rebuilt["projected"] == sum(s.activities.count for s in states.values())
    with custate.open(store) as cs:
        assert cs.readmodel.t.generation == generation + 1
    after = answers()
    assert after == before
    assert [orjson.loads(s) for s in after[1]] == [states[c].to_json() for c in cids]
    assert [r["customer_id"] for r in json_lines(after[0])] == sorted(states)
