"""custate: an event-sourced customer state projector for Voucherify customer activities.

`custate.open(url)` opens a store (see `custate.adapters.api`); the pure core is
`custate.domain`. The store API is imported on first use, so `import custate.domain` stays
free of database libraries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from custate.adapters.api import Custate, UnknownCustomerError, open

__all__ = ["Custate", "UnknownCustomerError", "__version__", "open"]


def __getattr__(name: str) -> Any:
    if name in ("Custate", "UnknownCustomerError", "open"):
        from custate.adapters import api

        return getattr(api, name)
    raise AttributeError(f"module 'custate' has no attribute {name!r}")
