"""The customer state's public JSON and its stored forms, held to bytes written before the
state's shape was declared once (`custate.domain.shape`): what a database already holds
must load to the same state, and what is written now must be the same bytes.

The golden files under tests/data/golden were written by the code of the commit that added
this test. The stored forms among them must never be written again: rows and checkpoints
in existing databases hold those bytes."""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import orjson
import pytest
from freezegun import freeze_time

from custate.adapters.codecs import delta, paged
from custate.adapters.codecs import state as snapshot
from custate.domain import (
    Activity,
    ActivityType,
    CustomerState,
    fold,
    fold_all,
    ordered,
    parse_activity,
    shape,
)
from custate.domain.state import Gap, Profile

from .builders import (
    Json,
    gift_balance,
    iso,
    load_sample,
    loyalty_balance,
    loyalty_voucher,
    merge,
    pending,
    sample_names,
    tier,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "golden"
DEMO = ROOT / "adapters" / "data" / "demo.ndjson.gz"
SAMPLES = ROOT / "adapters" / "data" / "samples.ndjson"
T = ActivityType
RICH = "cust_rich"


def _act(n: int, activity_type: str, data: Json, t: float) -> Activity:
    return parse_activity(
        {
            "id": f"evcus_rich_{n:03d}",
            "type": activity_type,
            "created_at": iso(t),
            "customer_id": RICH,
            "data": data,
        }
    )


def rich_activities() -> list[Activity]:
    """Every section of the state populated, times with and without a fraction of a second."""
    steps: list[tuple[str, Json, float]] = [
        (
            T.CREATED,
            {
                "customer": {
                    "id": RICH,
                    "name": "Ann",
                    "email": "a@x.io",
                    "phone": "+1",
                    "source_id": "ann",
                    "metadata": {"tier": "x", "n": 2, "tags": ["a"], "deep": {"k": None}},
                }
            },
            0,
        ),
        (T.CONFIRMED, {"customer": {"id": RICH}}, 1.25),
        (
            T.VOUCHER_LOYALTY_CARD_POINTS_ADDED,
            merge(loyalty_balance("v_c", 100, points=100), loyalty_voucher("v_c", code="C1")),
            2,
        ),
        (
            T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED,
            merge(
                pending("lopp_1", "v_c", total=10),
                loyalty_voucher(
                    "v_c", next_expiration_date="2026-01-31", next_expiration_points=40
                ),
            ),
            3,
        ),
        (
            T.VOUCHER_LOYALTY_CARD_PENDING_POINTS_ADDED,
            pending("lopp_0", "v_c", points=7, order_id="ord_2", total=17),
            3.5,
        ),
        (T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance("v_c", 500, points=100), 4),
        (
            T.VOUCHER_LOYALTY_CARD_POINTS_EXPIRED,
            merge({"points": 5}, loyalty_balance("v_c", 495, points=-5)),
            4.5,
        ),
        (T.VOUCHER_LOYALTY_CARD_POINTS_ADDED, loyalty_balance("v_b", 30, points=30), 4.75),
        (T.VOUCHER_GIFT_BALANCE_ADDED, gift_balance("v_g", 2500, amount=2500), 5),
        (T.VOUCHER_GIFT_BALANCE_ADDED, gift_balance("v_g", 2600, amount=50), 5.5),
        (T.LOYALTY_TIER_JOINED, {"loyalty_tier": tier("ltr_1", "Gold", expires="2026-01-01")}, 6),
        (T.LOYALTY_TIER_JOINED, {"loyalty_tier": tier("ltr_2", "Blue", campaign="camp_b")}, 6.5),
        (T.SEGMENT_ENTERED, {"segment": {"id": "seg_1", "name": "VIP"}}, 7),
        (T.SEGMENT_ENTERED, {"segment": {"id": "seg_0", "name": None}}, 7.5),
        (T.ORDER_PAID, {"order": {"id": "ord_1", "amount": 100, "total_amount": 90}}, 8),
        (T.ORDER_CREATED, {"order": {"id": "ord_0", "status": "CREATED", "amount": 5}}, 8.5),
        (T.REDEMPTION_SUCCEEDED, {}, 9),
        (T.REDEMPTION_FAILED, {}, 9),
        (T.REDEMPTION_ROLLBACK_FAILED, {}, 9),
        (
            T.REWARD_REDEMPTIONS_COMPLETED,
            {"reward_redemption": {"id": "rr_1"}, "reward": {"id": "rew_1"}},
            10,
        ),
        (T.REFERRED, {"campaign": {"id": "camp_r"}, "referrer": {"id": "cust_r"}}, 11),
        (T.REFERRED, {"campaign": {"id": "camp_a"}, "referrer": {"id": "cust_q"}}, 11.5),
        (T.PUBLICATION_SUCCEEDED, {"voucher": {"id": "v_p", "code": "P"}}, 12),
        (
            T.HOLDER_ASSIGNMENT_CREATED,
            {"holder": {"redeemable_id": "v_p", "holder_role": "OWNER"}},
            12,
        ),
        (
            T.HOLDER_ASSIGNMENT_CREATED,
            {"holder": {"redeemable_id": "v_p", "holder_role": "HOLDER"}},
            12.5,
        ),
        (T.VOUCHER_DELETED, {"voucher": {"id": "v_old"}}, 13),
        (T.EMAIL_SENT, {}, 14),
        (T.EMAIL_SENT, {}, 14.5),
        (T.SMS_FAILED, {}, 14),
        (T.CUSTOM_EVENT, {"event": {"type": "login"}}, 15),
        (T.CUSTOM_EVENT, {"event": {"type": "login"}}, 15.000001),
        (T.VALIDATION_FAILED, {}, 16),
        (T.VALIDATION_SUCCEEDED, {}, 16),
        ("customer.brand_new", {}, 17),
    ]
    return [_act(n, kind, data, t) for n, (kind, data, t) in enumerate(steps)]


def every_sample_type() -> list[Activity]:
    return [
        parse_activity(
            {
                "id": f"evcus_{i:04d}",
                "type": name,
                "created_at": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                "customer_id": "cust_samples",
                "data": load_sample(name),
            }
        )
        for i, name in enumerate(sample_names())
    ]


def rich_state() -> CustomerState:
    s = fold(rich_activities(), RICH, as_of=datetime(2025, 6, 1, tzinfo=UTC))
    s.known_at = datetime(2025, 6, 2, 3, 4, 5, 678901, tzinfo=UTC)
    return s


def _records(path: Path) -> list[Activity]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [parse_activity(orjson.loads(line)) for line in raw.splitlines() if line.strip()]


def bundled_states() -> dict[str, CustomerState]:
    """The states of the bundled demo and sample histories, every customer's."""
    return {
        **fold_all(_records(DEMO)),
        **fold_all(_records(SAMPLES)),
        "cust_samples": fold(every_sample_type(), "cust_samples"),
    }


# -- the forms ---------------------------------------------------------------------------


def forms(s: CustomerState, half: list[Activity] | None = None) -> dict[str, bytes]:
    """Every form of `s`: its public JSON, its stored forms (in full; as a row, with its
    large maps in pages and without; against a base, one and two re-folds deep)."""
    out = {
        "json": orjson.dumps(s.to_json()),
        "stored": snapshot.dump(s),
        "text": snapshot.dump_text(s).encode(),
        "row": paged.dump_row(s).encode(),
        "row_paged": paged.dump_row(s, snapshot.LARGE_MAPS).encode(),
    }
    for name in snapshot.LARGE_MAPS:
        pages: dict[int, dict[str, object]] = {}
        for k, v in sorted(getattr(s, name).items()):
            pages.setdefault(paged.page_of(k), {})[k] = v
        out[f"pages_{name}"] = "\n".join(paged.dump_page(pages[p]) for p in sorted(pages)).encode()
    return out


def delta_forms(activities: list[Activity], customer_id: str) -> dict[str, bytes]:
    """A re-fold's checkpoints, stored against the checkpoint it started from: a third of
    the history in full, two thirds against it, all against it once more (an order gone)."""
    activities = ordered(activities)
    third = len(activities) // 3
    first = fold(activities[:third], customer_id)
    stored_first = snapshot.dump(first)
    start = snapshot.load(stored_first)
    base = delta.Base.of("k1", start, stored_first, len(stored_first))
    middle = fold(activities[third : 2 * third], start=start.copy())
    stored_middle = delta.dump_text(middle, base)
    whole = delta.rebase(*_partial(stored_middle), snapshot.load(stored_first))
    second = delta.Base.of("k2", whole, stored_middle, len(stored_first))
    last = fold(activities[2 * third :], start=whole.copy())
    for k in sorted(whole.orders)[:1]:
        del last.orders[k]
    return {
        "base": stored_first,
        "delta": stored_middle.encode(),
        "delta2": delta.dump_text(last, second).encode(),
    }


def _partial(stored: str) -> tuple[CustomerState, delta.Delta]:
    partial, against = delta.load_delta(stored)
    assert against is not None
    return partial, against


def rich_forms() -> dict[str, bytes]:
    return {
        **forms(rich_state()),
        **delta_forms(rich_activities(), RICH),
        "empty_json": orjson.dumps(CustomerState("cust_empty").to_json()),
        "empty_stored": snapshot.dump(CustomerState("cust_empty")),
    }


def digests() -> dict[str, str]:
    """A digest of each form over every bundled customer, in customer order."""
    hashes: dict[str, hashlib._Hash] = {}
    for _, s in sorted(bundled_states().items()):
        for name, data in forms(s).items():
            hashes.setdefault(name, hashlib.sha256()).update(data + b"\0")
    by: dict[str, list[Activity]] = {}
    for a in _records(DEMO):
        by.setdefault(a.customer_id, []).append(a)
    for cid, acts in sorted(by.items()):
        for name, data in delta_forms(acts, cid).items():
            if name == "delta2":  # the entries a base's start changed: a set, in hash order
                data = orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS)
            hashes.setdefault(name, hashlib.sha256()).update(data + b"\0")
    return {name: h.hexdigest() for name, h in sorted(hashes.items())}


