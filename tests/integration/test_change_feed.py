"""The change feed on a real store (SQLite and PostgreSQL): records written with the read
model's rows, in-order records and a late activity's corrections, pages, filters and bad
input, the records that hold now replaying to each customer's current state, and a
follower during concurrent catch-ups seeing every position once, in order."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import custate
from custate.projections.diff import CUT_KEYS, flatten

from .histories import generate
from .test_readmodel import _ingest_file, _project, _summary, _wait, delivered

SILVER = {"id": "ltr_s", "name": "Silver"}
GOLD = {"id": "ltr_g", "name": "Gold"}
PLATINUM = {"id": "ltr_p", "name": "Platinum"}


def tier_record(aid: str, t: str, kind: str, tier: dict[str, str]) -> dict[str, Any]:
    key = "loyalty_tier" if kind == "joined" else "loyalty_tier_to"
    return {
        "id": aid,
        "type": f"customer.loyalty.tier.{kind}",
        "created_at": f"2025-01-01T12:00:{t}.000000Z",
        "customer_id": "cust_1",
        "data": {"campaign": {"id": "camp_1"}, key: {**tier, "campaign_id": "camp_1"}},
    }


def flat_now(state: custate.CustomerState) -> dict[str, Any]:
    return {
        k: v
        for k, v in flatten(state.to_json()).items()
        if k.split(".")[0] not in CUT_KEYS and k.split(".")[0] != "activities"
    }


def test_in_order_and_late_activities_give_records_and_corrections(store_url: str) -> None:
    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest([tier_record("a1", "10", "joined", SILVER)])
        cs.ingest([tier_record("a2", "30", "upgraded", GOLD)])
        first = cs.changes()
        path = "loyalty.tiers.camp_1.tier_id"
        tier = [r for r in first.records if r.path == path]
        assert [(r.op, r.before, r.after, r.correction) for r in tier] == [
            ("added", None, "ltr_s", False),
            ("changed", "ltr_s", "ltr_g", False),
        ]
        assert all(r.cause == "activity" and r.recorded_at is not None for r in tier)
        positions = [r.position for r in first.records]
        assert positions == sorted(set(positions))
        assert first.next == positions[-1]

        cs.ingest([tier_record("late", "20", "upgraded", PLATINUM)])
        late = cs.changes(after=first.next, paths=["loyalty.tiers.*.tier_id"])
        assert [(r.before, r.after, r.correction, r.activity_id) for r in late.records] == [
            ("ltr_s", "ltr_p", True, "late")
        ]
        (fix,) = late.records
        assert fix.effective_at.second == 20
        assert fix.until is not None
        assert fix.until.second == 30
        # Nothing after the last position; a position past it is refused.
        assert cs.changes(after=late.next).records == []
        with pytest.raises(custate.QueryError, match="past the last position"):
            cs.changes(after=late.next + 10)


def test_filters_and_bad_input(store_url: str) -> None:
    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest(generate(300, 5, seed=3))
        every = cs.changes(limit=100_000).records
        assert every
        some = every[0].customer_id
        mine = cs.changes(customer=some, limit=100_000).records
        assert mine == [r for r in every if r.customer_id == some]
        segs = cs.changes(paths=["segments.*"], limit=100_000).records
        assert segs == [r for r in every if r.path.startswith("segments.")]
        # Pages, one after the other, give every record once.
        got: list[custate.ChangeRecord] = []
        page = cs.changes(limit=7)
        while page.records:
            got += page.records
            page = cs.changes(after=page.next, limit=7)
        assert got == every
        for bad in ["", "segments..x", "segments.[", "a b", ".x"]:
            with pytest.raises(custate.QueryError, match="not a path glob"):
                cs.changes(paths=[bad])
        with pytest.raises(custate.QueryError, match="after"):
            cs.changes(after=-1)
        with pytest.raises(custate.QueryError, match="limit"):
            cs.changes(limit=0)


def test_records_that_hold_now_replay_to_every_customers_state(store_url: str) -> None:
    records = generate(400, 6, seed=11)
    random.Random(5).shuffle(records)  # many late activities
    with custate.open(store_url, change_feed=True) as cs:
        for i in range(0, len(records), 37):
            cs.ingest(records[i : i + 37])
        replayed: dict[str, dict[str, Any]] = {}
        for r in cs.changes(limit=1_000_000).records:
            flat = replayed.setdefault(
                r.customer_id, flat_now(custate.CustomerState(r.customer_id))
            )
            if r.until is None:
                if r.op == "removed":
                    flat.pop(r.path, None)
                else:
                    flat[r.path] = r.after
        assert any(r.correction for r in cs.changes(limit=1_000_000).records)
        for cid in cs.customer_ids():
            assert replayed[cid] == flat_now(cs.state(cid)), cid


def test_a_follower_sees_every_position_once_in_order_during_concurrent_catch_ups(
    store_url: str,
) -> None:
    records = generate(600, 40, seed=21)
    with custate.open(store_url, change_feed=True) as setup:
        setup.ingest(records[:1], project=False)
    seen: list[int] = []
    done = threading.Event()

    def follow() -> None:
        with custate.open(store_url, change_feed=True) as cs:
            for r in cs.follow_changes(0, poll=0.01, should_stop=done.is_set):
                seen.append(r.position)

    def ingest(part: list[dict[str, Any]]) -> None:
        with custate.open(store_url, change_feed=True) as cs:
            for i in range(0, len(part), 20):
                cs.ingest(part[i : i + 20])

    follower = threading.Thread(target=follow)
    follower.start()
    writers = [threading.Thread(target=ingest, args=(records[k::3],)) for k in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    with custate.open(store_url, change_feed=True) as cs:
        cs.project()
        done.set()
        follower.join(timeout=60)
        every = [r.position for r in cs.changes(limit=1_000_000).records]
    assert not follower.is_alive()
    assert seen == every
    assert every == list(range(1, len(every) + 1))


def _feed(cs: custate.Custate) -> Counter[tuple[Any, ...]]:
    """Each record without its position and record time, counted."""
    return Counter(
        (
            *(r.customer_id, r.path, r.op, repr(r.before), repr(r.after), r.activity_id),
            *(r.effective_at, r.until, r.correction, r.cause),
        )
        for r in cs.changes(limit=10_000_000).records
    )


@pytest.mark.slow
def test_a_catch_up_killed_part_way_then_rerun_writes_each_record_once(
    store_url: str, tmp_path: Path
) -> None:
    records = delivered(3000, 250, seed=14)  # 20% late, 10% delivered twice
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    _ingest_file(reference, records, tmp_path / "ref.ndjson")
    with custate.open(reference, change_feed=True) as ref:
        ref.project()
        expected = _feed(ref)
    assert any(k[8] for k in expected)  # corrections among them
    _ingest_file(store_url, records, tmp_path / "big.ndjson")
    with custate.open(store_url, change_feed=True) as cs:
        rm = cs.readmodel
        proc = _project(store_url, 400)  # a transaction per 400 activities
        _wait(lambda: rm.position() > 0, proc, "a batch committed")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert 0 < cs.lag() < 3000, "killed too late"
        part = cs.changes(limit=10_000_000).records
        assert part  # the committed batches' records, and only theirs
        assert _summary(_project(store_url))["projected"] > 0
        got = _feed(cs)
        positions = [r.position for r in cs.changes(limit=10_000_000).records]
    assert got == expected
    assert positions == list(range(1, len(positions) + 1))


def test_the_async_follower_yields_records_as_they_are_written(store_url: str) -> None:
    async def run() -> list[custate.ChangeRecord]:
        with custate.open(store_url, change_feed=True) as cs:
            cs.ingest([tier_record("a1", "10", "joined", SILVER)])
            start = cs.changes().next
            got: list[custate.ChangeRecord] = []

            async def follow() -> None:
                async for r in cs.afollow_changes(start, paths=["loyalty.tiers.*"], poll=0.01):
                    got.append(r)
                    if r.path.endswith("tier_id"):
                        return

            task = asyncio.create_task(follow())
            await asyncio.sleep(0.05)
            assert not task.done()  # nothing new yet: it waits, without blocking the loop
            await asyncio.to_thread(cs.ingest, [tier_record("a2", "30", "upgraded", GOLD)])
            await asyncio.wait_for(task, 30)
            return got

    got = asyncio.run(run())
    assert [r.after for r in got if r.path.endswith("tier_id")] == ["ltr_g"]
    assert all(r.activity_id == "a2" for r in got)


def test_pruned_positions_are_refused_not_skipped(store_url: str) -> None:
    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest(generate(200, 4, seed=9))
        every = cs.changes(limit=100_000).records
        assert cs.prune_changes("2000-01-01") == (0, 0)  # nothing that old
        gone, upto = cs.prune_changes("2999-01-01")
        assert (gone, upto) == (len(every), every[-1].position)
        with pytest.raises(custate.ChangesPrunedError, match=f"up to position {upto}"):
            cs.changes(after=0)
        assert cs.changes(after=upto).records == []
        cs.ingest([tier_record("new", "10", "joined", SILVER)])
        fresh = cs.changes(after=upto).records
        assert fresh
        assert fresh[0].position == upto + 1  # numbering goes on past what was pruned


def test_a_rebuild_publishes_only_what_a_changed_fold_changed(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import custate.domain
    from custate.domain import Activity, CustomerState
    from custate.projections import catchup

    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest(generate(300, 5, seed=8))
        last = cs.changes(limit=1_000_000).next
        cs.rebuild()  # the same fold: nothing to publish
        assert cs.changes(after=last).records == []

        fold = custate.domain.apply

        def new_fold(state: CustomerState, a: Activity) -> None:  # a fold that drops segments
            fold(state, a)
            state.segments.clear()

        monkeypatch.setattr(catchup, "apply", new_fold)
        cs.rebuild()
        monkeypatch.undo()
        published = cs.changes(after=last, limit=1_000_000).records
        assert published
        assert {r.cause for r in published} == {"rebuild"}
        assert all(r.path.startswith("segments") and r.until is None for r in published)
        # What the feed now says holds is what the new generation holds.
        for cid in cs.customer_ids():
            flat: dict[str, Any] = flat_now(custate.CustomerState(cid))
            for r in cs.changes(customer=cid, limit=1_000_000).records:
                if r.until is None:
                    if r.op == "removed":
                        flat.pop(r.path, None)
                    else:
                        flat[r.path] = r.after
            assert flat == flat_now(cs.state(cid)), cid


def test_the_feed_is_off_until_asked_and_says_so(store_url: str) -> None:
    records = generate(60, 3, seed=31)
    with custate.open(store_url) as cs:
        assert cs.ingest(records[:30]).ok
        assert not cs.change_feed
        with pytest.raises(custate.QueryError, match="change feed is off"):
            cs.changes()
        cs.enable_change_feed()
        assert cs.change_feed
        assert cs.changes().records == []  # nothing from before it was on
        assert cs.ingest(records[30:]).ok
        found = cs.changes(limit=100_000).records
        assert found
        assert {r.activity_id for r in found} <= {r["id"] for r in records[30:]}


def test_on_postgresql_followers_are_woken_by_the_write_not_their_poll(store_url: str) -> None:
    """With a poll of 60 s, the records of a write still reach the library's follower and
    the async one within seconds: the write's NOTIFY wakes them (LISTEN)."""
    if not store_url.startswith("postgresql"):
        pytest.skip("NOTIFY is PostgreSQL's: on SQLite a follower polls")
    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest([tier_record("a1", "10", "joined", SILVER)])
        start = cs.changes().next
        got: list[custate.ChangeRecord] = []
        done = threading.Event()

        def follow() -> None:
            for r in cs.follow_changes(start, poll=60, should_stop=done.is_set):
                got.append(r)
                if r.path.endswith("tier_id"):
                    done.set()
                    return

        async def afollow() -> str:
            async for r in cs.afollow_changes(start, poll=60):
                if r.path.endswith("tier_id"):
                    return str(r.after)
            raise AssertionError("the feed ended")

        async def both() -> str:
            task = asyncio.create_task(afollow())
            await asyncio.sleep(1.0)  # both followers have read to the end and wait
            await asyncio.to_thread(cs.ingest, [tier_record("a2", "30", "upgraded", GOLD)])
            return await asyncio.wait_for(task, 20)

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        assert asyncio.run(both()) == "ltr_g"
        assert done.wait(20), "the library's follower was not woken by the write"
        assert [r.after for r in got if r.path.endswith("tier_id")] == ["ltr_g"]
