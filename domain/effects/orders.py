"""Orders by id, with their latest status."""

from __future__ import annotations

from custate.domain.activity import Activity
from custate.domain.effects.effect import Effect, writes
from custate.domain.payload import Payload
from custate.domain.state import CustomerState, Order

_NONE = Order()


def _order_id(p: Payload) -> tuple[str, ...]:
    o = p.order
    return (o.id,) if o is not None and o.id else ()


def order_effect(status_from_type: str | None) -> Effect:
    """`status` comes from the payload's order; the type names it when the order does not
    (customer.order.updated names none, so it keeps what was there)."""

    @writes(entries={"order": _order_id})
    def effect(s: CustomerState, a: Activity) -> None:
        o = a.payload.order
        if o is None or not o.id:
            return
        # A new entry, never a change in place: copies of a state share their orders
        # (CustomerState.copy), and a long history holds thousands of them.
        was = s.orders.get(o.id) or _NONE
        status = o.status or status_from_type
        s.orders[o.id] = Order(
            was.status if status is None else status,
            was.source_id if o.source_id is None else o.source_id,
            was.amount if o.amount is None else o.amount,
            was.total_amount if o.total_amount is None else o.total_amount,
            a.created_at,
        )

    effect.__name__ = effect.__qualname__ = f"order_{(status_from_type or 'updated').lower()}"
    return effect


created = order_effect("CREATED")
processing = order_effect("PROCESSING")
paid = order_effect("PAID")
fulfilled = order_effect("FULFILLED")
canceled = order_effect("CANCELED")
updated = order_effect(None)
