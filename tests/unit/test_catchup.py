"""The read model's catch-up and point in time over an in-memory port (no database):
whatever the arrival order and batch boundaries, each customer's projected state is the fold
of its activities (SEMANTICS §2); a late activity re-folds only its own customer, from the
checkpoint before it; checkpoints sit at every `interval`-th activity in fold order; state
as of T is the fold of exactly the activities with `created_at <= T`."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custate.domain import Activity, CustomerState, fold, fold_all, ordered, parse_activity
from custate.projections.catchup import Head, Projected, plan
from custate.projections.keys import as_of_bound, key_text

from .builders import act, at
from .fakes import FakeReadModel
from .test_properties import histories

Json = dict[str, Any]
BENCH = Path(__file__).resolve().parents[2] / "bench" / "generate.py"


@cache
def _bench_generate() -> Callable[..., Iterable[Json]]:
    spec = importlib.util.spec_from_file_location("custate_bench_generate", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    generate: Callable[..., Iterable[Json]] = module.generate
    return generate


def generated(
    n: int, customers: int, seed: int, late: float = 0.2, duplicates: float = 0.1
) -> list[Activity]:
    """Arrival order from the bench generator: `late` of them held back behind later
    activities of their customer, `duplicates` delivered twice."""
    records = _bench_generate()(
        n, customers, seed, late_fraction=late, duplicate_fraction=duplicates
    )
    return [parse_activity(r) for r in records]


def distinct(activities: Iterable[Activity]) -> list[Activity]:
    """First delivery of each id, in arrival order (what the store keeps)."""
    seen: dict[str, Activity] = {}
    for a in activities:
        seen.setdefault(a.id, a)
    return list(seen.values())


def by_customer(activities: Iterable[Activity]) -> dict[str, list[Activity]]:
    out: dict[str, list[Activity]] = {}
    for a in activities:
        out.setdefault(a.customer_id, []).append(a)
    return out


def random_sizes(rng: random.Random, low: int, high: int) -> Iterable[int]:
    while True:
        yield rng.randint(low, high)


def assert_projection_is_the_fold(fake: FakeReadModel, activities: list[Activity]) -> None:
    expected = fold_all(activities)
    assert sorted(fake.rows) == sorted(expected)
    for cid, state in expected.items():
        got = fake.current(cid)
        assert got is not None
        assert got.to_json() == state.to_json(), cid
        head = fake.rows[cid][1]
        assert head.last_key == key_text(ordered(activities_of(activities, cid))[-1])
        assert head.last_version == len(fake.streams[cid])


def activities_of(activities: Iterable[Activity], cid: str) -> list[Activity]:
    return [a for a in activities if a.customer_id == cid]


def assert_checkpoints_every_interval(fake: FakeReadModel, activities: list[Activity]) -> None:
    """Checkpoints are the states after the interval-th, 2*interval-th, ... activity of each
    customer in fold order, and `keys` maps every projected activity to its version."""
    n = fake.interval
    for cid, acts in by_customer(activities).items():
        in_order = ordered(acts)
        want = {key_text(in_order[i - 1]): i for i in range(n, len(in_order) + 1, n)}
        got = fake.checkpoints.get(cid, {})
        assert sorted(got) == sorted(want), cid
        for key, count in want.items():
            assert got[key] == fold(in_order[:count], cid).to_json(), (cid, key)
        versions = {a.id: v for v, a in enumerate(fake.streams[cid], start=1)}
        assert fake.keys[cid] == {key_text(a): versions[a.id] for a in acts}


# -- generated histories, random arrival and batches ------------------------------------------


@pytest.mark.parametrize(
    ("seed", "delivery", "interval", "use_cache"),
    [
        (1, "late", 7, True),
        (2, "late", 25, False),
        (3, "shuffled", 5, True),
        (4, "shuffled", 100, True),
        (5, "late+shuffled-windows", 3, True),
    ],
)
def test_catch_up_of_generated_histories_is_the_fold(
    seed: int, delivery: str, interval: int, use_cache: bool
) -> None:
    delivered = generated(1500, 60, seed)
    stored = distinct(delivered)
    assert len(stored) == 1500
    rng = random.Random(seed)
    if delivery == "shuffled":
        rng.shuffle(delivered)
    elif delivery == "late+shuffled-windows":
        windows = [delivered[i : i + 40] for i in range(0, len(delivered), 40)]
        for w in windows:
            rng.shuffle(w)
        delivered = [a for w in windows for a in w]
    fake = FakeReadModel(interval=interval, use_cache=use_cache)
    # delivered in several appends, each caught up in random batch sizes
    cuts = sorted(rng.sample(range(1, len(delivered)), 4))
    for lo, hi in zip([0, *cuts], [*cuts, len(delivered)], strict=True):
        fake.append(delivered[lo:hi])
        fake.catch_up(random_sizes(rng, 1, 300))
        assert fake.lag == 0
    assert fake.position == len(stored) == len(fake.log)
    assert sum(c.late for c in fake.history) > 0, "the late path was not exercised"
    arrival = distinct(delivered)
    assert_projection_is_the_fold(fake, arrival)
    assert_checkpoints_every_interval(fake, arrival)
    assert fold_all(arrival).keys() == fold_all(stored).keys()


def test_each_batch_writes_every_activity_key_once_and_the_state_of_each_touched_customer() -> None:
    fake = FakeReadModel(interval=10)
    fake.append(distinct(generated(600, 20, 11)))
    rng = random.Random(11)
    for changes in fake.catch_up(random_sizes(rng, 1, 90)):
        touched = {cid for cid, _, _ in changes.keys}
        assert set(changes.states) == touched
        assert set(changes.drop_checkpoints_from) <= touched
        assert changes.late == len(changes.drop_checkpoints_from)
    assert sum(len(c.keys) for c in fake.history) == 600


# -- the same as a property: arrival order and batch boundaries never matter ------------------

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(records=histories(customers=3), data=st.data())
def test_arrival_order_and_batches_never_change_the_projection(
    records: list[Json], data: Any
) -> None:
    acts = [parse_activity(r) for r in records]
    repeats = data.draw(st.lists(st.sampled_from(acts), max_size=5)) if acts else []
    delivered = data.draw(st.permutations([*acts, *repeats]))
    interval = data.draw(st.integers(min_value=1, max_value=4), label="interval")
    sizes = data.draw(st.lists(st.integers(min_value=1, max_value=6), min_size=1), label="sizes")
    appends = data.draw(st.integers(min_value=1, max_value=3), label="appends")
    fake = FakeReadModel(
        interval=interval,
        use_cache=data.draw(st.booleans(), label="cache"),
        feed=data.draw(st.booleans(), label="feed"),
    )
    step = max(1, len(delivered) // appends)
    for lo in range(0, max(len(delivered), 1), step):
        fake.append(delivered[lo : lo + step])
        fake.catch_up(iter(sizes))
    assert fake.lag == 0
    stored = distinct(delivered)
    assert_projection_is_the_fold(fake, stored)
    assert_checkpoints_every_interval(fake, stored)
    # and point in time, at a cut among the few instants the histories use
    cut = at(data.draw(st.integers(min_value=-1, max_value=7))) + timedelta(
        microseconds=data.draw(st.sampled_from([-1, 0, 1]))
    )
    for cid in fake.rows:
        expected = fold(activities_of(stored, cid), cid, as_of=cut)
        assert fake.as_of(cid, cut).to_json() == expected.to_json()


# -- late activities -------------------------------------------------------------------------


def updated(cid: str, seconds: float, name: str) -> Activity:
    return act(
        "customer.updated",
        {"customer": {"id": cid, "name": name}},
        id=f"evcus_{cid}_{name}",
        t=seconds,
        customer_id=cid,
    )


def two_customers(interval: int) -> tuple[FakeReadModel, list[Activity]]:
    history = [updated(cid, 10 * i, f"n{i:02d}") for cid in ("cust_a", "cust_b") for i in range(10)]
    fake = FakeReadModel(interval=interval)
    fake.append(history)
    fake.catch_up(7)
    assert sum(c.late for c in fake.history) == 0
    return fake, history


def test_a_late_activity_refolds_only_its_customer_from_the_checkpoint_before_it() -> None:
    fake, history = two_customers(interval=3)
    a_before = dict(fake.checkpoints["cust_a"])
    b_before = dict(fake.checkpoints["cust_b"])
    assert len(a_before) == 3  # after the 3rd, 6th, 9th activity: t=20, 50, 80
    late = updated("cust_a", 55, "late")
    on_time = updated("cust_b", 100, "n10")
    fake.calls.clear()
    fake.append([late, on_time])
    changes = fake.catch_up_once(100)
    assert changes is not None

    assert changes.late == 1
    assert changes.drop_checkpoints_from == {"cust_a": key_text(late)}
    assert fake.calls.customers() == {"cust_a"}, "the on-time customer was re-read"
    # from the checkpoint at t=50, over the projected activities after it (t=60..90) only
    ck_key = key_text(history[5])
    assert fake.calls.checkpoint_before == [("cust_a", key_text(late))]
    assert fake.calls.keys_between == [("cust_a", ck_key, None)]
    assert fake.calls.activities == [("cust_a", (7, 8, 9, 10))]
    # the checkpoints before the late key stay as they were; the one after it is re-made
    assert {k: v for k, v in fake.checkpoints["cust_a"].items() if k < key_text(late)} == {
        k: v for k, v in a_before.items() if k < key_text(late)
    }
    assert fake.checkpoints["cust_b"] == b_before
    everything = [*history, late, on_time]
    assert_projection_is_the_fold(fake, everything)
    assert_checkpoints_every_interval(fake, everything)
    current = fake.current("cust_a")
    assert current is not None
    assert current.profile.name == "n09"  # the late update does not win over later ones
    assert current.activities.count == 11


def test_a_late_activity_before_every_checkpoint_refolds_from_the_start() -> None:
    fake, history = two_customers(interval=3)
    late = updated("cust_a", -5, "first")
    fake.calls.clear()
    fake.append([late])
    changes = fake.catch_up_once(100)
    assert changes is not None
    assert changes.late == 1
    assert changes.drop_checkpoints_from == {"cust_a": key_text(late)}
    assert fake.calls.keys_between == [("cust_a", None, None)]
    assert fake.calls.activities == [("cust_a", tuple(range(1, 11)))]
    everything = [*history, late]
    assert_projection_is_the_fold(fake, everything)
    assert_checkpoints_every_interval(fake, everything)


def test_late_activities_of_several_customers_in_one_batch() -> None:
    fake, history = two_customers(interval=4)
    late = [updated("cust_a", 15, "la"), updated("cust_b", 35, "lb"), updated("cust_a", 85, "lc")]
    fake.append(late)
    changes = fake.catch_up_once(100)
    assert changes is not None
    assert changes.late == 2  # re-folds are counted per customer and batch
    assert changes.drop_checkpoints_from == {
        "cust_a": key_text(late[0]),
        "cust_b": key_text(late[1]),
    }
    everything = [*history, *late]
    assert_projection_is_the_fold(fake, everything)
    assert_checkpoints_every_interval(fake, everything)


# -- the cache of written states ------------------------------------------------------------


def test_a_cached_state_is_used_only_while_its_head_matches_the_stored_one() -> None:
    fake, history = two_customers(interval=100)
    nxt = updated("cust_a", 200, "next")
    fake.append([nxt])
    batch = fake.next_batch(10)
    stored_head = fake.rows["cust_a"][1]
    bogus = CustomerState("cust_a")
    # stale: another projector moved the customer on since this process wrote it
    stale = {"cust_a": (bogus, Head(stored_head.last_key, stored_head.last_version - 1))}
    changes = plan(batch, fake, fake, 100, stale)
    expected = fold([*activities_of(history, "cust_a"), nxt], "cust_a")
    assert changes.states["cust_a"][0].to_json() == expected.to_json()
    # current: taken as is (that is what makes the cache pay)
    current = {"cust_a": (CustomerState("cust_a"), stored_head)}
    changes = plan(batch, fake, fake, 100, current)
    assert changes.states["cust_a"][0].activities.count == 1


# -- point in time ---------------------------------------------------------------------------


def test_state_as_of_random_t_is_the_fold_of_exactly_what_happened_by_then() -> None:
    interval = 6
    delivered = generated(1200, 30, 21)
    fake = FakeReadModel(interval=interval)
    fake.append(delivered)
    fake.catch_up(random_sizes(random.Random(21), 1, 200))
    stored = distinct(delivered)
    per = by_customer(stored)
    rng = random.Random(21)
    for _ in range(120):
        cid = rng.choice(sorted(per))
        acts = ordered(per[cid])
        pivot = rng.choice(acts).created_at
        t = rng.choice(
            [
                pivot,
                pivot - timedelta(microseconds=1),
                pivot + timedelta(microseconds=1),
                acts[0].created_at - timedelta(days=1),
                acts[-1].created_at + timedelta(days=1),
                acts[0].created_at + (acts[-1].created_at - acts[0].created_at) * rng.random(),
            ]
        )
        fake.calls.clear()
        got = fake.as_of(cid, t)
        exactly = [a for a in acts if a.created_at <= t]
        assert got.activities.count == len(exactly)
        assert got.to_json() == fold(exactly, cid, as_of=t).to_json()
        assert got.as_of == t
        # from the checkpoint before T plus a tail shorter than the interval
        ((_, versions),) = fake.calls.activities or [("", ())]
        assert len(versions) < interval
        assert [upto for _, _, upto in fake.calls.keys_between] == [as_of_bound(t)]


def test_checkpoints_appear_every_interval_activities() -> None:
    fake = FakeReadModel(interval=4)
    history = [updated("cust_a", i, f"n{i:02d}") for i in range(13)]
    for a in history:  # one activity per batch
        fake.append([a])
        fake.catch_up_once(1)
    keys = sorted(fake.checkpoints["cust_a"])
    assert keys == [key_text(history[i]) for i in (3, 7, 11)]
    for i, k in zip((4, 8, 12), keys, strict=True):
        restored = CustomerState.from_json(fake.checkpoints["cust_a"][k])
        assert restored.activities.count == i
        assert restored.profile.name == f"n{i - 1:02d}"
    # the keys come from the fold order, not from arrival order
    fake2 = FakeReadModel(interval=4)
    fake2.append(reversed(history))
    fake2.catch_up(1)
    assert sorted(fake2.checkpoints["cust_a"]) == keys
    assert fake2.checkpoints["cust_a"] == fake.checkpoints["cust_a"]


def test_projected_keys_sort_as_the_fold_orders() -> None:
    acts = distinct(generated(400, 10, 31, late=0.0, duplicates=0.0))
    random.Random(31).shuffle(acts)
    by_text = sorted(acts, key=key_text)
    assert [a.id for a in by_text] == [a.id for a in sorted(acts, key=lambda a: a.key)]
    for a in acts[:50]:
        assert key_text(a) <= as_of_bound(a.created_at)
        assert key_text(a) > as_of_bound(a.created_at - timedelta(microseconds=1))
    assert Projected(acts[0], 1, key_text(acts[0])).key == key_text(acts[0])
