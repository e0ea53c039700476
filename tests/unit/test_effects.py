"""The effect of each of the 74 activity types on customer state (SEMANTICS §4), with
payloads built where Voucherify publishes no example, plus the ordering rules of §2."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given

from custate.domain import (
    KNOWN_TYPES,
    Activity,
    ActivityType,
    CustomerState,
    apply,
    fold,
    ordered,
    parse_activity,
)
from custate.domain.activity_types import MESSAGING_CHANNELS
from custate.domain.effects.effect import Writes, declared
from custate.domain.fold import EFFECTS, STEPS

from .builders import (
    CUSTOMER,
    Json,
    act,
    dig,
    gift_balance,
    gift_voucher,
    iso,
    loyalty_balance,
    loyalty_voucher,
    merge,
    pending,
    record,
    run,
    sample_names,
    sample_record,
    state_json,
    tier,
    without_activities,
)
from .test_properties import SETTINGS, histories

CARD = "v_card1"
CARD2 = "v_card2"
GIFT = "v_gift1"
CAMP = "camp_loyal"


@dataclass(frozen=True)
class Case:
    """Fold `before` (at t=0..), then one activity of `type` at t=100: `expect` holds."""

    type: str
    data: Json
    expect: dict[str, Any]
    before: tuple[tuple[str, Json], ...] = ()
    absent: tuple[str, ...] = field(default=())  # dotted paths whose last key must be gone

    def __str__(self) -> str:
        return self.type


def _fold_case(c: Case) -> Json:
    acts = [act(t, d, t=i) for i, (t, d) in enumerate(c.before)]
    acts.append(act(c.type, c.data, id="evcus_subject", t=100))
    return state_json(acts)


def _activities_only(c: Case) -> None:
    """The subject changes nothing but `activities`."""
    before = [act(t, d, id=f"b{i}", t=i) for i, (t, d) in enumerate(c.before)]
    subject = act(c.type, c.data, id="evcus_subject", t=100)
    without = without_activities(state_json(before))
    with_it = state_json([*before, subject])
    assert without_activities(with_it) == without
    assert with_it["activities"]["count"] == len(before) + 1
    assert with_it["activities"]["last_id"] == "evcus_subject"


T = ActivityType
CUST = {"customer": {"id": CUSTOMER}}
CREATED = (T.CREATED, {"customer": {"id": CUSTOMER, "name": "Ann", "phone": "+100"}})
JOINED_SILVER = (
    T.LOYALTY_TIER_JOINED,
    {"campaign": {"id": CAMP}, "loyalty_tier": tier("ltr_s", "Silver")},
)
POINTS_100 = (T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance(CARD, 100, points=100))

CASES: list[Case] = [
    # profile
    Case(
        T.CREATED,
        {
            "customer": {
                "id": CUSTOMER,
                "name": "Ann",
                "email": "ann@x.io",
                "source_id": "ann",
                "phone": "+1",
                "metadata": {"k": 1},
            }
        },
        {
            "profile.status": "active",
            "profile.name": "Ann",
            "profile.email": "ann@x.io",
            "profile.source_id": "ann",
            "profile.phone": "+1",
            "profile.metadata": {"k": 1},
            "profile.created_at": iso(100),
            "profile.updated_at": iso(100),
        },
    ),
    Case(
        T.UPDATED,
        {"customer": {"id": CUSTOMER, "name": "Bea"}},
        {
            "profile.name": "Bea",
            "profile.phone": "+100",
            "profile.created_at": iso(0),
            "profile.updated_at": iso(100),
        },
        before=(CREATED,),
    ),
    Case(
        T.CONFIRMED,
        {"customer": {"id": CUSTOMER, "email": "ann@confirmed.io"}},
        {
            "profile.confirmed_at": iso(100),
            "profile.email": "ann@confirmed.io",
            "profile.name": "Ann",
            "profile.status": "active",
        },
        before=(CREATED,),
    ),
    Case(
        T.DELETED,
        CUST,
        {"profile.status": "deleted", "profile.deleted_at": iso(100), "profile.name": "Ann"},
        before=(CREATED,),
    ),
    Case(
        T.REFERRED,
        {"campaign": {"id": "camp_ref"}, "referrer": {"id": "cust_referrer"}},
        {"referrals.referred_by": {"camp_ref": "cust_referrer"}},
    ),
    Case(
        T.CUSTOM_EVENT,
        {"event": {"type": "signup"}},
        {"custom_events": {"signup": {"count": 2, "last_at": iso(100)}}},
        before=((T.CUSTOM_EVENT, {"event": {"type": "signup"}}),),
    ),
    Case(
        T.SEGMENT_ENTERED,
        {"segment": {"id": "seg_b", "name": "VIP"}},
        {"segments.seg_b": {"name": "VIP", "entered_at": iso(100)}},
    ),
    Case(
        T.SEGMENT_LEFT,
        {"segment": {"id": "seg_a"}},
        {"segments": {"seg_b": {"name": "B", "entered_at": iso(1)}}},
        before=(
            (T.SEGMENT_ENTERED, {"segment": {"id": "seg_a", "name": "A"}}),
            (T.SEGMENT_ENTERED, {"segment": {"id": "seg_b", "name": "B"}}),
        ),
    ),
    # cards
    Case(
        T.REWARDED,
        loyalty_voucher(CARD, balance=850, points=900),
        {
            f"loyalty.cards.{CARD}.balance": 850,
            f"loyalty.cards.{CARD}.total": 900,
            "loyalty.points": 850,
        },
    ),
    Case(
        T.REWARDED_LOYALTY_POINTS,
        merge(loyalty_balance(CARD, 900, points=800), loyalty_voucher(CARD, balance=0, points=0)),
        {f"loyalty.cards.{CARD}.balance": 900, f"loyalty.cards.{CARD}.total": 900, "gaps": []},
        before=(POINTS_100,),
    ),
    Case(
        T.VOUCHER_GIFT_BALANCE_ADDED,
        merge(gift_balance(GIFT, 5000, amount=2000, total=7000), gift_voucher(GIFT, 5000, 7000)),
        {
            f"gift_cards.{GIFT}.balance": 5000,
            f"gift_cards.{GIFT}.total": 7000,
            f"gift_cards.{GIFT}.code": "GIFT",
            "gaps": [],
        },
        before=((T.VOUCHER_GIFT_BALANCE_ADDED, gift_balance(GIFT, 3000, amount=3000)),),
    ),
    Case(
        T.VOUCHER_LOYALTY_CARD_POINTS_ADDED,
        loyalty_balance(CARD, 140, points=40, total=140),
        {f"loyalty.cards.{CARD}.balance": 140, "loyalty.points": 140, "gaps": []},
        before=(POINTS_100,),
    ),
    Case(
        T.VOUCHER_LOYALTY_CARD_POINTS_ACTIVATED,
        merge(
            loyalty_balance(CARD, 130, points=30, total=130),
            loyalty_voucher(CARD, balance=130, points=130, pending_points=5),
        ),
        {
            f"loyalty.cards.{CARD}.balance": 130,
            f"loyalty.cards.{CARD}.pending_points": 5,
            "gaps": [],
        },
        before=(POINTS_100,),
    ),
    Case(
        T.VOUCHER_LOYALTY_CARD_POINTS_TRANSFERRED,
        merge(
            loyalty_balance(CARD, 60, points=-40, total=100),
            {
                "transaction": {
                    "voucher_id": CARD,
                    "type": "POINTS_TRANSFER_OUT",
                    "details": {
                        "destination_voucher": {
                            "id": CARD2,
                            "type": "LOYALTY_CARD",
                            "loyalty_card": {"points": 540, "balance": 540},
                        }
                    },
                }
            },
        ),
        {
            f"loyalty.cards.{CARD}.balance": 60,
            f"loyalty.cards.{CARD2}.balance": 500,
            f"loyalty.cards.{CARD2}.updated_at": iso(1),
            "loyalty.points": 560,
        },
        before=(
            POINTS_100,
            (T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance(CARD2, 500, points=500)),
        ),
    ),
    Case(
        T.VOUCHER_LOYALTY_CARD_POINTS_EXPIRED,
        merge(
            {"points": 30},
            {
                "transaction": {
                    "voucher_id": CARD,
                    "details": loyalty_balance(CARD, 70, points=-30, total=100),
                }
            },
        ),
        {
            f"loyalty.cards.{CARD}.balance": 70,
            f"loyalty.cards.{CARD}.total": 100,
            f"loyalty.cards.{CARD}.expired_points": 30,
            "gaps": [],
        },
        before=(POINTS_100,),
    ),
    Case(
        T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED,
        pending("lopp_2", CARD, points=7, activates_at="2025-03-01", order_id="ord_9", total=17),
        {
            f"loyalty.cards.{CARD}.pending": {
                "lopp_1": {"points": 10, "activates_at": "2025-02-01", "order_id": "ord_1"},
                "lopp_2": {"points": 7, "activates_at": "2025-03-01", "order_id": "ord_9"},
            },
            f"loyalty.cards.{CARD}.pending_points": 17,
            f"loyalty.cards.{CARD}.balance": 100,
        },
        before=(
            POINTS_100,
            (T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED, pending("lopp_1", CARD, total=10)),
        ),
    ),
    Case(
        T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_UPDATED,
        pending("lopp_1", CARD, points=25, activates_at="2025-04-01", total=25),
        {
            f"loyalty.cards.{CARD}.pending": {
                "lopp_1": {"points": 25, "activates_at": "2025-04-01", "order_id": "ord_1"}
            },
            f"loyalty.cards.{CARD}.pending_points": 25,
        },
        before=((T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED, pending("lopp_1", CARD, total=10)),),
    ),
    Case(
        T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ACTIVATED,
        merge(pending("lopp_1", CARD, points=10, total=5), loyalty_balance(CARD, 110, points=10)),
        {
            f"loyalty.cards.{CARD}.pending": {
                "lopp_2": {"points": 5, "activates_at": "2025-02-01", "order_id": "ord_1"}
            },
            f"loyalty.cards.{CARD}.pending_points": 5,
            f"loyalty.cards.{CARD}.balance": 110,
        },
        before=(
            POINTS_100,
            (T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED, pending("lopp_1", CARD, total=10)),
            (
                T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED,
                pending("lopp_2", CARD, points=5, total=15),
            ),
        ),
    ),
    Case(
        T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_CANCELED,
        pending("lopp_1", CARD, total=0),
        {
            f"loyalty.cards.{CARD}.pending": {},
            f"loyalty.cards.{CARD}.pending_points": 0,
            f"loyalty.cards.{CARD}.balance": 100,
        },
        before=(
            POINTS_100,
            (T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED, pending("lopp_1", CARD, total=10)),
        ),
    ),
    Case(
        T.VOUCHER_DELETED,
        {"voucher": {"id": CARD, "code": "CARD", "type": "LOYALTY_CARD"}},
        {
            "loyalty.cards": {},
            "loyalty.points": 0,
            f"vouchers.{CARD}.deleted_at": iso(100),
            f"vouchers.{CARD}.code": "CARD",
            f"gift_cards.{GIFT}.balance": 3000,
        },
        before=(POINTS_100, (T.VOUCHER_GIFT_BALANCE_ADDED, gift_balance(GIFT, 3000, amount=3000))),
    ),
    Case(
        T.PUBLICATION_SUCCEEDED,
        {
            "voucher": {
                "id": "v_a",
                "code": "A-1",
                "campaign_id": "camp_a",
                "type": "DISCOUNT_VOUCHER",
            },
            "publication": {
                "vouchers_id": ["v_b", "v_c"],
                "voucher": {"id": "v_b", "code": "B-1", "type": "GIFT_VOUCHER"},
            },
        },
        {
            "vouchers.v_a": {
                "code": "A-1",
                "campaign_id": "camp_a",
                "type": "DISCOUNT_VOUCHER",
                "roles": [],
                "published_at": iso(100),
                "deleted_at": None,
            },
            "vouchers.v_b.code": "B-1",
            "vouchers.v_b.type": "GIFT_VOUCHER",
            "vouchers.v_b.published_at": iso(100),
            "vouchers.v_c.published_at": iso(100),
            "vouchers.v_c.code": None,
        },
    ),
    # counters
    Case(
        T.VALIDATION_SUCCEEDED,
        CUST,
        {"validations": {"succeeded": 2, "failed": 0}},
        before=((T.VALIDATION_SUCCEEDED, CUST),),
    ),
    Case(T.VALIDATION_FAILED, CUST, {"validations": {"succeeded": 0, "failed": 1}}),
    Case(
        T.REDEMPTION_SUCCEEDED,
        loyalty_balance(CARD, 50, points=-50),
        {
            "redemptions": {
                "succeeded": 1,
                "failed": 0,
                "rollback_succeeded": 0,
                "rollback_failed": 0,
            },
            f"loyalty.cards.{CARD}.balance": 50,
        },
        before=(POINTS_100,),
    ),
    Case(
        T.REDEMPTION_FAILED,
        CUST,
        {
            "redemptions": {
                "succeeded": 0,
                "failed": 1,
                "rollback_succeeded": 0,
                "rollback_failed": 0,
            }
        },
    ),
    Case(
        T.REDEMPTION_ROLLBACK_SUCCEEDED,
        loyalty_balance(CARD, 100, points=50),
        {
            "redemptions": {
                "succeeded": 1,
                "failed": 0,
                "rollback_succeeded": 1,
                "rollback_failed": 0,
            },
            f"loyalty.cards.{CARD}.balance": 100,
        },
        before=((T.REDEMPTION_SUCCEEDED, loyalty_balance(CARD, 50, points=50)),),
    ),
    Case(
        T.REDEMPTION_ROLLBACK_FAILED,
        CUST,
        {
            "redemptions": {
                "succeeded": 1,
                "failed": 0,
                "rollback_succeeded": 0,
                "rollback_failed": 1,
            }
        },
        before=((T.REDEMPTION_SUCCEEDED, CUST),),
    ),
    # orders
    Case(
        T.ORDER_CREATED,
        {"order": {"id": "ord_1", "amount": 1000, "total_amount": 900, "source_id": "o-1"}},
        {
            "orders.ord_1": {
                "status": "CREATED",
                "source_id": "o-1",
                "amount": 1000,
                "total_amount": 900,
                "updated_at": iso(100),
            }
        },
    ),
    Case(
        T.ORDER_PROCESSING,
        {"order": {"id": "ord_1"}},
        {"orders.ord_1.status": "PROCESSING", "orders.ord_1.amount": 1000},
        before=((T.ORDER_CREATED, {"order": {"id": "ord_1", "amount": 1000}}),),
    ),
    Case(
        T.ORDER_PAID,
        {"order": {"id": "ord_1", "total_amount": 800}},
        {"orders.ord_1.status": "PAID", "orders.ord_1.total_amount": 800},
    ),
    Case(
        T.ORDER_FULFILLED,
        {"order": {"id": "ord_1"}},
        {"orders.ord_1.status": "FULFILLED", "orders.ord_1.updated_at": iso(100)},
        before=((T.ORDER_PAID, {"order": {"id": "ord_1", "status": "PAID"}}),),
    ),
    Case(T.ORDER_CANCELED, {"order": {"id": "ord_1"}}, {"orders.ord_1.status": "CANCELED"}),
    Case(
        T.ORDER_UPDATED,
        {"order": {"id": "ord_1", "amount": 2000}},
        {"orders.ord_1.status": "PAID", "orders.ord_1.amount": 2000},
        before=((T.ORDER_PAID, {"order": {"id": "ord_1", "amount": 1000}}),),
    ),
    # reward redemptions
    Case(
        T.REWARD_REDEMPTIONS_CREATED,
        merge(
            {"reward_redemption": {"id": "rr_1", "state": "PENDING"}, "reward": {"id": "rew_1"}},
            loyalty_voucher(CARD, balance=70, points=370),
        ),
        {
            "reward_redemptions.rr_1": {
                "state": "CREATED",
                "reward_id": "rew_1",
                "updated_at": iso(100),
            },
            f"loyalty.cards.{CARD}.balance": 70,
        },
    ),
    Case(
        T.REWARD_REDEMPTIONS_PENDING,
        {"reward_redemption": {"id": "rr_1"}},
        {
            "reward_redemptions.rr_1": {
                "state": "PENDING",
                "reward_id": "rew_1",
                "updated_at": iso(100),
            }
        },
        before=(
            (
                T.REWARD_REDEMPTIONS_CREATED,
                {"reward_redemption": {"id": "rr_1"}, "reward": {"id": "rew_1"}},
            ),
        ),
    ),
    Case(
        T.REWARD_REDEMPTIONS_COMPLETED,
        {"reward_redemption": {"id": "rr_1"}, "reward": {"id": "rew_1"}},
        {"reward_redemptions.rr_1.state": "COMPLETED"},
    ),
    Case(
        T.REWARD_REDEMPTIONS_ROLLEDBACK,
        merge(
            {"reward_redemption": {"id": "rr_1"}, "reward": {"id": "rew_1"}},
            loyalty_balance(CARD, 100, points=100),
        ),
        {
            "reward_redemptions.rr_1": {
                "state": "ROLLEDBACK",
                "reward_id": "rew_1",
                "updated_at": iso(100),
            },
            f"loyalty.cards.{CARD}.balance": 100,
            "gaps": [],
        },
        before=(
            (
                T.REWARD_REDEMPTIONS_COMPLETED,
                merge(
                    {"reward_redemption": {"id": "rr_1"}, "reward": {"id": "rew_1"}},
                    loyalty_balance(CARD, 0, points=0),
                ),
            ),
        ),
    ),
    # tiers
    Case(
        T.LOYALTY_TIER_JOINED,
        {"campaign": {"id": CAMP}, "loyalty_tier": tier("ltr_s", "Silver", expires="2026-01-31")},
        {
            f"loyalty.tiers.{CAMP}": {
                "tier_id": "ltr_s",
                "tier_name": "Silver",
                "since": iso(100),
                "expires_at": "2026-01-31",
            }
        },
    ),
    Case(
        T.LOYALTY_TIER_UPGRADED,
        {
            "campaign": {"id": CAMP},
            "loyalty_tier_from": tier("ltr_s", "Silver"),
            "loyalty_tier_to": tier("ltr_g", "Gold", expires="2026-06-30"),
        },
        {
            f"loyalty.tiers.{CAMP}": {
                "tier_id": "ltr_g",
                "tier_name": "Gold",
                "since": iso(100),
                "expires_at": "2026-06-30",
            }
        },
        before=(JOINED_SILVER,),
    ),
    Case(
        T.LOYALTY_TIER_DOWNGRADED,
        {"loyalty_tier_from": tier("ltr_g", "Gold"), "loyalty_tier_to": tier("ltr_b", "Bronze")},
        {
            f"loyalty.tiers.{CAMP}": {
                "tier_id": "ltr_b",
                "tier_name": "Bronze",
                "since": iso(100),
                "expires_at": None,
            }
        },
        before=(JOINED_SILVER,),
    ),
    Case(
        T.LOYALTY_TIER_PROLONGED,
        {"campaign": {"id": CAMP}, "loyalty_tier": tier("ltr_s", "Silver", expires="2027-01-31")},
        {
            f"loyalty.tiers.{CAMP}": {
                "tier_id": "ltr_s",
                "tier_name": "Silver",
                "since": iso(0),
                "expires_at": "2027-01-31",
            }
        },
        before=(JOINED_SILVER,),
    ),
    Case(
        T.LOYALTY_TIER_EXPIRATION_CHANGED,
        {"campaign": {"id": CAMP}, "expiration_date": "2028-12-31"},
        {
            f"loyalty.tiers.{CAMP}": {
                "tier_id": "ltr_s",
                "tier_name": "Silver",
                "since": iso(0),
                "expires_at": "2028-12-31",
            }
        },
        before=(JOINED_SILVER,),
    ),
    Case(
        T.LOYALTY_TIER_LEFT,
        {"campaign": {"id": CAMP}, "loyalty_tier": tier("ltr_s", "Silver")},
        {
            "loyalty.tiers": {
                "camp_other": {
                    "tier_id": "ltr_o",
                    "tier_name": "Other",
                    "since": iso(1),
                    "expires_at": None,
                }
            }
        },
        before=(
            JOINED_SILVER,
            (
                T.LOYALTY_TIER_JOINED,
                {"loyalty_tier": tier("ltr_o", "Other", campaign="camp_other")},
            ),
        ),
    ),
    # vouchers
    Case(
        T.HOLDER_ASSIGNMENT_CREATED,
        {
            "holder": {"redeemable_id": "v_ref", "holder_role": "REFERRER"},
            "voucher": {"id": "v_ref", "code": "REF-1", "type": "DISCOUNT_VOUCHER"},
        },
        {"vouchers.v_ref.roles": ["OWNER", "REFERRER"], "vouchers.v_ref.code": "REF-1"},
        before=(
            (
                T.HOLDER_ASSIGNMENT_CREATED,
                {"holder": {"redeemable_id": "v_ref", "holder_role": "OWNER"}},
            ),
        ),
    ),
    Case(
        T.HOLDER_ASSIGNMENT_DELETED,
        {"holder": {"redeemable_id": "v_ref", "holder_role": "OWNER"}},
        {"vouchers.v_ref.roles": ["REFERRER"]},
        before=(
            (
                T.HOLDER_ASSIGNMENT_CREATED,
                {"holder": {"redeemable_id": "v_ref", "holder_role": "OWNER"}},
            ),
            (
                T.HOLDER_ASSIGNMENT_CREATED,
                {"holder": {"redeemable_id": "v_ref", "holder_role": "REFERRER"}},
            ),
        ),
    ),
    # messaging: every channel and outcome, after one earlier `sent` on the same channel
    *[
        Case(
            f"customer.{ch}.{outcome}",
            CUST,
            {
                f"messaging.{ch}": {
                    "status": outcome,
                    "at": iso(100),
                    "sent": 1 + (outcome == "sent"),
                    "failed": int(outcome == "failed"),
                    "recovered": int(outcome == "recovered"),
                }
            },
            before=((f"customer.{ch}.sent", CUST),),
        )
        for ch in MESSAGING_CHANNELS
        for outcome in ("sent", "failed", "recovered")
    ],
]

# Types whose own effect is nothing beyond `activities`.
NOTHING_ELSE: list[Case] = [
    Case(
        T.PUBLICATION_FAILED,
        {"customer": {"id": CUSTOMER}, "voucher": {"id": "v_x", "code": "X"}},
        {},
        before=(CREATED, POINTS_100),
    ),
    Case(
        T.LOYALTY_UPDATED,
        {"customer": {"id": CUSTOMER}, "campaign": {"id": CAMP}},
        {},
        before=(CREATED, POINTS_100, JOINED_SILVER),
    ),
]


def test_every_type_has_a_case() -> None:
    covered = {c.type for c in CASES} | {c.type for c in NOTHING_ELSE}
    assert covered == KNOWN_TYPES
    assert len(KNOWN_TYPES) == 74
    assert set(EFFECTS) == KNOWN_TYPES


@pytest.mark.parametrize("case", CASES, ids=str)
def test_effect(case: Case) -> None:
    j = _fold_case(case)
    for path, expected in case.expect.items():
        assert dig(j, path) == expected, path
    assert j["activities"]["count"] == len(case.before) + 1
    assert j["activities"]["unrecognized"] == 0


@pytest.mark.parametrize("case", NOTHING_ELSE, ids=str)
def test_effect_is_nothing_beyond_activities(case: Case) -> None:
    _activities_only(case)


# --- messaging sequences ---------------------------------------------------------------


@pytest.mark.parametrize("channel", MESSAGING_CHANNELS)
def test_messaging_counters_and_latest_status(channel: str) -> None:
    outcomes = ["sent", "failed", "recovered", "sent", "failed"]
    acts = [act(f"customer.{channel}.{o}", CUST, t=i) for i, o in enumerate(outcomes)]
    j = state_json(reversed(acts))
    assert j["messaging"] == {
        channel: {"status": "failed", "at": iso(4), "sent": 2, "failed": 2, "recovered": 1}
    }


# --- targeted rules --------------------------------------------------------------------


def test_points_transferred_changes_only_the_card_it_names() -> None:
    src = act(T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance(CARD, 100, points=100), t=0)
    dst = act(T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance(CARD2, 10, points=10), t=1)
    transfer = act(
        T.VOUCHER_LOYALTY_CARD_POINTS_TRANSFERRED,
        merge(
            loyalty_balance(CARD, 75, points=-25, total=100),
            {
                "voucher": {
                    "id": CARD2,
                    "type": "LOYALTY_CARD",
                    "loyalty_card": {"balance": 35, "points": 35},
                }
            },
        ),
        t=2,
    )
    before = state_json([src, dst])
    after = state_json([src, dst, transfer])
    assert after["loyalty"]["cards"][CARD2] == before["loyalty"]["cards"][CARD2]
    assert after["loyalty"]["cards"][CARD]["balance"] == 75
    assert after["loyalty"]["points"] == 85


def test_voucher_deleted_removes_gift_card_too() -> None:
    g = act(T.VOUCHER_GIFT_BALANCE_ADDED, gift_balance(GIFT, 500, amount=500), t=0)
    d = act(T.VOUCHER_DELETED, gift_voucher(GIFT, 500, 500), t=1)
    s = run(g, d)
    assert s.gift_cards == {}
    assert s.vouchers[GIFT].deleted_at is not None
    assert s.to_json()["vouchers"][GIFT]["deleted_at"] == iso(1)


def test_points_expired_uses_block_expired_points_when_present() -> None:
    data = merge(
        {"points": 30},
        loyalty_balance(CARD, 70, points=-30, total=100),
        loyalty_voucher(CARD, balance=70, points=100, expired_points=45),
    )
    s = run(act(T.VOUCHER_LOYALTY_CARD_POINTS_EXPIRED, data, t=0))
    assert s.cards[CARD].expired_points == 45
    assert s.cards[CARD].balance == 70


def test_pending_points_total_wins_over_voucher_block() -> None:
    data = merge(pending("lopp_1", CARD, total=99), loyalty_voucher(CARD, pending_points=3))
    s = run(act(T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED, data))
    assert s.cards[CARD].pending_points == 99


def test_absent_pending_points_in_later_block_keep_the_known_value() -> None:
    a = act(T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED, pending("lopp_1", CARD, total=10), t=0)
    b = act(
        T.VOUCHER_LOYALTY_CARD_POINTS_ADDED,
        merge(loyalty_balance(CARD, 20, points=20), loyalty_voucher(CARD, balance=20)),
        t=1,
    )
    s = run(b, a)
    assert (s.cards[CARD].pending_points, s.cards[CARD].balance) == (10, 20)


def test_later_snapshot_wins_whatever_the_arrival_order() -> None:
    early = act(T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance(CARD, 100, points=100), t=0)
    late = act(T.REDEMPTION_SUCCEEDED, loyalty_balance(CARD, 40, points=-60), t=5)
    assert run(late, early).cards[CARD].balance == 40
    assert run(early, late).cards[CARD].balance == 40
    assert run(early).cards[CARD].balance == 100


def test_unknown_type_is_accepted_counted_and_changes_nothing_else() -> None:
    base = [
        act(*CREATED, t=0),
        act(*POINTS_100, t=1),
    ]
    unknown = parse_activity(
        record(
            "customer.brand_new_thing",
            merge(CUST, loyalty_balance(CARD, 999, points=899), {"segment": {"id": "seg_x"}}),
            t=2,
        )
    )
    assert not unknown.recognized
    before = state_json(base)
    after = state_json([*base, unknown])
    assert without_activities(after) == without_activities(before)
    assert after["activities"]["unrecognized"] == 1
    assert after["activities"]["count"] == 3
    assert after["activities"]["last_id"] == unknown.id
    assert before["activities"]["unrecognized"] == 0


def test_unknown_type_with_unexpected_value_types_is_still_accepted() -> None:
    """Voucherify adds types: a new type's payload may reuse a key with another shape."""
    unknown = parse_activity(
        record(
            "customer.brand_new_thing",
            {"customer": {"id": "cust_from_payload"}, "balance": "abc", "order": "ord_1"},
            customer_id=None,
        )
    )
    assert unknown.customer_id == "cust_from_payload"
    j = fold([unknown]).to_json()
    assert j["activities"]["unrecognized"] == 1
    assert j["loyalty"]["cards"] == {}
    assert j["orders"] == {}


