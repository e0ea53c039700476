"""Redemptions, validations and reward redemptions."""

from __future__ import annotations

from collections.abc import Callable

from custate.domain.activity import Activity
from custate.domain.state import CustomerState, RewardRedemption

Effect = Callable[[CustomerState, Activity], None]


def redemption_succeeded(s: CustomerState, a: Activity) -> None:
    s.redemptions.succeeded += 1


def redemption_failed(s: CustomerState, a: Activity) -> None:
    s.redemptions.failed += 1


def rollback_succeeded(s: CustomerState, a: Activity) -> None:
    s.redemptions.rollback_succeeded += 1


def rollback_failed(s: CustomerState, a: Activity) -> None:
    s.redemptions.rollback_failed += 1


def validation_succeeded(s: CustomerState, a: Activity) -> None:
    s.validations.succeeded += 1


def validation_failed(s: CustomerState, a: Activity) -> None:
    s.validations.failed += 1


def reward_redemption_effect(state: str) -> Effect:
    def effect(s: CustomerState, a: Activity) -> None:
        rr = a.payload.reward_redemption
        if rr is None or not rr.id:
            return
        reward = a.payload.reward
        known = s.reward_redemptions.get(rr.id)
        reward_id = reward.id if reward is not None and reward.id else None
        if reward_id is None and known is not None:
            reward_id = known.reward_id
        s.reward_redemptions[rr.id] = RewardRedemption(state, reward_id, a.created_at)

    effect.__name__ = effect.__qualname__ = f"reward_redemption_{state.lower()}"
    return effect
