"""Messages sent to the customer over each channel."""

from __future__ import annotations

from custate.domain.activity import Activity
from custate.domain.effects.effect import Effect, writes
from custate.domain.state import CustomerState, Messaging


def message_effect(channel: str, outcome: str) -> Effect:
    """`customer.<channel>.<outcome>`: latest status and time, and that outcome's counter."""

    @writes("messaging")
    def effect(s: CustomerState, a: Activity) -> None:
        m = s.messaging.get(channel)
        if m is None:
            m = s.messaging[channel] = Messaging(outcome, a.created_at)
        m.status = outcome
        m.at = a.created_at
        if outcome == "sent":
            m.sent += 1
        elif outcome == "failed":
            m.failed += 1
        else:
            m.recovered += 1

    effect.__name__ = effect.__qualname__ = f"{channel}_{outcome}"
    return effect
