"""The base of every error custate raises for a user to handle.

`custate.Error` catches them all: a record that is not a valid activity, a store that
cannot be used, an unknown customer, a source that cannot be read, a failed Voucherify
request. Each also keeps the built-in base it had (`ValueError`, `LookupError`, `OSError`),
so `except ValueError` and the like go on catching what they caught. The base lives in the
pure core because the domain raises some of these errors and cannot import the adapters."""

from __future__ import annotations

__all__ = ["Error"]


class Error(Exception):
    """Something custate cannot do with what it was given, said in terms a user can act on."""