# --- balance continuity ----------------------------------------------------------------


def test_balance_gap_names_both_activities() -> None:
    a = act(
        T.VOUCHER_LOYALTY_CARD_POINTS_ADDED,
        loyalty_balance(CARD, 100, points=100),
        id="evcus_a",
        t=0,
    )
    # 100 + 50 should be 150; the card reports 200: 50 points arrived in a missing activity.
    b = act(
        T.VOUCHER_LOYALTY_CARD_POINTS_ADDED,
        loyalty_balance(CARD, 200, points=50),
        id="evcus_b",
        t=10,
    )
    j = state_json([b, a])
    assert j["gaps"] == [
        {
            "card_id": CARD,
            "kind": "loyalty_card",
            "activity_id": "evcus_b",
            "at": iso(10),
            "previous_activity_id": "evcus_a",
            "previous_balance": 100,
            "delta": 50,
            "balance": 200,
            "missing": 50,
        }
    ]
    assert j["loyalty"]["cards"][CARD]["balance"] == 200


def test_gift_card_gap_uses_amount() -> None:
    a = act(T.VOUCHER_GIFT_BALANCE_ADDED, gift_balance(GIFT, 1000, amount=1000), id="g1", t=0)
    b = act(T.REDEMPTION_SUCCEEDED, gift_balance(GIFT, 500, amount=-300), id="g2", t=1)
    (gap,) = run(a, b).gaps
    assert (gap.kind, gap.activity_id, gap.previous_activity_id) == ("gift_card", "g2", "g1")
    assert (gap.previous_balance, gap.delta, gap.balance, gap.missing) == (1000, -300, 500, -200)


