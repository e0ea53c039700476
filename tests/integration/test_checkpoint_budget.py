"""The budget of decoded checkpoints a process keeps: set by `custate.open` or
$CUSTATE_CHECKPOINT_CACHE, a bad value named, and the answers the same whatever it is."""

from __future__ import annotations

from pathlib import Path

import pytest

import custate
from custate.adapters.eventstore import StoreError
from custate.domain import fold, parse_activity

from .test_readmodel import delivered


def test_a_bad_budget_in_the_environment_is_a_store_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTATE_CHECKPOINT_CACHE", "lots")
    with pytest.raises(StoreError, match="CUSTATE_CHECKPOINT_CACHE: not a size: 'lots'"):
        custate.open(f"sqlite:///{tmp_path / 's.db'}")


@pytest.mark.parametrize("budget", ["0", "64KB", "1G"])
def test_points_in_time_are_the_fold_whatever_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: str
) -> None:
    monkeypatch.setenv("CUSTATE_CHECKPOINT_CACHE", budget)
    records = list(delivered(600, 2, seed=3))
    acts = [parse_activity(r) for r in records]
    with custate.open(f"sqlite:///{tmp_path / 's.db'}") as cs:
        assert cs.ingest(records).ok
        for cid in cs.customer_ids():
            mine = sorted((a for a in acts if a.customer_id == cid), key=lambda a: a.created_at)
            for a in mine[:: len(mine) // 7]:
                want = fold(mine, cid, as_of=a.created_at).to_json()
                for _ in range(2):  # the second from memory, if the budget kept it
                    assert cs.state(cid, as_of=a.created_at).to_json() == want
