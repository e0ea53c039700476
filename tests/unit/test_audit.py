"""The pure audit logic (projections/audit/): history reproduces the state at every step,
diffs name the responsible activities, explain names the activity that set a value (also a
late one), gaps come with their activity pair."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from custate.domain import Activity, fold, ordered, parse_activity
from custate.domain.state import LoyaltyCard
from custate.projections.audit import (
    ADDED,
    REMOVED,
    HistoryEntry,
    Pair,
    Replay,
    Tracker,
    apply_changes,
    card_gaps,
    diff_as_of,
    diff_known_at,
    explain,
    field_json,
    history,
    json_fields,
    replay_history,
)
from custate.projections.diff import CUT_KEYS, flatten

from .builders import (
    CUSTOMER,
    act,
    at,
    load_sample,
    loyalty_balance,
    merge,
    pending,
    sample_names,
)

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402

Json = dict[str, Any]


def flat_state(activities: list[Activity], customer_id: str) -> Json:
    j = fold(activities, customer_id).to_json()
    return {k: v for k, v in flatten(j).items() if k.split(".")[0] not in CUT_KEYS}


def generated(n: int, customers: int, seed: int) -> dict[str, list[Activity]]:
    by: dict[str, list[Activity]] = {}
    for r in generate(n, customers, seed, late_fraction=0.1):
        a = parse_activity(r)
        by.setdefault(a.customer_id, []).append(a)
    return by


def pairs_at(activities: list[Activity], recorded: datetime) -> list[Pair]:
    return [(a, recorded) for a in activities]


def test_history_changes_reproduce_the_state_after_every_activity() -> None:
    for cid, acts in generated(1200, 6, seed=5).items():
        todo = ordered(acts)
        entries = history(pairs_at(acts, at(0)), cid)
        assert [e.activity.id for e in entries] == [a.id for a in todo]
        replay = Replay(cid)
        assert replay.flat == flat_state([], cid)
        for i, e in enumerate(entries):
            for c in e.changes:
                assert (c.op == ADDED) == (c.path not in replay.flat), c
                assert not c.path.startswith("activities."), c  # the entry itself
            replay.apply(e)
            assert replay.flat == flat_state(todo[: i + 1], cid), (cid, i, e.activity.type)


def every_sample_type() -> list[Activity]:
    """Every bundled sample payload (tiers, vouchers, rewards, orders...) in one history."""
    names = sample_names()
    return [
        parse_activity(
            {
                "id": f"evcus_{i:04d}",
                "type": name,
                "created_at": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                "customer_id": CUSTOMER,
                "data": load_sample(name),
            }
        )
        for i, name in enumerate(names * 2)
    ]


def test_history_reproduces_every_sample_type() -> None:
    acts = every_sample_type()
    tracker = Tracker(CUSTOMER)
    for i, a in enumerate(ordered(acts)):
        tracker.step(a)
        assert tracker.flat() == flat_state(acts[: i + 1], CUSTOMER), a.type
    assert replay_history(CUSTOMER, history(pairs_at(acts, at(0)), CUSTOMER)) == flat_state(
        acts, CUSTOMER
    )


def test_each_object_of_the_state_renders_as_its_fields_one_by_one() -> None:
    """`history` renders only the fields of an object that changed (`json_fields`, `field_json`):
    that must be what each class's own `to_json` renders."""
    states = [fold(acts, cid) for cid, acts in generated(600, 3, seed=11).items()]
    states.append(fold(every_sample_type(), CUSTOMER))
    classes: set[type] = set()
    for s in states:
        maps = (s.cards, s.tiers, s.gift_cards, s.segments, s.orders, s.reward_redemptions)
        objects = [
            *(s.profile, s.redemptions, s.validations, s.activities),
            *(obj for m in (*maps, s.vouchers, s.messaging, s.custom_events) for obj in m.values()),
        ]
        for obj in objects:
            names, values = json_fields(type(obj))
            expected = obj.to_json()
            if isinstance(obj, LoyaltyCard):
                del expected["pending"]  # diffed entry by entry
            assert dict(zip(names, map(field_json, values(obj)), strict=True)) == expected
            classes.add(type(obj))
    assert len(classes) == 13, classes


