"""The audit API through `custate.open`, on SQLite and PostgreSQL: history reproduces the
state, diff between two moments of knowledge names exactly the late activity, explain names
the activity that set a value also when it arrived late, gaps over every customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from freezegun import freeze_time
from sqlalchemy import func, select, update

import custate
from custate.adapters.codecs import foldinput as inputs
from custate.projections import audit
from custate.projections.audit import Replay
from custate.projections.diff import CUT_KEYS, flatten

from .histories import generate, iso

Json = dict[str, Any]
# The sections whose paths lie inside one entry of a map ("loyalty" holds cards and tiers).
ENTRY_MAPS = {"loyalty", "orders", "gift_cards", "segments", "reward_redemptions", "vouchers"}
K0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def flat(j: Json) -> Json:
    return {k: v for k, v in flatten(j).items() if k.split(".")[0] not in CUT_KEYS}


def balance_record(aid: str, cid: str, at: datetime, balance: int, points: int) -> Json:
    return {
        "id": aid,
        "type": "customer.voucher.loyalty_card.points_added",
        "created_at": iso(at),
        "customer_id": cid,
        "data": {
            "customer": {"id": cid},
            "balance": {
                "type": "loyalty_card",
                "balance": balance,
                "total": balance,
                "points": points,
                "related_object": {"id": "v_x", "type": "voucher"},
            },
        },
    }


def ingest_an_hour_apart(cs: custate.Custate, first: list[Json], second: list[Json]) -> None:
    """`first` recorded at K0, `second` an hour later."""
    with freeze_time(K0):
        cs.ingest(first)
    with freeze_time(K0 + timedelta(hours=1)):
        cs.ingest(second)


def test_history_replays_to_the_state_at_each_point(store_url: str) -> None:
    records = generate(600, 4, seed=11)
    with custate.open(store_url) as cs:
        ingest_an_hour_apart(cs, records[:300], records[300:])
        for cid in cs.customer_ids():
            entries = cs.history(cid)
            state = cs.state(cid)
            assert len(entries) == state.activities.count
            replay = Replay(cid)
            for i, e in enumerate(entries):
                replay.apply(e)
                f = replay.flat
                if i % 37 == 0 or i == len(entries) - 1:
                    at = e.activity.created_at
                    expect = flat(cs.replay(cid, as_of=at).to_json())
                    # Activities sharing a created_at fold together in `as_of`; skip those.
                    if i + 1 == len(entries) or entries[i + 1].activity.created_at > at:
                        assert f == expect, (cid, i)
                assert e.activity.recorded_at in (K0, K0 + timedelta(hours=1))
            assert f == flat(state.to_json())
            window = cs.history(cid, start=entries[1].activity.created_at)
            assert [e.activity.id for e in window] == [e.activity.id for e in entries[1:]]


def test_history_from_a_time_is_the_full_history_from_that_time(store_url: str) -> None:
    # Hundreds of activities a customer: `--from` late in the history starts from a
    # checkpoint of the read model; what it reports (changes, late flags) must be what the
    # full fold says.
    records = generate(1000, 2, seed=12)
    with custate.open(store_url) as cs:
        ingest_an_hour_apart(cs, records[::2], records[1::2])  # many of these are late
        for cid in cs.customer_ids():
            full = cs.history(cid)
            assert len(full) > 2 * cs.readmodel.interval + 1
            assert any(e.late for e in full)
            for i in (0, 1, 99, 100, 101, 150, 201, len(full) - 1):
                start = full[i].activity.created_at
                want = [e for e in full if e.activity.created_at >= start]
                assert cs.history(cid, start=start) == want, (cid, i)
                end = full[min(i + 20, len(full) - 1)].activity.created_at
                want = [e for e in want if e.activity.created_at <= end]
                assert cs.history(cid, start=start, end=end) == want, (cid, i)


def test_diff_known_at_names_exactly_the_late_activity(store_url: str) -> None:
    cid = "cust_audit"
    t0 = datetime(2025, 5, 1, tzinfo=UTC)
    k1, k2, k3 = K0, K0 + timedelta(hours=1), K0 + timedelta(hours=2)
    with custate.open(store_url) as cs:
        with freeze_time(k1):
            cs.ingest(
                [
                    balance_record("evcus_1", cid, t0, 100, 100),
                    balance_record("evcus_3", cid, t0 + timedelta(days=2), 180, 30),
                ]
            )
        with freeze_time(k2):
            cs.ingest([balance_record("evcus_late", cid, t0 + timedelta(days=1), 150, 50)])
        between = k1 + timedelta(minutes=30)
        assert cs.diff_known_at(cid, None, k1, between).changes == ()
        assert cs.diff_known_at(cid, None, k2, k3).changes == ()
        about = t0 + timedelta(days=1, hours=1)
        d = cs.diff_known_at(cid, about, between, k3)
        assert [a.id for a in d.activities] == ["evcus_late"]
        assert {x for e in d.changes for x in e.activities} == {"evcus_late"}
        by = {e.path: e for e in d.changes}
        assert (by["loyalty.cards.v_x.balance"].before, by["loyalty.cards.v_x.balance"].after) == (
            100,
            150,
        )
        # Known now, about now: the gap evcus_3 showed (100 + 30 != 180) is closed.
        assert cs.gaps(cid) == []
        assert [g.activity_id for g in cs.replay(cid, known_at=between).gaps] == ["evcus_3"]

        ex = cs.explain(cid, "loyalty.cards.v_x.balance", as_of=about)
        assert ex.value == 150
        assert ex.set_by is not None
        assert ex.set_by.id == "evcus_late"
        assert ex.set_by.recorded_at == k2
        assert ex.chain[-1].late
        assert cs.explain(cid, "loyalty.cards.v_x.balance").set_by.id == "evcus_3"  # type: ignore[union-attr]

        d = cs.diff_as_of(cid, t0, t0 + timedelta(days=1, hours=1))
        assert [e.activities for e in d.changes if e.path == "loyalty.cards.v_x.balance"] == [
            ("evcus_late",)
        ]


def test_gaps_over_every_customer_from_the_read_model(store_url: str) -> None:
    t0 = datetime(2025, 5, 1, tzinfo=UTC)
    recs = [
        balance_record("evcus_g1", "cust_g", t0, 100, 100),
        balance_record("evcus_g2", "cust_g", t0 + timedelta(days=1), 190, 50),
        balance_record("evcus_ok1", "cust_ok", t0, 100, 100),
        balance_record("evcus_ok2", "cust_ok", t0 + timedelta(days=1), 150, 50),
        *generate(200, 3, seed=2),
    ]
    with custate.open(store_url) as cs:
        cs.ingest(recs)
        found = cs.gaps()
        assert [
            (g.customer_id, g.previous_activity_id, g.activity_id, g.missing) for g in found
        ] == [("cust_g", "evcus_g1", "evcus_g2", 40)]
        assert cs.gaps("cust_ok") == []
        assert [g.activity_id for g in cs.gaps("cust_g")] == ["evcus_g2"]


def test_explain_from_the_read_model_answers_as_the_fold_of_the_events(
    store_url: str,
) -> None:
    """`explain` folds the read model's fold inputs (`adapters.codecs.foldinput`), not the events:
    its answer for every path inside an entry (a card, an order, a tier, ...), and for the
    entries themselves, must be the one the fold of the event store's activities gives, as
    known now and as known at K."""
    records = generate(500, 3, seed=12)
    with custate.open(store_url) as cs:
        ingest_an_hour_apart(cs, records[:250], records[250:])
        checked = 0
        for cid in cs.customer_ids():
            pairs = [(s.activity, s.recorded_at) for s in cs.activities(cid)]
            everything = flat(cs.state(cid).to_json())
            inside = [p for p in everything if p.split(".")[0] in ENTRY_MAPS]
            entries = {
                ".".join(p.split(".")[: 3 if p.startswith("loyalty.") else 2]) for p in inside
            }
            paths = sorted(set(inside) | entries)
            paths += ["orders.ord_none.status", "loyalty.points", "profile.name"]
            mid = min(a.created_at for a, _ in pairs) + timedelta(days=200)
            for path in paths:
                for known_at, as_of in ((None, None), (K0 + timedelta(minutes=30), mid)):
                    k = [(a, r) for a, r in pairs if known_at is None or r <= known_at]
                    want = audit.explain(k, cid, path, as_of)
                    got = cs.explain(cid, path, as_of=as_of, known_at=known_at)
                    assert got.to_json() == want.to_json(), (cid, path, known_at)
                    checked += bool(want.chain)
        assert checked > 100


def test_rows_without_a_fold_input_are_read_from_the_event_store(store_url: str) -> None:
    """Audits fold the read model's fold inputs. A row without one (projected before they
    were kept, or an activity msgpack cannot hold) or of a format this code does not know
    (written by a newer version) is read from the event store: the answers stay the fold
    of the events. A `keys` table from before the column gets it when the store opens."""
    records = generate(400, 3, seed=5)
    with custate.open(store_url) as cs:
        ingest_an_hour_apart(cs, records[:200], records[200:])
        cids = cs.customer_ids()

        want = {cid: from_events_of(cs, cid) for cid in cids}
        assert {cid: cs.history(cid) for cid in cids} == want
        rm = cs.readmodel
        keys = rm.t.keys
        with rm.engine.begin() as c:
            assert c.execute(select(func.count()).where(keys.c.input.is_(None))).scalar() == 0
            c.execute(update(keys).where(keys.c.version % 3 == 0).values(input=None))
            newer = msgspec.msgpack.encode([inputs.FORMAT + 1, "from a newer custate"])
            c.execute(update(keys).where(keys.c.version % 7 == 0).values(input=newer))
        assert {cid: cs.history(cid) for cid in cids} == want
        k = K0 + timedelta(minutes=30)
        for cid in cids:  # the state as known at K folds the fold inputs too
            assert cs.state(cid, known_at=k).to_json() == cs.replay(cid, known_at=k).to_json()
        with rm.engine.begin() as c:
            c.exec_driver_sql(f"ALTER TABLE {keys.name} DROP COLUMN input")
    with custate.open(store_url) as cs:
        assert {cid: cs.history(cid) for cid in cids} == want
        more = generate(60, 2, seed=6)
        cs.ingest(more)
        for cid in cs.customer_ids():
            assert cs.history(cid) == from_events_of(cs, cid)
        rm = cs.readmodel
        keys = rm.t.keys
        with rm.engine.connect() as c:
            # The new activities' rows have their fold input again.
            assert c.execute(select(func.count()).where(keys.c.input.is_not(None))).scalar() == 60


def from_events_of(cs: custate.Custate, cid: str) -> list[audit.HistoryEntry]:
    pairs: list[audit.Pair] = [(s.activity, s.recorded_at) for s in cs.activities(cid)]
    return audit.history(pairs, cid)
