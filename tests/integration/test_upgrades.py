"""Upgrades: a store written by the previous release migrates on open and its read model,
built by an unrecorded fold, is rebuilt by a projector worker on its own while the old
generation answers, without losing a reject, a pull cursor or a change record; a read
model built by an older fold is rebuilt by `project --follow`, one built by a newer fold
is left alone; a store of a newer custate is refused; the stable views follow the active
generation through a rebuild; the migrated layout is the one the stores create. On both
backends (real SQLite files, real PostgreSQL schemas)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

import custate
from custate.adapters.api import Custate, WorkerEvent
from custate.adapters.eventstore import EventStore
from custate.adapters.migrations import (
    HEAD,
    VERSION_TABLE,
    StoreTooNewError,
    known_revisions,
    upgrade,
)
from custate.adapters.readmodel.views import VIEWS
from custate.domain import FOLD_VERSION

from .histories import CUSTATE, ROOT, cli_env, generate, write_ndjson

if str(ROOT) not in sys.path:  # the in-process runner the e2e suite uses, by its full name
    sys.path.insert(0, str(ROOT))

from tests.e2e.incli import invoke

PREVIOUS_RELEASE = Path(__file__).resolve().parents[1] / "data" / "upgrade" / "previous_release.sql"
BAD_RECORD = b'{"id": "evcus_bad", "type": "customer.created", "created_at": "not a time"}\n'


def _sql(url: str, *statements: str) -> None:
    """Run `statements` on the store, opened as the event store only (no migration)."""
    with EventStore(url) as store, store.engine.begin() as c:
        for s in statements:
            c.execute(sa.text(s))


def _states(cs: Custate) -> dict[str, Any]:
    return {cid: cs.readmodel.current(cid).to_json() for cid in cs.customer_ids()}  # type: ignore[union-attr]


def previous_release(url: str, tmp_path: Path) -> dict[str, Any]:
    """A store as the previous release left it: activities, a reject, a pull cursor, a
    backfill listing and change records, built by this code from the fixtures, then the
    layout taken back with tests/data/upgrade/previous_release.sql. Returns what it held."""
    records = generate(300, 12, seed=20)
    data = write_ndjson(tmp_path / "activities.ndjson", records)
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(BAD_RECORD)
    with custate.open(url, change_feed=True) as cs:
        cs.ingest([data, bad])
        cs.pull_cursors().set("cust_pulled", "evcus_last_pulled")
        cs.pull_listings().listed("backfill", ["cust_a", "cust_b"], '{"page": 3}')
        held = {
            "states": _states(cs),
            "rejects": [r.to_json() for r in cs.rejects()],
            "changes": len(cs.changes(0, limit=100_000).records),
        }
    assert held["rejects"]
    assert held["changes"]
    _sql(
        url,
        *(
            line.rstrip(";")
            for line in PREVIOUS_RELEASE.read_text().splitlines()
            if line.strip() and not line.startswith("--")
        ),
    )
    return held


def _names(url: str) -> tuple[set[str], set[str]]:
    """The store's tables and views, seen without migrating it."""
    with EventStore(url) as store:
        inspector = sa.inspect(store.engine)
        schema = store.url.schema
        return set(inspector.get_table_names(schema)), set(inspector.get_view_names(schema))


def run_worker(cs: Custate, until: Callable[[], bool], seconds: float = 120) -> list[WorkerEvent]:
    """A projector worker on `cs` until `until()` (failing after `seconds`)."""
    events: list[WorkerEvent] = []
    deadline = time.monotonic() + seconds
    cs.worker(poll=0.05, on_event=events.append).run(lambda: until() or time.monotonic() > deadline)
    assert until(), [e.message for e in events]
    return events