def test_an_activity_that_changes_nothing_says_so() -> None:
    a = act("customer.updated", {"customer": {"name": "Ada"}}, t=0)
    b = act("customer.updated", {"customer": {"name": "Ada"}}, t=1)
    entries = history(pairs_at([a, b], at(0)), CUSTOMER)
    assert [c.path for c in entries[1].changes] == ["profile.updated_at"]
    unknown = act("customer.wallet.topped_up", {}, t=2)
    failed = act("customer.publication.failed", {}, t=3)
    entries = history(pairs_at([a, b, unknown, failed], at(0)), CUSTOMER)
    assert entries[2].changes == entries[3].changes == ()
    # ... and yet they count: replaying the history gives the fold's counters.
    assert replay_history(CUSTOMER, entries) == flat_state([a, b, unknown, failed], CUSTOMER)


def test_pending_entries_step_by_step_also_when_their_card_goes_or_history_starts_late() -> None:
    """A card's pending entries are diffed from the one the activity names; a card deleted
    with its entries, and a history that starts from a checkpoint holding some, have no
    such name and must still be reported whole."""
    acts = [
        act("customer.voucher.loyalty_card.pending_points.added", pending("pp_1", "v_1"), t=0),
        act("customer.voucher.loyalty_card.pending_points.added", pending("pp_2", "v_1"), t=1),
        act("customer.voucher.loyalty_card.pending_points.added", pending("pp_3", "v_2"), t=2),
        act(
            "customer.voucher.loyalty_card.pending_points.updated",
            pending("pp_1", "v_1", points=25),
            t=3,
        ),
        act("customer.voucher.loyalty_card.pending_points.activated", pending("pp_2", "v_1"), t=4),
        act("customer.voucher.deleted", {"voucher": {"id": "v_1", "type": "LOYALTY_CARD"}}, t=5),
    ]
    tracker = Tracker(CUSTOMER)
    for i, a in enumerate(acts):
        changes = tracker.step(a)
        assert tracker.flat() == flat_state(acts[: i + 1], CUSTOMER), a.type
    gone = {c.path for c in changes if c.op == REMOVED}
    assert {"loyalty.cards.v_1.pending.pp_1.points", "loyalty.cards.v_1.balance"} <= gone
    for cut in range(1, len(acts)):
        start = fold(acts[:cut], CUSTOMER)
        entries = history(pairs_at(acts[cut:], at(0)), CUSTOMER, checkpoint=start)
        replay = {k: v for k, v in flat_state(acts[:cut], CUSTOMER).items()}
        for e in entries:
            apply_changes(replay, e.changes)
        final = flat_state(acts, CUSTOMER)
        assert {k: v for k, v in replay.items() if not k.startswith("activities.")} == {
            k: v for k, v in final.items() if not k.startswith("activities.")
        }, cut


def test_pending_entries_are_all_checked_when_the_named_one_did_not_change() -> None:
    """Today only the entry an activity names changes; should an effect ever change
    another, the tracker must still report it (it checks the rest when the two differ)."""
    first = act("customer.voucher.loyalty_card.pending_points.added", pending("pp_1", "v_1"), t=0)
    second = act("customer.voucher.loyalty_card.pending_points.added", pending("pp_2", "v_1"), t=1)
    tracker = Tracker(CUSTOMER)
    tracker.step(first)
    both = fold([first, second], CUSTOMER)
    tracker.state.cards["v_1"].pending.update(both.cards["v_1"].pending)  # pp_2 appears
    tracker._hint = "pp_1"  # names an entry that did not change
    out: list[Any] = []
    tracker._card(("card", "v_1"), out)
    assert sorted(c.path for c in out if c.path.startswith("loyalty.cards.v_1.pending.pp_2")) == [
        "loyalty.cards.v_1.pending.pp_2.activates_at",
        "loyalty.cards.v_1.pending.pp_2.order_id",
        "loyalty.cards.v_1.pending.pp_2.points",
    ]


