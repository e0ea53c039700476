"""Parsing rules of SEMANTICS §1 and bad input; the state's JSON round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import given
from hypothesis import strategies as st

from custate.adapters.codecs import state as snapshot
from custate.domain import (
    ActivityError,
    ActivityType,
    CustomerState,
    fold,
    format_time,
    parse_activity,
    parse_time,
)

from .builders import (
    CUSTOMER,
    Json,
    act,
    gift_balance,
    iso,
    loyalty_balance,
    loyalty_voucher,
    merge,
    pending,
    record,
    tier,
)


def rec(**over: Any) -> Json:
    base: Json = {
        "id": "evcus_1",
        "type": "customer.segment.entered",
        "created_at": "2025-01-01T10:00:00Z",
        "data": {"customer": {"id": "cust_p"}, "segment": {"id": "seg_1", "name": "S"}},
    }
    base.update(over)
    return base


def error(record: object, customer_id: str | None = None) -> ActivityError:
    with pytest.raises(ActivityError) as info:
        parse_activity(record, customer_id)
    return info.value


# --- well-formed input -------------------------------------------------------------------


def test_parses_a_flat_activity() -> None:
    a = parse_activity(rec(group_id="v-123"))
    assert a.id == "evcus_1"
    assert a.type == "customer.segment.entered"
    assert a.created_at == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert a.customer_id == "cust_p"
    assert a.group_id == "v-123"
    assert a.data == {"customer": {"id": "cust_p"}, "segment": {"id": "seg_1", "name": "S"}}
    assert a.payload.segment is not None
    assert a.payload.segment.id == "seg_1"
    assert a.key == (datetime(2025, 1, 1, 10, tzinfo=UTC), 1, "evcus_1")
    assert a.recognized


def test_offsets_are_normalised_to_utc_and_microseconds_kept() -> None:
    a = parse_activity(rec(created_at="2025-01-01T12:30:00.123456+02:30"))
    assert a.created_at == datetime(2025, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert a.created_at.utcoffset() == timedelta(0)
    assert a.to_record()["created_at"] == "2025-01-01T10:00:00.123456Z"
    b = parse_activity(rec(created_at="2024-12-31T23:59:59.000001-05:00"))
    assert format_time(b.created_at) == "2025-01-01T04:59:59.000001Z"


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(minutes=330))]
        ),
    ),
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
)
def test_times_format_at_one_width_in_utc_and_sort_as_times(t: datetime, u: datetime) -> None:
    s = format_time(t)
    assert s == t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")
    assert len(s) == 27
    assert parse_time(s, "t") == t
    assert (s < format_time(u)) == (t < u)


def test_a_subclass_of_datetime_formats_too() -> None:
    with freeze_time("2025-01-01T10:00:00Z"):
        assert format_time(datetime.now(UTC)) == "2025-01-01T10:00:00.000000Z"


def test_same_instant_in_two_zones_is_the_same_content() -> None:
    a = parse_activity(rec(created_at="2025-01-01T10:00:00Z"))
    b = parse_activity(rec(created_at="2025-01-01T11:00:00+01:00"))
    assert a.content() == b.content()
    assert a.key == b.key


def test_parse_time_accepts_aware_datetimes() -> None:
    t = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=1)))
    assert parse_time(t, "x") == datetime(2025, 1, 1, 11, tzinfo=UTC)


def test_nested_payload_is_unwrapped() -> None:
    inner = {"customer": {"id": "cust_n"}, "segment": {"id": "seg_n"}}
    a = parse_activity(rec(data={"data": inner, "event_source": {"channel": "API"}}))
    assert a.data == inner
    assert a.customer_id == "cust_n"
    only_data = parse_activity(rec(data={"data": inner}))
    assert only_data.data == inner


def test_data_with_other_keys_is_not_unwrapped() -> None:
    data = {
        "data": {"customer": {"id": "cust_inner"}},
        "customer": {"id": "cust_outer"},
        "segment": {"id": "seg_1"},
    }
    a = parse_activity(rec(data=data))
    assert a.data == data
    assert a.customer_id == "cust_outer"
    # `data.data` that is not an object is no nesting either.
    b = parse_activity(
        rec(type="customer.brand_new", data={"data": [1, 2], "event_source": {}}), "cust_x"
    )
    assert b.data == {"data": [1, 2], "event_source": {}}


def test_customer_id_resolution_order() -> None:
    data = {"customer": {"id": "cust_payload"}, "segment": {"id": "seg_1"}}
    assert parse_activity(rec(data=data, customer_id="cust_record"), "cust_caller").customer_id == (
        "cust_record"
    )
    assert parse_activity(rec(data=data), "cust_caller").customer_id == "cust_caller"
    assert parse_activity(rec(data=data)).customer_id == "cust_payload"
    assert parse_activity(rec(data=data, customer_id=None)).customer_id == "cust_payload"


def test_unknown_type_is_accepted() -> None:
    a = parse_activity(rec(type="customer.something_new", data={"customer": {"id": "c"}}))
    assert not a.recognized
    assert a.key[1] == 1


def test_to_record_parses_back_to_the_same_activity() -> None:
    a = parse_activity(rec(group_id="g1", created_at="2025-01-01T10:00:00.5+01:00"))
    b = parse_activity(a.to_record())
    assert b == a
    assert b.content() == a.content()
    assert b.group_id == "g1"


def test_group_id_is_not_part_of_content() -> None:
    assert parse_activity(rec(group_id="g1")).content() == parse_activity(rec()).content()
    assert parse_activity(rec()).content() != parse_activity(rec(created_at=iso(1))).content()


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "created_at", ["2025-01-01T10:00:00", "2025-01-01T10:00:00.123456", "2025-01-01"]
)
def test_naive_time_is_rejected(created_at: str) -> None:
    e = error(rec(created_at=created_at))
    assert e.field == "created_at"
    assert "zone" in e.message


@pytest.mark.parametrize("created_at", ["yesterday", "2025-13-01T00:00:00Z", 1735725600, None])
def test_bad_time_is_rejected(created_at: object) -> None:
    assert error(rec(created_at=created_at)).field == "created_at"


def test_missing_created_at() -> None:
    r = rec()
    del r["created_at"]
    assert error(r).field == "created_at"


@pytest.mark.parametrize("bad", [None, "", 42])
def test_missing_or_bad_id(bad: object) -> None:
    r = rec(id=bad)
    assert error(r).field == "id"
    r2 = rec()
    del r2["id"]
    assert error(r2).field == "id"


@pytest.mark.parametrize("bad", [None, "", ["customer.created"]])
def test_missing_or_bad_type(bad: object) -> None:
    assert error(rec(type=bad)).field == "type"


def test_missing_customer() -> None:
    e = error(rec(data={"segment": {"id": "seg_1"}}))
    assert e.field == "data.customer.id"
    assert error(rec(data={"segment": {"id": "seg_1"}, "customer": {"name": "x"}})).field == (
        "data.customer.id"
    )
    # the caller's customer rescues it
    assert parse_activity(rec(data={"segment": {"id": "seg_1"}}), "cust_c").customer_id == "cust_c"


@pytest.mark.parametrize("bad", ["", 7])
def test_bad_record_customer_id(bad: object) -> None:
    assert error(rec(customer_id=bad), "cust_c").field == "customer_id"


@pytest.mark.parametrize("data", [None, [], "text", 3])
def test_data_must_be_an_object(data: object) -> None:
    e = error(rec(data=data))
    assert e.field == "data"


def test_record_must_be_an_object() -> None:
    assert error([rec()]).field == "<record>"
    assert error("x").field == "<record>"


def test_bad_group_id() -> None:
    assert error(rec(group_id=5)).field == "group_id"


@pytest.mark.parametrize(
    ("activity_type", "data", "field"),
    [
        (
            "customer.voucher.loyalty_card.points_added",
            {"customer": {"id": "c"}, "balance": {"type": "loyalty_card", "balance": "abc"}},
            "data.balance.balance",
        ),
        (
            "customer.voucher.loyalty_card.points_added",
            {"customer": {"id": "c"}, "balance": {"related_object": {"id": 5}}},
            "data.balance.related_object.id",
        ),
        (
            "customer.voucher.loyalty_card.points_expired",
            {"customer": {"id": "c"}, "transaction": {"details": {"balance": {"points": "x"}}}},
            "data.transaction.details.balance.points",
        ),
        (
            "customer.order.paid",
            {"customer": {"id": "c"}, "order": {"id": "o", "amount": "lots"}},
            "data.order.amount",
        ),
        ("customer.segment.entered", {"customer": {"id": "c"}, "segment": "seg_1"}, "data.segment"),
        (
            "customer.publication.succeeded",
            {"customer": {"id": "c"}, "publication": {"vouchers_id": "v_1"}},
            "data.publication.vouchers_id",
        ),
        ("customer.created", {"customer": {"id": "c", "metadata": [1]}}, "data.customer.metadata"),
        (
            "customer.voucher.loyalty_card.points_expired",
            {"customer": {"id": "c"}, "points": 1.5},
            "data.points",
        ),
        # Numbers are strict: a string or a boolean is not a count of points or cents.
        (
            "customer.voucher.loyalty_card.points_added",
            {"customer": {"id": "c"}, "balance": {"type": "loyalty_card", "balance": "12"}},
            "data.balance.balance",
        ),
        (
            "customer.voucher.gift.balance_added",
            {"customer": {"id": "c"}, "balance": {"type": "gift_voucher", "amount": True}},
            "data.balance.amount",
        ),
    ],
)
def test_wrong_type_inside_payload_names_the_full_path(
    activity_type: str, data: Json, field: str
) -> None:
    e = error(rec(type=activity_type, data=data))
    assert e.field == field
    assert str(e).startswith(f"{field}: ")


def test_wrong_type_inside_nested_payload_names_the_nested_path() -> None:
    data = {"data": {"customer": {"id": "c"}, "balance": {"balance": "abc"}}, "event_source": {}}
    e = error(rec(type="customer.rewarded", data=data))
    assert e.field == "data.data.balance.balance"


@pytest.mark.parametrize(
    ("activity_type", "data", "field"),
    [
        ("customer.segment.entered", {"segment": {"name": "no id"}}, "data.segment.id"),
        ("customer.segment.left", {}, "data.segment.id"),
        ("customer.referred", {"referrer": {"id": "r"}}, "data.campaign.id"),
        ("customer.referred", {"campaign": {"id": "c"}}, "data.referrer.id"),
        ("customer.custom_event", {"event": {}}, "data.event.type"),
        (
            "customer.voucher.loyalty_card.pending_points.added",
            {"pending_points": {}},
            "data.pending_points.id",
        ),
        ("customer.voucher.loyalty_card.pending_points.canceled", {}, "data.pending_points.id"),
        ("customer.voucher.deleted", {"voucher": {"code": "X"}}, "data.voucher.id"),
        ("customer.order.created", {"order": {"status": "CREATED"}}, "data.order.id"),
        ("customer.order.fulfilled", {}, "data.order.id"),
        ("customer.reward_redemptions.pending", {}, "data.reward_redemption.id"),
        ("customer.loyalty.tier.joined", {"campaign": {"id": "c"}}, "data.loyalty_tier.id"),
        ("customer.loyalty.tier.left", {}, "data.loyalty_tier.id"),
        (
            "customer.loyalty.tier.upgraded",
            {"loyalty_tier": {"id": "t"}},
            "data.loyalty_tier_to.id",
        ),
        ("customer.loyalty.tier.downgraded", {}, "data.loyalty_tier_to.id"),
        (
            "customer.holder.assignment.created",
            {"holder": {"holder_role": "OWNER"}},
            "data.holder.redeemable_id",
        ),
        (
            "customer.holder.assignment.deleted",
            {"holder": {"redeemable_id": "v"}},
            "data.holder.holder_role",
        ),
    ],
)
def test_required_paths_per_type(activity_type: str, data: Json, field: str) -> None:
    e = error(rec(type=activity_type, data=data), "cust_c")
    assert e.field == field
    assert activity_type in e.message
    nested = error(rec(type=activity_type, data={"data": data, "event_source": {}}), "cust_c")
    assert nested.field == "data." + field


def test_types_without_requirements_accept_an_empty_payload() -> None:
    for t in (ActivityType.PUBLICATION_FAILED, ActivityType.LOYALTY_UPDATED, ActivityType.DELETED):
        assert parse_activity(rec(type=t, data={}), "cust_c").customer_id == "cust_c"


# --- state JSON round trip --------------------------------------------------------------


def rich_state() -> CustomerState:
    T = ActivityType
    acts = [
        act(
            T.CREATED,
            {
                "customer": {
                    "id": CUSTOMER,
                    "name": "Ann",
                    "email": "a@x.io",
                    "phone": "+1",
                    "source_id": "ann",
                    "metadata": {"tier": "x", "n": 2, "tags": ["a"]},
                }
            },
            t=0,
        ),
        act(T.CONFIRMED, {"customer": {"id": CUSTOMER}}, t=1),
        act(
            T.VOUCHER_LOYALTY_CARD_POINTS_ADDED,
            merge(loyalty_balance("v_c", 100, points=100), loyalty_voucher("v_c", code="C1")),
            t=2,
        ),
        act(
            T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED,
            merge(
                pending("lopp_1", "v_c", total=10),
                loyalty_voucher(
                    "v_c", next_expiration_date="2026-01-31", next_expiration_points=40
                ),
            ),
            t=3,
        ),
        act(T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance("v_c", 500, points=100), t=4),
        act(
            T.VOUCHER_LOYALTY_CARD_POINTS_EXPIRED,
            merge({"points": 5}, loyalty_balance("v_c", 495, points=-5)),
            t=4.5,
        ),
        act(T.VOUCHER_GIFT_BALANCE_ADDED, gift_balance("v_g", 2500, amount=2500), t=5),
        act(
            T.LOYALTY_TIER_JOINED,
            {"loyalty_tier": tier("ltr_1", "Gold", expires="2026-01-01")},
            t=6,
        ),
        act(T.SEGMENT_ENTERED, {"segment": {"id": "seg_1", "name": "VIP"}}, t=7),
        act(T.ORDER_PAID, {"order": {"id": "ord_1", "amount": 100, "total_amount": 90}}, t=8),
        act(T.REDEMPTION_SUCCEEDED, {}, t=9),
        act(T.REDEMPTION_ROLLBACK_FAILED, {}, t=9),
        act(
            T.REWARD_REDEMPTIONS_COMPLETED,
            {"reward_redemption": {"id": "rr_1"}, "reward": {"id": "rew_1"}},
            t=10,
        ),
        act(T.REFERRED, {"campaign": {"id": "camp_r"}, "referrer": {"id": "cust_r"}}, t=11),
        act(T.PUBLICATION_SUCCEEDED, {"voucher": {"id": "v_p", "code": "P"}}, t=12),
        act(
            T.HOLDER_ASSIGNMENT_CREATED,
            {"holder": {"redeemable_id": "v_p", "holder_role": "OWNER"}},
            t=12,
        ),
        act(T.VOUCHER_DELETED, {"voucher": {"id": "v_old"}}, t=13),
        act(T.EMAIL_SENT, {}, t=14),
        act(T.SMS_FAILED, {}, t=14),
        act(T.CUSTOM_EVENT, {"event": {"type": "login"}}, t=15),
        act(T.VALIDATION_FAILED, {}, t=16),
        act("customer.brand_new", {}, t=17),
    ]
    return fold(acts, CUSTOMER, as_of=datetime(2025, 6, 1, tzinfo=UTC))


def test_rich_state_round_trips_through_json() -> None:
    s = rich_state()
    j = s.to_json()
    # rich: every section is populated
    assert len(j["gaps"]) == 1
    assert j["loyalty"]["points"] == 495
    assert j["loyalty"]["cards"]["v_c"]["pending"]["lopp_1"]["points"] == 10
    assert j["loyalty"]["cards"]["v_c"]["expired_points"] == 5
    assert j["activities"]["count"] == 22
    assert j["activities"]["unrecognized"] == 1
    assert j["as_of"] == "2025-06-01T00:00:00.000000Z"
    for key in (
        "gift_cards",
        "segments",
        "orders",
        "reward_redemptions",
        "vouchers",
        "messaging",
        "custom_events",
    ):
        assert j[key], key
    back = CustomerState.from_json(j)
    assert back == s
    assert back.to_json() == j
    assert back.points == s.points
    stored = snapshot.load(snapshot.dump(s))
    assert stored == s
    assert stored.to_json() == j


def test_empty_state_round_trips() -> None:
    s = CustomerState("cust_empty")
    assert CustomerState.from_json(s.to_json()) == s
    assert s.to_json()["profile"]["status"] == "active"


def test_record_helper_defaults() -> None:
    r = record("customer.created", {"customer": {"id": "x"}}, customer_id=None)
    assert "customer_id" not in r
    assert parse_activity(r).customer_id == "x"
