"""The fold's version follows what the fold does: the states of a fixed corpus (the
bundled demo and sample histories, every sample type, a rich history; each now and half
way through) hash to a fingerprint recorded with `FOLD_VERSION` in
tests/data/fold_version.json. A change to an effect changes the fingerprint; if
`FOLD_VERSION` was not bumped with it, stored read models would silently keep the old
fold's states, so the test fails and says what to do."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from custate.domain import FOLD_VERSION, Activity, CustomerState, fold, ordered
from custate.domain.activity_types import ActivityType as T
from custate.domain.effects import cards

from .test_state_shape import DEMO, SAMPLES, _records, every_sample_type, rich_activities

RECORDED = Path(__file__).resolve().parents[1] / "data" / "fold_version.json"
RECORD_ENV = "CUSTATE_RECORD_FOLD_VERSION"
fold_module = importlib.import_module("custate.domain.fold")  # the name `fold` is the function


@functools.cache
def _histories() -> list[tuple[str, list[Activity]]]:
    by_customer: dict[str, list[Activity]] = {}
    for a in [*_records(DEMO), *_records(SAMPLES), *every_sample_type(), *rich_activities()]:
        by_customer.setdefault(a.customer_id, []).append(a)
    return sorted(by_customer.items())


def _halfway(activities: list[Activity]) -> datetime:
    todo = ordered(activities)
    return todo[len(todo) // 2].created_at


def fingerprint() -> str:
    """The sha256 of every corpus customer's state (now, and as of half way), as JSON
    with sorted keys, in customer id order."""
    h = hashlib.sha256()
    for cid, activities in _histories():
        states: list[CustomerState] = [
            fold(activities, cid),
            fold(activities, cid, as_of=_halfway(activities)),
        ]
        for s in states:
            h.update(orjson.dumps(s.to_json(), option=orjson.OPT_SORT_KEYS) + b"\n")
    return h.hexdigest()


def test_the_fold_version_is_bumped_with_any_change_to_what_the_fold_does() -> None:
    now = fingerprint()
    if os.environ.get(RECORD_ENV):
        RECORDED.write_text(
            json.dumps({"fingerprint": now, "fold_version": FOLD_VERSION}, indent=2) + "\n"
        )
    recorded = json.loads(RECORDED.read_text())
    how = f"then re-record: {RECORD_ENV}=1 pytest {Path(__file__).name}"
    if now != recorded["fingerprint"] and recorded["fold_version"] == FOLD_VERSION:
        pytest.fail(
            "what the fold does changed (the corpus' states differ from those recorded) "
            f"but FOLD_VERSION is still {FOLD_VERSION}: bump it in custate/domain/fold.py so "
            f"that stored read models are rebuilt, {how}"
        )
    assert (now, FOLD_VERSION) == (recorded["fingerprint"], recorded["fold_version"]), (
        f"FOLD_VERSION {FOLD_VERSION} and the fingerprint are not the pair recorded; {how}"
    )


def test_dropping_an_effect_changes_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    before = fingerprint()
    monkeypatch.setitem(fold_module.STEPS, T.ORDER_PAID, (cards.reported_balances,))
    assert fingerprint() != before


def test_a_new_store_records_this_fold_version_and_is_not_stale(tmp_path: Path) -> None:
    import custate

    with custate.open(f"sqlite:///{tmp_path / 'store.db'}") as cs:
        s = cs.fold_status()
        assert (s.built_with, s.current, s.stale) == (FOLD_VERSION, FOLD_VERSION, False)
        assert s.warning() is None