def test_history_window_lists_only_activities_in_it_with_values_from_the_full_fold() -> None:
    acts = [act("customer.updated", {"customer": {"name": f"n{i}"}}, t=i) for i in range(5)]
    entries = history(pairs_at(acts, at(0)), CUSTOMER, start=at(2), end=at(3))
    assert [e.activity.id for e in entries] == [acts[2].id, acts[3].id]
    name = next(c for c in entries[0].changes if c.path == "profile.name")
    assert (name.before, name.after) == ("n1", "n2")


def card(balance: int, points: int, t: float, id: str | None = None) -> Activity:
    return act(
        "customer.voucher.loyalty_card.points_added",
        loyalty_balance("v_x", balance, points),
        t=t,
        id=id,
    )


def test_explain_names_the_activity_that_set_the_value_also_when_it_arrived_late() -> None:
    a1, a2, a3 = card(100, 100, 0, "evcus_a1"), card(150, 50, 10, "evcus_a2"), None
    a3 = card(180, 30, 20, "evcus_a3")
    late = card(200, 20, 30, "evcus_late")  # sorts last, recorded last but before...
    # ...an activity recorded earlier that sorts before it: `late` is not late; a4 is.
    a4 = card(170, 20, 15, "evcus_a4")
    rec = {
        "evcus_a1": at(100),
        "evcus_a2": at(101),
        "evcus_a3": at(102),
        "evcus_late": at(103),
        "evcus_a4": at(200),
    }
    pairs: list[Pair] = [(a, rec[a.id]) for a in (a1, a2, a3, late, a4)]
    ex = explain(pairs, CUSTOMER, "loyalty.cards.v_x.balance")
    assert ex.value == 200
    assert ex.set_by is not None
    assert ex.set_by.id == "evcus_late"
    assert [s.activity.id for s in ex.chain] == [
        "evcus_a1",
        "evcus_a2",
        "evcus_a4",
        "evcus_a3",
        "evcus_late",
    ]
    assert [s.late for s in ex.chain] == [False, False, True, False, False]
    assert [(s.before, s.after) for s in ex.chain][2] == (150, 170)
    assert ex.chain[0].op == ADDED

    # Without `late`, a4 (recorded last, sorts before a3) does not set the balance: a3 does.
    ex = explain(pairs[:3] + pairs[4:], CUSTOMER, "loyalty.cards.v_x.balance")
    assert ex.set_by is not None
    assert ex.set_by.id == "evcus_a3"

    # A late activity that sorts last sets the value: explain names it.
    last_late = card(300, 120, 40, "evcus_last")
    ex = explain([*pairs, (last_late, at(50))], CUSTOMER, "loyalty.cards.v_x.balance")
    assert ex.set_by is not None
    assert ex.set_by.id == "evcus_last"
    assert ex.chain[-1].late is False  # nothing sorts after it


def test_explain_a_tier_and_a_subtree_and_a_missing_path() -> None:
    t1 = act(
        "customer.loyalty.tier.joined",
        {
            "campaign": {"id": "camp_y"},
            "loyalty_tier": {"id": "ltr_silver", "name": "Silver", "campaign_id": "camp_y"},
        },
        t=0,
    )
    t2 = act(
        "customer.loyalty.tier.upgraded",
        {
            "campaign": {"id": "camp_y"},
            "loyalty_tier_to": {"id": "ltr_gold", "name": "Gold", "campaign_id": "camp_y"},
        },
        t=5,
    )
    pairs = pairs_at([t2, t1], at(0))
    ex = explain(pairs, CUSTOMER, "loyalty.tiers.camp_y.tier_id")
    assert ex.value == "ltr_gold"
    assert ex.set_by is not None
    assert ex.set_by.id == t2.id
    assert [(s.before, s.after) for s in ex.chain] == [
        (None, "ltr_silver"),
        ("ltr_silver", "ltr_gold"),
    ]
    sub = explain(pairs, CUSTOMER, "loyalty.tiers.camp_y")
    assert sub.value["tier_name"] == "Gold"
    assert [s.activity.id for s in sub.chain] == [t1.id, t2.id]
    missing = explain(pairs, CUSTOMER, "segments.seg_none")
    assert not missing.present
    assert missing.set_by is None
    assert missing.chain == ()


