"""Redemptions, validations and reward redemptions."""

from __future__ import annotations

from custate.domain.activity import Activity
from custate.domain.effects.effect import Effect, writes
from custate.domain.payload import Payload
from custate.domain.state import CustomerState, RewardRedemption


@writes("redemptions")
def redemption_succeeded(s: CustomerState, a: Activity) -> None:
    s.redemptions.succeeded += 1


@writes("redemptions")
def redemption_failed(s: CustomerState, a: Activity) -> None:
    s.redemptions.failed += 1


@writes("redemptions")
def rollback_succeeded(s: CustomerState, a: Activity) -> None:
    s.redemptions.rollback_succeeded += 1


@writes("redemptions")
def rollback_failed(s: CustomerState, a: Activity) -> None:
    s.redemptions.rollback_failed += 1


@writes("validations")
def validation_succeeded(s: CustomerState, a: Activity) -> None:
    s.validations.succeeded += 1


@writes("validations")
def validation_failed(s: CustomerState, a: Activity) -> None:
    s.validations.failed += 1


def _reward_redemption_id(p: Payload) -> tuple[str, ...]:
    rr = p.reward_redemption
    return (rr.id,) if rr is not None and rr.id else ()


def reward_redemption_effect(state: str) -> Effect:
    @writes(entries={"reward_redemption": _reward_redemption_id})
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