def test_a_store_of_the_previous_release_migrates_and_rebuilds_keeping_its_rejects_and_cursors(
    store_url: str, tmp_path: Path
) -> None:
    # the fixture holds what that release held, and not what this one adds
    held = previous_release(store_url, tmp_path)
    tables, views = _names(store_url)
    assert VERSION_TABLE not in tables
    assert "custate_forward_dead" not in tables
    assert {"custate_rejects", "custate_pull_cursors", "custate_rm1_customers"} <= tables
    assert not views & set(VIEWS)
    with custate.open(store_url) as cs:
        # the schema was migrated on open; the read model is stale (fold unrecorded)
        assert cs.migration() == {"from": None, "to": HEAD, "migrated": True}
        assert cs.fold_status().stale
        assert cs.fold_status().built_with is None
        warning = cs.fold_status().warning()
        assert warning is not None
        assert "custate rebuild" in warning
        # the old generation answers meanwhile, as it stood
        assert _states(cs) == held["states"]
        events = run_worker(cs, lambda: not cs.fold_status().stale)
        said = " | ".join(e.message for e in events if e.kind == "rebuild")
        assert "rebuilding it into a new generation while generation 1 answers" in said
        assert "rebuild done: generation 2 answers" in said
        status = cs.status()
        assert status["generation"] == 2
        assert status["fold_version"] == {
            "built_with": FOLD_VERSION,
            "current": FOLD_VERSION,
            "stale": False,
        }
        assert status["schema"] == {"revision": HEAD, "head": HEAD, "current": True}
        assert status["rebuild_in_progress"] is None
        # nothing of what the store held outside the read model was lost
        assert _states(cs) == held["states"]
        assert [r.to_json() for r in cs.rejects()] == held["rejects"]
        assert cs.pull_cursors().get("cust_pulled") == "evcus_last_pulled"
        assert cs.pull_listings().cursor("backfill") == '{"page": 3}'
        assert [c for c, _, _ in cs.pull_listings().unfinished("backfill")] == ["cust_a", "cust_b"]
        assert len(cs.changes(0, limit=100_000).records) == held["changes"]  # same fold: no diffs
    tables, views = _names(store_url)
    assert VERSION_TABLE in tables
    assert {"custate_forward_cursors", "custate_forward_dead"} <= tables  # made by the baseline
    assert set(VIEWS) <= views
    assert not any(t.startswith("custate_rm1_") for t in tables)


def test_the_previous_release_store_says_what_the_migration_did_and_reads_warn(
    store_url: str, tmp_path: Path
) -> None:
    previous_release(store_url, tmp_path)
    migrated = invoke("migrate", "--store", store_url, "--json")
    assert migrated.returncode == 0, migrated.stderr
    assert orjson.loads(migrated.stdout) == {"from": None, "to": HEAD, "migrated": True}
    again = invoke("migrate", "--store", store_url, "--json")
    assert orjson.loads(again.stdout) == {"from": HEAD, "to": HEAD, "migrated": False}
    read = invoke("customers", "--store", store_url, "--format", "tsv")
    assert read.returncode == 0, read.stderr
    assert read.stdout.count(b"\n") > 1  # the old generation answers
    err = read.stderr.decode()
    assert "built by an unrecorded fold version" in err
    assert f"this code's fold is v{FOLD_VERSION}" in err
    assert "`custate rebuild`" in err
    status = invoke("status", "--store", store_url)
    assert "built with unrecorded, current v" in " ".join(status.stdout.decode().split())