def test_diff_as_of_names_the_activities_between_that_touched_each_path() -> None:
    a = card(100, 100, 0, "evcus_a")
    b = card(150, 50, 10, "evcus_b")
    seg = act("customer.segment.entered", {"segment": {"id": "seg_1", "name": "VIP"}}, t=12)
    c = card(180, 30, 20, "evcus_c")
    pairs = pairs_at([c, seg, b, a], at(0))
    d = diff_as_of(pairs, CUSTOMER, at(5), at(15))
    by = {e.path: e for e in d.changes}
    assert (by["loyalty.cards.v_x.balance"].before, by["loyalty.cards.v_x.balance"].after) == (
        100,
        150,
    )
    assert by["loyalty.cards.v_x.balance"].activities == ("evcus_b",)
    assert by["segments.seg_1.name"].activities == (seg.id,)
    assert by["segments.seg_1.name"].op == ADDED
    assert [x.id for x in d.activities] == ["evcus_b", seg.id]
    assert diff_as_of(pairs, CUSTOMER, at(30), at(40)).changes == ()
    reverse = diff_as_of(pairs, CUSTOMER, at(15), at(5))
    rb = {e.path: e for e in reverse.changes}
    assert (rb["loyalty.cards.v_x.balance"].before, rb["loyalty.cards.v_x.balance"].after) == (
        150,
        100,
    )


def test_diff_known_at_is_empty_without_ingests_and_names_exactly_the_late_activity() -> None:
    a = card(100, 100, 0, "evcus_a")
    c = card(180, 30, 20, "evcus_c")
    late = card(150, 50, 10, "evcus_late")
    k1, k2 = at(100), at(200)
    pairs: list[Pair] = [(a, at(50)), (c, at(60)), (late, at(150))]
    assert diff_known_at(pairs, CUSTOMER, at(15), at(60), at(140)).changes == ()
    assert diff_known_at(pairs, CUSTOMER, at(15), at(60), at(140)).activities == ()
    d = diff_known_at(pairs, CUSTOMER, at(15), k1, k2)
    assert [x.id for x in d.activities] == ["evcus_late"]
    assert d.changes
    assert {x for e in d.changes for x in e.activities} == {"evcus_late"}
    by = {e.path: e for e in d.changes}
    assert (by["loyalty.cards.v_x.balance"].before, by["loyalty.cards.v_x.balance"].after) == (
        100,
        150,
    )
    # About a time before it happened, the late activity changed nothing.
    before = diff_known_at(pairs, CUSTOMER, at(5), k1, k2)
    assert before.changes == ()
    assert before.activities == ()
    # About now, the balance stays 180 (c sorts after it); the gap c showed is gone.
    now = diff_known_at(pairs, CUSTOMER, None, k1, k2)
    assert "loyalty.cards.v_x.balance" not in {e.path for e in now.changes}
    assert [x.id for x in now.activities] == ["evcus_late"]
    assert {e.path for e in now.changes} >= {"gaps"}


def test_gaps_carry_the_activity_pair() -> None:
    a = card(100, 100, 0, "evcus_a")
    b = card(190, 50, 10, "evcus_b")  # 100 + 50 != 190: 40 points missing
    s = fold([a, b], CUSTOMER)
    [g] = card_gaps(CUSTOMER, s.gaps)
    assert (g.previous_activity_id, g.activity_id, g.missing) == ("evcus_a", "evcus_b", 40)
    assert g.to_json()["customer_id"] == CUSTOMER