def test_consistent_sequence_has_no_gap() -> None:
    acts = [
        act(T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance(CARD, 100, points=100), t=0),
        act(T.REDEMPTION_SUCCEEDED, loyalty_balance(CARD, 60, points=-40), t=1),
        act(
            T.VOUCHER_LOYALTY_CARD_POINTS_EXPIRED,
            merge({"points": 10}, loyalty_balance(CARD, 50, points=-10)),
            t=2,
        ),
        act(T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance(CARD, 75, points=25), t=3),
        act(T.VOUCHER_GIFT_BALANCE_ADDED, gift_balance(GIFT, 300, amount=300), t=4),
        act(T.REDEMPTION_SUCCEEDED, gift_balance(GIFT, 100, amount=-200), t=5),
    ]
    s = run(*reversed(acts))
    assert s.gaps == []
    assert (s.cards[CARD].balance, s.gift_cards[GIFT].balance) == (75, 100)


def test_gap_names_the_activity_that_set_the_previous_balance() -> None:
    """Activities that touch the card without a balance (pending entries, pending total)
    are not the previous balance's source."""
    a = act(
        T.VOUCHER_LOYALTY_CARD_POINTS_ADDED,
        loyalty_balance(CARD, 100, points=100),
        id="evcus_a",
        t=0,
    )
    p = act(
        T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_CANCELED,
        pending("lopp_1", CARD, total=0),
        id="evcus_p",
        t=1,
    )
    b = act(
        T.VOUCHER_LOYALTY_CARD_POINTS_ADDED,
        loyalty_balance(CARD, 300, points=100),
        id="evcus_b",
        t=2,
    )
    (gap,) = run(a, p, b).gaps
    assert (gap.activity_id, gap.previous_activity_id, gap.missing) == ("evcus_b", "evcus_a", 100)