def test_project_follow_rebuilds_a_read_model_of_an_older_fold_on_its_own(
    store_url: str, tmp_path: Path
) -> None:
    records = generate(200, 10, seed=21)
    with custate.open(store_url) as cs:
        cs.ingest([write_ndjson(tmp_path / "a.ndjson", records)])
        before = _states(cs)
    _sql(store_url, "UPDATE custate_readmodel SET value = '0' WHERE name = 'fold_version:1'")
    follower = subprocess.Popen(
        [str(CUSTATE), "project", "--follow", "--poll", "0.1", "--store", store_url],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            status = invoke("status", "--store", store_url, "--json")
            s = orjson.loads(status.stdout)
            if s.get("projector") is not None:  # SQLite: the follower holds its lock
                assert s["projector"] == f"pid {follower.pid} on {socket.gethostname()}"
            if not s["fold_version"]["stale"]:
                break
            assert follower.poll() is None, follower.communicate()
            assert time.monotonic() < deadline, "the follower did not rebuild"
            time.sleep(0.1)
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, err.decode()
    said = " ".join(err.decode().split())
    assert "was built by fold v0, this code's fold is v" in said
    assert "rebuild done" in said
    assert "Traceback" not in said
    assert s["generation"] == 2
    with custate.open(store_url) as cs:
        assert _states(cs) == before
        assert cs.status().get("projector") is None  # stopped


def test_a_read_model_of_a_newer_fold_is_left_alone(store_url: str, tmp_path: Path) -> None:
    with custate.open(store_url) as cs:
        cs.ingest([write_ndjson(tmp_path / "a.ndjson", generate(50, 5, seed=22))])
    newer = FOLD_VERSION + 1
    _sql(store_url, f"UPDATE custate_readmodel SET value = '{newer}' WHERE name = 'fold_version:1'")
    with custate.open(store_url) as cs:
        s = cs.fold_status()
        assert (s.stale, s.newer) == (False, True)
        assert "upgrade custate" in (s.warning() or "")
        started = time.monotonic()
        events = run_worker(cs, lambda: time.monotonic() - started > 1.0)
        assert not [e for e in events if e.kind == "rebuild"]
        assert cs.status()["generation"] == 1
        assert cs.status()["rebuild_in_progress"] is None


def test_a_store_of_a_newer_custate_is_refused_with_a_clear_message(store_url: str) -> None:
    with custate.open(store_url) as cs:
        assert cs.migration()["to"] == HEAD
    _sql(store_url, f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
    with pytest.raises(StoreTooNewError, match=r"revision 9999.*a newer custate wrote it"):
        custate.open(store_url)
    ran = invoke("status", "--store", store_url)
    assert ran.returncode == 3
    err = ran.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert "a newer custate wrote it" in err
    assert "Upgrade custate" in err


def test_the_views_follow_the_active_generation_through_a_rebuild(
    store_url: str, tmp_path: Path
) -> None:
    records = generate(300, 12, seed=23)
    with custate.open(store_url) as cs:
        cs.ingest([write_ndjson(tmp_path / "a.ndjson", records)])
        engine = cs.store.engine

        def answers() -> dict[str, list[tuple[Any, ...]]]:
            with engine.connect() as c:
                return {
                    view: sorted(tuple(r) for r in c.exec_driver_sql(f"SELECT * FROM {view}").all())
                    for view in VIEWS
                }

        expected_points = sorted((r.customer_id, r.points) for r in cs.customers())
        before = answers()
        assert sorted((r[0], r[2]) for r in before["custate_customers"]) == expected_points
        assert before["custate_tiers"]
        assert before["custate_cards"]
        assert before["custate_orders"]
        cs.rebuild()
        assert cs.status()["generation"] == 2
        assert answers() == before
        with engine.connect() as c:
            columns = list(c.exec_driver_sql("SELECT * FROM custate_customers").keys())
        assert columns == list(VIEWS["custate_customers"][1])


def _layout(engine: sa.Engine, schema: str | None, names: set[str]) -> dict[str, Any]:
    inspector = sa.inspect(engine)
    out: dict[str, Any] = {}
    for name in sorted(names):
        out[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"])
                for c in inspector.get_columns(name, schema)
            ],
            "pk": inspector.get_pk_constraint(name, schema)["constrained_columns"],
            "indexes": sorted(
                (tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(name, schema)
            ),
            "unique": sorted(
                tuple(u["column_names"]) for u in inspector.get_unique_constraints(name, schema)
            ),
        }
    return out


def test_the_migrated_layout_is_the_one_the_stores_create(store_url: str) -> None:
    from custate.adapters.migrations import _BASELINE

    # a new store: its tables made by their stores on first use, then stamped
    with custate.open(store_url) as made:
        assert made.readmodel.t.generation == 1
        made.pull_cursors()
        made.pull_listings()
        made.forwarder("http://127.0.0.1:9/")
        schema = made.store.url.schema
        created = _layout(made.store.engine, schema, set(_BASELINE))
        with made.store.engine.begin() as c:
            rows = c.exec_driver_sql(f"SELECT * FROM {VERSION_TABLE}").all()
            assert [tuple(r) for r in rows] == [(HEAD,)]
            # the same tables made by the revisions instead
            for name in _BASELINE:
                c.exec_driver_sql(f"DROP TABLE {name}")
            c.exec_driver_sql(f"DROP TABLE {VERSION_TABLE}")
    store = EventStore(store_url)
    try:
        upgrade(store)
        migrated = _layout(store.engine, schema, set(_BASELINE))
    finally:
        store.close()
    assert migrated == created


def test_change_records_of_the_row_per_record_layout_keep_their_positions(
    store_url: str, tmp_path: Path
) -> None:
    from custate.adapters.migrations.versions import r0001_baseline

    records = generate(240, 6, seed=26)
    with custate.open(store_url, change_feed=True) as cs:
        # the second half first: the first half then arrives late, with corrections
        cs.ingest([write_ndjson(tmp_path / "b.ndjson", records[120:])])
        cs.ingest([write_ndjson(tmp_path / "a.ndjson", records[:120])])
        held = cs.changes(0, limit=100_000).records
    assert any(r.until is not None for r in held)
    assert any(r.correction for r in held)
    # The store as revision 0001 left it: its change table had a row per record.
    m = sa.MetaData()
    r0001_baseline._tables(m)
    old = m.tables["custate_changes"]
    with EventStore(store_url) as store, store.engine.begin() as c:
        c.exec_driver_sql("DROP TABLE custate_changes")
        old.create(c)
        c.execute(
            old.insert(),
            [
                {
                    **{k: v for k, v in r.to_json().items() if k not in {"before", "after"}},
                    "before": orjson.dumps(r.before).decode(),
                    "after": orjson.dumps(r.after).decode(),
                }
                for r in held
            ],
        )
        c.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '0001'")
    with custate.open(store_url) as cs:
        assert cs.migration() == {"from": "0001", "to": HEAD, "migrated": True}
        assert cs.changes(0, limit=100_000).records == held
        assert cs.changes(held[40].position, limit=3).records == held[41:44]
        # the feed goes on after them, an activity's records in a row of their own
        cs.ingest([write_ndjson(tmp_path / "c.ndjson", generate(250, 6, seed=26)[240:])])
        more = cs.changes(held[-1].position, limit=100_000).records
    assert more
    assert [r.position for r in more] == list(
        range(held[-1].position + 1, held[-1].position + 1 + len(more))
    )


def test_head_is_the_newest_revision() -> None:
    from alembic.script import ScriptDirectory

    import custate.adapters.migrations as migrations

    root = Path(migrations.__file__).parent
    script = ScriptDirectory(str(root), version_locations=[str(root / "versions")])
    assert script.get_heads() == [HEAD]
    assert HEAD in known_revisions()


def test_a_generation_of_an_older_layout_says_so_and_a_rebuild_fixes_it(
    store_url: str, tmp_path: Path
) -> None:
    with custate.open(store_url) as cs:
        cs.ingest([write_ndjson(tmp_path / "a.ndjson", generate(100, 6, seed=24))])
        before = _states(cs)
    _sql(
        store_url,
        *(f"DROP VIEW {view}" for view in VIEWS),
        "DELETE FROM custate_readmodel WHERE name = 'views' OR name LIKE 'fold_version:%'",
        "DROP INDEX ix_custate_rm1_customers_points",
        "ALTER TABLE custate_rm1_customers DROP COLUMN points",
    )
    # a real process: the store fault becomes exit 3 in the console script's main()
    read = subprocess.run(
        [str(CUSTATE), "customers", "--store", store_url], env=cli_env(), capture_output=True
    )
    assert read.returncode == 3, read.stderr
    err = " ".join(read.stderr.decode().split())
    assert "older layout (no column custate_rm1_customers.points)" in err
    assert "`custate rebuild`" in err
    assert "Traceback" not in err
    rebuilt = invoke("rebuild", "--store", store_url)
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = invoke("customers", "--store", store_url, "--format", "tsv")
    assert again.returncode == 0, again.stderr
    assert b"warning" not in again.stderr
    with custate.open(store_url) as cs:
        assert _states(cs) == before
    assert set(VIEWS) <= _names(store_url)[1]


def test_serve_rebuilds_a_stale_read_model_while_it_answers(store_url: str, tmp_path: Path) -> None:
    from tests.e2e.test_serve import start_server, stop

    records = generate(300, 10, seed=25)
    with custate.open(store_url) as cs:
        cs.ingest([write_ndjson(tmp_path / "a.ndjson", records)])
        before = _states(cs)
    _sql(store_url, "UPDATE custate_readmodel SET value = '0' WHERE name = 'fold_version:1'")
    server = start_server(store_url, tmp_path)
    answered: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            for cid in before:
                r = httpx.get(f"{server.url}/customers/{cid}/state", timeout=10)
                answered.append(r.status_code)
                assert r.status_code == 200, r.text
                body = r.json()
                body.pop("read_model")  # how fresh the answer is, beside the state
                assert body == before[cid]
            with custate.open(store_url) as cs:
                if not cs.fold_status().stale:
                    break
            assert time.monotonic() < deadline, "serve did not rebuild"
    finally:
        stop(server)
    _, err = server.proc.communicate()
    said = " ".join(err.decode().split())
    assert "rebuilding it into a new generation while generation 1 answers" in said
    assert "rebuild done: generation 2 answers" in said
    assert answered
    with custate.open(store_url) as cs:
        assert cs.status()["generation"] == 2
        assert _states(cs) == before


def test_processes_opening_an_old_store_at_once_migrate_it_once(
    store_url: str, tmp_path: Path
) -> None:
    held = previous_release(store_url, tmp_path)
    procs = [
        subprocess.Popen(
            [str(CUSTATE), "migrate", "--json", "--store", store_url],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    said = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        said.append(orjson.loads(out))
    assert sorted(s["migrated"] for s in said) == [False, False, True]
    assert all(s["to"] == HEAD for s in said)
    with EventStore(store_url) as store, store.engine.connect() as c:
        assert c.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all() == [(HEAD,)]
    with custate.open(store_url) as cs:
        assert [r.to_json() for r in cs.rejects()] == held["rejects"]
        assert cs.pull_cursors().get("cust_pulled") == "evcus_last_pulled"
