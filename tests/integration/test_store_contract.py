"""The store's contract, on every backend (`store_url`: a real SQLite file, and PostgreSQL
in a schema of its own): what goes in comes out, each activity once, conflicts and bad
records kept as rejects, record time (`known_at`) honoured, state equal to the pure fold."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from freezegun import freeze_time

import custate
from custate.adapters.api import Custate
from custate.adapters.eventstore import EventStore
from custate.domain import Activity, fold, parse_activity

from .histories import Json, assert_exactly_once, generate, record, write_ndjson

K1 = datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=UTC)
K2 = datetime(2025, 6, 1, 11, 0, 0, 654321, tzinfo=UTC)


@pytest.fixture
def cs(store_url: str) -> Iterator[Custate]:
    with custate.open(store_url) as c:
        yield c


def parsed(records: list[Json]) -> list[Activity]:
    return [parse_activity(r) for r in records]


def by_customer(records: list[Json]) -> dict[str, list[Activity]]:
    out: dict[str, list[Activity]] = {}
    for a in parsed(records):
        out.setdefault(a.customer_id, []).append(a)
    return out


# -- append and read back -----------------------------------------------------------------------


def test_append_then_read_back_content_and_record_time(store_url: str) -> None:
    records = [record(f"evcus_rb_{i}", "cust_rb", seconds=-i) for i in range(5)]
    records[2]["type"] = "customer.wallet.topped_up"  # unknown type: stored all the same
    activities = parsed(records)
    with EventStore(store_url) as store:
        result = store.append(activities, K1)
        assert [a.id for a in result.accepted] == [a.id for a in activities]
        assert not result.duplicates
        assert not result.conflicts
    # a fresh connection: nothing is served from memory
    with EventStore(store_url) as store:
        stored = store.customer_activities("cust_rb")
        assert store.count() == 5
        assert list(store.customers()) == ["cust_rb"]
    assert [s.activity for s in stored] == activities  # arrival order, content equal
    assert [s.activity.to_record() for s in stored] == [a.to_record() for a in activities]
    assert [s.activity.content() for s in stored] == [a.content() for a in activities]
    assert [s.version for s in stored] == [1, 2, 3, 4, 5]
    assert {s.recorded_at for s in stored} == {K1}  # microseconds and zone kept
    assert all(s.recorded_at.utcoffset() == timedelta(0) for s in stored)


def test_ingest_records_the_clock_time(cs: Custate) -> None:
    with freeze_time(K1):
        report = cs.ingest([record("evcus_rt_1", "cust_rt")])
    assert report.accepted == 1
    (stored,) = cs.activities("cust_rt")
    assert stored.recorded_at == K1
    assert stored.activity == parse_activity(record("evcus_rt_1", "cust_rt"))


# -- each activity once -------------------------------------------------------------------------


def test_duplicate_in_one_batch_is_stored_once(cs: Custate, store_url: str) -> None:
    rec = record("evcus_dup_1", "cust_dup")
    report = cs.ingest([rec, copy.deepcopy(rec), rec])
    assert (report.read, report.accepted, report.duplicates) == (3, 1, 2)
    assert report.ok
    assert_exactly_once(store_url, ["evcus_dup_1"])


def test_duplicate_across_batches_and_ingests_is_stored_once(cs: Custate, store_url: str) -> None:
    records = [record(f"evcus_dupx_{i}", f"cust_dupx_{i % 3}", seconds=i) for i in range(10)]
    first = cs.ingest([*records, *records], batch_size=3)  # redeliveries in later batches
    assert (first.accepted, first.duplicates, first.conflicts) == (10, 10, 0)
    # the same activities again, as other containers and with the time in another zone
    # and the keys in another order: the same canonical content, so duplicates
    again: list[Json] = []
    for r in records:
        t = datetime.fromisoformat(r["created_at"]).astimezone(timezone(timedelta(hours=2)))
        again.append(dict(reversed(list((r | {"created_at": t.isoformat()}).items()))))
    second = cs.ingest([{"object": "list", "data_ref": "data", "data": again, "has_more": False}])
    assert (second.accepted, second.duplicates, second.conflicts) == (0, 10, 0)
    third = cs.ingest([orjson.dumps(records)], batch_size=4)
    assert (third.accepted, third.duplicates) == (0, 10)
    assert_exactly_once(store_url, [r["id"] for r in records])
    assert cs.rejects(include_resolved=True) == []


def test_conflicting_redelivery_changes_nothing_and_is_a_listed_reject(
    cs: Custate, store_url: str
) -> None:
    old = record("evcus_cf_1", "cust_cf", name="Ada")
    new = record("evcus_cf_1", "cust_cf", name="Grace")
    with freeze_time(K1):
        assert cs.ingest([old]).accepted == 1
    before = cs.state("cust_cf").to_json()

    with freeze_time(K2):
        report = cs.ingest([new])
    assert (report.accepted, report.duplicates, report.conflicts) == (0, 0, 1)
    assert not report.ok

    (stored,) = cs.activities("cust_cf")
    assert stored.activity == parse_activity(old)
    assert stored.recorded_at == K1
    assert cs.state("cust_cf").to_json() == before
    assert before["profile"]["name"] == "Ada"
    assert_exactly_once(store_url, ["evcus_cf_1"])

    (reject,) = cs.rejects()
    assert reject.reject.kind == "conflict"
    assert reject.reject.activity_id == "evcus_cf_1"
    assert reject.reject.field == "id"
    assert "evcus_cf_1" in reject.reject.reason
    assert reject.reject.stored is not None
    raw, kept = orjson.loads(reject.reject.raw), orjson.loads(reject.reject.stored)
    assert parse_activity(raw) == parse_activity(new)  # raw: the version refused
    assert parse_activity(kept) == parse_activity(old)  # stored: the version kept
    assert reject.resolved_at is None

    # delivering the kept version again is a duplicate, and does not "resolve" the conflict
    again = cs.ingest([old])
    assert (again.accepted, again.duplicates, again.conflicts) == (0, 1, 0)
    assert [r.reject.kind for r in cs.rejects()] == ["conflict"]
    # the same conflicting delivery again is kept once
    cs.ingest([new])
    assert len(cs.rejects(include_resolved=True)) == 1


def test_conflict_within_one_batch_keeps_the_first(cs: Custate, store_url: str) -> None:
    old = record("evcus_cfb_1", "cust_cfb", name="Ada")
    new = record("evcus_cfb_1", "cust_cfb", name="Grace")
    report = cs.ingest([old, new])
    assert (report.accepted, report.conflicts) == (1, 1)
    (stored,) = cs.activities("cust_cfb")
    assert stored.activity == parse_activity(old)
    (reject,) = cs.rejects()
    assert reject.reject.stored is not None
    assert parse_activity(orjson.loads(reject.reject.raw)) == parse_activity(new)
    assert parse_activity(orjson.loads(reject.reject.stored)) == parse_activity(old)
    assert_exactly_once(store_url, ["evcus_cfb_1"])


# -- many customers, state = fold ---------------------------------------------------------------


def test_many_customers(cs: Custate, store_url: str) -> None:
    records = generate(600, 40, seed=11)
    random.Random(11).shuffle(records)
    report = cs.ingest(records, batch_size=97)
    assert (report.accepted, report.duplicates, report.rejected, report.conflicts) == (600, 0, 0, 0)
    groups = by_customer(records)
    assert len(groups) > 20
    assert [row.customer_id for row in cs.customers()] == sorted(groups)
    counts = {row.customer_id: row.activity_count for row in cs.customers()}
    assert counts == {c: len(acts) for c, acts in groups.items()}
    for customer, activities in groups.items():
        stored = cs.activities(customer)
        assert sorted(s.activity.id for s in stored) == sorted(a.id for a in activities)
    assert_exactly_once(store_url, [r["id"] for r in records])


def test_state_equals_the_domain_fold(cs: Custate) -> None:
    records = generate(400, 12, seed=5)
    delivered = [*records, *random.Random(5).sample(records, 80)]
    random.Random(6).shuffle(delivered)  # late and repeated deliveries
    cs.ingest(delivered, batch_size=50)
    groups = by_customer(records)
    times = sorted(a.created_at for acts in groups.values() for a in acts)
    middle = times[len(times) // 2]
    for customer, activities in groups.items():
        assert cs.state(customer).to_json() == fold(activities, customer).to_json()
        got = cs.state(customer, as_of=middle).to_json()
        assert got == fold(activities, customer, as_of=middle).to_json()
        assert got["as_of"] is not None


def test_profile_fields_come_back_only_through_the_types_that_copy_them(cs: Custate) -> None:
    """Stored activities are read back without the customer's profile fields unless their
    type copies them into the profile: what a created or updated activity said must still
    reach the profile, and what another type's payload says of the customer must not."""
    created = record("evcus_pf_1", "cust_pf", seconds=0, activity_type="customer.created")
    created["data"]["customer"].update(name="Ada", email="ada@example.com", metadata={"vip": 1})
    updated = record("evcus_pf_2", "cust_pf", seconds=1)  # no name: keeps "Ada"
    updated["data"]["customer"].update(phone="+44 20 7946 0000", email=None)
    order = record("evcus_pf_3", "cust_pf", seconds=2, activity_type="customer.order.created")
    order["data"]["customer"].update(name="Someone Else", email="else@example.com")
    order["data"]["order"] = {"id": "ord_pf", "status": "CREATED", "amount": 100}
    cs.ingest([order, updated, created])  # arrival order is not fold order
    for state in (cs.state("cust_pf"), cs.replay("cust_pf")):
        profile = state.to_json()["profile"]
        assert (profile["name"], profile["email"], profile["phone"], profile["metadata"]) == (
            "Ada",
            None,
            "+44 20 7946 0000",
            {"vip": 1},
        )