# --- tiers -----------------------------------------------------------------------------


def test_tier_left_only_removes_the_tier_it_names() -> None:
    silver = act(*JOINED_SILVER, t=0)
    gold = act(
        T.LOYALTY_TIER_UPGRADED,
        {"campaign": {"id": CAMP}, "loyalty_tier_to": tier("ltr_g", "Gold")},
        t=5,
    )
    left_silver = act(
        T.LOYALTY_TIER_LEFT,
        {"campaign": {"id": CAMP}, "loyalty_tier": tier("ltr_s", "Silver")},
        t=6,
    )
    s = run(silver, gold, left_silver)
    assert s.to_json()["loyalty"]["tiers"] == {
        CAMP: {"tier_id": "ltr_g", "tier_name": "Gold", "since": iso(5), "expires_at": None}
    }
    left_gold = act(T.LOYALTY_TIER_LEFT, {"loyalty_tier": tier("ltr_g", "Gold")}, t=7)
    assert run(silver, gold, left_silver, left_gold).tiers == {}


def test_tier_campaign_falls_back_to_the_tier_campaign_id() -> None:
    s = run(act(T.LOYALTY_TIER_JOINED, {"loyalty_tier": tier("ltr_x", "X", campaign="camp_x")}))
    assert list(s.tiers) == ["camp_x"]


