"""Segment membership: current members only."""

from __future__ import annotations

from custate.domain.activity import Activity
from custate.domain.effects.effect import writes
from custate.domain.payload import Payload
from custate.domain.state import CustomerState, Segment


def _segment_id(p: Payload) -> tuple[str, ...]:
    seg = p.segment
    return (seg.id,) if seg is not None and seg.id else ()


@writes(entries={"segment": _segment_id})
def entered(s: CustomerState, a: Activity) -> None:
    seg = a.payload.segment
    if seg is not None and seg.id:
        s.segments[seg.id] = Segment(seg.name, a.created_at)


@writes(entries={"segment": _segment_id})
def left(s: CustomerState, a: Activity) -> None:
    seg = a.payload.segment
    if seg is not None and seg.id:
        s.segments.pop(seg.id, None)
