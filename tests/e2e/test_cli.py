"""The `custate` commands as a user runs them, in a scratch working directory on real SQLite
files (the store-backed commands also on PostgreSQL via `store_url`): in-process through the
typer app (`incli`), and the README's first command, `custate demo`, as the real console
script in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

import custate
from custate.adapters.eventstore import EventStore
from custate.domain import KNOWN_TYPES, fold_all, parse_activity

from .incli import Ran, invoke

Json = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
CUSTATE = Path(sys.executable).parent / "custate"
SAMPLES_FILE = ROOT / "adapters" / "data" / "samples.ndjson"
DEMO_DATA = ROOT / "adapters" / "data" / "demo.ndjson.gz"
K1 = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
K2 = datetime(2025, 6, 1, 11, 0, tzinfo=UTC)


def run(
    *args: str | Path,
    cwd: Path,
    store_env: str | None = None,
    stdin: bytes | None = None,
    columns: int | None = 200,
) -> Ran:
    """`custate ARGS` in `cwd`; CUSTATE_STORE only when `store_env` is given. `columns`
    widens rich's tables (it assumes 80 when not writing to a terminal); None leaves it."""
    env = {"CUSTATE_STORE": store_env} if store_env is not None else None
    return invoke(
        *args, cwd=cwd, env=env, stdin=stdin if stdin is not None else b"", columns=columns
    )


