"""The pure core: activity model, types, state and fold. No I/O, no clock, no database."""

from custate.domain.activity import (
    Activity,
    ActivityError,
    FoldKey,
    fold_key,
    format_time,
    parse_activity,
    parse_cut,
    parse_time,
)
from custate.domain.activity_types import KNOWN_TYPES, ActivityType, rank
from custate.domain.fold import EFFECTS, FOLD_VERSION, apply, fold, fold_all, ordered
from custate.domain.state import CustomerState

__all__ = [
    "EFFECTS",
    "FOLD_VERSION",
    "KNOWN_TYPES",
    "Activity",
    "ActivityError",
    "ActivityType",
    "CustomerState",
    "FoldKey",
    "apply",
    "fold",
    "fold_all",
    "fold_key",
    "format_time",
    "ordered",
    "parse_activity",
    "parse_cut",
    "parse_time",
    "rank",
]
