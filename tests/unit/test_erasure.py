"""`domain.erasure.scrub`: the customer's profile fields go, wherever a customer object of
hers sits in the payload, and her values go from free text; ids, amounts, points, tiers,
segments, times and other people's data stay, so every bundled sample folds to the same
state but for the profile. Scrubbing is deterministic and idempotent (a redelivery scrubbed
on the way in matches the stored one)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from custate.domain import fold, parse_activity
from custate.domain.erasure import (
    ERASED,
    ERASED_METADATA,
    personal_values,
    scrub,
    scrub_text,
)

from .builders import load_sample, sample_names, sample_record

ME = "cust_me"


def test_profile_fields_of_her_customer_objects_are_erased_everywhere() -> None:
    data: dict[str, Any] = {
        "customer": {
            "id": ME,
            "name": "Ann Lee",
            "email": "ann@lee.example",
            "phone": None,
            "metadata": {"vip": "gold"},
            "address": {"line_1": "1 Main St"},
            "object": "customer",
        },
        "order": {
            "id": "ord_1",
            "amount": 100,
            "customer": {"id": ME, "name": "Ann Lee", "object": "customer"},
            "metadata": {"note": "deliver to Ann Lee at 1 Main St"},
        },
        "referrer": {"id": "cust_other", "name": "Bob Ray", "object": "customer"},
    }
    out = scrub(data, ME)
    assert out["customer"] == {
        "id": ME,
        "name": ERASED,
        "email": ERASED,
        "phone": None,  # nothing to erase: null stays null
        "metadata": ERASED_METADATA,
        "address": ERASED,
        "object": "customer",
    }
    assert out["order"]["customer"] == {"id": ME, "name": ERASED, "object": "customer"}
    assert out["order"]["metadata"]["note"] == f"deliver to {ERASED} at {ERASED}"
    assert (out["order"]["id"], out["order"]["amount"]) == ("ord_1", 100)
    assert out["referrer"] == data["referrer"]  # another person's data
    assert data["customer"]["name"] == "Ann Lee"  # the input is left as it was
    assert scrub(out, ME) == out  # idempotent


def test_identifiers_are_never_rewritten_by_value() -> None:
    data = {
        "customer": {"id": ME, "name": "gold_tier"},
        "loyalty_tier": {"id": "gold_tier", "name": "Gold"},
        "segment": {"id": "seg_1", "name": "the gold_tier fans"},
    }
    out = scrub(data, ME)
    assert out["loyalty_tier"]["id"] == "gold_tier"
    assert out["segment"]["name"] == f"the {ERASED} fans"


def test_values_known_from_elsewhere_are_found_and_short_ones_only_whole() -> None:
    assert scrub({"note": "call +44 1"}, ME, {"+44 1"}) == {"note": f"call {ERASED}"}
    assert scrub_text("UK", {"UK"}) == ERASED
    assert scrub_text("UKRAINE", {"UK"}) == "UKRAINE"  # too short to search for inside text
    assert personal_values({"customer": {"id": ME, "name": "Ann", "email": None}}, ME) == {"Ann"}


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_folds_the_same_but_for_the_profile(name: str) -> None:
    record = sample_record(name, t=5)
    customer = load_sample(name)["customer"]["id"]
    scrubbed = copy.deepcopy(record)
    scrubbed["data"] = scrub(record["data"], customer)
    before = fold([parse_activity(record)]).to_json()
    after = fold([parse_activity(scrubbed)]).to_json()
    profile: dict[str, Any] = after.pop("profile")
    before.pop("profile")
    assert after == before
    original = load_sample(name)["customer"]
    for field in ("name", "email", "phone"):
        if original.get(field) is not None and name.startswith(
            ("customer.created", "customer.updated")
        ):
            assert profile[field] == ERASED
    assert not [v for v in personal_values(record["data"], customer) if v in str(scrubbed)]
