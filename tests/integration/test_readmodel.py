"""The read model on both backends: generated histories delivered out of order, with
duplicates and late activities, in several ingest calls. Every answer the read model gives
(current state, state as of T, customer queries) is what folding the event store gives;
a rebuild reproduces it while the old tables keep answering; a catch-up killed part-way
and run again, or two catch-ups at once, project each activity exactly once."""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

import custate
from custate.adapters.api import Custate
from custate.adapters.codecs import delta, paged
from custate.adapters.eventstore import ACTIVITY_TOPIC, EventStore
from custate.adapters.readmodel import CustomerRow, ReadModel, runner
from custate.adapters.readmodel import pages as readmodel_pages
from custate.domain import Activity, CustomerState, apply, fold, ordered, parse_activity
from custate.projections import catchup
from custate.projections.keys import key_text

from .histories import T0, record

Json = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
CUSTATE = Path(sys.executable).parent / "custate"


@pytest.fixture(autouse=True, params=["long maps paged", "maps of 3 paged and chained"])
def paged_from(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every test here runs twice: with the defaults (only long histories' large maps are
    stored in pages, and their checkpoints stored against earlier ones, which these
    histories never reach) and with the thresholds of both at a few entries, so that
    customers cross from one form to the other as they grow, and their checkpoints form
    chains that start again every few entries changed."""
    if request.param == "long maps paged":
        return readmodel_pages.PAGED_FROM
    monkeypatch.setattr(readmodel_pages, "PAGED_FROM", 3)
    monkeypatch.setattr(catchup, "TOUCHED_FROM", 3)
    monkeypatch.setattr(runner, "CHAIN_AT_LEAST", 4)
    return 3


# -- generated histories ----------------------------------------------------------------------


@cache
def _bench() -> Any:
    spec = importlib.util.spec_from_file_location(
        "custate_bench_generate", ROOT / "bench" / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@cache
def _delivered(n: int, customers: int, seed: int) -> tuple[Json, ...]:
    records = list(_bench().generate(n, customers, seed, late_fraction=0.2, duplicate_fraction=0.1))
    # on top of the generator's late 20%: arrival order shuffled within windows
    rng = random.Random(seed)
    out: list[Json] = []
    for i in range(0, len(records), 60):
        window = records[i : i + 60]
        rng.shuffle(window)
        out += window
    return tuple(out)


def delivered(n: int, customers: int, seed: int) -> list[Json]:
    """`n` distinct activities, 20% late, 10% delivered twice, arrival order shuffled."""
    return [orjson.loads(orjson.dumps(r)) for r in _delivered(n, customers, seed)]


def by_customer(records: Iterable[Json]) -> dict[str, list[Activity]]:
    out: dict[str, dict[str, Activity]] = {}
    for r in records:
        a = parse_activity(r)
        out.setdefault(a.customer_id, {}).setdefault(a.id, a)
    return {cid: ordered(acts.values()) for cid, acts in sorted(out.items())}


def folded(records: Iterable[Json]) -> dict[str, CustomerState]:
    return {cid: fold(acts, cid) for cid, acts in by_customer(records).items()}


def chunks(records: list[Json], parts: int, rng: random.Random) -> Iterator[list[Json]]:
    cuts = sorted(rng.sample(range(1, len(records)), parts - 1))
    for lo, hi in zip([0, *cuts], [*cuts, len(records)], strict=True):
        yield records[lo:hi]


def ingest_in_calls(cs: Custate, records: list[Json], parts: int, seed: int) -> None:
    for part in chunks(records, parts, random.Random(seed)):
        report = cs.ingest(part)
        assert report.ok, report.problems[:3]
        assert cs.lag() == 0


def random_cuts(
    histories: dict[str, list[Activity]], n: int, seed: int
) -> Iterator[tuple[str, datetime]]:
    rng = random.Random(seed)
    ids = sorted(histories)
    for _ in range(n):
        cid = rng.choice(ids)
        acts = histories[cid]
        first, last = acts[0].created_at, acts[-1].created_at
        pivot = rng.choice(acts).created_at
        yield (
            cid,
            rng.choice(
                [
                    pivot,
                    pivot - timedelta(microseconds=1),
                    first + (last - first) * rng.random(),
                    first - timedelta(seconds=1),
                    last + timedelta(days=1),
                ]
            ),
        )


# -- what the database holds ------------------------------------------------------------------


def count(rm: ReadModel, table: sa.Table) -> int:
    with rm.engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def checkpoints(rm: ReadModel) -> dict[tuple[str, str], Json]:
    """Every stored checkpoint, whole (one stored against another is made whole with it)."""
    ck = rm.t.checkpoints
    with rm.engine.connect() as c:
        keys = c.execute(sa.select(ck.c.customer_id, ck.c.key)).all()
    out: dict[tuple[str, str], Json] = {}
    for cid, key in keys:
        state = rm.checkpoint_at(cid, key)
        assert state is not None, (cid, key)
        out[(cid, key)] = state.to_json()
    return out


def stored_against_another(rm: ReadModel) -> int:
    ck = rm.t.checkpoints
    with rm.engine.connect() as c:
        return sum(delta.is_delta(s) for (s,) in c.execute(sa.select(ck.c.state)))


def whole_checkpoints(rm: ReadModel) -> list[tuple[str, str]]:
    """(customer, key) of the checkpoints stored whole, not against another."""
    ck = rm.t.checkpoints
    with rm.engine.connect() as c:
        rows = c.execute(sa.select(ck.c.customer_id, ck.c.key, ck.c.state)).all()
    return [(cid, key) for cid, key, s in rows if not delta.is_delta(s)]


def activities_upto(store: EventStore, position: int) -> int:
    """Stored activities with a notification id at or below `position`."""
    column = "rowid" if store.url.kind == "sqlite" else "notification_id"
    with store.engine.connect() as c:
        n = c.execute(
            sa.text(
                f"SELECT COUNT(*) FROM {store.url.events_table} WHERE topic = :t AND {column} <= :p"
            ),
            {"t": ACTIVITY_TOPIC, "p": position},
        ).scalar_one()
    return int(n)


def index_rows(rm: ReadModel) -> dict[str, set[tuple[Any, ...]]]:
    t = rm.t
    tables = {
        "segments": t.segments,
        "tiers": t.tiers,
        "cards": t.cards,
        "gift_cards": t.gift_cards,
        "orders": t.orders,
    }
    with rm.engine.connect() as c:
        return {name: {tuple(r) for r in c.execute(sa.select(tb))} for name, tb in tables.items()}


def expected_index_rows(states: dict[str, CustomerState]) -> dict[str, set[tuple[Any, ...]]]:
    """What the query tables must hold for these states, written out independently."""
    out: dict[str, set[tuple[Any, ...]]] = {
        "segments": set(),
        "tiers": set(),
        "cards": set(),
        "gift_cards": set(),
        "orders": set(),
    }
    for cid, s in states.items():
        out["segments"] |= {(sid, cid) for sid in s.segments}
        out["tiers"] |= {(cid, camp, t.tier_id) for camp, t in s.tiers.items()}
        out["cards"] |= {
            (cid, k, c.campaign_id, c.balance, c.pending_points) for k, c in s.cards.items()
        }
        out["gift_cards"] |= {(cid, k, g.campaign_id, g.balance) for k, g in s.gift_cards.items()}
        out["orders"] |= {(cid, k, o.status) for k, o in s.orders.items()}
    return out


def assert_index_rows_and_pages(rm: ReadModel, expected: dict[str, CustomerState]) -> None:
    """The query tables hold exactly the rows of these states, and the pages their large
    maps: the maps a customer's row leaves out, and only those, are stored in pages, each
    entry on its own page, none empty (which maps: those of `paged_from` entries or more,
    in the process that wrote them)."""
    assert index_rows(rm) == expected_index_rows(expected)
    with rm.engine.connect() as c:
        pages = c.execute(sa.select(rm.t.pages)).all()
        rows = c.execute(sa.select(rm.t.customers.c.customer_id, rm.t.customers.c.state)).all()
    paged_maps = {cid: paged.load_row(stored)[1] for cid, stored in rows}
    by_map: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for cid, name, page, entries in pages:
        held = paged.load_map(name, [entries])
        assert held, (cid, name, page)
        assert {paged.page_of(k) for k in held} == {page}, (cid, name, page)
        by_map.setdefault((cid, name), {})[page] = held
    assert set(by_map) == {(cid, name) for cid, names in paged_maps.items() for name in names}
    for (cid, name), by_page in by_map.items():
        whole = {k: v for held in by_page.values() for k, v in held.items()}
        assert whole == getattr(expected[cid], name), (cid, name)


def assert_consistent(cs: Custate, expected: dict[str, CustomerState]) -> None:
    """The read model holds exactly the folded states, each activity's key once, and a
    checkpoint after every `interval`-th activity of each customer."""
    rm = cs.readmodel
    assert cs.lag() == 0
    assert list(rm.all_customer_ids()) == sorted(expected)
    for cid, state in expected.items():
        current = rm.current(cid)
        assert current is not None, cid
        assert current.to_json() == state.to_json(), cid
    assert_index_rows_and_pages(rm, expected)
    total = sum(s.activities.count for s in expected.values())
    assert count(rm, rm.t.keys) == total == cs.store.count()
    assert count(rm, rm.t.checkpoints) == sum(
        s.activities.count // rm.interval for s in expected.values()
    )
    # each checkpoint, made whole by a read model with nothing cached, is the fold up to
    # its key
    stored = checkpoints(ReadModel(cs.store, interval=rm.interval))
    for cid in expected:
        state = CustomerState(cid)
        for a in ordered(s.activity for s in cs.store.customer_activities(cid)):
            apply(state, a)
            if state.activities.count % rm.interval == 0:
                assert stored[(cid, key_text(a))] == state.to_json(), (cid, key_text(a))
    # every activity's fold input is kept beside its key, and folds as the event does
    with rm.engine.connect() as c:
        assert (
            c.execute(sa.select(sa.func.count()).where(rm.t.keys.c.input.is_(None))).scalar() == 0
        )
    for cid in expected:
        events = {s.version: s for s in cs.store.customer_activities(cid)}
        in_order = [events[v] for _, v in rm.keys_between(cid, None)]
        kept = rm.fold_inputs(cid)
        assert [(a.id, a.type, a.created_at, r) for a, r in kept] == [
            (e.activity.id, e.activity.type, e.activity.created_at, e.recorded_at) for e in in_order
        ]
        assert fold([a for a, _ in kept], cid).to_json() == expected[cid].to_json()


# -- state, as of, replay ---------------------------------------------------------------------


def test_read_model_state_is_the_replay_and_the_fold(store_url: str, paged_from: int) -> None:
    records = delivered(2000, 80, seed=5)
    expected = folded(records)
    histories = by_customer(records)
    with custate.open(store_url) as cs:
        ingest_in_calls(cs, records, parts=4, seed=5)
        assert sorted(cs.customer_ids()) == sorted(expected)
        for cid, state in expected.items():
            current = cs.state(cid).to_json()
            assert current == state.to_json(), cid
            assert current == cs.replay(cid).to_json(), cid
        for cid, t in random_cuts(histories, 50, seed=5):
            exactly = [a for a in histories[cid] if a.created_at <= t]
            want = fold(exactly, cid, as_of=t).to_json()
            got = cs.state(cid, as_of=t)
            assert got.activities.count == len(exactly)
            assert got.to_json() == want, (cid, t)
            assert cs.replay(cid, as_of=t).to_json() == want
        assert_consistent(cs, expected)
        stored_pages = count(cs.readmodel, cs.readmodel.t.pages)
        assert stored_pages > 100 if paged_from == 3 else stored_pages == 0


def assert_states_and_checkpoints_are_the_fold(
    rm: ReadModel, stored: dict[tuple[str, str], Json], histories: dict[str, list[Activity]]
) -> None:
    """Each customer's current state as `rm` answers it, and each of `stored` (checkpoints
    read back, every 7th activity), is the fold of her history up to there."""
    for cid, acts in histories.items():
        current = rm.current(cid)
        assert current is not None
        assert current.to_json() == fold(acts, cid).to_json(), cid
        state = CustomerState(cid)
        for a in acts:
            apply(state, a)
            if state.activities.count % 7 == 0:
                assert stored[(cid, key_text(a))] == state.to_json(), (cid, key_text(a))


def test_long_histories_checkpoints_read_back_whole_through_every_arrival_order(
    store_url: str, paged_from: int
) -> None:
    """Customers whose maps grow to hundreds of entries, delivered in order in many small
    ingest calls, then late, twice and out of order, caught up by two read models in turn
    (as two processes would, each remembering its own writes): after each phase every
    checkpoint read back is the fold up to its key, every state as of T the fold up to T.
    (With the thresholds low, the checkpoints are stored against earlier ones, in chains
    that start again as they grow.)"""
    records = list(delivered(1500, 3, seed=17))
    rng = random.Random(17)
    held_back = set(rng.sample(range(len(records)), len(records) // 4))
    times = sorted(r["created_at"] for r in records)
    t80, t90 = times[int(len(times) * 0.8)], times[int(len(times) * 0.9)]

    def picked(late: bool, lo: str | None, hi: str | None) -> list[Json]:
        return [
            r
            for i, r in enumerate(records)
            if (i in held_back) == late
            and (lo is None or r["created_at"] >= lo)
            and (hi is None or r["created_at"] < hi)
        ]

    # 1. most of it in business-time order (the chains grow from one write to the next);
    # 2. late ones near the end (their re-folds start inside the chains); 3. the rest in
    # order (the chains go on after those re-folds); 4. the other late ones, twice and out
    # of order, by both models in turn.
    phases = [
        sorted(picked(False, None, t90), key=lambda r: r["created_at"]),
        picked(True, t80, t90),
        sorted(picked(False, t90, None), key=lambda r: r["created_at"]),
        picked(True, None, t80) + picked(True, t90, None),
    ]
    in_order = [r for p in phases[:3] for r in p]

    def check(cs: Custate, so_far: list[Json], asker: ReadModel) -> int:
        """Every checkpoint and state against the fold, states as of T also as `asker`
        (a projector) answers them; how many checkpoints are stored against another."""
        histories = by_customer(so_far)
        rm = ReadModel(cs.store, interval=7)
        rm.catch_up()
        stored = checkpoints(rm)
        assert len(stored) == sum(len(acts) // 7 for acts in histories.values())
        assert_states_and_checkpoints_are_the_fold(rm, stored, histories)
        for cid, t in random_cuts(histories, 20, seed=len(so_far)):
            want = fold(histories[cid], cid, as_of=t).to_json()
            assert ReadModel(cs.store, interval=7).as_of(cid, t).to_json() == want, (cid, t)
            assert asker.as_of(cid, t).to_json() == want, (cid, t)
        return stored_against_another(rm)

    with custate.open(store_url) as cs:
        models = [ReadModel(cs.store, interval=7), ReadModel(cs.store, interval=7)]
        for phase, records_of in enumerate(phases):
            for i, part in enumerate(chunks(records_of, 8 if phase == 0 else 3, rng)):
                assert cs.ingest(part, project=False).ok
                turns = (phase == 0 and i >= 5) or phase == 3  # the last of phase 0: models[0]
                model = models[(i + 1 - phase // 3) % 2] if turns else models[0]
                model.catch_up(batch_size=rng.choice([5, 50, 400]))
            if phase == 2:
                chained = check(cs, in_order, models[0])
                if paged_from == 3:
                    assert chained > 100
        check(cs, records, models[0])


def test_a_new_projector_absorbs_a_long_history_s_late_activities_as_the_one_that_wrote_it(
    store_url: str, paged_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long history projected by one process, then, again and again, a new projector (a
    restart, or another replica) absorbs a late activity near its end and then activities
    in order (every other round, a few in order first): every checkpoint read back is the fold up to its key, every state and state
    as of T the fold, and after each round its index rows and pages are those of the
    fold (it wrote them against what it read, not what it wrote). With the thresholds low, the new projector goes on with the chain of
    checkpoints it read the late activity's start against: the next late activity's start
    is made whole with that chain's base, and the in-order checkpoints it writes after
    them are stored against it, not whole, as they were before (a long history's whole
    state is megabytes). Here a chain starts again only past 1,000 entries changed."""
    if paged_from == 3:
        monkeypatch.setattr(runner, "CHAIN_AT_LEAST", 1000)
    records = sorted(
        {r["id"]: r for r in delivered(700, 1, seed=23)}.values(), key=lambda r: r["created_at"]
    )
    rng = random.Random(23)
    rounds, each = 5, 8
    in_order = rounds * each
    late_ones = rng.sample(
        range(len(records) - in_order - 60, len(records) - in_order - 20), 2 * rounds
    )
    first = [r for i, r in enumerate(records[:-in_order]) if i not in late_ones]
    so_far = list(first)
    whole_after_late: list[tuple[str, str]] = []
    with custate.open(store_url) as cs:
        assert cs.ingest(first, project=False).ok
        ReadModel(cs.store, interval=7).catch_up(batch_size=50)
        tail = records[-in_order:]
        for n in range(rounds):
            rm = ReadModel(cs.store, interval=7)  # a process that wrote none of it
            late = [records[i] for i in late_ones[2 * n : 2 * n + 2]]
            more = tail[n * each : (n + 1) * each]
            if n % 2:  # its first write: activities in order, then late ones
                assert cs.ingest(more[:5], project=False).ok
                assert rm.catch_up().late == 0
            for r in late:
                assert cs.ingest([r], project=False).ok
                assert rm.catch_up().late == 1
            known = set(whole_checkpoints(rm))
            assert cs.ingest(more[5:] if n % 2 else more, project=False).ok
            assert rm.catch_up().late == 0
            whole_after_late += [k for k in whole_checkpoints(rm) if k not in known]
            so_far += [*late, *more]
            # its first writes compared against the rows and pages as it read them
            assert_index_rows_and_pages(
                rm, {cid: fold(acts, cid) for cid, acts in by_customer(so_far).items()}
            )
        histories = by_customer(so_far)
        rm = ReadModel(cs.store, interval=7)
        rm.catch_up()
        stored = checkpoints(rm)
        assert_states_and_checkpoints_are_the_fold(rm, stored, histories)
        assert len(stored) == sum(len(acts) // 7 for acts in histories.values())
        for cid, t in random_cuts(histories, 20, seed=23):
            assert ReadModel(cs.store, interval=7).as_of(cid, t).to_json() == (
                fold(histories[cid], cid, as_of=t).to_json()
            ), (cid, t)
        if paged_from == 3:
            assert stored_against_another(rm) > len(stored) // 2
            assert whole_after_late == []


def test_one_projector_absorbing_late_activities_one_after_another_keeps_every_answer_right(
    store_url: str, paged_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Late activities of a long history, each in the last few checkpoints, absorbed one at
    a time by the projector that wrote the history, whose memory holds the checkpoints its
    re-folds start from (and, with the thresholds low, a re-fold that makes a checkpoint of
    its own folds the remembered one in place): after each, states as of T answered by it,
    and every checkpoint read back, are the fold, so no remembered checkpoint was changed
    by a re-fold that folded on it. (Here a chain starts again only past 1,000 entries
    changed, so the re-folds start inside the projector's chain.)"""
    if paged_from == 3:
        monkeypatch.setattr(runner, "CHAIN_AT_LEAST", 1000)
    records = sorted(
        {r["id"]: r for r in delivered(600, 1, seed=29)}.values(), key=lambda r: r["created_at"]
    )
    rng = random.Random(29)
    late_ones = set(rng.sample(range(len(records) - 90, len(records)), 30))
    first = [r for i, r in enumerate(records) if i not in late_ones]
    late = [records[i] for i in late_ones]
    rng.shuffle(late)
    tick = timedelta(microseconds=1)
    with custate.open(store_url) as cs:
        assert cs.ingest(first, project=False).ok
        rm = ReadModel(cs.store, interval=7)
        rm.catch_up(batch_size=100)
        so_far = list(first)
        for n, r in enumerate(late):
            assert cs.ingest([r], project=False).ok
            assert rm.catch_up().late == 1
            so_far.append(r)
            ((cid, acts),) = by_customer(so_far).items()
            for _ in range(4):  # among the last checkpoints, where the re-folds start
                t = acts[-rng.randrange(1, 100)].created_at - rng.choice([timedelta(0), tick])
                want = fold(acts, cid, as_of=t).to_json()
                assert rm.as_of(cid, t).to_json() == want, (n, t)
        stored = checkpoints(ReadModel(cs.store, interval=7))
        assert_states_and_checkpoints_are_the_fold(rm, stored, by_customer(so_far))


def test_state_as_of_an_iso_string_and_a_date(store_url: str) -> None:
    records = delivered(300, 10, seed=6)
    histories = by_customer(records)
    with custate.open(store_url) as cs:
        ingest_in_calls(cs, records, parts=2, seed=6)
        cid = max(histories, key=lambda c: len(histories[c]))
        acts = histories[cid]
        t = acts[len(acts) // 2].created_at
        text = t.isoformat().replace("+00:00", "Z")
        assert cs.state(cid, as_of=text).to_json() == fold(acts, cid, as_of=t).to_json()
        day = t.date().isoformat()  # a date means the end of that day (UTC)
        end = datetime.combine(t.date(), datetime.max.time(), t.tzinfo)
        assert cs.state(cid, as_of=day).to_json() == fold(acts, cid, as_of=end).to_json()


def test_as_of_stays_right_when_late_activities_rewrite_cached_checkpoints(
    store_url: str,
) -> None:
    """Decoded checkpoints are cached in memory. Late activities rewrite checkpoints, here
    through another read model (as another process would): no answer may come from a
    checkpoint as it was before."""
    records = delivered(1200, 12, seed=8)
    rng = random.Random(8)
    late = set(rng.sample(range(len(records)), len(records) // 5))
    first = [r for i, r in enumerate(records) if i not in late]
    then = [r for i, r in enumerate(records) if i in late]
    histories = by_customer(records)
    cuts = list(random_cuts(histories, 40, seed=8))
    with custate.open(store_url) as cs:
        asker = ReadModel(cs.store, interval=5)
        writer = ReadModel(cs.store, interval=5)
        for part in (first, then):
            assert cs.ingest(part, project=False).ok
            writer.catch_up()
            so_far = first if part is first else records
            known = {a.id for acts in by_customer(so_far).values() for a in acts}
            for cid, t in cuts:
                exactly = [a for a in histories[cid] if a.created_at <= t and a.id in known]
                want = fold(exactly, cid, as_of=t).to_json()
                for _ in range(2):  # the second answer comes from the cache
                    assert asker.as_of(cid, t).to_json() == want, (cid, t)
        assert asker.checkpoints.hits > 0
        assert asker.checkpoints.misses > 0
        # re-folds stored checkpoints against the ones they started from, and the asker
        # made them whole from the database
        assert stored_against_another(writer) > 0


def test_a_cached_checkpoint_is_not_read_again_while_its_customer_head_stands(
    store_url: str,
) -> None:
    """While a customer's head is the one a cached checkpoint was known current at, its
    bytes are not read again: not by a second point in time, nor by later re-folds of late
    activities (this read model's own writes move what they left alone to the new head).
    After another process writes that customer, they are read and compared again."""
    records = delivered(600, 1, seed=21)
    rng = random.Random(21)
    late = set(rng.sample(range(len(records)), 3))
    first = [r for i, r in enumerate(records) if i not in late]
    then = [r for i, r in enumerate(records) if i in late]
    ((cid, acts),) = by_customer(records).items()
    ((_, before_late),) = by_customer(first).items()
    times = sorted(a.created_at for a in acts)
    with custate.open(store_url) as cs:
        rm = ReadModel(cs.store, interval=10)
        assert cs.ingest(first).ok
        rm.catch_up()
        reads: list[str] = []

        def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().startswith(f"SELECT state FROM {rm.t.checkpoints.name}"):
                reads.append(statement)

        sa.event.listen(rm.engine, "before_cursor_execute", before)
        try:
            t = times[len(times) // 2]
            rm.as_of(cid, t)
            assert len(reads) == 1  # first touch: read, compared, tagged with the head
            assert rm.as_of(cid, t).to_json() == fold(before_late, cid, as_of=t).to_json()
            assert len(reads) == 1
            for r in then:
                assert cs.ingest([r], project=False).ok
                rm.catch_up()
            # The first re-fold reads the checkpoint before its key; each write moves the
            # cached checkpoints it left alone to the new head, so later ones read none.
            assert 1 <= len(reads) <= 2
            absorbed = len(reads)
            assert rm.as_of(cid, t).to_json() == fold(acts, cid, as_of=t).to_json()
            assert len(reads) == absorbed  # t's checkpoint was moved on with the head
            other = ReadModel(cs.store, interval=10)  # another process: writes, then reads
            assert cs.ingest([records[0] | {"id": "evcus_cache_new"}], project=False).ok
            other.catch_up()
            rm.as_of(cid, t)  # the head moved under it: read and compared again
            assert len(reads) == absorbed + 1
        finally:
            sa.event.remove(rm.engine, "before_cursor_execute", before)
        everything = [*acts, parse_activity(records[0] | {"id": "evcus_cache_new"})]
        assert rm.current(cid) == fold(everything, cid)
        assert rm.as_of(cid, t).to_json() == fold(everything, cid, as_of=t).to_json()


# -- queries ----------------------------------------------------------------------------------


Filters = dict[str, Any]


def matches(s: CustomerState, f: Filters) -> bool:
    """`ReadModel.customers` by brute force over a folded state: every filter given must
    hold; with `campaign`, `tier` and the points bounds look at that campaign only, and
    `campaign` alone means a tier or a loyalty card in it."""
    segment, tier, campaign = f.get("segment"), f.get("tier"), f.get("campaign")
    if segment is not None and segment not in s.segments:
        return False
    if tier is not None or campaign is not None:
        in_tiers = any(
            (tier is None or t.tier_id == tier) and (campaign is None or camp == campaign)
            for camp, t in s.tiers.items()
        )
        in_cards = any(c.campaign_id == campaign for c in s.cards.values())
        if not (in_tiers or (tier is None and in_cards)):
            return False
    points = (
        s.points
        if campaign is None
        else sum(c.balance or 0 for c in s.cards.values() if c.campaign_id == campaign)
    )
    if f.get("min_points") is not None and points < f["min_points"]:
        return False
    if f.get("max_points") is not None and points > f["max_points"]:
        return False
    if f.get("status") is not None and s.profile.status != f["status"]:
        return False
    return f.get("order_status") is None or any(
        o.status == f["order_status"] for o in s.orders.values()
    )


def brute_force(states: dict[str, CustomerState], f: Filters) -> list[CustomerRow]:
    rows = [
        CustomerRow(cid, s.profile.status, s.points, s.activities.count)
        for cid, s in sorted(states.items())
        if matches(s, {k: v for k, v in f.items() if k != "limit"})
    ]
    return rows[: f["limit"]] if f.get("limit") is not None else rows


def filter_cases(states: dict[str, CustomerState], seed: int) -> list[Filters]:
    """Single filters over every value the states hold, and random combinations."""
    segments = sorted({sid for s in states.values() for sid in s.segments})
    tiers = sorted({t.tier_id for s in states.values() for t in s.tiers.values() if t.tier_id})
    campaigns = sorted(
        {c.campaign_id for s in states.values() for c in s.cards.values() if c.campaign_id}
        | {camp for s in states.values() for camp in s.tiers}
    )
    points = sorted(s.points for s in states.values())
    orders = sorted({o.status for s in states.values() for o in s.orders.values() if o.status})
    assert segments
    assert tiers
    assert campaigns
    assert orders
    assert points[-1] > 0
    quantiles = sorted({points[len(points) * q // 10] for q in range(10)})
    single: list[Filters] = [
        *({"segment": v} for v in [*segments, "seg_nobody"]),
        *({"tier": v} for v in [*tiers, "ltr_nobody"]),
        *({"campaign": v} for v in [*campaigns, "camp_nobody"]),
        *({"min_points": v} for v in quantiles),
        *({"max_points": v} for v in quantiles),
        *({"status": v} for v in ("active", "deleted")),
        *({"order_status": v} for v in orders),
        {"limit": 7},
        {},
    ]
    rng = random.Random(seed)
    values: dict[str, list[Any]] = {
        "segment": segments,
        "tier": tiers,
        "campaign": campaigns,
        "min_points": quantiles,
        "max_points": quantiles,
        "status": ["active", "deleted"],
        "order_status": orders,
        "limit": [1, 5, 20],
    }
    combined = [
        {k: rng.choice(values[k]) for k in rng.sample(sorted(values), rng.randint(2, 4))}
        for _ in range(60)
    ]
    # the campaign-scoped forms, on purpose
    scoped = [
        {"campaign": c, **extra}
        for c in campaigns
        for extra in (
            {"tier": rng.choice(tiers)},
            {"min_points": rng.choice(quantiles)},
            {"max_points": rng.choice(quantiles)},
            {"min_points": quantiles[1], "max_points": quantiles[-1]},
        )
    ]
    return single + combined + scoped


def pages(cs: Custate, f: Filters, size: int) -> list[CustomerRow]:
    """Every page of `size` in turn, each starting after the last id of the one before."""
    out: list[CustomerRow] = []
    while True:
        page = cs.customers(**f, limit=size, after=out[-1].customer_id if out else None)
        assert len(page) <= size
        out += page
        if len(page) < size:
            return out


def test_customer_queries_are_a_filter_over_the_folded_states(store_url: str) -> None:
    records = delivered(2000, 150, seed=8)
    expected = folded(records)
    with custate.open(store_url) as cs:
        ingest_in_calls(cs, records, parts=3, seed=8)
        cases = filter_cases(expected, seed=8)
        nonempty = 0
        for f in cases:
            want = brute_force(expected, f)
            assert cs.customers(**f) == want, f
            nonempty += bool(want)
            if "limit" not in f:
                assert cs.count_customers(**f) == len(want), f
                assert pages(cs, f, size=7) == want, f
        assert nonempty > len(cases) // 2, "the filters hardly select anything"
        assert len(cs.customers()) == len(expected)


# -- rebuild ----------------------------------------------------------------------------------


def test_rebuild_equals_incremental_and_queries_answer_during_it(store_url: str) -> None:
    everything = delivered(2000, 80, seed=9)
    records, more = everything[:1800], everything[1800:]
    expected = folded(records)
    queries: list[Filters] = [{}, {"min_points": 500}, {"status": "active", "limit": 10}]
    with custate.open(store_url) as cs, custate.open(store_url) as reader:
        ingest_in_calls(cs, records, parts=4, seed=9)
        old = cs.readmodel
        generation = old.t.generation
        incremental_checkpoints = checkpoints(old)
        answers = [reader.customers(**q) for q in queries]
        sample = sorted(expected)[::7]
        during: list[int] = []

        def still_answering(n: int) -> None:
            # the new generation is part-way; the active one keeps answering
            assert reader.readmodel.t.generation == generation
            assert [reader.customers(**q) for q in queries] == answers
            for cid in sample:
                assert reader.state(cid).to_json() == expected[cid].to_json()
            during.append(n)

        report = cs.rebuild(batch_size=300, progress=still_answering)
        assert len(during) >= 5
        assert sum(during) == report.activities == cs.store.count()

        assert cs.readmodel.t.generation == generation + 1
        assert reader.readmodel.t.generation == generation + 1  # swapped under the reader
        assert_consistent(cs, expected)
        assert checkpoints(cs.readmodel) == incremental_checkpoints
        assert [reader.customers(**q) for q in queries] == answers
        for cid in sample:
            assert reader.state(cid).to_json() == expected[cid].to_json()
        assert not sa.inspect(cs.store.engine).has_table(old.t.customers.name)

        # the new generation goes on from where the rebuild left it (late ones included)
        cs.ingest(more)
        assert_consistent(cs, folded(everything))


class Interrupted(Exception):
    pass


def test_an_interrupted_rebuild_resumes_and_the_old_tables_answer_meanwhile(
    store_url: str,
) -> None:
    records = delivered(900, 30, seed=17)
    expected = folded(records)
    with custate.open(store_url) as cs:
        ingest_in_calls(cs, records, parts=2, seed=17)
        generation = cs.readmodel.t.generation
        before = cs.customers()
        batches = 0

        def interrupt(_n: int) -> None:
            nonlocal batches
            batches += 1
            if batches == 2:
                raise Interrupted

        with pytest.raises(Interrupted):
            cs.rebuild(batch_size=200, progress=interrupt)
        assert cs.readmodel.t.generation == generation
        assert cs.customers() == before
        assert_consistent(cs, expected)
        report = cs.rebuild(batch_size=200)
        assert 0 < report.activities <= cs.store.count()
        assert cs.readmodel.t.generation == generation + 1
        assert cs.customers() == before
        assert_consistent(cs, expected)


# -- failures, kills, concurrency -------------------------------------------------------------


@pytest.mark.parametrize("at", ["customers", "commit"])
def test_a_failed_batch_write_changes_nothing(store_url: str, at: str) -> None:
    """The write of a batch fails (a database error half-way through its transaction, or
    at its commit, after every row went in): the same read model object, asked again,
    projects that batch once."""
    records = delivered(1200, 40, seed=12)
    first, second = records[:600], records[600:]
    with custate.open(store_url) as cs:
        cs.ingest(first)
        rm = cs.readmodel  # its cache now holds the states it wrote
        cs.ingest(second, project=False)
        position = rm.position()
        failed: list[str] = []
        writing: set[int] = set()  # connections that moved the tracking row

        def before(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            text = statement.lstrip()
            if text.startswith("UPDATE") and rm.t.tracking.name in text:
                writing.add(id(conn))
            # the customers' rows go after the tracking row and the checkpoints: deleted
            # (PostgreSQL) or updated in place (SQLite)
            customers = rm.t.customers.name
            replacing = text.startswith((f"DELETE FROM {customers} ", f"UPDATE {customers} "))
            if at == "customers" and not failed and replacing:
                failed.append(statement)
                raise OperationalError(statement, {}, Exception("connection lost"))

        def commit(conn: Any) -> None:
            if at == "commit" and not failed and id(conn) in writing:
                failed.append("COMMIT")
                raise OperationalError("COMMIT", {}, Exception("connection lost"))

        sa.event.listen(rm.engine, "before_cursor_execute", before)
        sa.event.listen(rm.engine, "commit", commit)
        try:
            with pytest.raises(OperationalError):
                rm.catch_up()
        finally:
            sa.event.remove(rm.engine, "before_cursor_execute", before)
            sa.event.remove(rm.engine, "commit", commit)
        assert failed
        assert rm.position() == position
        rm.catch_up()
        assert cs.readmodel is rm
        assert_consistent(cs, folded(records))


def _updated(cid: str, seconds: int, name: str) -> Json:
    at = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return {
        "id": f"evcus_{cid}_{name}",
        "type": "customer.updated",
        "created_at": at.isoformat().replace("+00:00", "Z"),
        "data": {"customer": {"id": cid, "name": name}},
    }


def test_a_catch_up_failing_while_planning_leaves_no_trace(store_url: str) -> None:
    """A database error while planning a batch (reading the checkpoint for a late activity
    of `cust_z`), after the on-time `cust_a` was already folded on from the state this
    process cached: asked again, the same read model folds `cust_a`'s activity once."""
    history = [_updated(c, i * 10, f"n{i}") for c in ("cust_a", "cust_z") for i in range(6)]
    later = [_updated("cust_a", 100, "on_time"), _updated("cust_z", 15, "late")]
    with custate.open(store_url) as cs:
        cs.ingest(history)
        rm = cs.readmodel
        cs.ingest(later, project=False)
        failed: list[str] = []

        def fail_once(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if not failed and rm.t.checkpoints.name in statement:
                failed.append(statement)
                raise OperationalError(statement, {}, Exception("connection lost"))

        sa.event.listen(rm.engine, "before_cursor_execute", fail_once)
        try:
            with pytest.raises(OperationalError):
                rm.catch_up()
        finally:
            sa.event.remove(rm.engine, "before_cursor_execute", fail_once)
        assert failed
        rm.catch_up()
        assert cs.readmodel is rm
        assert_consistent(cs, folded([*history, *later]))


def test_two_read_models_taking_turns_project_each_activity_once(store_url: str) -> None:
    """Two projectors (each with its own cache of the states it wrote) alternate batches:
    each must notice the customers the other moved on."""
    records = delivered(1000, 30, seed=13)
    with custate.open(store_url) as cs:
        cs.ingest(records, project=False)
        a, b = ReadModel(cs.store), ReadModel(cs.store)
        turn = 0
        while cs.lag():
            rm = (a, b)[turn % 2]
            batches = 0

            def one_batch() -> bool:
                nonlocal batches
                batches += 1
                return batches > 1

            rm.catch_up(batch_size=97, should_stop=one_batch)
            turn += 1
        assert turn > 10
        assert_consistent(cs, folded(records))


def test_a_projector_that_loses_the_race_reads_again(store_url: str) -> None:
    """`a` has read and planned a batch when `b` catches up everything: `a`'s write finds
    the tracking position moved, writes nothing, and reads again from there."""
    records = delivered(1200, 30, seed=16)
    first, second = records[:500], records[500:]
    with custate.open(store_url) as cs:
        cs.ingest(first, project=False)
        a, b = ReadModel(cs.store), ReadModel(cs.store)
        a.catch_up(batch_size=200)  # a's cache now holds states it wrote
        cs.ingest(second, project=False)
        total = cs.lag()
        by_b: list[int] = []

        def b_gets_there_first(_n: int) -> None:
            if not by_b:
                by_b.append(b.catch_up(batch_size=150).activities)

        by_a = a.catch_up(batch_size=200, progress=b_gets_there_first).activities
        assert by_b
        assert by_b[0] > 0
        assert by_a + by_b[0] == total
        assert_consistent(cs, folded(records))
        # and a, whose cached states b has since moved on, still projects correctly
        more = delivered(1300, 30, seed=16)
        extra = [r for r in more if r["id"] not in {x["id"] for x in records}]
        cs.ingest(extra, project=False)
        a.catch_up(batch_size=50)
        assert_consistent(cs, folded([*records, *extra]))


# `custate project` as shipped, with small transactions: each read batch of BATCH
# activities committed on its own (the shipped defaults write far larger transactions, so
# "killed after some batches committed" would need a history too large for a test).
SMALL_TRANSACTIONS = """
import sys
import custate.adapters.readmodel as rm
from custate.adapters.cli import main
from custate.adapters.readmodel import runner

BATCH = int(sys.argv.pop(1))
runner.WRITE_EVERY = 1
catch_up = rm.ReadModel.catch_up

def small(self, batch_size=BATCH, progress=None, should_stop=None):
    return catch_up(self, min(batch_size, BATCH), progress, should_stop)

rm.ReadModel.catch_up = small
sys.argv[0] = "custate"
sys.exit(main())
"""


def _project(url: str, batch: int | None = None) -> subprocess.Popen[bytes]:
    """`custate project --store URL --json` in a subprocess; with `batch`, in transactions
    of that many activities."""
    env = {k: v for k, v in os.environ.items() if k != "CUSTATE_STORE"}
    command = [str(CUSTATE)] if batch is None else [sys.executable, "-c", SMALL_TRANSACTIONS]
    args = [] if batch is None else [str(batch)]
    return subprocess.Popen(
        [*command, *args, "project", "--store", url, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _ingest_file(url: str, records: list[Json], path: Path) -> None:
    """Store `records` from a file without projecting them, in this process: only the
    projectors under test need processes of their own."""
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    with Custate(url) as cs:
        report = cs.ingest([path], project=False)
    assert report.ok, report.to_json()


def _summary(proc: subprocess.Popen[bytes]) -> Json:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    summary: Json = orjson.loads(out)
    return summary


def _wait(until: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while not until():
        if proc.poll() is not None:
            pytest.fail(f"the projector ended before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


KILL_ACTIVITIES = 3000
KILL_BATCH = 400


@pytest.mark.slow
def test_a_catch_up_killed_part_way_resumes_to_the_same_state(
    store_url: str, tmp_path: Path
) -> None:
    records = delivered(KILL_ACTIVITIES, 250, seed=14)
    expected = folded(records)
    _ingest_file(store_url, records, tmp_path / "big.ndjson")
    with custate.open(store_url) as cs:
        rm = cs.readmodel
        total = cs.lag()
        assert total == KILL_ACTIVITIES
        proc = _project(store_url, KILL_BATCH)
        _wait(lambda: rm.position() > 0, proc, "a batch committed")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        position = rm.position()
        done = activities_upto(cs.store, position)
        assert 0 < done < total, f"killed too late: {done} of {total} projected"
        # what committed is whole batches: rows, keys and position together
        assert count(rm, rm.t.keys) == done
        assert sum(r.activity_count for r in cs.customers()) == done
        assert cs.lag() == total - done

        again = _summary(_project(store_url))
        assert again["projected"] == total - done
        assert_consistent(cs, expected)
        for cid in sorted(expected)[::25]:
            assert cs.state(cid).to_json() == cs.replay(cid).to_json()


@pytest.mark.slow
def test_two_concurrent_projectors_project_each_activity_once(
    store_url: str, tmp_path: Path
) -> None:
    records = delivered(2000, 100, seed=15)
    expected = folded(records)
    _ingest_file(store_url, records, tmp_path / "all.ndjson")
    with custate.open(store_url) as cs:
        ReadModel(cs.store)  # the tables exist before the race
        total = cs.lag()
        # racing for every batch of 250
        procs = [_project(store_url, 250), _project(store_url, 250)]
        summaries = [_summary(p) for p in procs]
        assert sum(s["projected"] for s in summaries) == total
        assert max(s["position"] for s in summaries) == cs.readmodel.position()
        assert_consistent(cs, expected)


# -- a PostgreSQL database whose default collation is linguistic -------------------------------


@pytest.fixture
def icu_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database whose default collation is ICU en-US, where "B" sorts
    after "a" and punctuation before digits, unlike Python's string order."""
    base = os.environ.get("CUSTATE_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("PostgreSQL tests need CUSTATE_TEST_POSTGRES_URL; .ci/run sets it")
    name = f"custate_icu_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as c:
            c.execute(
                sa.text(
                    f"CREATE DATABASE {name} TEMPLATE template0 "
                    "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                )
            )
    except sa.exc.DBAPIError as e:
        admin.dispose()
        pytest.skip(f"cannot create an ICU database here: {e.orig}")
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.mark.postgres
def test_fold_order_holds_under_a_linguistic_collation(icu_postgres_url: str) -> None:
    # Two activities at one instant fold by id: "evcus_B" before "evcus_a" in Python's (and
    # the C collation's) order; en-US would put "a" first. The late one arrives second.
    records = [
        record("evcus_0", "cust_icu", 0, name="first"),
        record("evcus_a", "cust_icu", 60, name="from a"),
        record("evcus_B", "cust_icu", 60, name="from B"),
        record("evcus_z", "cust_icu", 120, name="last"),
    ]
    with custate.open(icu_postgres_url) as cs:
        cs.ingest(records[:2])
        cs.ingest(records[2:])
        want = fold([parse_activity(r) for r in records], "cust_icu")
        assert cs.state("cust_icu").to_json() == want.to_json()
        at = T0 + timedelta(seconds=60)
        then = cs.state("cust_icu", as_of=at)
        # as of exactly the instant: both activities at it count, in fold order
        assert then.activities.count == 3
        assert then.profile.name == "from a"
