"""Audit: what each activity changed, why a field has its value, what changed between two
cuts, which activities are missing. Pure functions over `(activity, recorded_at)` pairs
(`Pair`); the adapters load the pairs.

- `pairs`: the input (`Pair`), in fold order, and which activities are late.
- `results`: the typed, frozen answers (`HistoryEntry`, `StateDiff`, `Explanation`, ...).
- `tracker`: the incremental diff engine (`Tracker`) all of them fold with; `units` the
  parts of the state it diffs, from what the effects declare they write; `fields` the
  objects of the state field by field; `changes` changes between JSON values.
- `history` (and `corrections`, `Replay`), `explain`, `diffs` (`diff_as_of`,
  `diff_known_at`), `gaps` (`card_gaps`): the questions.

A change is `changed` (the path had a value before and after), `added` (the path did not
exist before) or `removed` (it no longer exists). Paths are those of
`projections.diff.flatten(state.to_json())` without the cut keys; values are JSON values,
and an empty object is a leaf of its own, as in `flatten`."""

from custate.projections.audit.changes import Flat, apply_changes
from custate.projections.audit.diffs import diff_as_of, diff_known_at
from custate.projections.audit.explain import explain
from custate.projections.audit.fields import field_json, json_fields
from custate.projections.audit.gaps import card_gaps
from custate.projections.audit.history import Replay, corrections, history, replay_history
from custate.projections.audit.pairs import Pair
from custate.projections.audit.results import (
    ADDED,
    CHANGED,
    REMOVED,
    ActivityRef,
    CardGap,
    DiffEntry,
    Explanation,
    FieldChange,
    HistoryEntry,
    StateDiff,
    ValueStep,
)
from custate.projections.audit.tracker import Tracker, empty_flat
from custate.projections.audit.units import Unit

__all__ = [
    "ADDED",
    "CHANGED",
    "REMOVED",
    "ActivityRef",
    "CardGap",
    "DiffEntry",
    "Explanation",
    "FieldChange",
    "Flat",
    "HistoryEntry",
    "Pair",
    "Replay",
    "StateDiff",
    "Tracker",
    "Unit",
    "ValueStep",
    "apply_changes",
    "card_gaps",
    "corrections",
    "diff_as_of",
    "diff_known_at",
    "empty_flat",
    "explain",
    "field_json",
    "history",
    "json_fields",
    "replay_history",
]