def _golden(name: str) -> bytes:
    return (GOLDEN / f"rich.{name}").read_bytes()


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(rich_forms()))
def test_a_rich_state_renders_and_stores_as_before_to_the_byte(name: str) -> None:
    assert rich_forms()[name] == _golden(name)


def test_the_bundled_histories_render_and_store_as_before_to_the_byte() -> None:
    expected = orjson.loads((GOLDEN / "bundled.digests.json").read_bytes())
    assert digests() == expected


@pytest.mark.parametrize("name", ["stored", "text", "row", "json"])
def test_a_state_stored_before_loads_to_the_same_state(name: str) -> None:
    s = rich_state()
    stored = _golden(name)
    back = snapshot.load(stored)
    assert back == s
    assert orjson.dumps(back.to_json()) == _golden("json")
    assert paged.load_row(stored)[0] == s
    assert CustomerState.from_json(orjson.loads(_golden("json"))) == s


def test_a_row_stored_before_with_its_maps_in_pages_loads_to_the_same_state() -> None:
    s = rich_state()
    partial, names = paged.load_row(_golden("row_paged"))
    assert names == snapshot.LARGE_MAPS
    for name in names:
        pages = _golden(f"pages_{name}").decode().split("\n")
        setattr(partial, name, paged.load_map(name, [p for p in pages if p]))
    assert partial == s


