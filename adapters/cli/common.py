"""What several commands share: cut parsing, error output."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import typer

from custate.adapters.api import Custate, UnknownCustomerError
from custate.adapters.cli.app import EXIT_BAD_RECORDS, EXIT_USAGE
from custate.domain import ActivityError, parse_cut


def cut(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_cut(value, option)
    except ActivityError as e:
        fail(f"{option}: {e.message}; use an ISO-8601 date-time with a zone, or a date")
    return None  # unreachable


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"custate: {message}", err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def open_store(url: str | None) -> Custate:
    from custate.adapters.eventstore import StoreError

    try:
        return Custate(url)
    except StoreError as e:
        fail(str(e))
        raise  # unreachable


@contextmanager
def customer_store(url: str | None) -> Iterator[Custate]:
    """The store, for a command about one customer: an unknown customer is exit 1 with
    its message, and the store is closed whatever happens."""
    cs = open_store(url)
    try:
        yield cs
    except UnknownCustomerError as e:
        fail(str(e), EXIT_BAD_RECORDS)
    finally:
        cs.close()
