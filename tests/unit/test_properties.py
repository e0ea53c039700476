"""Property tests of the fold over generated histories (SEMANTICS §2): order and repeats do
not matter, as_of is a filter, folding continues from a checkpoint, state JSON round-trips."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custate.adapters.codecs import delta, paged
from custate.adapters.codecs import state as snapshot
from custate.domain import (
    Activity,
    ActivityType,
    CustomerState,
    fold,
    fold_all,
    format_time,
    ordered,
    parse_activity,
)
from custate.domain.activity_types import MESSAGING_CHANNELS

from .builders import T0, Json, gift_balance, loyalty_balance, loyalty_voucher, merge, pending, tier

T = ActivityType
CUSTOMERS = ("cust_a", "cust_b", "cust_c")
CARDS = ("v_card1", "v_card2")
GIFTS = ("v_gift1",)
CAMPAIGNS = ("camp_1", "camp_2")
TIERS = (("ltr_s", "Silver"), ("ltr_g", "Gold"), ("ltr_p", "Platinum"))
SEGMENTS = ("seg_1", "seg_2", "seg_3")
ORDERS = ("ord_1", "ord_2")
PENDING = ("lopp_1", "lopp_2", "lopp_3")

# The fold's properties (arrival order, duplicates, cuts in time, going on from a
# checkpoint) get the most examples; folding on a copy and the stored forms' round trips,
# which need the state's shapes covered rather than many orders, half as many.
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STORED_FORMS = settings(SETTINGS, max_examples=100)

small = st.integers(min_value=-500, max_value=500)
amount = st.integers(min_value=0, max_value=5000)
dates = st.sampled_from(["2025-06-30", "2025-12-31", "2026-03-31"])


def _names(draw: st.DrawFn) -> Json:
    return {
        "id": "ignored",
        **draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.sampled_from(["Ann", "Bea", None]),
                    "email": st.sampled_from(["a@x.io", "b@x.io", None]),
                    "phone": st.sampled_from(["+1", None]),
                    "source_id": st.sampled_from(["src-1", "src-2"]),
                    "metadata": st.sampled_from([{"k": 1}, {"k": [1, "b"]}, None]),
                },
            )
        ),
    }


@st.composite
def payloads(draw: st.DrawFn) -> tuple[str, Json]:
    """One realistic (type, payload) across many families of activity types."""
    family = draw(st.integers(min_value=0, max_value=16))
    if family == 0:
        kind = draw(st.sampled_from([T.CREATED, T.UPDATED, T.CONFIRMED, T.DELETED]))
        return kind, {"customer": _names(draw)}
    if family in (1, 2):
        kind = draw(
            st.sampled_from(
                [
                    T.VOUCHER_LOYALTY_CARD_POINTS_ADDED,
                    T.VOUCHER_LOYALTY_CARD_POINTS_TRANSFERRED,
                    T.VOUCHER_LOYALTY_CARD_POINTS_ACTIVATED,
                    T.REWARDED_LOYALTY_POINTS,
                    T.REDEMPTION_SUCCEEDED,
                    T.REDEMPTION_ROLLBACK_SUCCEEDED,
                ]
            )
        )
        card = draw(st.sampled_from(CARDS))
        data = loyalty_balance(card, draw(amount), points=draw(small), total=draw(amount))
        if draw(st.booleans()):
            data = merge(
                data,
                loyalty_voucher(
                    card,
                    campaign=draw(st.sampled_from(CAMPAIGNS)),
                    balance=draw(amount),
                    points=draw(amount),
                    pending_points=draw(st.none() | amount),
                    next_expiration_date=draw(st.none() | dates),
                ),
            )
        return kind, data
    if family == 3:
        kind = draw(
            st.sampled_from(
                [T.REWARDED, T.REWARD_REDEMPTIONS_COMPLETED, T.REWARD_REDEMPTIONS_CREATED]
            )
        )
        card = draw(st.sampled_from(CARDS))
        data = loyalty_voucher(card, balance=draw(amount), points=draw(amount))
        if kind != T.REWARDED:
            data["reward_redemption"] = {"id": draw(st.sampled_from(["rr_1", "rr_2"]))}
            data["reward"] = {"id": draw(st.sampled_from(["rew_1", "rew_2"]))}
        return kind, data
    if family == 4:
        kind = draw(st.sampled_from([T.VOUCHER_GIFT_BALANCE_ADDED, T.REDEMPTION_SUCCEEDED]))
        return kind, gift_balance(draw(st.sampled_from(GIFTS)), draw(amount), amount=draw(small))
    if family == 5:
        kind = draw(
            st.sampled_from(
                [
                    T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED,
                    T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_UPDATED,
                    T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ACTIVATED,
                    T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_CANCELED,
                ]
            )
        )
        return kind, pending(
            draw(st.sampled_from(PENDING)),
            draw(st.sampled_from(CARDS)),
            points=draw(amount),
            activates_at=draw(dates),
            order_id=draw(st.sampled_from(ORDERS)),
            total=draw(st.none() | amount),
        )
    if family == 6:
        card = draw(st.sampled_from(CARDS))
        return T.VOUCHER_LOYALTY_CARD_POINTS_EXPIRED, merge(
            {"points": draw(st.integers(1, 100))},
            {
                "transaction": {
                    "voucher_id": card,
                    "details": loyalty_balance(card, draw(amount), points=draw(small)),
                }
            },
        )
    if family == 7:
        kind = draw(
            st.sampled_from([T.LOYALTY_TIER_JOINED, T.LOYALTY_TIER_LEFT, T.LOYALTY_TIER_PROLONGED])
        )
        tid, name = draw(st.sampled_from(TIERS))
        return kind, {
            "campaign": {"id": draw(st.sampled_from(CAMPAIGNS))},
            "loyalty_tier": tier(tid, name, expires=draw(st.none() | dates)),
        }
    if family == 8:
        kind = draw(
            st.sampled_from(
                [
                    T.LOYALTY_TIER_UPGRADED,
                    T.LOYALTY_TIER_DOWNGRADED,
                    T.LOYALTY_TIER_EXPIRATION_CHANGED,
                ]
            )
        )
        tid, name = draw(st.sampled_from(TIERS))
        camp = draw(st.sampled_from(CAMPAIGNS))
        if kind == T.LOYALTY_TIER_EXPIRATION_CHANGED:
            return kind, {"campaign": {"id": camp}, "expiration_date": draw(dates)}
        return kind, {
            "loyalty_tier_to": tier(tid, name, campaign=camp, expires=draw(st.none() | dates))
        }
    if family == 9:
        kind = draw(st.sampled_from([T.SEGMENT_ENTERED, T.SEGMENT_LEFT]))
        sid = draw(st.sampled_from(SEGMENTS))
        return kind, {"segment": {"id": sid, "name": sid.upper()}}
    if family == 10:
        kind = draw(
            st.sampled_from(
                [
                    T.ORDER_CREATED,
                    T.ORDER_PROCESSING,
                    T.ORDER_PAID,
                    T.ORDER_FULFILLED,
                    T.ORDER_CANCELED,
                    T.ORDER_UPDATED,
                ]
            )
        )
        order: Json = {"id": draw(st.sampled_from(ORDERS))}
        if draw(st.booleans()):
            order["amount"] = draw(amount)
        if draw(st.booleans()):
            order["status"] = draw(st.sampled_from(["PAID", "CANCELED"]))
        return kind, {"order": order}
    if family == 11:
        ch = draw(st.sampled_from(MESSAGING_CHANNELS))
        return f"customer.{ch}.{draw(st.sampled_from(['sent', 'failed', 'recovered']))}", {}
    if family == 12:
        return T.CUSTOM_EVENT, {"event": {"type": draw(st.sampled_from(["login", "sign_up"]))}}
    if family == 13:
        return draw(st.sampled_from(["customer.brand_new", "customer.loyalty.something"])), {
            "balance": draw(st.sampled_from(["odd", {"balance": 5}]))
        }
    if family == 14:
        vid = draw(st.sampled_from([*CARDS, *GIFTS, "v_disc"]))
        kind = draw(
            st.sampled_from(
                [
                    T.VOUCHER_DELETED,
                    T.PUBLICATION_SUCCEEDED,
                    T.HOLDER_ASSIGNMENT_CREATED,
                    T.HOLDER_ASSIGNMENT_DELETED,
                ]
            )
        )
        return kind, {
            "voucher": {"id": vid, "code": vid.upper()},
            "holder": {
                "redeemable_id": vid,
                "holder_role": draw(st.sampled_from(["OWNER", "REFERRER"])),
            },
        }
    if family == 15:
        return T.REFERRED, {
            "campaign": {"id": draw(st.sampled_from(CAMPAIGNS))},
            "referrer": {"id": draw(st.sampled_from(["cust_r1", "cust_r2"]))},
        }
    return draw(
        st.sampled_from(
            [
                T.VALIDATION_SUCCEEDED,
                T.VALIDATION_FAILED,
                T.REDEMPTION_FAILED,
                T.REDEMPTION_ROLLBACK_FAILED,
                T.PUBLICATION_FAILED,
                T.LOYALTY_UPDATED,
                T.REWARD_REDEMPTIONS_PENDING,
                T.REWARD_REDEMPTIONS_ROLLEDBACK,
            ]
        )
    ), {"reward_redemption": {"id": "rr_1"}}


@st.composite
def histories(draw: st.DrawFn, customers: int = 1) -> list[Json]:
    """Records with distinct ids, few distinct instants (collisions make rank and id
    decide) and ids whose order is unrelated to time."""
    n = draw(st.integers(min_value=0, max_value=25))
    ids = draw(
        st.lists(st.text("abcdef0123", min_size=1, max_size=4), min_size=n, max_size=n, unique=True)
    )
    out: list[Json] = []
    for i in range(n):
        kind, data = draw(payloads())
        cust = draw(st.sampled_from(CUSTOMERS[:customers]))
        if "customer" in data:
            data["customer"]["id"] = cust
        offset = timedelta(
            seconds=draw(st.integers(0, 6)), microseconds=draw(st.sampled_from([0, 1]))
        )
        rec: Json = {
            "id": f"evcus_{ids[i]}",
            "type": str(kind),
            "created_at": format_time(T0 + offset),
            "data": data,
        }
        if draw(st.booleans()) or "customer" not in data:
            rec["customer_id"] = cust
        out.append(rec)
    return out


def parse_all(records: list[Json]) -> list[Activity]:
    return [parse_activity(r) for r in records]


def states(records: list[Json], **kw: Any) -> dict[str, Json]:
    return {cid: s.to_json() for cid, s in fold_all(parse_all(records), **kw).items()}


@SETTINGS
@given(
    records=histories(customers=2),
    data=st.data(),
)
def test_any_order_and_any_repeats_fold_to_the_same_state(records: list[Json], data: Any) -> None:
    extra = data.draw(st.lists(st.sampled_from(records), max_size=10)) if records else []
    shuffled = data.draw(st.permutations([*records, *extra]))
    expected = states(records)
    got = states(shuffled)
    assert got == expected
    assert sum(j["activities"]["count"] for j in got.values()) == len(records)


@SETTINGS
@given(
    records=histories(), cut=st.integers(min_value=-1, max_value=7), micro=st.sampled_from([0, 1])
)
def test_state_as_of_is_the_fold_of_what_happened_by_then(
    records: list[Json], cut: int, micro: int
) -> None:
    as_of = T0 + timedelta(seconds=cut, microseconds=micro)
    acts = parse_all(records)
    cut_state = fold(acts, "cust_a", as_of=as_of)
    before = [a for a in acts if a.created_at <= as_of]
    filtered = fold(before, "cust_a", as_of=as_of)
    assert cut_state.to_json() == filtered.to_json()
    assert cut_state.activities.count == len(before)
    if before:
        assert cut_state.activities.last_at is not None
        assert cut_state.activities.last_at <= as_of


@SETTINGS
@given(records=histories(), data=st.data())
def test_folding_continues_from_a_checkpoint(records: list[Json], data: Any) -> None:
    acts = ordered(parse_all(records))
    split = data.draw(st.integers(min_value=0, max_value=len(acts)))
    full = fold(acts, "cust_a").to_json()
    checkpoint = fold(acts[:split], "cust_a")
    # the checkpoint goes through its stored form, as a stored checkpoint does
    restored = snapshot.load(snapshot.dump(checkpoint))
    rest = acts[split:]
    assert fold(data.draw(st.permutations(rest)), start=restored).to_json() == full


@STORED_FORMS
@given(records=histories(), data=st.data())
def test_folding_on_a_copy_leaves_the_original_as_it_was(records: list[Json], data: Any) -> None:
    """A cached checkpoint is folded on again and again through copies: no fold may change
    the original, and each copy must end where a fold from scratch ends."""
    acts = ordered(parse_all(records))
    split = data.draw(st.integers(min_value=0, max_value=len(acts)))
    original = fold(acts[:split], "cust_a")
    before = original.to_json()
    full = fold(acts, "cust_a").to_json()
    for _ in range(2):
        assert fold(acts[split:], start=original.copy()).to_json() == full
        assert original.to_json() == before


def _drop_some(state: CustomerState, data: Any) -> None:
    """Entries gone from the large maps (the fold never removes one today; the stored forms
    must not depend on that)."""
    for name in snapshot.LARGE_MAPS:
        entries = getattr(state, name)
        gone = data.draw(st.sets(st.sampled_from(sorted(entries)))) if entries else set()
        for k in gone:
            del entries[k]


@STORED_FORMS
@given(records=histories(), data=st.data())
def test_a_state_stored_against_a_base_reads_back_whole(records: list[Json], data: Any) -> None:
    """A re-fold's checkpoints are stored as what differs from a checkpoint stored in full
    (`delta.Base`): the one the re-fold started from, or, when that one is itself stored
    against a base, the same base. Read back and made whole with it, each is the state,
    also when entries are gone, and whether the fold went on from a copy or not."""
    acts = ordered(parse_all(records))
    one = data.draw(st.integers(min_value=0, max_value=len(acts)))
    two = data.draw(st.integers(min_value=one, max_value=len(acts)))
    full = fold(acts[:one], "cust_a")
    stored_full = snapshot.dump(full)
    base = delta.Base.of("k1", snapshot.load(stored_full), stored_full, len(stored_full))
    # a re-fold from the full checkpoint makes a checkpoint stored against it
    middle = fold(acts[one:two], start=full.copy() if data.draw(st.booleans()) else full)
    _drop_some(middle, data)
    stored_middle = delta.dump_text(middle, base)
    assert delta.is_delta(stored_middle)
    assert not delta.is_delta(stored_full)
    partial, against = delta.load_delta(stored_middle)
    assert against is not None
    assert against.base == "k1"
    whole = delta.rebase(partial, against, snapshot.load(stored_full))
    assert whole == middle
    assert whole.to_json() == middle.to_json()
    with pytest.raises(ValueError, match="format 2"):
        snapshot.load(stored_middle)
    # a later re-fold from that one stores against the same full checkpoint
    second = delta.Base.of("k2", whole, stored_middle, len(stored_full))
    assert second.key == "k1"
    last = fold(acts[two:], start=whole.copy())
    _drop_some(last, data)
    stored_last = delta.dump_text(last, second)
    partial, against = delta.load_delta(stored_last)
    assert against is not None
    assert against.base == "k1"
    assert delta.rebase(partial, against, snapshot.load(stored_full)) == last


@STORED_FORMS
@given(records=histories(), data=st.data())
def test_a_state_row_with_maps_stored_by_entry_reads_back_whole(
    records: list[Json], data: Any
) -> None:
    """A long history's row leaves its large maps out, to be stored in pages of entries:
    read back, with each map made again from its pages (in any order), it is the state."""
    s = fold(parse_all(records), "cust_a")
    apart = data.draw(st.sets(st.sampled_from(snapshot.LARGE_MAPS)))
    row = paged.dump_row(s, apart)
    partial, names = paged.load_row(row)
    assert set(names) == apart
    for name in names:
        assert getattr(partial, name) == {}
        entries: dict[str, Any] = getattr(s, name)
        pages: dict[int, dict[str, Any]] = {}
        for k, v in entries.items():
            pages.setdefault(paged.page_of(k), {})[k] = v
        stored = [paged.dump_page(page) for page in pages.values()]
        stored = data.draw(st.permutations(stored))
        setattr(partial, name, paged.load_map(name, stored))
    assert partial == s
    if apart:
        with pytest.raises(ValueError, match="format"):
            snapshot.load(row)


@STORED_FORMS
@given(records=histories())
def test_state_json_round_trips(records: list[Json]) -> None:
    s = fold(parse_all(records), "cust_a")
    j = s.to_json()
    assert CustomerState.from_json(j).to_json() == j
    assert CustomerState.from_json(j) == s
    # the stored form too, and `snapshot.load` also reads the public one
    assert snapshot.load(snapshot.dump(s)) == s
    assert snapshot.load(orjson.dumps(j)) == s