def test_tier_prolonged_without_a_held_tier_sets_it() -> None:
    s = run(
        act(
            T.LOYALTY_TIER_PROLONGED,
            {
                "campaign": {"id": CAMP},
                "loyalty_tier": tier("ltr_s", "Silver", expires="2026-02-02"),
            },
            t=3,
        )
    )
    assert s.to_json()["loyalty"]["tiers"][CAMP] == {
        "tier_id": "ltr_s",
        "tier_name": "Silver",
        "since": iso(3),
        "expires_at": "2026-02-02",
    }


# --- lifecycle and fold order ------------------------------------------------------------


def test_deleted_then_created_later_is_active_again() -> None:
    c1 = act(*CREATED, t=0)
    d = act(T.DELETED, CUST, t=10)
    c2 = act(T.CREATED, {"customer": {"id": CUSTOMER, "name": "Ann 2"}}, t=20)
    s = run(c2, d, c1)
    j = s.to_json()["profile"]
    assert j["status"] == "active"
    assert j["name"] == "Ann 2"
    assert j["created_at"] == iso(20)
    assert j["deleted_at"] is None
    assert run(c1, d).profile.status == "deleted"


def test_created_ranks_before_and_deleted_after_everything_at_the_same_instant() -> None:
    # Ids sort the other way round: the rank must decide, not the id.
    deleted = act(T.DELETED, CUST, id="evcus_a", t=5)
    other = act(T.UPDATED, {"customer": {"id": CUSTOMER, "name": "Mid"}}, id="evcus_0", t=5)
    created = act(T.CREATED, {"customer": {"id": CUSTOMER, "name": "New"}}, id="evcus_z", t=5)
    assert [a.key[1] for a in (created, other, deleted)] == [0, 1, 2]
    for order in ([deleted, other, created], [created, deleted, other], [other, created, deleted]):
        s = run(*order)
        assert s.profile.status == "deleted"
        assert s.profile.name == "Mid"
        assert s.activities.last_id == "evcus_a"


