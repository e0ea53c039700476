"""The library's arguments are range-checked as the HTTP query parameters are: an argument
out of range is a `custate.Error` naming it, never a database error or a 500's cousin."""

from __future__ import annotations

from typing import Any

import pytest

import custate

ACTIVITY = {
    "id": "act_1",
    "type": "customer.created",
    "created_at": "2024-01-01T00:00:00Z",
    "data": {"customer": {"id": "cust_1"}},
}


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda cs: cs.customers(limit=-1), "limit"),
        (lambda cs: cs.customers(limit=0), "limit"),
        (lambda cs: cs.customers(min_points=2**70), "min_points"),
        (lambda cs: cs.customers(max_points=-(2**70)), "max_points"),
        (lambda cs: cs.count_customers(min_points=2**63), "min_points"),
        (lambda cs: cs.customers(segment="a\x00b"), "segment"),
        (lambda cs: cs.customers(min_position=-1), "min_position"),
        (lambda cs: cs.customers(min_position=2**70), "min_position"),
        (lambda cs: cs.customers(min_position=0, wait=-1.0), "wait"),
        (lambda cs: cs.ingest([ACTIVITY], batch_size=0), "batch_size"),
        (lambda cs: cs.project(batch_size=0), "batch_size"),
        (lambda cs: cs.rebuild(batch_size=-5), "batch_size"),
    ],
)
def test_an_argument_out_of_range_is_an_error_naming_it(
    store_url: str, call: Any, argument: str
) -> None:
    with custate.open(store_url) as cs:
        cs.ingest([ACTIVITY])
        with pytest.raises(custate.QueryError, match=f"^{argument}:"):
            call(cs)
        # the store is unharmed and the bounds themselves are accepted
        cs.count_customers(min_points=-(2**63), max_points=2**63 - 1)
        assert [r.customer_id for r in cs.customers(limit=1)] == ["cust_1"]
        assert cs.count_activities() == 1
