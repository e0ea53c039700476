"""A rebuild split over processes (`processes=2`) builds exactly the tables a one-process
rebuild builds: every row of every table (states, index rows, keys with their fold
inputs, checkpoints, pages, tracking positions), on SQLite and PostgreSQL, from a history
with late deliveries."""

from __future__ import annotations

import random
from typing import Any

import pytest
import sqlalchemy as sa

import custate
from custate.adapters.readmodel.rebuild import rebuild
from custate.adapters.readmodel.view import ReadModel

from .histories import generate


def shuffled_history() -> list[dict[str, Any]]:
    """3,000 activities of 40 customers, a tenth of them delivered 30-400 records late:
    they arrive after later ones of their customer (re-folds)."""
    records = generate(3000, 40, seed=5)
    rng = random.Random(5)
    slots: list[tuple[float, dict[str, Any]]] = []
    for i, r in enumerate(records):
        slots.append((i + (rng.randint(30, 400) if rng.random() < 0.1 else 0) + 0.5, r))
    return [r for _, r in sorted(slots, key=lambda x: x[0])]


def every_row(cs: custate.Custate) -> dict[str, list[tuple[Any, ...]]]:
    """Each table of the active generation (by its name without the generation), all its
    rows in order."""
    rm = ReadModel(cs.store)
    prefix = f"custate_rm{rm.t.generation}_"
    out: dict[str, list[tuple[Any, ...]]] = {}
    with cs.store.engine.connect() as c:
        for table in rm.t.metadata.sorted_tables:
            cols = list(table.columns)
            rows = c.execute(sa.select(*cols).order_by(*cols)).all()
            out[table.name.removeprefix(prefix)] = [tuple(r) for r in rows]
    return out


@pytest.mark.parametrize("split", ["default", "other"])
def test_two_processes_build_the_same_rows_as_one(store_url: str, split: str) -> None:
    """`default`: the backend's partitions (SQLite 1: shares by customer hash; PostgreSQL
    16: groups of partitions); `other`: the other way (SQLite with 4 partitions,
    PostgreSQL with 1)."""
    partitions = None if split == "default" else 4 if store_url.startswith("sqlite") else 1
    with custate.open(store_url, partitions=partitions) as cs:
        report = cs.ingest(shuffled_history(), project=False)
        assert report.accepted == 3000
        one = rebuild(cs.store, batch_size=100, interval=10, processes=1)
        rows_one = every_row(cs)
        two = rebuild(cs.store, batch_size=100, interval=10, processes=2)
        rows_two = every_row(cs)
        assert cs.readmodel.t.generation == 3  # two rebuilds after the first generation
        assert (two.activities, two.position, two.late) == (one.activities, one.position, one.late)
    assert one.activities == 3000
    assert one.late > 0
    assert len(rows_one["keys"]) == 3000
    assert len(rows_one["customers"]) == 40
    assert len(rows_one["checkpoints"]) > 100
    assert rows_one["tracking"]
    assert all(r[1] == one.position for r in rows_one["tracking"])
    assert rows_one.keys() == rows_two.keys()
    for name, rows in rows_one.items():
        assert rows_two[name] == rows, name


def test_activities_stored_after_the_split_are_caught_up_too(sqlite_url: str) -> None:
    """The processes stop at the head the rebuild started from; the rest is folded after
    (here: everything of a second ingest before the next rebuild, and reads see it)."""
    records = shuffled_history()
    with custate.open(sqlite_url) as cs:
        cs.ingest(records[:2000])
        cs.rebuild(processes=2)
        cs.ingest(records[2000:], project=False)
        report = cs.rebuild(processes=2)
        assert report.activities == 3000
        assert cs.lag() == 0
        assert sum(cs.state(c).activities.count for c in cs.customer_ids()) == 3000


@pytest.mark.parametrize("bad", [0, -1, True])
def test_processes_out_of_range_is_refused(sqlite_url: str, bad: Any) -> None:
    with custate.open(sqlite_url) as cs, pytest.raises(custate.QueryError, match="processes"):
        cs.rebuild(processes=bad)


@pytest.mark.parametrize("share", [0, 1])
def test_a_share_that_fails_fails_the_rebuild_and_stops_the_other(
    sqlite_url: str, share: int
) -> None:
    """A stored activity that cannot be read, of a customer of share 0 (the calling
    process's) or 1 (the other process's): the rebuild raises the same error either way,
    naming the stored activity, leaves no process behind, and the generation it was to
    replace keeps answering."""
    import multiprocessing
    import zlib

    records = shuffled_history()
    with custate.open(sqlite_url) as cs:
        cs.ingest(records)
        victim = next(c for c in cs.customer_ids() if zlib.crc32(c.encode()) % 2 == share)
        other = next(c for c in cs.customer_ids() if c != victim)
        before = cs.state(other)
        with cs.store.engine.begin() as c:
            c.exec_driver_sql(
                "UPDATE stored_events SET state = x'00' WHERE rowid = "
                "(SELECT max(rowid) FROM stored_events WHERE originator_id = ?)",
                (f"customer:{victim}",),
            )
        with pytest.raises(custate.StoreError, match="the stored activity at notification"):
            cs.rebuild(processes=2)
        assert multiprocessing.active_children() == []
        assert cs.state(other) == before


def test_a_rebuild_that_cannot_read_an_activity_says_so_in_one_line(sqlite_url: str) -> None:
    """`custate rebuild` on a store holding a stored activity that cannot be read: exit 3
    (the store failed) with one line naming it, from either process, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    with custate.open(sqlite_url) as cs:
        cs.ingest(shuffled_history()[:1000])
        with cs.store.engine.begin() as c:
            c.exec_driver_sql(
                "UPDATE stored_events SET state = x'00' WHERE rowid = "
                "(SELECT max(rowid) FROM stored_events WHERE originator_id LIKE 'customer:%')"
            )
    exe = str(Path(sys.executable).parent / "custate")
    for processes in ("1", "2"):
        done = subprocess.run(
            [exe, "rebuild", "--processes", processes, "--store", sqlite_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 3, done.stderr
        assert "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("custate: the stored activity at notification"), line


def test_a_share_process_killed_fails_the_rebuild_and_the_next_one_builds_it_right(
    sqlite_url: str,
) -> None:
    """SIGKILL the other process early in a rebuild: the rebuild raises, saying so, with no
    process left behind and the old generation answering; the next rebuild builds its
    generation again and gets the rows a one-process rebuild gets."""
    import multiprocessing
    import os
    import signal

    with custate.open(sqlite_url) as cs:
        cs.ingest(shuffled_history(), project=False)
        rebuild(cs.store, batch_size=100, interval=10, processes=1)
        expected = every_row(cs)
        before = {c: cs.state(c) for c in cs.customer_ids()[:5]}
        killed: list[int] = []

        def kill_the_other(_: int) -> None:
            if not killed:
                (child,) = multiprocessing.active_children()
                assert child.pid is not None
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)

        with pytest.raises(RuntimeError, match=r"ended with exit code -9"):
            rebuild(cs.store, batch_size=100, interval=10, processes=2, progress=kill_the_other)
        assert killed
        assert multiprocessing.active_children() == []
        assert {c: cs.state(c) for c in before} == before
        rebuild(cs.store, batch_size=100, interval=10, processes=2)
        assert every_row(cs) == expected
