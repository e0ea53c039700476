"""The change feed's records (projections/changes.py, docs/CHANGES.md): in-order records,
a late activity's corrections with their business-time windows, and, for any arrival
order, the records that hold now replayed onto the empty state give the current state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from custate.domain import Activity, CustomerState, fold, parse_activity
from custate.projections.audit import diff_known_at
from custate.projections.changes import ChangeRecord, Keyed, records_for, replay
from custate.projections.diff import CUT_KEYS, flatten
from custate.projections.keys import key_text

from .builders import CUSTOMER, T0, Json, act, at, tier
from .test_properties import CUSTOMERS, SETTINGS, histories

CID = CUSTOMERS[0]  # the one customer of `histories()`


def keyed(a: Activity) -> Keyed:
    return key_text(a), a


def flat_now(activities: list[Activity], cid: str = CUSTOMER) -> dict[str, Any]:
    j = fold(activities, cid).to_json()
    return {
        k: v
        for k, v in flatten(j).items()
        if k.split(".")[0] not in CUT_KEYS and k.split(".")[0] != "activities"
    }


def empty_flat(cid: str = CUSTOMER) -> dict[str, Any]:
    return flat_now([], cid)


def one_by_one(arrivals: list[Activity], cid: str = CUSTOMER) -> list[ChangeRecord]:
    return records_for(CustomerState(cid), [], [keyed(a) for a in arrivals])


def joined(t: float, tid: str, name: str) -> Activity:
    return act(
        "customer.loyalty.tier.joined",
        {"campaign": {"id": "camp_1"}, "loyalty_tier": tier(tid, name)},
        t=t,
    )


def upgraded(t: float, tid: str, name: str) -> Activity:
    return act(
        "customer.loyalty.tier.upgraded",
        {"campaign": {"id": "camp_1"}, "loyalty_tier_to": tier(tid, name, campaign="camp_1")},
        t=t,
    )


def segment(t: float, kind: str, sid: str) -> Activity:
    return act(f"customer.segment.{kind}", {"segment": {"id": sid, "name": sid}}, t=t)


def test_an_in_order_activity_reports_each_path_it_changed_and_never_the_counters() -> None:
    a = segment(10, "entered", "seg_vip")
    b = segment(20, "left", "seg_vip")
    recs = one_by_one([a, b])
    assert all(not r.path.startswith("activities") for r in recs)
    mine = [r for r in recs if r.path.startswith("segments.seg_vip")]
    assert {r.activity_id for r in mine} == {a.id, b.id}
    first = [r for r in mine if r.activity_id == a.id]
    assert first
    assert all(r.op == "added" and r.before is None for r in first)
    assert all(r.effective_at == at(10) and r.until is None and not r.correction for r in first)
    gone = [r for r in mine if r.activity_id == b.id]
    assert gone
    assert all(r.op == "removed" and r.after is None for r in gone)
    assert replay(recs, empty_flat()) == flat_now([a, b])


def test_a_late_activity_gives_corrections_windowed_in_business_time() -> None:
    silver = joined(10, "ltr_s", "Silver")
    gold = upgraded(30, "ltr_g", "Gold")
    late = upgraded(20, "ltr_p", "Platinum")  # arrives last, happened between the two
    recs = one_by_one([silver, gold, late])
    fixes = [r for r in recs if r.activity_id == late.id]
    assert fixes
    assert all(r.correction for r in fixes)
    tier_id = [r for r in fixes if r.path == "loyalty.tiers.camp_1.tier_id"]
    # Shown ltr_s from 20 to 30; it was ltr_p. From 30 on both histories say ltr_g.
    assert [(r.before, r.after, r.effective_at, r.until) for r in tier_id] == [
        ("ltr_s", "ltr_p", at(20), at(30))
    ]
    assert replay(recs, empty_flat()) == flat_now([silver, gold, late])


def test_a_late_activity_still_differing_now_has_no_until() -> None:
    a = segment(10, "entered", "seg_1")
    late = segment(5, "entered", "seg_2")
    recs = one_by_one([a, late])
    fixes = [r for r in recs if r.activity_id == late.id and r.path.startswith("segments.seg_2")]
    assert fixes
    assert all(r.until is None and r.effective_at == at(5) for r in fixes)
    assert all(r.correction for r in fixes)


def _recorded(arrivals: list[Activity]) -> list[tuple[Activity, datetime]]:
    return [(a, datetime(2030, 1, 1, 0, 0, i, tzinfo=T0.tzinfo)) for i, a in enumerate(arrivals)]


def _key(path: str, before: Any, after: Any) -> bytes:
    return orjson.dumps([path, before, after], option=orjson.OPT_SORT_KEYS)


@SETTINGS
@given(records=histories(), data=st.data())
def test_records_that_hold_now_replay_to_the_current_state_for_any_arrival_order(
    records: list[Json], data: Any
) -> None:
    arrivals = [parse_activity(r) for r in data.draw(st.permutations(records))]
    recs = one_by_one(arrivals, CID)
    assert replay(recs, empty_flat(CID)) == flat_now(arrivals, CID)
    assert all(not r.path.startswith("activities") for r in recs)


@SETTINGS
@given(records=histories(), data=st.data())
def test_the_corrections_of_the_last_arrival_are_what_diff_known_at_shows(
    records: list[Json], data: Any
) -> None:
    arrivals = [parse_activity(r) for r in data.draw(st.permutations(records))]
    if not arrivals:
        return
    *before, last = arrivals
    start = CustomerState(CID)
    history = sorted(keyed(a) for a in before)
    recs = records_for(start, history, [keyed(last)])
    pairs = _recorded(arrivals)
    k2 = pairs[-1][1]
    k1 = k2.replace(second=k2.second - 1) if before else T0
    times = sorted({a.created_at for a in arrivals if a.created_at >= last.created_at})
    for t in times:
        shown = diff_known_at(pairs, CID, t, k1, k2)
        expected = {
            _key(e.path, e.before, e.after) for e in shown.changes if not e.path.startswith("activ")
        }
        covering = {
            _key(r.path, r.before, r.after)
            for r in recs
            if r.effective_at <= t and (r.until is None or t < r.until)
        }
        assert covering == expected, t