# -- known_at: record time ----------------------------------------------------------------------


def test_known_at_gives_the_earlier_view(cs: Custate) -> None:
    first = [record(f"evcus_k1_{i}", "cust_k", seconds=100 + i, name="Ada") for i in range(3)]
    first.insert(0, record("evcus_k1_c", "cust_k", 0, "customer.created", name="Ada"))
    # the second delivery holds a late activity that sorts before the first ones
    second = [
        record("evcus_k2_late", "cust_k", seconds=50, name="Early"),
        record("evcus_k2_new", "cust_k", seconds=500, name="Grace"),
    ]
    other = [record("evcus_k2_other", "cust_k_other", seconds=1)]
    with freeze_time(K1):
        assert cs.ingest(first).accepted == 4
    with freeze_time(K2):
        assert cs.ingest([*second, *other]).accepted == 3

    stored = cs.activities("cust_k")
    assert {s.activity.id: s.recorded_at for s in stored} == {
        **{r["id"]: K1 for r in first},
        **{r["id"]: K2 for r in second},
    }
    earlier_acts = parsed(first)
    all_acts = parsed([*first, *second])
    between = K1 + (K2 - K1) / 2
    for k, acts in [(K1, earlier_acts), (between, earlier_acts), (K2, all_acts)]:
        view = cs.state("cust_k", known_at=k).to_json()
        expected = fold(acts, "cust_k").to_json()
        assert view.pop("known_at") is not None
        expected.pop("known_at")
        assert view == expected, k
    assert cs.state("cust_k", known_at=between).profile.name == "Ada"
    assert cs.state("cust_k").profile.name == "Grace"
    later, now = (
        cs.state("cust_k", known_at=K2 + timedelta(days=1)).to_json(),
        cs.state("cust_k").to_json(),
    )
    assert (later.pop("known_at"), now.pop("known_at")) == ("2025-06-02T11:00:00.654321Z", None)
    assert later == now
    # as_of and known_at together, the auditor's question: the late activity (t=50 s) was
    # not known at `between`
    audit = "2024-03-01T09:01:00Z"
    assert cs.state("cust_k", as_of=audit, known_at=between).activities.count == 1
    assert cs.state("cust_k", as_of=audit, known_at=K2).activities.count == 2
    # also through the ISO text a caller would pass
    text_view = cs.state("cust_k", known_at=between.isoformat()).to_json()
    assert text_view["activities"]["count"] == 4