def run_script(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """The installed `custate` console script in a subprocess, as the README runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUSTATE_STORE", "COLUMNS")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [str(CUSTATE), *map(str, args)],
        cwd=cwd,
        env=env,
        input=b"",
        capture_output=True,
        timeout=120,
    )


def err(p: Ran | subprocess.CompletedProcess[bytes]) -> str:
    return p.stderr.decode()


def json_lines(out: bytes) -> list[Json]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def samples() -> list[Json]:
    return json_lines(SAMPLES_FILE.read_bytes())


def expected_fold(records: Sequence[Json], customer_id: str | None = None) -> list[Json]:
    states = fold_all(parse_activity(r, customer_id) for r in records)
    return [s.to_json() for s in states.values()]


def write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def good(activity_id: str, customer_id: str = "cust_a", seconds: int = 0) -> Json:
    t = datetime(2024, 3, 1, 9, 0, tzinfo=UTC) + timedelta(seconds=seconds)
    return {
        "id": activity_id,
        "type": "customer.updated",
        "created_at": t.isoformat().replace("+00:00", "Z"),
        "data": {"customer": {"id": customer_id, "name": f"Name {activity_id}"}},
    }


def ndjson(records: Sequence[Json]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


# -- fold ---------------------------------------------------------------------------------------


def test_fold_samples_prints_one_line_per_customer_in_order(tmp_path: Path) -> None:
    p = run("fold", SAMPLES_FILE, cwd=tmp_path)
    assert p.returncode == 0, err(p)
    assert p.stderr == b""
    lines = json_lines(p.stdout)
    ids = [s["customer_id"] for s in lines]
    assert ids == sorted({parse_activity(r).customer_id for r in samples()})
    assert len(p.stdout.splitlines()) == len(ids)
    assert lines == expected_fold(samples())
    assert list(tmp_path.iterdir()) == []  # fold keeps no store


def test_fold_reports_each_bad_record_and_folds_the_rest(tmp_path: Path) -> None:
    naive = good("evcus_naive") | {"created_at": "2024-03-01T09:00:00"}
    no_id = {k: v for k, v in good("x").items() if k != "id"}
    no_customer = good("evcus_nocust") | {"data": {"segment": {"id": "seg_1"}}}
    not_object = good("evcus_list") | {"data": [1, 2]}
    huge = good("evcus_huge") | {"data": {"customer": {"id": "cust_a"}, "blob": "x" * 50_000_000}}
    path = tmp_path / "bad.ndjson"
    with path.open("wb") as f:
        f.write(ndjson([good("evcus_1", "cust_a"), naive, no_id, no_customer, not_object]))
        f.write(b'{"id": "evcus_broken", "type": \n')
        f.write(ndjson([huge, good("evcus_2", "cust_b", 5)]))

    p = run("fold", "bad.ndjson", cwd=tmp_path)
    assert p.returncode == 1, err(p)
    problems = err(p).splitlines()
    for line_no, field in [
        (2, "created_at"),
        (3, "id"),
        (4, "data.customer.id"),
        (5, "data"),
        (6, "<json>"),
        (7, "<record>"),
    ]:
        prefix = f"bad.ndjson line {line_no}: {field}: "
        assert any(line.startswith(prefix) for line in problems), (prefix, problems)
    assert "no zone" in err(p)
    assert "MiB" in err(p) or "MB" in err(p)
    assert "6 bad record(s)" in problems[-1]
    assert len(problems) == 7
    assert json_lines(p.stdout) == expected_fold([good("evcus_1"), good("evcus_2", "cust_b", 5)])


@pytest.mark.parametrize("command", ["fold", "ingest"])
def test_unreadable_input_exits_2(tmp_path: Path, command: str) -> None:
    (tmp_path / "a_dir").mkdir()
    for target in ["missing.ndjson", "a_dir"]:
        p = run(command, target, cwd=tmp_path)
        assert p.returncode == 2, err(p)
        assert target in err(p)
        assert p.stdout == b""
    assert not (tmp_path / "custate.db").exists()  # failed before opening a store


# -- containers -------------------------------------------------------------------------------


def envelope(record: Json, i: int = 0) -> Json:
    customer = parse_activity(record).customer_id
    return {
        "id": f"wh_{i:04d}",
        "project_id": "proj_test",
        "created_at": "2025-01-01T00:00:00.000Z",
        "type": record["type"],
        "data": record["data"],
        "source": {"channel": "API"},
        "event": {
            "id": record["id"],
            "type": record["type"],
            "created_at": record["created_at"],
            "entity_id": customer,
        },
    }


def containers() -> Iterator[Any]:
    recs = samples()
    yield pytest.param(orjson.dumps(recs[0], option=orjson.OPT_INDENT_2), recs[:1], id="object")
    yield pytest.param(orjson.dumps(recs, option=orjson.OPT_INDENT_2), recs, id="array")
    yield pytest.param(ndjson(recs), recs, id="ndjson")
    page = {"object": "list", "data_ref": "data", "data": recs, "has_more": False}
    yield pytest.param(orjson.dumps(page, option=orjson.OPT_INDENT_2), recs, id="list")
    yield pytest.param(
        orjson.dumps(envelope(recs[3]), option=orjson.OPT_INDENT_2), recs[3:4], id="webhook"
    )
    yield pytest.param(
        ndjson([envelope(r, i) for i, r in enumerate(recs)]), recs, id="webhook-ndjson"
    )


@pytest.mark.parametrize(("content", "records"), list(containers()))
def test_every_container_is_detected_from_content(
    tmp_path: Path, content: bytes, records: list[Json]
) -> None:
    path = write(tmp_path / "deliveries.txt", content)  # the name says nothing
    p = run("fold", path, cwd=tmp_path)
    assert p.returncode == 0, err(p)
    assert json_lines(p.stdout) == expected_fold(records)


def test_stdin(tmp_path: Path) -> None:
    recs = samples()
    p = run("fold", "-", cwd=tmp_path, stdin=orjson.dumps(recs))
    assert p.returncode == 0, err(p)
    assert json_lines(p.stdout) == expected_fold(recs)
    p = run("ingest", "-", "--json", cwd=tmp_path, stdin=ndjson(recs))
    assert p.returncode == 0, err(p)
    assert orjson.loads(p.stdout)["accepted"] == len(recs)
    with EventStore(f"sqlite:///{tmp_path / 'custate.db'}") as store:
        assert store.count() == len(recs)


# -- ingest -----------------------------------------------------------------------------------


def test_ingest_summary_and_json(store_url: str, tmp_path: Path) -> None:
    recs = samples()
    unknown = sum(1 for r in recs if r["type"] not in KNOWN_TYPES)
    p = run("ingest", SAMPLES_FILE, "--store", store_url, cwd=tmp_path)
    assert p.returncode == 0, err(p)
    rows = {
        cells[0]: cells[1]
        for line in p.stdout.decode().splitlines()
        if len(cells := [c.strip() for c in line.strip("│┃ ").split("│") if c.strip()]) == 2
    }
    assert rows["read"] == str(len(recs))
    assert rows["accepted"] == str(len(recs))
    assert rows["duplicates (ignored)"] == "0"
    assert rows["conflicts (rejected)"] == "0"
    assert rows["invalid (rejected)"] == "0"
    assert rows["unrecognized types (stored)"] == str(unknown)

    p = run("ingest", SAMPLES_FILE, SAMPLES_FILE, "--store", store_url, "--json", cwd=tmp_path)
    assert p.returncode == 0, err(p)
    report = orjson.loads(p.stdout)
    expected = {
        "read": 2 * len(recs),
        "accepted": 0,
        "duplicates": 2 * len(recs),
        "conflicts": 0,
        "rejected": 0,
        "unrecognized": 0,
        "resolved": 0,
        "problems": [],
    }
    assert {k: report.get(k) for k in expected} == expected  # more keys may be added
    with EventStore(store_url) as store:
        assert store.count() == len(recs)


def test_ingest_exit_codes(store_url: str, tmp_path: Path) -> None:
    write(tmp_path / "ok.ndjson", ndjson([good("evcus_1"), good("evcus_2", seconds=1)]))
    bad = good("evcus_3") | {"created_at": "2024-03-01T09:00:00"}
    write(tmp_path / "bad.ndjson", ndjson([good("evcus_4"), bad]))
    changed = good("evcus_1") | {"data": {"customer": {"id": "cust_a", "name": "Other"}}}
    write(tmp_path / "conflict.ndjson", ndjson([changed]))

    ok = run("ingest", "ok.ndjson", "--store", store_url, "--json", cwd=tmp_path)
    assert ok.returncode == 0, err(ok)
    p = run("ingest", "bad.ndjson", "--store", store_url, "--json", cwd=tmp_path)
    assert p.returncode == 1, err(p)
    report = orjson.loads(p.stdout)
    assert (report["accepted"], report["rejected"]) == (1, 1)
    (problem,) = report["problems"]
    assert (problem["source"], problem["location"], problem["field"]) == (
        "bad.ndjson",
        "line 2",
        "created_at",
    )

    p = run("ingest", "conflict.ndjson", "--store", store_url, cwd=tmp_path)
    assert p.returncode == 1, err(p)
    lines = err(p).splitlines()
    assert any(line.startswith("conflict.ndjson line 1: id: conflict") for line in lines), lines
    assert "custate rejects" in err(p)

    for args in (
        ["ingest", "ok.ndjson", "--store", "mysql://nowhere/db"],
        ["ingest", "ok.ndjson", "--store", store_url, "--batch-size", "0"],
        ["ingest", "--store", store_url],
        ["ingest", "ok.ndjson", "--no-such-option"],
    ):
        p = run(*args, cwd=tmp_path)
        assert p.returncode == 2, (args, err(p))
        assert err(p).strip(), args
    with EventStore(store_url) as store:
        assert store.count() == 3


def test_ingest_problems_are_one_line_each(tmp_path: Path) -> None:
    """Each bad record is one stderr line a user can grep, however long its reason, also
    when stderr is a pipe or a file (where rich would wrap at 80 columns)."""
    bad = [good(f"evcus_b{i}") | {"created_at": f"2024-03-01T09:00:0{i}"} for i in range(3)]
    write(tmp_path / "a-rather-long-file-name-for-deliveries.ndjson", ndjson([good("x"), *bad]))
    p = run("ingest", "a-rather-long-file-name-for-deliveries.ndjson", cwd=tmp_path, columns=None)
    assert p.returncode == 1
    for i in range(3):
        line = (
            f"a-rather-long-file-name-for-deliveries.ndjson line {i + 2}: created_at: "
            f"date-time has no zone (add Z or an offset): '2024-03-01T09:00:0{i}'"
        )
        assert line in err(p).splitlines(), err(p)


# -- rejects ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_rejects_list_export_fix_and_reingest(store_url: str, tmp_path: Path) -> None:
    naive = good("evcus_naive", seconds=1) | {"created_at": "2024-03-01T09:00:01"}
    no_customer = good("evcus_nocust", seconds=2) | {"data": {"name": "x"}}
    not_object = good("evcus_list", seconds=3) | {"data": "text"}
    write(tmp_path / "in.ndjson", ndjson([good("evcus_ok"), naive, no_customer, not_object]))
    assert run("ingest", "in.ndjson", "--store", store_url, cwd=tmp_path).returncode == 1

    table = run("rejects", "--store", store_url, cwd=tmp_path)
    assert table.returncode == 0, err(table)
    text = table.stdout.decode()
    assert "3 rejected record(s)" in text
    for location in ("line 2", "line 3", "line 4"):
        assert location in text
    for activity_id in ("evcus_naive", "evcus_nocust", "evcus_list"):
        assert activity_id in text

    listed = json_lines(run("rejects", "--store", store_url, "--json", cwd=tmp_path).stdout)
    assert [(r["activity_id"], r["location"], r["field"]) for r in listed] == [
        ("evcus_naive", "line 2", "created_at"),
        ("evcus_nocust", "line 3", "data.customer.id"),
        ("evcus_list", "line 4", "data"),
    ]
    assert all(r["source"] == "in.ndjson" and r["kind"] == "invalid" for r in listed)
    assert all(r["resolved_at"] is None for r in listed)
    assert all(datetime.fromisoformat(r["rejected_at"]).tzinfo is not None for r in listed)

    p = run("rejects", "--store", store_url, "--export", "fix-me.ndjson", cwd=tmp_path)
    assert p.returncode == 0, err(p)
    exported = json_lines((tmp_path / "fix-me.ndjson").read_bytes())
    assert exported == [naive, no_customer, not_object]

    fixed = [
        exported[0] | {"created_at": exported[0]["created_at"] + "Z"},
        exported[1] | {"customer_id": "cust_a"},
        exported[2] | {"data": {"customer": {"id": "cust_a"}}},
    ]
    write(tmp_path / "fix-me.ndjson", ndjson(fixed))
    p = run("ingest", "fix-me.ndjson", "--store", store_url, "--json", cwd=tmp_path)
    assert p.returncode == 0, err(p)
    report = orjson.loads(p.stdout)
    assert (report["accepted"], report["resolved"]) == (3, 3)

    p = run("rejects", "--store", store_url, "--json", cwd=tmp_path)
    assert (p.returncode, p.stdout) == (0, b"")
    assert (
        "No rejected records." in run("rejects", "--store", store_url, cwd=tmp_path).stdout.decode()
    )
    everything = json_lines(
        run("rejects", "--store", store_url, "--json", "--all", cwd=tmp_path).stdout
    )
    assert [r["activity_id"] for r in everything] == ["evcus_naive", "evcus_nocust", "evcus_list"]
    assert all(r["resolved_at"] is not None for r in everything)


# -- state ------------------------------------------------------------------------------------


def test_state_as_of_known_at(store_url: str, tmp_path: Path) -> None:
    recs = samples()
    customer = "cust_IdgAFZxYwwHctOk9pPuMu308"  # 11 activities, 4 of them on 2024-03-01
    mine = [r for r in recs if parse_activity(r).customer_id == customer]
    assert [r["created_at"][:10] for r in mine].count("2024-03-01") == 4
    # ingested at two known record times: 3 of that day's activities first, the rest later
    with custate.open(store_url, clock=lambda: K1) as cs:
        cs.ingest(mine[:3])
    with custate.open(store_url, clock=lambda: K2) as cs:
        cs.ingest(recs)
        between = K1 + (K2 - K1) / 2
        expected = cs.state(customer, as_of="2024-03-01", known_at=between).to_json()
        now = cs.state(customer).to_json()
    p = run(
        "state",
        customer,
        "--as-of",
        "2024-03-01",
        "--known-at",
        between.isoformat(),
        "--store",
        store_url,
        cwd=tmp_path,
    )
    assert p.returncode == 0, err(p)
    got = orjson.loads(p.stdout)
    assert got == expected
    assert got["as_of"].startswith("2024-03-01T23:59:59")
    assert got["known_at"].startswith("2025-06-01T10:30:00")
    assert got["activities"]["count"] == 3  # the 4th of that day was not yet known
    p = run("state", customer, "--as-of", "2024-03-01", "--store", store_url, cwd=tmp_path)
    assert orjson.loads(p.stdout)["activities"]["count"] == 4

    p = run("state", customer, "--store", store_url, cwd=tmp_path)
    assert p.returncode == 0, err(p)
    assert orjson.loads(p.stdout) == now
    assert now["activities"]["count"] == len(mine)

    p = run("state", "cust_nobody", "--store", store_url, cwd=tmp_path)
    assert p.returncode == 1
    assert p.stdout == b""
    assert "cust_nobody" in err(p)
    assert "no activities" in err(p)

    p = run("state", customer, "--known-at", "yesterday", "--store", store_url, cwd=tmp_path)
    assert p.returncode == 2
    assert "--known-at" in err(p)


# -- which store ------------------------------------------------------------------------------


def stored(db: Path) -> int:
    with EventStore(f"sqlite:///{db}") as store:
        return store.count()


def test_store_flag_env_and_default(tmp_path: Path) -> None:
    n = len(samples())
    default = tmp_path / "default"
    default.mkdir()
    p = run("ingest", SAMPLES_FILE, cwd=default)
    assert p.returncode == 0, err(p)
    assert sorted(x.name for x in default.iterdir() if x.suffix == ".db") == ["custate.db"]
    assert stored(default / "custate.db") == n

    env_dir = tmp_path / "env"
    env_dir.mkdir()
    env_db = env_dir / "from-env.db"
    p = run("ingest", SAMPLES_FILE, cwd=env_dir, store_env=f"sqlite:///{env_db}")
    assert p.returncode == 0, err(p)
    assert not (env_dir / "custate.db").exists()
    assert stored(env_db) == n
    # reads follow the same rule
    p = run("state", "cust_A9f32Khs91", cwd=env_dir, store_env=f"sqlite:///{env_db}")
    assert p.returncode == 0, err(p)
    p = run("state", "cust_A9f32Khs91", cwd=tmp_path)  # no store here: says so, makes none
    assert p.returncode == 2
    assert b"no store at custate.db; ingest something first" in p.stderr
    assert not (tmp_path / "custate.db").exists()

    flag_db = env_dir / "from-flag.db"
    p = run(
        "ingest",
        SAMPLES_FILE,
        "--store",
        f"sqlite:///{flag_db}",
        "--json",
        cwd=env_dir,
        store_env=f"sqlite:///{env_db}",
    )
    assert p.returncode == 0, err(p)
    assert orjson.loads(p.stdout)["accepted"] == n  # a new store, not the env's
    assert stored(flag_db) == n
    assert not (env_dir / "custate.db").exists()


# -- demo -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo(tmp_path: Path) -> None:
    if not DEMO_DATA.exists():
        pytest.skip(f"{DEMO_DATA.relative_to(ROOT)} does not exist yet: no demo data to load")
    p = run_script("demo", cwd=tmp_path)  # the README's first command, as written
    assert p.returncode == 0, err(p)
    out = p.stdout.decode()
    assert "activities stored" in out
    assert "Customer " in out
    assert "What changed in between" in out
    assert "Try next" in out
    assert (tmp_path / "custate-demo.db").exists()
    again = run("demo", cwd=tmp_path)  # starts from a fresh store every time
    assert again.returncode == 0, err(again)
