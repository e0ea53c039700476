"""What several commands share: cut parsing, error output."""

from __future__ import annotations

import sys
from datetime import datetime

import typer

from custate.adapters.api import Custate
from custate.adapters.cli.app import EXIT_USAGE
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
