"""The HTTP answers' shapes, as pydantic models, for the OpenAPI schema (/docs).

The endpoints still write their JSON with orjson from the service's `to_json()` (the fast
path); these models only declare it (`responses=` in adapters/http.py), with an example
each. tests/e2e/test_exposed_serve.py validates real answers of every endpoint against the
model the schema declares for them, so the two cannot drift apart unnoticed. `extra` is
forbidden where the shape is ours to the last key; a customer's state keeps its
collections open (their entries are the fold's, docs/SEMANTICS.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ActivityRef",
    "CardGapOut",
    "ChangeRecordOut",
    "ChangesPage",
    "CountOut",
    "CustomerRow",
    "DiffOut",
    "ErrorOut",
    "ExplainOut",
    "GapOut",
    "HealthOut",
    "HistoryEntry",
    "ReadModelOut",
    "ReadyOut",
    "StateOut",
    "WebhookOut",
]

T = "2024-03-01T10:00:00.000000Z"
FRESH = {"position": 42, "head": 42, "lag": {"activities": 0, "seconds": 0.0, "estimated": False}}
ACT = {"id": "evcus_1", "type": "customer.created", "created_at": T, "recorded_at": T}


def _example(value: Any) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [value]})


class ErrorOut(BaseModel):
    """Every error: what went wrong and which field (query parameter, header, body field)
    it concerns; some carry more (a reject kept, a request id to find the log line)."""

    model_config = _example({"error": "limit: Input should be >= 1", "field": "limit"})
    error: str
    field: str | None = None
    kept_as_reject: bool | None = None
    stored: int | None = None
    position: int | None = None
    pruned_upto: int | None = None
    request_id: str | None = None


class WebhookOut(BaseModel):
    """A delivery stored (or already stored): durable."""

    model_config = _example(
        {
            "status": "stored",
            "activity_ids": ["evcus_1"],
            "stored": 1,
            "duplicates": 0,
            "position": 42,
        }
    )
    status: Literal["stored", "duplicate"]
    activity_ids: list[str]
    stored: int
    duplicates: int
    position: int = Field(description="pass as min_position to a read to see this delivery")


class Lag(BaseModel):
    model_config = ConfigDict(extra="forbid")
    activities: int
    seconds: float
    estimated: bool


class ReadModelOut(BaseModel):
    """How fresh the read model is (also in the X-Custate-* headers)."""

    model_config = _example(
        {"position": 42, "head": 42, "lag": {"activities": 0, "seconds": 0.0, "estimated": False}}
    )
    position: int
    head: int
    lag: Lag


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str
    source_id: str | None
    name: str | None
    email: str | None
    phone: str | None
    metadata: dict[str, Any] | None
    created_at: str | None
    updated_at: str | None
    deleted_at: str | None
    confirmed_at: str | None


class Loyalty(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points: int
    cards: dict[str, dict[str, Any]]
    tiers: dict[str, dict[str, Any]]


class Activities(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int
    first_at: str | None
    last_at: str | None
    last_id: str | None
    unrecognized: int


GAP = {
    "card_id": "v_1",
    "kind": "loyalty_card",
    "activity_id": "evcus_9",
    "at": T,
    "previous_activity_id": "evcus_7",
    "previous_balance": 100,
    "delta": 10,
    "balance": 150,
    "missing": 40,
}


class GapOut(BaseModel):
    """A balance break on a card: an activity missing upstream."""

    model_config = _example(GAP)
    card_id: str
    kind: str
    activity_id: str
    at: str
    previous_activity_id: str | None
    previous_balance: int
    delta: int
    balance: int
    missing: int


class CardGapOut(GapOut):
    """A balance break, with the customer whose card it is (`/gaps`)."""

    model_config = _example({"customer_id": "cust_1", **GAP})
    customer_id: str


_STATE_EXAMPLE: dict[str, Any] = {
    "customer_id": "cust_1",
    "as_of": None,
    "known_at": None,
    "profile": {
        "status": "active", "source_id": "ann", "name": "Ann", "email": "ann@example.com",
        "phone": None, "metadata": None, "created_at": T, "updated_at": T, "deleted_at": None,
        "confirmed_at": None,
    },
    "loyalty": {"points": 0, "cards": {}, "tiers": {}},
    "gift_cards": {}, "segments": {}, "orders": {},
    "redemptions": {"succeeded": 0, "failed": 0, "rollback_succeeded": 0, "rollback_failed": 0},
    "reward_redemptions": {}, "referrals": {"referred_by": {}}, "vouchers": {},
    "messaging": {}, "custom_events": {}, "validations": {"succeeded": 0, "failed": 0},
    "activities": {"count": 1, "first_at": T, "last_at": T, "last_id": "evcus_1", "unrecognized": 0},
    "gaps": [],
    "read_model": FRESH,
}  # fmt: skip


class StateOut(BaseModel):
    """A customer's state as of a business time and a record time (SEMANTICS.md)."""

    model_config = _example(_STATE_EXAMPLE)
    customer_id: str
    as_of: str | None
    known_at: str | None
    profile: Profile
    loyalty: Loyalty
    gift_cards: dict[str, dict[str, Any]]
    segments: dict[str, dict[str, Any]]
    orders: dict[str, dict[str, Any]]
    redemptions: dict[str, int]
    reward_redemptions: dict[str, dict[str, Any]]
    referrals: dict[str, dict[str, Any]]
    vouchers: dict[str, dict[str, Any]]
    messaging: dict[str, dict[str, Any]]
    custom_events: dict[str, dict[str, Any]]
    validations: dict[str, int]
    activities: Activities
    gaps: list[GapOut]
    read_model: ReadModelOut


