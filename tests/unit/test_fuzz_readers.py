"""A bounded fuzz of the readers and the record validation: any bytes, and any JSON value
(also placed as an activity's `data`), either read into records that can be stored
(encodable) or give `BadRecord`s naming the record and the field, or a `custate.Error`;
never another exception."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import custate
from custate.adapters.eventstore import Encoded
from custate.adapters.readers import BadRecord, Record, read_text, records_from_value

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(items: Any) -> int:
    """Every item a storable record or a reject naming where and what; the count read."""
    n = 0
    try:
        for item in items:
            n += 1
            if isinstance(item, Record):
                Encoded.of(item.activity, item.source, item.location)
            else:
                assert isinstance(item, BadRecord)
                assert item.location
                assert item.field
                assert item.message
    except custate.Error:
        pass
    return n


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_read_into_records_or_rejects(data: bytes) -> None:
    check(read_text(data, "<fuzz>"))


@FUZZ
@given(JSON)
def test_any_json_value_reads_into_records_or_rejects(value: Any) -> None:
    check(records_from_value(value, "<fuzz>", "[0]"))


@FUZZ
@given(JSON, st.sampled_from(["customer.created", "customer.updated", "order.paid", "x.y"]))
def test_any_data_in_an_activity_is_stored_or_rejected(value: Any, kind: str) -> None:
    record = {
        "id": "act_1",
        "type": kind,
        "created_at": "2024-01-01T00:00:00Z",
        "data": value,
    }
    check(records_from_value(record, "<fuzz>", "[0]", "cust_1"))
    check(
        records_from_value(
            {**record, "data": {"customer": {"id": "c"}, "x": value}}, "<fuzz>", "[0]"
        )
    )