def test_unknown_customer_raises(cs: Custate) -> None:
    cs.ingest([record("evcus_u_1", "cust_known")])
    for kwargs in ({}, {"as_of": "2024-03-01"}, {"known_at": K2}):
        with pytest.raises(custate.UnknownCustomerError) as e:
            cs.state("cust_nobody", **kwargs)
        assert e.value.customer_id == "cust_nobody"
        assert "cust_nobody" in str(e.value)
    with pytest.raises(custate.UnknownCustomerError):
        cs.activities("cust_nobody")


# -- rejects ------------------------------------------------------------------------------------


def bad_records() -> list[Json]:
    naive = record("evcus_bad_naive", "cust_bad") | {"created_at": "2024-03-01T09:00:00"}
    no_customer = record("evcus_bad_nocust", "cust_bad")
    no_customer["data"] = {"segment": {"id": "seg_1"}}
    not_object = record("evcus_bad_data", "cust_bad") | {"data": [1, 2]}
    return [naive, no_customer, not_object]


def fixed(r: Json) -> Json:
    out = record(r["id"], "cust_bad", seconds=7)
    return out


def test_rejects_are_kept_once_across_reruns(cs: Custate, tmp_path: Path) -> None:
    good = record("evcus_good_1", "cust_bad")
    path = write_ndjson(tmp_path / "bad.ndjson", [good, *bad_records()])
    with path.open("ab") as f:
        f.write(b'{"id": "evcus_bad_json", "type": \n')
    with freeze_time(K1):
        first = cs.ingest([path])
    assert (first.read, first.accepted, first.rejected) == (5, 1, 4)
    assert not first.ok
    rejects = cs.rejects()
    assert [(r.reject.source, r.reject.location, r.reject.field) for r in rejects] == [
        (str(path), "line 2", "created_at"),
        (str(path), "line 3", "data.customer.id"),
        (str(path), "line 4", "data"),
        (str(path), "line 5", "<json>"),
    ]
    assert [r.reject.activity_id for r in rejects] == [
        "evcus_bad_naive",
        "evcus_bad_nocust",
        "evcus_bad_data",
        None,
    ]
    assert all(r.reject.kind == "invalid" and r.reject.reason for r in rejects)
    assert all(r.rejected_at.utcoffset() == timedelta(0) for r in rejects)
    assert rejects[0].rejected_at == K1

    with freeze_time(K2):
        second = cs.ingest([path])
    assert (second.accepted, second.duplicates, second.rejected) == (0, 1, 4)
    assert [r.id for r in cs.rejects(include_resolved=True)] == [r.id for r in rejects]
    assert cs.rejects()[0].rejected_at == K1  # the first sighting is kept