def test_checkpoints_stored_before_against_a_base_load_to_the_same_states() -> None:
    acts = ordered(rich_activities())
    third = len(acts) // 3
    base = snapshot.load(_golden("base"))
    assert base == fold(acts[:third], RICH)
    middle = delta.rebase(*_partial(_golden("delta").decode()), snapshot.load(_golden("base")))
    assert middle == fold(acts[: 2 * third], RICH)
    last = delta.rebase(*_partial(_golden("delta2").decode()), snapshot.load(_golden("base")))
    expected = fold(acts, RICH)
    for k in sorted(middle.orders)[:1]:
        del expected.orders[k]
    assert last == expected


def test_a_stand_in_for_datetime_is_stored_as_a_datetime_is() -> None:
    """freezegun's FakeDatetime (times taken under `freeze_time` in tests) renders as the
    time it stands for, and is stored as one (with an offset, not `Z`)."""
    s = rich_state()
    with freeze_time("2025-06-02T03:04:05.678901Z"):
        s.known_at = datetime.now(UTC)
        s.profile.confirmed_at = datetime.now(UTC)
        assert type(s.known_at).__name__ == "FakeDatetime"
    real = rich_state()
    real.profile.confirmed_at = real.known_at
    offset = b'"2025-06-02T03:04:05.678901+00:00"'
    assert snapshot.dump(s) == snapshot.dump(real).replace(b'"2025-06-02T03:04:05.678901Z"', offset)
    assert orjson.dumps(s.to_json()) == orjson.dumps(real.to_json())
    assert snapshot.load(snapshot.dump(s)) == real


# -- the description of the state ----------------------------------------------------------


class _Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    points: int
    at: datetime


class _Card(msgspec.Struct, array_like=True, gc=False):
    balance: int | None = None
    since: datetime | None = None
    tags: list[str] = []
    entries: dict[str, _Entry] = {}
    extra: dict[str, Any] | None = None


class _Holder(msgspec.Struct):
    name: str
    cards: dict[str, _Card] = {}
    refs: dict[str, str] = {}
    shared: dict[str, _Entry] = {}

    json_layout: ClassVar[tuple[tuple[str, str], ...]] = (
        ("name", "name"),
        ("wallet.total", "total"),
        ("wallet.cards", "cards"),
        ("refs", "refs"),
        ("shared", "shared"),
    )

    @property
    def total(self) -> int:
        return sum(c.balance or 0 for c in self.cards.values())


def _holder() -> _Holder:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    card = _Card(7, at, ["b", "a"], {"e2": _Entry(2, at), "e1": _Entry(1, at)}, {"z": 1, "a": 2})
    return _Holder("h", {"c2": card, "c1": _Card()}, {"y": "1", "x": "2"}, {"s": _Entry(3, at)})