def test_same_instant_same_rank_folds_by_id() -> None:
    b = act(T.SEGMENT_LEFT, {"segment": {"id": "seg_1"}}, id="evcus_b", t=5)
    a = act(T.SEGMENT_ENTERED, {"segment": {"id": "seg_1", "name": "S"}}, id="evcus_a", t=5)
    assert run(b, a).segments == {}
    a2 = act(T.SEGMENT_ENTERED, {"segment": {"id": "seg_1", "name": "S"}}, id="evcus_c", t=5)
    assert set(run(b, a2).segments) == {"seg_1"}


def test_repeated_delivery_counts_once() -> None:
    a = act(T.CUSTOM_EVENT, {"event": {"type": "x"}}, id="evcus_same", t=0)
    again = parse_activity(a.to_record())
    s = run(a, again, a)
    assert s.custom_events["x"].count == 1
    assert s.activities.count == 1


# --- what each effect declares it writes ------------------------------------------------

# Where each declared part lies in the state's JSON.
SECTION_PATHS = {
    "profile": "profile",
    "referrals": "referrals",
    "custom_events": "custom_events",
    "messaging": "messaging",
    "redemptions": "redemptions",
    "validations": "validations",
    "tiers": "loyalty.tiers",
    "gaps": "gaps",
}
ENTRY_PATHS = {
    "card": "loyalty.cards",
    "gift": "gift_cards",
    "order": "orders",
    "segment": "segments",
    "voucher": "vouchers",
    "reward_redemption": "reward_redemptions",
}
# What no effect writes: the fold keeps the counters for every activity, the points are
# the sum of the cards, and the rest never changes.
UNDECLARED = {"customer_id", "as_of", "known_at", "activities", "loyalty.points"}


