"""custate: an event-sourced customer state projector for Voucherify customer activities.

    import custate

    with custate.open("sqlite:///custate.db") as cs:
        cs.ingest([...])
        state = cs.state("cust_1", as_of="2024-03-01")

The public face: `open` and `Custate` (the service, `custate.adapters.api`), the results
its methods return, and `Error`, the base of every error it raises for a user to handle.
The pure core is `custate.domain`. Names are imported on first use, so `import
custate.domain` stays free of database libraries."""

import typing as _typing
from importlib import import_module as _import_module

__version__ = "0.1.0"

if _typing.TYPE_CHECKING:
    from custate.adapters.api import (
        CatchUpReport,
        ChangeRecord,
        ChangesPage,
        ChangesPrunedError,
        Custate,
        CustomerQuery,
        CustomerRow,
        DeadLetter,
        Erasure,
        ErasureReport,
        ForwardError,
        ForwardReport,
        Freshness,
        IngestReport,
        QueryError,
        Reject,
        StaleReadError,
        StoredActivity,
        StoredReject,
        StoreError,
        UnknownCustomerError,
        Worker,
        WorkerEvent,
        open,
    )
    from custate.adapters.readers import SourceError
    from custate.adapters.voucherify import ConfigError, VoucherifyError
    from custate.domain import ActivityError, CustomerState
    from custate.domain.errors import Error
    from custate.projections.audit import (
        ActivityRef,
        CardGap,
        DiffEntry,
        Explanation,
        FieldChange,
        HistoryEntry,
        StateDiff,
        ValueStep,
    )

# Each public name, and the module it comes from.
_FROM: dict[str, str] = {
    "open": "custate.adapters.api",
    "Custate": "custate.adapters.api",
    # what the service returns
    "IngestReport": "custate.adapters.api",
    "CatchUpReport": "custate.adapters.api",
    "ChangeRecord": "custate.adapters.api",
    "ChangesPage": "custate.adapters.api",
    "ChangesPrunedError": "custate.adapters.api",
    "DeadLetter": "custate.adapters.api",
    "ForwardReport": "custate.adapters.api",
    "ForwardError": "custate.adapters.api",
    "CustomerQuery": "custate.adapters.api",
    "CustomerRow": "custate.adapters.api",
    "Freshness": "custate.adapters.api",
    "Worker": "custate.adapters.api",
    "WorkerEvent": "custate.adapters.api",
    "StoredActivity": "custate.adapters.api",
    "StoredReject": "custate.adapters.api",
    "Erasure": "custate.adapters.api",
    "ErasureReport": "custate.adapters.api",
    "Reject": "custate.adapters.api",
    "CustomerState": "custate.domain",
    "HistoryEntry": "custate.projections.audit",
    "FieldChange": "custate.projections.audit",
    "ActivityRef": "custate.projections.audit",
    "StateDiff": "custate.projections.audit",
    "DiffEntry": "custate.projections.audit",
    "Explanation": "custate.projections.audit",
    "ValueStep": "custate.projections.audit",
    "CardGap": "custate.projections.audit",
    # what it raises: every one a custate.Error
    "Error": "custate.domain.errors",
    "ActivityError": "custate.domain",
    "QueryError": "custate.adapters.api",
    "StoreError": "custate.adapters.api",
    "StaleReadError": "custate.adapters.api",
    "UnknownCustomerError": "custate.adapters.api",
    "SourceError": "custate.adapters.readers",
    "VoucherifyError": "custate.adapters.voucherify",
    "ConfigError": "custate.adapters.voucherify",
}

__all__ = [
    "ActivityError",
    "ActivityRef",
    "CardGap",
    "CatchUpReport",
    "ChangeRecord",
    "ChangesPage",
    "ChangesPrunedError",
    "ConfigError",
    "Custate",
    "CustomerQuery",
    "CustomerRow",
    "CustomerState",
    "DeadLetter",
    "DiffEntry",
    "Erasure",
    "ErasureReport",
    "Error",
    "Explanation",
    "FieldChange",
    "ForwardError",
    "ForwardReport",
    "Freshness",
    "HistoryEntry",
    "IngestReport",
    "QueryError",
    "Reject",
    "SourceError",
    "StaleReadError",
    "StateDiff",
    "StoreError",
    "StoredActivity",
    "StoredReject",
    "UnknownCustomerError",
    "ValueStep",
    "VoucherifyError",
    "Worker",
    "WorkerEvent",
    "__version__",
    "open",
]


def __getattr__(name: str) -> _typing.Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'custate' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