def test_late_flags_on_a_generated_history() -> None:
    base = at(0)
    for cid, acts in generated(300, 3, seed=9).items():
        # record time = arrival order, so the generator's held-back activities are late
        pairs = [(a, base + timedelta(seconds=i)) for i, a in enumerate(acts)]
        entries = history(pairs, cid)
        rec = {a.id: r for a, r in pairs}
        keys = {a.id: a.key for a in acts}
        for e in entries:
            expect = any(keys[o] > keys[e.activity.id] and rec[o] < rec[e.activity.id] for o in rec)
            assert e.late == expect
        assert replay_history(cid, entries) == flat_state(acts, cid)


def test_history_of_merged_payloads_is_deterministic() -> None:
    a = act("customer.rewarded", merge(loyalty_balance("v_x", 10, 10)), t=0)
    one = history(pairs_at([a], at(0)), CUSTOMER)
    two = history(pairs_at([a, a], at(0)), CUSTOMER)
    assert one == two


@pytest.mark.parametrize("path", ["loyalty.points", "activities.count"])
def test_explain_derived_fields(path: str) -> None:
    acts = [card(100, 100, 0), card(150, 50, 10)]
    ex = explain(pairs_at(acts, at(0)), CUSTOMER, path)
    assert ex.set_by is not None
    assert ex.set_by.id == acts[1].id


def explain_from_history(entries: list[HistoryEntry], cid: str, path: str) -> tuple[Any, ...]:
    """What `explain` must say, read off the full history: every change under `path`."""

    def under(p: str) -> bool:
        return p == path or p.startswith(path + ".")

    replay = Replay(cid)
    chain = []
    for e in entries:
        before = {k: v for k, v in replay.flat.items() if under(k)}
        replay.apply(e)
        after = {k: v for k, v in replay.flat.items() if under(k)}
        if after != before:
            chain.append((e.activity.id, e.late, before, after))
    return tuple(chain)


def test_explain_follows_exactly_the_changes_history_reports_under_its_path() -> None:
    # explain renders only the parts of the state that hold the path; every path of the
    # final state, the sections above them and a missing one must still get the chain the
    # full history gives.
    for cid, acts in generated(400, 2, seed=8).items():
        pairs = [(a, at(i % 7)) for i, a in enumerate(acts)]  # record times out of order
        entries = history(pairs, cid)
        final = flat_state(acts, cid)
        leaves = sorted(final)
        entry_paths = sorted({p.rsplit(".", 1)[0] for p in final})
        sections = {".".join(p.split(".")[:2]) for p in final} | {p.split(".")[0] for p in final}
        # every section, a sample of entries and of leaves, and a path that is not there
        paths = sorted(
            {
                *sections,
                *entry_paths[:: max(1, len(entry_paths) // 20)],
                *leaves[:: max(1, len(leaves) // 30)],
                "orders.o_missing",
            }
        )
        for path in paths:
            ex = explain(pairs, cid, path)
            got = tuple(
                (
                    s.activity.id,
                    s.late,
                    _as_flat(path, s.before, s.op != ADDED),
                    _as_flat(path, s.after, s.op != REMOVED),
                )
                for s in ex.chain
            )
            assert got == explain_from_history(entries, cid, path), (cid, path)
            assert ex.present == (path in final or any(k.startswith(path + ".") for k in final))


def _as_flat(path: str, value: Any, present: bool) -> Json:
    """An explained value (a leaf, or a subtree of relative paths) as absolute flat paths."""
    if not present:
        return {}
    if isinstance(value, dict) and value:  # a leaf is never a non-empty object
        return {f"{path}.{k}": v for k, v in value.items()}
    return {path: value}