def _written(before: Json, after: Json) -> set[tuple[str, str]]:
    """The parts that differ: `(section, "")` or `(entry kind, id)`."""
    out: set[tuple[str, str]] = set()
    for section, path in SECTION_PATHS.items():
        if dig(before, path) != dig(after, path):
            out.add((section, ""))
    for kind, path in ENTRY_PATHS.items():
        b, a = dig(before, path), dig(after, path)
        out.update((kind, key) for key in b.keys() | a.keys() if b.get(key) != a.get(key))
    parts = {*SECTION_PATHS.values(), *ENTRY_PATHS.values(), *UNDECLARED}
    rest = {k for k in before.keys() | after.keys() if k != "loyalty"} | {
        f"loyalty.{k}" for k in before["loyalty"].keys() | after["loyalty"].keys()
    }
    assert rest <= parts, rest - parts  # a part of the state this test does not know
    if before["loyalty"]["points"] != after["loyalty"]["points"]:
        assert any(kind == "card" for kind, _ in out), "the points changed, and no card"
    return out


def _check_declared(s: CustomerState, a: Activity) -> None:
    """Fold `a` onto `s`: what it changes is within what its type's effects declare."""
    before = s.to_json()
    apply(s, a)
    steps = STEPS.get(a.type, ())
    w = Writes.of(steps)
    declared_parts = {(section, "") for section in w.sections} | w.named(a.payload)
    undeclared = _written(before, s.to_json()) - declared_parts
    assert not undeclared, (a.type, [declared(e) for e in steps], undeclared)


