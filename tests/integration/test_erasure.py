"""Erasure (GDPR Art. 17) on both backends: a customer's history of real-shaped Voucherify
payloads carrying distinctive personal values is ingested, projected (with the change feed
on, and rejects holding the values), then erased. Afterwards a byte search of the SQLite
file and its WAL, or of the PostgreSQL schema's rows and relation files, finds none of the
values, while another customer's values are still found; points, tiers, segments, orders
and the audit are what they were; the profile reads as erased; an activity of the customer
stored afterwards is erased on the way in, until the erasure is lifted."""

from __future__ import annotations

import copy
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import custate
from custate.adapters.api import Custate
from custate.adapters.readmodel import ReadModel
from custate.domain import parse_time
from custate.domain.erasure import ERASED, ERASED_METADATA
from custate.projections.diff import CUT_KEYS, flatten

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the shared history, by its full name (as test_pull does)
    sys.path.insert(0, str(ROOT))

from tests.e2e.personal import (  # noqa: E402
    ERASED_VALUES,
    HISTORY,
    NAME,
    OTTO,
    OTTO_NAME,
    ZELDA,
    history,
)

Json = dict[str, Any]


def _without_profile(state: custate.CustomerState) -> Json:
    j = state.to_json()
    j.pop("profile")
    return j


@pytest.fixture
def erased_store(store_url: str) -> Iterator[tuple[Custate, Json, Json]]:
    """A store with Zelda's and Otto's histories projected (change feed on) and two
    rejects holding Zelda's values; yields it with Zelda's state and history before."""
    cs = custate.open(store_url, change_feed=True)
    try:
        zelda = history(ZELDA, NAME, "evz")
        # One at a time: the rows are rewritten after each, leaving old versions behind.
        assert sum(cs.ingest([a]).accepted for a in zelda) == len(HISTORY)
        assert cs.ingest(history(OTTO, OTTO_NAME, "evo")).accepted == len(HISTORY)
        conflicting = copy.deepcopy(zelda[0])  # same id, other content: a conflict reject
        conflicting["data"]["customer"]["description"] = "changed"
        invalid = copy.deepcopy(zelda[1])  # unreadable time: an invalid reject
        invalid["id"], invalid["created_at"] = "evz_bad", "not a time"
        report = cs.ingest([conflicting, invalid])
        assert (report.conflicts, report.rejected) == (1, 1)
        before = cs.state(ZELDA)
        assert before.profile.name == NAME
        assert before.points > 0
        assert before.tiers
        entries = [e.to_json() for e in cs.history(ZELDA)]
        yield cs, {"state": before}, {"history": entries}
    finally:
        cs.close()


def _sqlite_bytes(cs: Custate) -> bytes:
    path = Path(cs.store.url.env["SQLITE_DBNAME"])
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _postgres_bytes(cs: Custate) -> bytes:
    """Every row of the schema's tables as text (bytea decoded), and every byte of their
    relation files (heap, TOAST, indexes), read by the server after a checkpoint."""
    schema = cs.store.url.schema
    out: list[bytes] = []
    with cs.store.engine.connect() as c:
        c.execute(sa.text("CHECKPOINT"))
        tables = c.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}
        ).scalars()
        for table in tables:
            for (row,) in c.execute(sa.text(f'SELECT t::text FROM "{schema}"."{table}" t')):
                out.append(row.encode())
            cols = c.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = :s AND table_name = :t AND data_type = 'bytea'"
                ),
                {"s": schema, "t": table},
            ).scalars()
            for col in cols:
                for (blob,) in c.execute(sa.text(f'SELECT "{col}" FROM "{schema}"."{table}"')):
                    if blob is not None:
                        out.append(bytes(blob))
        files = c.execute(
            sa.text(
                "SELECT pg_relation_filepath(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN (:s, 'pg_toast') AND c.relkind IN ('r', 't', 'i') "
                "AND (n.nspname = :s OR c.oid IN (SELECT reltoastrelid FROM pg_class k "
                "JOIN pg_namespace m ON m.oid = k.relnamespace WHERE m.nspname = :s))"
            ),
            {"s": schema},
        ).scalars()
        for f in files:
            if f is not None:
                out.append(
                    bytes(
                        c.execute(sa.text("SELECT pg_read_binary_file(:f)"), {"f": f}).scalar_one()
                    )
                )
    return b"\n".join(out)


