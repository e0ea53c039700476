"""Every bundled Voucherify sample payload parses and folds to the state SEMANTICS §4 names."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from custate.domain import KNOWN_TYPES, CustomerState, fold, parse_activity

from .builders import (
    SAMPLES,
    iso,
    load_sample,
    run,
    sample_activity,
    sample_names,
    sample_record,
)

ALL = sample_names()

LOYAL_CARD = "v_hjQhSsitD6lAATASbRV1Ef7dUCjpy0iw"
LOYALTY_CAMPAIGN = "camp_AQZ1GLRlbGaC2dETd31VbJQ9"
JACK = "cust_IdgAFZxYwwHctOk9pPuMu308"


def one(name: str, **kw: Any) -> CustomerState:
    a = sample_activity(name, **kw)
    return fold([a])


def test_bundled_samples_are_the_26_documented_types() -> None:
    assert len(ALL) == 26
    assert set(ALL) <= KNOWN_TYPES
    related = sorted(p.name for p in (SAMPLES / "related").glob("*.json"))
    assert related == [
        "list-member-pending-points.response.json",
        "list-member-tiers.response.json",
        "list-member-transactions.response.json",
        "list-points-expiration.response.json",
    ]


@pytest.mark.parametrize("name", ALL)
def test_sample_parses_and_counts(name: str) -> None:
    a = sample_activity(name, t=5)
    payload = load_sample(name)
    assert a.type == name
    assert a.recognized
    assert a.customer_id == payload["customer"]["id"]
    assert a.data == payload
    s = fold([a])
    j = s.to_json()
    assert j["customer_id"] == payload["customer"]["id"]
    assert j["activities"] == {
        "count": 1,
        "first_at": iso(5),
        "last_at": iso(5),
        "last_id": "evcus_sample",
        "unrecognized": 0,
    }
    assert CustomerState.from_json(j).to_json() == j


@pytest.mark.parametrize("name", ALL)
def test_nested_form_unwraps_to_the_same_state(name: str) -> None:
    flat = sample_record(name)
    nested = copy.deepcopy(flat)
    nested["data"] = {
        "data": load_sample(name),
        "event_source": {"channel": "API", "api_key": {"name": "Primary"}},
    }
    a_flat, a_nested = parse_activity(flat), parse_activity(nested)
    assert a_nested.data == a_flat.data
    assert a_nested.content() == a_flat.content()
    assert fold([a_nested]).to_json() == fold([a_flat]).to_json()


# --- one meaningful assertion set per file ----------------------------------------------


def test_customer_created() -> None:
    j = one("customer.created", t=1)
    p = j.profile
    assert j.customer_id == "cust_7LvqCsUB9c8WyFP8JaLXchtF"
    assert (p.status, p.source_id, p.name, p.email) == (
        "active",
        "lionel-johnson",
        "Lionel Johnson",
        "lionel-johnson@lion.io",
    )
    assert p.phone is None
    assert j.to_json()["profile"]["created_at"] == iso(1)
    assert j.to_json()["profile"]["updated_at"] == iso(1)


def test_customer_updated() -> None:
    s = one("customer.updated", t=2)
    j = s.to_json()["profile"]
    assert s.customer_id == "cust_A9f32Khs91"
    assert j["name"] == "Ariana Patel"
    assert j["email"] == "ariana.patel@example.org"
    assert j["source_id"] == "ariana-patel"
    assert j["updated_at"] == iso(2)
    assert j["created_at"] is None
    assert j["status"] == "active"


def test_customer_deleted_after_created() -> None:
    created = sample_activity("customer.created", id="evcus_c", t=0)
    deleted = sample_activity("customer.deleted", id="evcus_d", t=60)
    j = fold([deleted, created]).to_json()["profile"]
    assert j["status"] == "deleted"
    assert j["deleted_at"] == iso(60)
    assert j["created_at"] == iso(0)
    assert j["name"] == "Lionel Johnson"


def test_customer_custom_event() -> None:
    a = sample_activity("customer.custom_event", id="evcus_1", t=1)
    b = sample_activity("customer.custom_event", id="evcus_2", t=9)
    s = fold([b, a])
    assert s.customer_id == "cust_154FDQKcbzygdo231M62r4CD"
    assert s.to_json()["custom_events"] == {"sign_up": {"count": 2, "last_at": iso(9)}}


def test_customer_segment_entered() -> None:
    s = one("customer.segment.entered", t=3)
    assert s.to_json()["segments"] == {
        "seg_n3vVcU5t0m3rs4rEPr3C1oU5": {"name": "New Customers", "entered_at": iso(3)}
    }


def test_customer_holder_assignment_created() -> None:
    s = one("customer.holder.assignment.created")
    assert s.customer_id == "cust_3yngSdlObyvUtdDcnHiGu6Yx"
    v = s.to_json()["vouchers"]["v_uOrG9tQresN9X51gbAoo0a2vY4MLV9lS"]
    assert v["roles"] == ["REFEREE"]
    assert v["code"] == "REFAPI-mk3"
    assert v["campaign_id"] == "camp_vVk4unz3k4gA023fk9XoSiTh"
    assert v["type"] == "DISCOUNT_VOUCHER"
    assert v["deleted_at"] is None


def test_customer_loyalty_tier_joined() -> None:
    s = one("customer.loyalty.tier.joined", t=4)
    assert s.to_json()["loyalty"]["tiers"] == {
        LOYALTY_CAMPAIGN: {
            "tier_id": "ltr_0e30613ad01f044515",
            "tier_name": "Loyal silver",
            "since": iso(4),
            "expires_at": None,
        }
    }


def test_customer_loyalty_tier_upgraded() -> None:
    s = one("customer.loyalty.tier.upgraded", t=5)
    assert s.customer_id == "cust_2p0TvCOvB25HWUrW9JFf4czJ"
    assert s.to_json()["loyalty"]["tiers"] == {
        LOYALTY_CAMPAIGN: {
            "tier_id": "ltr_0e30613ad01f044516",
            "tier_name": "Loyal gold",
            "since": iso(5),
            "expires_at": None,
        }
    }


def test_customer_loyalty_tier_left_removes_the_tier_it_names() -> None:
    cust = "cust_154FDQKcbzygdo231M62r4CD"
    alone = one("customer.loyalty.tier.left")
    assert alone.tiers == {}
    upgraded = sample_activity("customer.loyalty.tier.upgraded", id="e1", t=0, customer_id=cust)
    left = sample_activity("customer.loyalty.tier.left", id="e2", t=10, customer_id=cust)
    assert fold([left, upgraded]).tiers == {}
    # The joined sample is silver (..515); leaving gold (..516) must not remove it.
    joined = sample_activity("customer.loyalty.tier.joined", id="e0", t=0)
    s = fold([joined, left])
    assert s.tiers[LOYALTY_CAMPAIGN].tier_id == "ltr_0e30613ad01f044515"


def test_customer_loyalty_tier_prolonged() -> None:
    s = one("customer.loyalty.tier.prolonged", t=6)
    assert s.customer_id == "cust_ufwK2qUNGDYxa1aji7XKzuHm"
    assert s.to_json()["loyalty"]["tiers"] == {
        "camp_mvZmZkLz3Dq2llncChsCr00g": {
            "tier_id": "ltr_0e70dcf4bc23747d1a",
            "tier_name": "Tier-01",
            "since": iso(6),
            "expires_at": None,
        }
    }


def test_customer_order_created() -> None:
    s = one("customer.order.created", t=1)
    assert s.to_json()["orders"] == {
        "ord_jM5GdBe4OO3ExFrVSlEWLORP": {
            "status": "CREATED",
            "source_id": None,
            "amount": 2500,
            "total_amount": 2500,
            "updated_at": iso(1),
        }
    }


def test_customer_order_paid() -> None:
    s = one("customer.order.paid")
    o = s.orders["ord_au8U64mPX6fIArsf6UVLS8u5"]
    assert (o.status, o.amount, o.total_amount) == ("PAID", 10000, 10000)


def test_customer_order_updated() -> None:
    s = one("customer.order.updated")
    o = s.orders["ord_tNridJhmcEOQXUqNyenX1Up6"]
    assert (o.status, o.amount, o.total_amount) == ("PAID", 5500, 5500)


def test_customer_publication_succeeded() -> None:
    s = one("customer.publication.succeeded", t=7)
    assert s.to_json()["vouchers"] == {
        "v_Zmqfq7rKLPtSHv3aCGrD4863sIoQc4QO": {
            "code": "SPRING-2024-tPz",
            "campaign_id": "camp_iRMdcq07g9W4dOSRXuTovupi",
            "type": "DISCOUNT_VOUCHER",
            "roles": [],
            "published_at": iso(7),
            "deleted_at": None,
        }
    }


def test_customer_redemption_succeeded() -> None:
    s = one("customer.redemption.succeeded")
    assert s.customer_id == JACK
    assert s.to_json()["redemptions"] == {
        "succeeded": 1,
        "failed": 0,
        "rollback_succeeded": 0,
        "rollback_failed": 0,
    }
    # A discount voucher is no card.
    assert s.cards == {}
    assert s.gift_cards == {}


def test_customer_redemption_rollback_succeeded() -> None:
    s = fold(
        [
            sample_activity("customer.redemption.succeeded", id="e1", t=0),
            sample_activity("customer.redemption.rollback.succeeded", id="e2", t=1),
        ]
    )
    assert s.to_json()["redemptions"] == {
        "succeeded": 1,
        "failed": 0,
        "rollback_succeeded": 1,
        "rollback_failed": 0,
    }


def test_customer_reward_redemptions_created() -> None:
    s = one("customer.reward_redemptions.created", t=2)
    j = s.to_json()
    assert j["reward_redemptions"] == {
        "rewr_23IX6dCFJe03AX4M56KcI95D": {
            "state": "CREATED",
            "reward_id": "rew_6cXu5JUKsjDo1T1LmFLF3eML",
            "updated_at": iso(2),
        }
    }
    card = j["loyalty"]["cards"]["v_p7NP2qmQaMXsNHzb9ujPVjqgDJzJ2ccQ"]
    assert (card["balance"], card["total"], card["code"]) == (70, 370, "H0h9royZ")
    assert j["loyalty"]["points"] == 70


def test_customer_reward_redemptions_completed() -> None:
    s = one("customer.reward_redemptions.completed", t=3)
    rr = s.reward_redemptions["rewr_N5xhKgV5tJBmJxrtb5YB7V3q"]
    assert (rr.state, rr.reward_id) == ("COMPLETED", "rew_UtRGHxt98jwCzodkskxQ7KLp")
    card = s.cards["v_p7NP2qmQaMXsNHzb9ujPVjqgDJzJ2ccQ"]
    assert (card.balance, card.total, card.campaign_id) == (
        70,
        270,
        "camp_wce3U0BUekz2YGVl1F43Tvd4",
    )


def test_customer_rewarded() -> None:
    s = one("customer.rewarded")
    card = s.cards[LOYAL_CARD]
    assert (card.balance, card.total, card.code) == (850, 900, "L0y4L")
    assert s.points == 850


def test_customer_rewarded_loyalty_points_prefers_balance_over_stale_voucher_block() -> None:
    s = one("customer.rewarded.loyalty_points")
    card = s.cards[LOYAL_CARD]
    # The voucher block in this payload says 0/0: the balance object (900/900) wins.
    assert (card.balance, card.total) == (900, 900)
    assert card.campaign_id == LOYALTY_CAMPAIGN
    assert s.points == 900
    assert s.orders == {}


def test_customer_voucher_gift_balance_added() -> None:
    s = one("customer.voucher.gift.balance_added", t=4)
    assert s.to_json()["gift_cards"] == {
        "v_oNia4nTFDqYZOWYJiMpX8ocB6p6ZaEBm": {
            "campaign_id": "camp_bfrwAVsP6Q1EM1ZjgHwheKYr",
            "code": "Gift-for-you-0",
            "balance": 15900,
            "total": 16600,
            "updated_at": iso(4),
            "updated_by": "evcus_sample",
        }
    }
    assert s.cards == {}
    assert s.points == 0


def test_customer_voucher_loyalty_card_points_added() -> None:
    s = one("customer.voucher.loyalty_card.points_added", t=5)
    j = s.to_json()["loyalty"]
    card = j["cards"]["v_mFlEY0ZESRsEyfY12vTvz1VPfVDirAjc"]
    assert card["balance"] == 2641
    assert card["total"] == 2641
    assert card["code"] == "NK5iReoi"
    assert card["campaign_id"] == LOYALTY_CAMPAIGN
    assert card["updated_at"] == iso(5)
    assert j["points"] == 2641
    assert s.gaps == []


def test_customer_voucher_loyalty_card_points_expired() -> None:
    s = one("customer.voucher.loyalty_card.points_expired")
    card = s.cards[LOYAL_CARD]
    # transaction.details.balance: 262 of 992; no expired_points in the block: + points (70)
    assert (card.balance, card.total) == (262, 992)
    assert card.expired_points == 70
    assert card.next_expiration_date == "2024-05-30"


def test_customer_voucher_loyalty_card_pending_points_added() -> None:
    s = one("customer.voucher.loyalty_card.pending_points.added")
    card = s.to_json()["loyalty"]["cards"][LOYAL_CARD]
    assert card["pending_points"] == 1234
    assert card["pending"] == {
        "lopp_100e0e48afc99da41a": {
            "points": 1,
            "activates_at": "2025-01-29",
            "order_id": "ord_100cc4b1b16ab710e7",
        }
    }
    assert (card["balance"], card["total"]) == (25, 2205)
    assert card["next_expiration_date"] == "2026-01-31"
    assert card["next_expiration_points"] == 25


def test_customer_voucher_loyalty_card_pending_points_updated() -> None:
    s = one("customer.voucher.loyalty_card.pending_points.updated")
    card = s.cards[LOYAL_CARD]
    assert card.pending_points == 41
    entry = card.pending["lopp_103dd48adba7591619"]
    assert (entry.points, entry.activates_at, entry.order_id) == (
        35,
        "2025-03-07",
        "ord_103c8af3c09ea311b4",
    )
    assert (card.balance, card.total) == (5156, 28786)


def test_customer_voucher_loyalty_card_pending_points_activated() -> None:
    alone = one("customer.voucher.loyalty_card.pending_points.activated")
    card = alone.cards[LOYAL_CARD]
    assert card.pending_points == 1239
    assert card.pending == {}
    assert (card.balance, card.total) == (25, 2205)
    # After an `added` of the same entry id, `activated` removes that entry only.
    added_data = load_sample("customer.voucher.loyalty_card.pending_points.added")
    added_data["pending_points"]["id"] = "lopp_100e0e48afc99da421"
    added = parse_activity(
        {
            "id": "e1",
            "type": "customer.voucher.loyalty_card.pending_points.added",
            "created_at": iso(0),
            "data": added_data,
        }
    )
    other = sample_activity("customer.voucher.loyalty_card.pending_points.added", id="e0", t=0)
    activated = sample_activity(
        "customer.voucher.loyalty_card.pending_points.activated", id="e2", t=10
    )
    s = fold([activated, added, other])
    card = s.cards[LOYAL_CARD]
    assert set(card.pending) == {"lopp_100e0e48afc99da41a"}
    assert card.pending_points == 1239
    assert run(added, other, customer_id=JACK).cards[LOYAL_CARD].pending.keys() == {
        "lopp_100e0e48afc99da41a",
        "lopp_100e0e48afc99da421",
    }
