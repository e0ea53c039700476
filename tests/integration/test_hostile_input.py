"""Hostile input on every path (library, files, stdin, pull, fold, the write itself), on
SQLite and PostgreSQL: each bad record is refused with its field named and kept as a
reject that can be exported and fixed, and the valid records beside it are stored. No
record, however odd, crashes an ingest or fails its neighbours."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import orjson
from hypothesis import HealthCheck, given, settings

import custate
from custate.adapters.eventstore import Encoded, digest
from custate.adapters.ingest import ingest, write_batch
from custate.adapters.readers import MAX_RECORD_BYTES, Record
from custate.adapters.voucherify import VoucherifyClient, VoucherifyConfig
from custate.domain import Activity, parse_activity

from .fake_voucherify import APP_ID, APP_TOKEN, FakeServer, FakeVoucherify
from .histories import CUSTATE, Json, cli_env
from .hostile import CUSTOMER, HOSTILE, record, with_metadata

GOOD = [record(1), record(2, created_at="9999-12-31T23:59:59Z"), record(3)]


def ndjson(records: list[Json]) -> bytes:
    # The standard library writes what orjson will not (integers beyond 64 bits, 300 levels).
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def assert_kept(cs: custate.Custate, source: str | None = None) -> None:
    """Every hostile record is a reject naming its field; every good one is stored."""
    found = [r.reject for r in cs.rejects() if source is None or r.reject.source == source]
    assert len(found) == len(HOSTILE)
    for r, (name, _, field) in zip(found, HOSTILE, strict=True):  # kept in input order
        assert r.field.startswith(field), (name, r.field, r.reason)
        assert r.kind == "invalid"
        assert r.raw
    state = cs.state(CUSTOMER)
    assert set(state.segments) == {"seg_1", "seg_2", "seg_3"}
    assert cs.store.count() == len(GOOD)


def test_library_dicts_and_text(store_url: str) -> None:
    mixed = [GOOD[0], *[r for _, r, _ in HOSTILE], GOOD[1], GOOD[2]]
    with custate.open(store_url) as cs:
        report = cs.ingest(mixed)
        assert (report.accepted, report.rejected) == (3, len(HOSTILE))
        assert [
            p.field[: len(f)] for p, (_, _, f) in zip(report.problems, HOSTILE, strict=True)
        ] == [f for _, _, f in HOSTILE]
        assert_kept(cs, "<api>")
        # The same records as JSON text (orjson reads 2**70 as a float: refused all the same)
        report = cs.ingest([ndjson(mixed)])
        assert (report.accepted, report.duplicates, report.rejected) == (0, 3, len(HOSTILE))
        assert_kept(cs, "<text 0>")


def test_cli_file_stdin_export_and_resubmit(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "deliveries.ndjson"
    path.write_bytes(ndjson([GOOD[0], *[r for _, r, _ in HOSTILE], GOOD[1], GOOD[2]]))
    env = cli_env()

    def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(CUSTATE), *args, "--store", store_url],
            input=stdin,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=300,
        )

    p = run("ingest", str(path), "--json")
    assert p.returncode == 1, p.stderr.decode()
    out = orjson.loads(p.stdout)
    assert (out["accepted"], out["rejected"]) == (3, len(HOSTILE))
    assert b"Traceback" not in p.stderr
    first = out["problems"][0]
    assert (first["source"], first["location"], first["field"]) == (str(path), "line 2", "id")
    assert first["reason"].startswith("contains a NUL character")
    p = run("ingest", "-", "--json", stdin=path.read_bytes())
    assert p.returncode == 1, p.stderr.decode()
    assert orjson.loads(p.stdout)["rejected"] == len(HOSTILE)
    with custate.open(store_url) as cs:
        assert_kept(cs, str(path))
        assert_kept(cs, "<stdin>")
    # Exported, each is a line as given; fixed, it goes in and its reject is resolved.
    export = tmp_path / "fix-me.ndjson"
    assert run("rejects", "--export", str(export)).returncode == 0
    lines = export.read_bytes().splitlines()
    assert len(lines) == 2 * len(HOSTILE)
    assert json.loads(lines[0])["id"] == "ev_a\x00b"
    big = json.loads(lines[[name for name, _, _ in HOSTILE].index("integer of 2**70")])
    assert big["data"]["customer"]["metadata"]["x"] == 2**70  # exported exactly as given
    big["data"]["customer"]["metadata"]["x"] = str(2**70)
    (tmp_path / "fixed.ndjson").write_text(json.dumps(big) + "\n")
    p = run("ingest", str(tmp_path / "fixed.ndjson"), "--json")
    assert p.returncode == 0, p.stderr.decode()
    assert orjson.loads(p.stdout)["accepted"] == 1
    with custate.open(store_url) as cs:
        assert len(list(cs.rejects())) == 2 * len(HOSTILE) - 2  # both deliveries resolved


def test_fold_refuses_what_ingest_refuses(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    path.write_bytes(ndjson([GOOD[0], with_metadata("big", 2**70), GOOD[2]]))
    p = subprocess.run(
        [str(CUSTATE), "fold", str(path)], env=cli_env(), capture_output=True, timeout=120
    )
    assert p.returncode == 1
    message = f"{path} line 2: data.customer.metadata.x: number 1.1805916207174113e+21 is "
    assert f"{message}outside the signed 64-bit range".encode() in p.stderr
    state = orjson.loads(p.stdout)
    assert set(state["segments"]) == {"seg_1", "seg_3"}


def test_pull_keeps_hostile_records_as_rejects(store_url: str) -> None:
    from custate.adapters.pull import PullCursors, pull_customer

    fake = FakeVoucherify()
    served = [r for _, r, _ in HOSTILE if _encodable(r)]
    fake.activities[CUSTOMER] = [*GOOD, *served]
    with FakeServer(fake) as url, custate.open(store_url, catch_up_reads=True) as cs:
        config = VoucherifyConfig(url, APP_ID, APP_TOKEN)
        with VoucherifyClient(config) as client:
            r = pull_customer(cs, client, PullCursors(cs.store.engine), CUSTOMER)
        assert (r.report.accepted, r.report.rejected) == (3, len(served))
        assert len(list(cs.rejects())) == len(served)
        assert set(cs.state(CUSTOMER).segments) == {"seg_1", "seg_2", "seg_3"}


def _encodable(r: Json) -> bool:
    try:
        orjson.dumps(r)
    except TypeError:
        return False
    return True


def test_documents_over_the_record_limit_are_refused_unparsed(
    store_url: str, tmp_path: Path
) -> None:
    big = record("big_doc")
    big["data"]["customer"]["metadata"] = {"blob": "x" * (MAX_RECORD_BYTES + 10)}
    one_line = tmp_path / "one.json"
    one_line.write_bytes(orjson.dumps(big) + b"\n" + orjson.dumps(GOOD[0]) + b"\n")
    pretty = tmp_path / "pretty.json"
    pretty.write_bytes(orjson.dumps(big, option=orjson.OPT_INDENT_2))
    with custate.open(store_url) as cs:
        report = cs.ingest([one_line, pretty])
        assert (report.accepted, report.rejected) == (1, 2)
        found = sorted((r.reject.location, r.reject.field) for r in cs.rejects())
        assert found == [("document", "<record>"), ("line 1", "<record>")]
        assert all("over the 16 MiB limit" in r.reject.reason for r in cs.rejects())
        assert all(len(r.reject.raw) <= 64 * 1024 for r in cs.rejects())
        assert cs.store.count() == 1


def test_a_member_the_store_refuses_never_fails_its_batch(store_url: str) -> None:
    """A record that got past validation but that the database refuses at write time (here
    built by hand: a stream name no driver can encode) is kept as a reject; the others of
    its batch are stored, and write_batch answers each in the order given."""
    with custate.open(store_url, catch_up_reads=True) as cs:
        good = [Encoded.of(parse_activity(record(i))) for i in range(10)]
        poison = Encoded(
            "ev_poison", "c\ud800", "customer.segment.entered", None, b"{}", digest(b"{}")
        )
        report = ingest(cs.store, cs.rejects_store, [*good[:5], poison, *good[5:]], batch_size=1000)
        assert (report.accepted, report.rejected) == (10, 1)
        (kept,) = [r.reject for r in cs.rejects()]
        assert kept.field == "<record>"
        assert kept.reason.startswith("the store refused it")
        assert cs.store.count() == 10

        # By hand again: an id with NUL, which PostgreSQL refuses and SQLite stores.
        a = parse_activity(record("a"))
        nul = Activity(
            id="ev_\x00", type=a.type, created_at=a.created_at, customer_id=CUSTOMER,
            data=a.data, payload=a.payload,
        )  # fmt: skip
        b = parse_activity(record("b"))
        records = [
            Record("s", "1", a),
            Record("s", "2", nul),
            Record("s", "3", b),
            Record("s", "4", a),
        ]
        result, _ = write_batch(cs.store, cs.rejects_store, records, [])
        statuses = [o.status for o in result.outcomes]
        pg = store_url.startswith("postgresql")
        assert statuses == ["stored", "refused" if pg else "stored", "stored", "duplicate"]
        assert [x.id for x in result.accepted] == (
            ["ev_a", "ev_b"] if pg else ["ev_a", "ev_\x00", "ev_b"]
        )
        if pg:
            assert result.outcomes[1].reject is not None
            assert result.outcomes[1].reject.reason.startswith("the store refused it")
        assert set(cs.state(CUSTOMER).segments) >= {"seg_a", "seg_b"}


# -- any JSON value, anywhere in data ----------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
# Where to put it: a path of keys into the payload (existing or new).
paths = st.lists(
    st.sampled_from(["customer", "metadata", "segment", "id", "name", "balance", "points", "x"]),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=json_values, path=paths, as_text=st.booleans())
def test_any_json_value_anywhere_is_stored_exactly_or_refused(
    store_url: str, value: Any, path: list[str], as_text: bool
) -> None:
    n = _counter()
    r = record(f"p{n}", customer_id=CUSTOMER)
    node: Any = r["data"]
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    with custate.open(store_url, catch_up_reads=True) as cs:
        report = cs.ingest([json.dumps(r)] if as_text else [r], project=False)
        assert report.accepted + report.rejected == 1
        if report.accepted:
            (stored,) = [s for s in cs.activities(CUSTOMER) if s.activity.id == r["id"]]
            assert orjson.loads(orjson.dumps(dict(stored.activity.data))) == r["data"]
            assert dict(stored.activity.data) == r["data"]
            cs.state(CUSTOMER)  # folds
        else:
            assert any(x.reject.activity_id == r["id"] for x in cs.rejects())


_n = [0]


def _counter() -> int:
    _n[0] += 1
    return _n[0]


def test_cli_out_of_range_arguments_are_usage_errors(sqlite_url: str, tmp_path: Path) -> None:
    with custate.open(sqlite_url) as cs:
        cs.ingest([GOOD[0]])
    cases = [
        (["customers", "--min-points", str(2**70)], "--min-points"),
        (["customers", "--max-points", str(-(2**70))], "--max-points"),
        (["customers", "--limit", str(2**70)], "--limit"),
        (["state", CUSTOMER, "--as-of", "9999-12-31T23:59:59-05:00"], "--as-of"),
        (["state", CUSTOMER, "--known-at", "0001-01-01T00:00:00+05:00"], "--known-at"),
        (["history", CUSTOMER, "--from", "9999-12-31T23:59:59-05:00"], "--from"),
    ]
    for args, option in cases:
        p = subprocess.run(
            [str(CUSTATE), *args, "--store", sqlite_url],
            env=cli_env(),
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
        )
        assert p.returncode == 2, (args, p.stderr.decode())
        assert option in p.stderr.decode(), (args, p.stderr.decode())
        assert b"Traceback" not in p.stderr