def test_every_effect_the_fold_runs_declares_what_it_writes() -> None:
    undeclared = set()
    for steps in STEPS.values():
        for e in steps:
            try:
                declared(e)
            except LookupError:
                undeclared.add(e.__qualname__)
    assert not undeclared
    assert set(STEPS) == set(EFFECTS)
    with pytest.raises(LookupError, match="declares nothing"):
        declared(lambda s, a: None)


@pytest.mark.parametrize("case", [*CASES, *NOTHING_ELSE], ids=str)
def test_an_effect_changes_only_what_it_declares(case: Case) -> None:
    s = CustomerState(CUSTOMER)
    for i, (t, d) in enumerate(case.before):
        _check_declared(s, act(t, d, t=i))
    _check_declared(s, act(case.type, case.data, id="evcus_subject", t=100))


def test_each_sample_changes_only_what_its_type_declares() -> None:
    """Every bundled sample onto the empty state, then each again onto the state all of
    them made (entries there to change and remove), in every order of the two passes."""
    names = sample_names()
    for first in (names, names[::-1]):
        s = CustomerState(CUSTOMER)
        for i, name in enumerate([*first, *names]):
            _check_declared(s, parse_activity(sample_record(name, id=f"evcus_{i}", t=i)))
        _check_declared(CustomerState(CUSTOMER), parse_activity(sample_record(first[0])))
        for name in names:
            _check_declared(CustomerState(CUSTOMER), parse_activity(sample_record(name)))


@SETTINGS
@given(records=histories())
def test_any_history_changes_only_what_its_effects_declare(records: list[Json]) -> None:
    acts = ordered(parse_activity(r) for r in records)
    s = CustomerState(acts[0].customer_id if acts else CUSTOMER)
    for a in acts:
        _check_declared(s, a)