def _but_profile(entry: Json) -> Json:
    """A history entry less its changes to the profile."""
    changes = [c for c in entry["changes"] if not c["path"].startswith("profile")]
    return {**entry, "changes": changes}


def _all_bytes(cs: Custate) -> bytes:
    return _sqlite_bytes(cs) if cs.store.url.kind == "sqlite" else _postgres_bytes(cs)


def test_erasure_leaves_no_byte_and_keeps_points_tiers_segments(
    erased_store: tuple[Custate, Json, Json],
) -> None:
    cs, before, audit = erased_store
    found = _all_bytes(cs)
    assert all(v.encode() in found for v in (*ERASED_VALUES, OTTO_NAME))  # the search sees

    report = cs.erase(ZELDA, by="dpo@shop.example")

    assert report.activities == len(HISTORY)
    assert report.refolded == len(HISTORY)
    assert report.rejects == 2
    assert report.changes > 0
    assert report.erasure.erased_by == "dpo@shop.example"
    assert report.erasure.active
    j = report.to_json()
    assert not any(v in json.dumps(j) for v in ERASED_VALUES)

    found = _all_bytes(cs)
    left = [v for v in ERASED_VALUES if v.encode() in found]
    assert left == []
    assert OTTO_NAME.encode() in found  # the other customer's data stays

    after = cs.state(ZELDA)
    assert _without_profile(after) == _without_profile(before["state"])
    assert after.points == before["state"].points
    assert after.tiers == before["state"].tiers
    assert after.segments == before["state"].segments
    assert after.profile.name == ERASED
    assert after.profile.email == ERASED
    assert after.profile.phone == ERASED
    assert after.profile.metadata == ERASED_METADATA
    # The read model is what folding the rewritten events gives.
    assert _without_profile(cs.replay(ZELDA)) == _without_profile(after)
    assert cs.replay(ZELDA).profile.to_json() == after.profile.to_json()
    # The audit still works, and says the same but for the profile.
    entries = [e.to_json() for e in cs.history(ZELDA)]
    assert [_but_profile(e) for e in entries] == [_but_profile(e) for e in audit["history"]]
    assert not any(v in json.dumps(entries) for v in ERASED_VALUES)
    mid = parse_time("2024-03-15T00:00:00Z", "as_of")
    assert cs.state(ZELDA, as_of=mid).to_json() == cs.replay(ZELDA, as_of=mid).to_json()
    assert cs.erasure(ZELDA) == report.erasure


def _flat(state: custate.CustomerState) -> Json:
    return {
        k: v
        for k, v in flatten(state.to_json()).items()
        if k.split(".")[0] not in CUT_KEYS and k.split(".")[0] != "activities"
    }


def test_an_erasure_publishes_what_it_changed_and_the_feed_never_shows_the_values(
    erased_store: tuple[Custate, Json, Json],
) -> None:
    cs, _, _ = erased_store
    last = cs.changes(0, limit=100_000).next

    report = cs.erase(ZELDA)

    page = cs.changes(last, limit=100_000)
    assert report.published == len(page.records) > 0
    assert report.to_json()["published_changes"] == report.published
    assert {(r.customer_id, r.cause, r.correction, r.until) for r in page.records} == {
        (ZELDA, "erasure", False, None)
    }
    erased = {r.path: r for r in page.records}
    assert {"profile.name", "profile.email", "profile.phone"} <= set(erased)
    assert erased["profile.email"].after == ERASED
    assert all(r.recorded_at == report.erasure.erased_at for r in page.records)
    every = cs.changes(0, limit=100_000).records
    assert not any(v in json.dumps([r.to_json() for r in every]) for v in ERASED_VALUES)
    # What holds now, replayed from the customer's first record on, is her erased state.
    flat = _flat(custate.CustomerState(ZELDA))
    for r in every:
        if r.customer_id == ZELDA and r.until is None:
            if r.op == "removed":
                flat.pop(r.path, None)
            else:
                flat[r.path] = r.after
    assert flat == _flat(cs.state(ZELDA))
    # Erasing again changes nothing more, and publishes nothing.
    assert cs.erase(ZELDA).published == 0
    assert cs.changes(page.next).records == []


