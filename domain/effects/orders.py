"""Orders by id, with their latest status."""

from __future__ import annotations

from collections.abc import Callable

from custate.domain.activity import Activity
from custate.domain.state import CustomerState, Order

Effect = Callable[[CustomerState, Activity], None]


def order_effect(status_from_type: str | None) -> Effect:
    """`status` comes from the payload's order; the type names it when the order does not
    (customer.order.updated names none, so it keeps what was there)."""

    def effect(s: CustomerState, a: Activity) -> None:
        o = a.payload.order
        if o is None or not o.id:
            return
        order = s.orders.get(o.id)
        if order is None:
            order = s.orders[o.id] = Order()
        status = o.status or status_from_type
        if status is not None:
            order.status = status
        if o.source_id is not None:
            order.source_id = o.source_id
        if o.amount is not None:
            order.amount = o.amount
        if o.total_amount is not None:
            order.total_amount = o.total_amount
        order.updated_at = a.created_at

    effect.__name__ = effect.__qualname__ = f"order_{(status_from_type or 'updated').lower()}"
    return effect


created = order_effect("CREATED")
processing = order_effect("PROCESSING")
paid = order_effect("PAID")
fulfilled = order_effect("FULFILLED")
canceled = order_effect("CANCELED")
updated = order_effect(None)
