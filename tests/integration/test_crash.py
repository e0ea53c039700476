"""Crash safety: `custate ingest` (a real subprocess) killed with SIGKILL part-way through a
large file, then run again with the same command (in-process, through the typer app). The
store ends with every activity exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

import custate
from custate.adapters.eventstore import EventStore
from custate.domain import fold, parse_activity

from .histories import (
    ROOT,
    Json,
    assert_exactly_once,
    generate,
    ingest_command,
    start,
    write_ndjson,
)

if str(ROOT) not in sys.path:  # the in-process runner the e2e suite uses, by its full name
    sys.path.insert(0, str(ROOT))

from tests.e2e.incli import invoke

# Large enough that a kill lands mid-way; CUSTATE_CRASH_ACTIVITIES=60000 for a longer run.
N = int(os.environ.get("CUSTATE_CRASH_ACTIVITIES", "12000"))
BATCH = 100


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Json]]:
    records = generate(N, N // 100, seed=77)
    path = write_ndjson(tmp_path_factory.mktemp("crash") / "big.ndjson", records)
    return path, records


def kill_part_way(proc: subprocess.Popen[bytes], store: EventStore, low: int, high: int) -> int:
    """SIGKILL `proc` once the store holds more than `low` activities; the count after."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        n = store.count()
        if n > low:
            break
        assert proc.poll() is None, f"ingest ended before the kill: {proc.communicate()}"
        time.sleep(0.02)
    else:
        pytest.fail(f"the store never held more than {low} activities")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)  # reap it, and close its pipes
    assert proc.returncode == -signal.SIGKILL
    after = store.count()
    assert low < after < high, f"killed too late: {after} of {high} stored"
    return after


@pytest.mark.slow
def test_sigkill_mid_ingest_then_rerun_stores_everything_once(
    store_url: str, tmp_path: Path, big_file: tuple[Path, list[Json]]
) -> None:
    path, records = big_file
    with custate.open(store_url):
        pass  # the store exists before the poll below looks at it
    command = ingest_command([path], store_url, BATCH)

    with EventStore(store_url) as store:
        proc = start(command, tmp_path)
        stored_at_kill = kill_part_way(proc, store, N // 4, N)

    rerun = invoke(*command[1:], cwd=tmp_path)  # the same command, in-process this time
    assert rerun.returncode == 0, rerun.stderr.decode()
    report = orjson.loads(rerun.stdout)
    assert report["read"] == N
    assert report["duplicates"] == stored_at_kill  # what the killed run stored is kept...
    assert report["accepted"] == N - stored_at_kill  # ...and the rest is added, once
    assert (report["conflicts"], report["rejected"]) == (0, 0)

    assert_exactly_once(store_url, [r["id"] for r in records])
    activities = [parse_activity(r) for r in records]
    with custate.open(store_url) as cs:
        assert cs.rejects(include_resolved=True) == []
        customers = sorted({a.customer_id for a in activities})
        rows = {row.customer_id: row.activity_count for row in cs.customers()}
        assert rows == {c: sum(1 for a in activities if a.customer_id == c) for c in customers}
        for customer in customers[:: max(1, len(customers) // 6)]:
            mine = [a for a in activities if a.customer_id == customer]
            assert cs.state(customer).to_json() == fold(mine, customer).to_json()
