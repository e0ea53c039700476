"""What several commands share: cut parsing, error output, catching the read model up."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from custate.adapters.api import (
    CatchUpReport,
    Custate,
    StoreError,
    StoreUnavailableError,
    UnknownCustomerError,
)
from custate.adapters.cli.app import EXIT_BAD_RECORDS, EXIT_STORE, EXIT_USAGE
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
    try:
        return Custate(url)
    except StoreError as e:
        fail(str(e), EXIT_STORE if isinstance(e, StoreUnavailableError) else EXIT_USAGE)
        raise  # unreachable


@contextmanager
def customer_store(url: str | None) -> Iterator[Custate]:
    """The store, for a command about one customer (or the audit of all): an unknown
    customer is exit 1 with its message, and the store is closed whatever happens. The read
    model is caught up first, as every answer would, but with a progress bar when that is
    long: the first `history` after `ingest --no-project` of a million activities projects
    them all."""
    cs = open_store(url)
    try:
        project_with_progress(cs, show_progress=True)
        yield cs
    except UnknownCustomerError as e:
        fail(str(e), EXIT_BAD_RECORDS)
    finally:
        cs.close()


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def project_with_progress(cs: Custate, show_progress: bool) -> CatchUpReport:
    err = Console(stderr=True)
    lag = cs.lag() if show_progress and err.is_terminal else 0
    if lag < 1000:
        return cs.project()
    with progress_bar(err) as bar:
        task = bar.add_task("projecting", total=lag)
        return cs.project(progress=lambda n: bar.advance(task, n))
