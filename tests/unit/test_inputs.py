"""Fold inputs (`adapters.codecs.foldinput`): what the read model keeps of each activity folds to the
same state as the activity itself, and what it cannot hold or does not know is left to the
event store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custate.adapters.codecs import foldinput as inputs
from custate.domain import Activity, fold
from custate.domain.activity import LazyData

from .builders import act, sample_activity, sample_names

RECORDED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def views(a: Activity) -> Any:
    return msgspec.to_builtins(msgspec.structs.replace(a.payload, customer=None))


def raw_of(a: Activity) -> LazyData:
    return LazyData(lambda _: dict(a.data), None)


def round_trip(a: Activity) -> tuple[Activity, datetime]:
    blob = inputs.dump(a, RECORDED)
    assert blob is not None
    got = inputs.load(blob, a.customer_id, raw_of(a))
    assert got is not None
    return got


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_reads_back_with_the_views_the_fold_reads(name: str) -> None:
    a = sample_activity(name)
    back, recorded_at = round_trip(a)
    assert recorded_at == RECORDED
    assert (back.id, back.type, back.created_at, back.group_id) == (
        a.id,
        a.type,
        a.created_at,
        a.group_id,
    )
    assert back.created_at.tzinfo is not None
    # Every view but the customer's is as parsed; of the customer, the profile types keep
    # the fields they copy, the others only the id (as a stored activity is read back).
    assert views(back) == views(a)
    assert (back.payload.customer or a.payload.customer) is None or (
        back.payload.customer is not None
        and a.payload.customer is not None
        and back.payload.customer.id == a.payload.customer.id
    )
    assert fold([back]).to_json() == fold([a]).to_json()
    assert back.data == a.data  # the raw payload, from the event store on first use


def test_a_profile_update_keeps_nulls_apart_from_absent_fields() -> None:
    # A key sent as null clears the profile's value; an absent key keeps it.
    created = act(
        "customer.created",
        {"customer": {"id": "c", "name": "Ann", "email": "ann@example.com"}},
        customer_id="c",
    )
    updated = act(
        "customer.updated",
        {"customer": {"id": "c", "email": None, "metadata": {"tier": [1, 2.5]}}},
        t=1,
        customer_id="c",
    )
    acts = [round_trip(created)[0], round_trip(updated)[0]]
    assert fold(acts).to_json() == fold([created, updated]).to_json()
    assert (fold(acts).profile.name, fold(acts).profile.email) == ("Ann", None)


def test_what_msgpack_cannot_hold_is_left_to_the_event_store() -> None:
    a = act(
        "customer.updated", {"customer": {"id": "c", "metadata": {"n": 2**70}}}, customer_id="c"
    )
    assert inputs.dump(a, RECORDED) is None


def test_a_format_this_code_does_not_know_is_left_to_the_event_store() -> None:
    a = sample_activity(sample_names()[0])
    newer = msgspec.msgpack.encode([inputs.FORMAT + 1, "anything", {"else": 1}])
    assert inputs.load(newer, a.customer_id, raw_of(a)) is None


def test_a_broken_input_of_this_format_is_an_error_not_a_silent_fallback() -> None:
    a = sample_activity(sample_names()[0])
    broken = msgspec.msgpack.encode([inputs.FORMAT, "id-only"])
    with pytest.raises(msgspec.ValidationError):
        inputs.load(broken, a.customer_id, raw_of(a))


def _points(balance: int, points: int) -> dict[str, Any]:
    return {
        "customer": {"id": "c"},
        "balance": {
            "type": "loyalty_card",
            "balance": balance,
            "total": balance,
            "points": points,
            "related_object": {"id": "v_1", "type": "voucher"},
        },
    }


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**9), st.integers(-(10**6), 10**6), st.integers(0, 10**5)),
        min_size=1,
        max_size=20,
    )
)
def test_any_points_history_folds_the_same_from_its_inputs(
    steps: list[tuple[int, int, int]],
) -> None:
    acts = [
        act(
            "customer.voucher.loyalty_card.points_added",
            _points(balance, points),
            t=t,
            id=f"evcus_{i}",
            customer_id="c",
        )
        for i, (balance, points, t) in enumerate(steps)
    ]
    back = [round_trip(a)[0] for a in acts]
    assert fold(back).to_json() == fold(acts).to_json()
    assert [b.created_at for b in back] == [a.created_at for a in acts]