def test_later_activities_are_erased_on_the_way_in_until_lifted(
    erased_store: tuple[Custate, Json, Json],
) -> None:
    cs, before, _ = erased_store
    cs.erase(ZELDA)
    zelda = history(ZELDA, NAME, "evz")
    # A redelivery of an erased activity is a duplicate of the stored (erased) one.
    again = cs.ingest([zelda[0]])
    assert (again.accepted, again.duplicates, again.conflicts) == (0, 1, 0)
    later = copy.deepcopy(zelda[1])
    later["id"], later["created_at"] = "evz_later", "2024-04-01T10:00:00Z"
    assert cs.ingest([later]).accepted == 1
    stored = cs.activities(ZELDA)[-1].activity
    assert stored.id == "evz_later"
    assert stored.data["customer"]["name"] == ERASED
    assert cs.state(ZELDA).profile.name == ERASED
    assert not [v for v in ERASED_VALUES if v.encode() in _all_bytes(cs)]

    lifted = cs.lift_erasure(ZELDA, by="dpo")
    assert not lifted.active
    assert lifted.lifted_by == "dpo"
    back = copy.deepcopy(zelda[1])
    back["id"], back["created_at"] = "evz_back", "2024-04-02T10:00:00Z"
    assert cs.ingest([back]).accepted == 1
    assert cs.state(ZELDA).profile.name == NAME
    assert cs.state(ZELDA).points == before["state"].points


def test_lifting_a_customer_never_erased_is_an_unknown_customer(store_url: str) -> None:
    with custate.open(store_url) as cs, pytest.raises(custate.UnknownCustomerError):
        cs.lift_erasure("cust_never")


def test_another_process_projecting_after_the_erasure_does_not_bring_the_data_back(
    store_url: str,
) -> None:
    """Two services on one store (two processes' memories): the other one projected the
    customer, so it keeps her state, rows and checkpoints in memory; after this one erases
    her, the other one's next catch-up of her must fold on the erased state, not on what it
    remembers."""
    zelda = history(ZELDA, NAME, "evz")
    mid = parse_time("2024-03-13T00:00:00Z", "as_of")
    with custate.open(store_url) as eraser, custate.open(store_url) as other:
        for a in zelda[:-1]:
            other.ingest([a])  # `other` projects, and remembers what it wrote
        assert other.state(ZELDA, as_of=mid).profile.name == NAME  # and keeps what it read
        eraser.erase(ZELDA)
        assert other.state(ZELDA, as_of=mid).profile.name == ERASED
        other.ingest([zelda[-1]])  # in order: folded on the state it remembered
        late = copy.deepcopy(zelda[1])  # late: re-folds from the start, over what it read
        late["id"], late["type"] = "evz_late", "customer.custom_event"
        late["data"]["event"] = {"type": "late_visit"}
        other.ingest([late])
        state = other.state(ZELDA)
        assert state.profile.name == ERASED
        assert state.custom_events["late_visit"].count == 1
        assert state.points == eraser.replay(ZELDA).points
        assert not [v for v in ERASED_VALUES if v.encode() in _all_bytes(eraser)]


