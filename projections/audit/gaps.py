"""Missing activities: the balance-continuity breaks on a customer's cards."""

from __future__ import annotations

from collections.abc import Iterable

from custate.domain.state import Gap
from custate.projections.audit.results import CardGap


def card_gaps(customer_id: str, gaps: Iterable[Gap]) -> list[CardGap]:
    """The gaps of one customer's state, each naming the customer."""
    return [CardGap(*g.row(), customer_id) for g in gaps]
