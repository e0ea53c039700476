"""Segment membership: current members only."""

from __future__ import annotations

from custate.domain.activity import Activity
from custate.domain.state import CustomerState, Segment


def entered(s: CustomerState, a: Activity) -> None:
    seg = a.payload.segment
    if seg is not None and seg.id:
        s.segments[seg.id] = Segment(seg.name, a.created_at)


def left(s: CustomerState, a: Activity) -> None:
    seg = a.payload.segment
    if seg is not None and seg.id:
        s.segments.pop(seg.id, None)