class CustomerRow(BaseModel):
    """One customer of a `/customers` page (read model)."""

    model_config = _example(
        {"customer_id": "cust_1", "status": "active", "points": 357, "activity_count": 27}
    )
    customer_id: str
    status: str | None
    points: int | None
    activity_count: int


class CountOut(BaseModel):
    model_config = _example({"count": 200, "read_model": FRESH})
    count: int
    read_model: ReadModelOut


class FieldChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    op: str
    before: Any
    after: Any


class HistoryEntry(BaseModel):
    """One activity of a customer's history and what it changed."""

    model_config = _example(
        {
            **ACT,
            "late": False,
            "changes": [{"path": "profile.name", "op": "changed", "before": None, "after": "Ann"}],
        }
    )
    id: str
    type: str
    created_at: str
    recorded_at: str | None
    late: bool
    changes: list[FieldChange]


class ActivityRef(BaseModel):
    model_config = _example(ACT)
    id: str
    type: str
    created_at: str
    recorded_at: str | None


class DiffChange(FieldChange):
    activities: list[str]


class DiffOut(BaseModel):
    """What changed between two cuts, and which activities did it."""

    model_config = _example(
        {
            "customer_id": "cust_1",
            "kind": "as_of",
            "as_of": ["2024-01-01T23:59:59.999999Z", "2024-12-31T23:59:59.999999Z"],
            "known_at": [None],
            "changes": [
                {
                    "path": "loyalty.points",
                    "op": "changed",
                    "before": 0,
                    "after": 10,
                    "activities": ["evcus_1"],
                }
            ],
        }
    )
    customer_id: str
    kind: Literal["as_of", "known_at"]
    as_of: list[str | None]
    known_at: list[str | None]
    changes: list[DiffChange]
    activities: list[ActivityRef] | None = None


class ChainLink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    activity: ActivityRef
    op: str
    before: Any
    after: Any
    late: bool


class ExplainOut(BaseModel):
    """Which activity set a field's value, and the values before it."""

    model_config = _example(
        {
            "customer_id": "cust_1",
            "path": "profile.name",
            "present": True,
            "value": "Ann",
            "set_by": ACT,
            "chain": [
                {"activity": ACT, "op": "changed", "before": None, "after": "Ann", "late": False}
            ],
        }
    )
    customer_id: str
    path: str
    present: bool
    value: Any
    set_by: ActivityRef | None
    chain: list[ChainLink]


class ChangeRecordOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position: int
    customer_id: str
    path: str
    op: str
    before: Any
    after: Any
    activity_id: str
    effective_at: str
    until: str | None
    recorded_at: str | None
    correction: bool
    cause: Literal["activity", "rebuild", "erasure"]


class ChangesPage(BaseModel):
    """Change records after a position; ask after `next` for the following page."""

    model_config = _example(
        {
            "records": [
                {
                    "position": 7, "customer_id": "cust_1", "path": "loyalty.points",
                    "op": "changed", "before": 0, "after": 10, "activity_id": "evcus_1",
                    "effective_at": T, "until": None, "recorded_at": T, "correction": False,
                    "cause": "activity",
                }
            ],
            "next": 7,
        }
    )  # fmt: skip
    records: list[ChangeRecordOut]
    next: int


class HealthOut(BaseModel):
    model_config = _example({"status": "ok", "write_batches": 3})
    status: Literal["ok"]
    write_batches: int


class Projector(BaseModel):
    model_config = ConfigDict(extra="forbid")
    in_process: bool
    worker: str | None = None
    partitions: list[int] | None = None


class ReadyOut(BaseModel):
    """Ready (200), or why not (503: the store, or the lag over `max_lag`)."""

    model_config = _example(
        {
            "status": "ok",
            "store": "reachable",
            "read_model": FRESH,
            "max_lag": 10000,
            "projector": {"in_process": True, "worker": "host:1:ab", "partitions": [0]},
            "write_batches": 3,
        }
    )
    status: Literal["ok", "lagging", "unavailable"]
    store: str
    read_model: ReadModelOut | None = None
    max_lag: int | None = None
    projector: Projector | None = None
    write_batches: int | None = None