def test_a_catch_up_planned_before_the_erasure_does_not_write_her_data_back(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A projector that read and folded her unerased state, then writes after the erasure
    committed, must fold again on the erased state instead of writing what it planned."""
    zelda = history(ZELDA, NAME, "evz")
    with custate.open(store_url) as eraser, custate.open(store_url) as other:
        other.ingest(zelda[:-1])
        other.ingest([zelda[-1]], project=False)
        planned, erased = threading.Event(), threading.Event()
        write = ReadModel.write

        def paused(self: ReadModel, *args: Any, **kwargs: Any) -> bool:
            if threading.current_thread().name == "projector" and not erased.is_set():
                planned.set()  # the plan is made: hold its write until the erasure is done
                erased.wait(30)
            return write(self, *args, **kwargs)

        monkeypatch.setattr(ReadModel, "write", paused)
        projector = threading.Thread(target=other.project, name="projector")
        projector.start()
        assert planned.wait(30)
        eraser.erase(ZELDA, vacuum=False)
        erased.set()
        projector.join(30)
        assert not projector.is_alive()
        state = eraser.state(ZELDA)
        assert state.profile.name == ERASED
        assert state.activities.count == len(HISTORY)  # the held activity is projected
        assert _without_profile(state) == _without_profile(eraser.replay(ZELDA))


def test_a_catch_up_during_the_erasure_waits_and_its_changes_are_not_the_erasures(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure reads her state, then re-folds her: a catch-up of hers in between waits
    for it (then folds on the erased state), so the erasure's own records are only what
    the erasure changed."""
    import custate.adapters.erase as erase_module

    zelda = history(ZELDA, NAME, "evz")
    with (
        custate.open(store_url, change_feed=True) as eraser,
        custate.open(store_url) as other,
    ):
        other.ingest(zelda[:-1])
        other.ingest([zelda[-1]], project=False)  # her tier upgrade, not projected yet
        last = eraser.changes(0, limit=100_000).next
        read, go = threading.Event(), threading.Event()
        from custate.adapters.readmodel.refold import refold_customer as refold

        def held(*args: Any, **kwargs: Any) -> int:
            read.set()  # her state is read: hold the re-fold while a catch-up tries
            go.wait(30)
            return refold(*args, **kwargs)

        monkeypatch.setattr(erase_module, "refold_customer", held)
        erasure = threading.Thread(target=eraser.erase, args=(ZELDA,), kwargs={"vacuum": False})
        erasure.start()
        assert read.wait(30)
        projector = threading.Thread(target=other.project)
        projector.start()
        projector.join(1.0)
        assert projector.is_alive()  # it waits for the erasure's transaction
        go.set()
        erasure.join(30)
        projector.join(30)
        assert not erasure.is_alive()
        assert not projector.is_alive()
        records = eraser.changes(last, limit=100_000).records
        by_erasure = [r for r in records if r.cause == "erasure"]
        assert by_erasure
        assert all(r.path.startswith("profile.") for r in by_erasure), by_erasure
        assert any(r.path.startswith("loyalty.tiers.") for r in records if r.cause == "activity")
        assert eraser.state(ZELDA).profile.name == ERASED
        assert eraser.state(ZELDA).activities.count == len(HISTORY)


def test_a_rebuild_left_unfinished_is_erased_too(store_url: str) -> None:
    """A rebuild interrupted part-way leaves a generation with the customer's rows; the
    erasure re-folds it too, and the rebuild, finished later, answers erased."""
    with custate.open(store_url) as cs:
        cs.ingest(history(ZELDA, NAME, "evz"))
        before = cs.state(ZELDA)
        active = cs.readmodel
        building = active.generations.building(active.t.generation)
        ReadModel(cs.store, generation=building).catch_up()  # then killed: not swapped in
        assert NAME.encode() in _all_bytes(cs)
        report = cs.erase(ZELDA)
        assert report.refolded == 2 * len(HISTORY)  # both generations
        assert not [v for v in ERASED_VALUES if v.encode() in _all_bytes(cs)]
        cs.rebuild()
        after = cs.state(ZELDA)
        assert after.profile.name == ERASED
        assert _without_profile(after) == _without_profile(before)