def test_a_reject_that_later_goes_in_is_resolved(cs: Custate, tmp_path: Path) -> None:
    bad = bad_records()
    with freeze_time(K1):
        report = cs.ingest([write_ndjson(tmp_path / "bad.ndjson", bad)])
    assert report.rejected == 3
    assert len(cs.rejects()) == 3
    with pytest.raises(custate.UnknownCustomerError):
        cs.state("cust_bad")

    # fix two of them and deliver those again
    with freeze_time(K2):
        report = cs.ingest([write_ndjson(tmp_path / "fixed.ndjson", map(fixed, bad[:2]))])
    assert (report.accepted, report.resolved, report.rejected) == (2, 2, 0)
    assert report.ok
    left = cs.rejects()
    assert [r.reject.activity_id for r in left] == ["evcus_bad_data"]
    everything = cs.rejects(include_resolved=True)
    assert len(everything) == 3
    resolved = {r.reject.activity_id: r.resolved_at for r in everything if r.resolved_at}
    assert resolved == {"evcus_bad_naive": K2, "evcus_bad_nocust": K2}
    assert cs.state("cust_bad").activities.count == 2

    # the last one, fixed, arrives as part of a larger delivery: resolved too
    report = cs.ingest([fixed(bad[2]), record("evcus_more", "cust_bad", 9)])
    assert (report.accepted, report.resolved) == (2, 1)
    assert cs.rejects() == []
    # re-ingesting the original bad file lists nothing new: the records are kept once,
    # and stay resolved
    cs.ingest([tmp_path / "bad.ndjson"])
    assert cs.rejects() == []
    assert len(cs.rejects(include_resolved=True)) == 3


@pytest.fixture
def sibling_url(store_url: str, tmp_path: Path) -> Iterator[str]:
    """A second store on the same backend: another SQLite file, or another schema."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'sibling.db'}"
        return
    base, _, schema = store_url.partition("?schema=")
    sibling = f"{schema}_sib"
    yield f"{base}?schema={sibling}"
    engine = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{sibling}" CASCADE'))
    engine.dispose()


def test_two_stores_share_nothing(cs: Custate, sibling_url: str) -> None:
    """A PostgreSQL `?schema=` store keeps its rejects in its schema, like its events."""
    cs.ingest([record("evcus_mine", "cust_mine"), bad_records()[0]])
    with custate.open(sibling_url) as other:
        assert other.rejects(include_resolved=True) == []
        assert other.customers() == []
        other.ingest([record("evcus_theirs", "cust_theirs"), *bad_records()[1:]])
        assert len(other.rejects()) == 2
    assert [r.reject.activity_id for r in cs.rejects()] == ["evcus_bad_naive"]
    assert [row.customer_id for row in cs.customers()] == ["cust_mine"]


def test_a_bare_path_is_an_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    with custate.open(str(path)) as cs:
        assert cs.ingest([record("evcus_plain", "c1")]).accepted == 1
    with custate.open(f"sqlite:///{path}") as cs:
        assert cs.customer_ids() == ["c1"]


@pytest.mark.postgres
def test_a_store_whose_server_dropped_its_connections_answers_and_takes_writes(
    store_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A failover or restart drops the pool's connections; one that lay idle is pinged
    before use and replaced, so the next read and the next write work."""
    if not store_url.startswith("postgresql"):
        pytest.skip("the pool and its pings are PostgreSQL's (SQLite opens a file)")
    admin_engine: sa.Engine | None = request.getfixturevalue("_postgres_admin")
    assert admin_engine is not None
    records = generate(40, 4, seed=31)
    with custate.open(store_url) as cs:
        cs.ingest([write_ndjson(tmp_path / "a.ndjson", records[:20])])
        cid = records[0]["data"]["customer"]["id"]
        before = cs.state(cid)
        engine = cs.store.engine
        with engine.connect() as a, engine.connect() as b, engine.connect() as c:
            pids = [x.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() for x in (a, b, c)]
        with admin_engine.begin() as admin:
            for pid in pids:
                admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        time.sleep(1.2)  # longer than the idle time after which a connection is pinged
        assert cs.state(cid) == before
        cs.ingest([write_ndjson(tmp_path / "b.ndjson", records[20:])])
        assert cs.count_activities() == 40