def test_a_declared_class_renders_its_fields_in_order_with_its_maps_sorted() -> None:
    """The JSON of a class is derived from its declaration alone: fields in declared order
    (laid out as its `json_layout` says), times as ISO text, maps of the state sorted by
    key, a JSON value (`extra`) as it is, computed sources rendered."""
    j = shape.render(_holder())
    assert orjson.dumps(j) == orjson.dumps(
        {
            "name": "h",
            "wallet": {
                "total": 7,
                "cards": {
                    "c1": {
                        "balance": None,
                        "since": None,
                        "tags": [],
                        "entries": {},
                        "extra": None,
                    },
                    "c2": {
                        "balance": 7,
                        "since": "2025-01-02T03:04:05.000000Z",
                        "tags": ["b", "a"],
                        "entries": {
                            "e1": {"points": 1, "at": "2025-01-02T03:04:05.000000Z"},
                            "e2": {"points": 2, "at": "2025-01-02T03:04:05.000000Z"},
                        },
                        "extra": {"z": 1, "a": 2},
                    },
                },
            },
            "refs": {"x": "2", "y": "1"},
            "shared": {"s": {"points": 3, "at": "2025-01-02T03:04:05.000000Z"}},
        }
    )
    assert shape.reader(_Holder)(j) == _holder()
    assert shape.json_paths(_Holder)["cards"] == "wallet.cards"
    assert shape.entry_classes(_Holder, shape.Kind.OBJECTS) == {"cards": _Card, "shared": _Entry}


def test_a_field_missing_from_the_json_takes_its_default() -> None:
    j = shape.render(_holder())
    del j["wallet"]["cards"]["c2"]["tags"], j["refs"]
    back = shape.reader(_Holder)(j)
    assert back.cards["c2"].tags == []
    assert back.refs == {}
    del j["name"]
    with pytest.raises(KeyError):
        shape.reader(_Holder)(j)


def test_a_copy_can_be_changed_without_changing_the_original() -> None:
    """A copy copies what the fold changes in place (the mutable objects, and every map
    and list), and shares the frozen entries, which it only ever replaces."""
    original = _holder()
    before = shape.render(original)
    copy = shape.copier(_Holder)(original)
    assert copy == original
    copy.cards["c2"].balance = 9
    copy.cards["c2"].entries["e3"] = copy.cards["c2"].entries.pop("e1")
    copy.cards["c2"].tags.append("c")
    copy.cards["new"] = _Card()
    copy.refs["w"] = "3"
    copy.shared.clear()
    assert shape.render(original) == before
    assert shape.copier(_Holder)(original).shared["s"] is original.shared["s"]


def test_the_description_of_the_state_matches_its_json() -> None:
    """`json_paths` says where each field of the state lies in its JSON, and each map of
    objects holds, in the JSON, objects with exactly their class's fields (and computed
    ones) in order: what the audit's paths and the read model's rows can derive from."""
    s = rich_state()
    j = s.to_json()
    paths = shape.json_paths(CustomerState)
    assert set(shape.names(CustomerState)) <= set(paths)
    for name, path in paths.items():
        value = j
        for part in path.split("."):
            value = value[part]
        if name in shape.entry_classes(CustomerState, shape.Kind.OBJECTS):
            entry = shape.entry_classes(CustomerState)[name]
            keys = [*shape.names(entry), *getattr(entry, "json_computed", ())]
            assert value, name
            assert all(list(v) == keys for v in value.values()), name
    assert list(j["gaps"][0]) == [*shape.names(Gap), "missing"]


def test_an_array_stored_before_a_field_was_appended_loads_with_its_default() -> None:
    """A new field goes last in its class, with a default: a stored array without it
    still loads (here: a profile stored without its last field, `confirmed_at`)."""
    assert shape.names(Profile)[-1] == "confirmed_at"
    stored = _golden("stored").replace(b',"2025-01-01T12:00:01.250000Z"],"cards"', b'],"cards"')
    assert stored != _golden("stored")
    back = snapshot.load(stored)
    expected = rich_state()
    expected.profile.confirmed_at = None
    assert back == expected


def write_golden() -> None:  # pragma: no cover - run by hand, once
    """Write the golden files from the code as it is. Never again for the stored forms:
    existing databases hold those bytes."""
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, data in rich_forms().items():
        (GOLDEN / f"rich.{name}").write_bytes(data)
    (GOLDEN / "bundled.digests.json").write_bytes(
        orjson.dumps(digests(), option=orjson.OPT_INDENT_2) + b"\n"
    )


if __name__ == "__main__":  # pragma: no cover
    write_golden()
