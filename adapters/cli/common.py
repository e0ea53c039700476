"""What several commands share: cut parsing, error output, catching the read model up."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from custate.adapters.cli.app import EXIT_BAD_RECORDS, EXIT_STORE, EXIT_USAGE

# The store and the domain are imported by the commands that run, never at start-up:
# `custate --help` loads neither (bench/README.md, CLI start-up).
if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn

    from custate.adapters.api import CatchUpReport, Custate


def cut(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    from custate.domain import ActivityError, parse_cut

    try:
        return parse_cut(value, option)
    except ActivityError as e:
        fail(f"{option}: {e.message}; use an ISO-8601 date-time with a zone, or a date")
    return None  # unreachable


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"custate: {message}", err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """A line for the user on stderr; with `--log-format json`, a log record (WARNING,
    `custate.cli`), so that stderr holds JSON lines only."""
    from custate.adapters.cli.logging_options import log_format

    if log_format() == "json":
        import logging

        logging.getLogger("custate.cli").warning("%s", message)
        return
    print(message, file=sys.stderr)


def open_store(url: str | None, *, existing: bool = False) -> Custate:
    """The store `url` names (None: $CUSTATE_STORE, else ./custate.db). With `existing`
    (the read commands), an SQLite file that is not there is exit 2 with what to do, rather
    than a new, empty store whose answers would all be empty."""
    from custate.adapters.api import (
        Custate,
        StoreError,
        StoreUnavailableError,
        store_file,
        store_url,
    )

    try:
        if existing:
            path = store_file(store_url(url))
            if path is not None and not path.exists():
                fail(f"no store at {path}; ingest something first (or give --store)")
        cs = Custate(url)
        if existing:  # a read: say when its answers come from an older fold's states
            stale = cs.fold_status().warning()
            if stale is not None:
                warn(f"custate: warning: {stale}")
        return cs
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
    from custate.adapters.api import UnknownCustomerError

    cs = open_store(url, existing=True)
    try:
        project_with_progress(cs, show_progress=True)
        yield cs
    except UnknownCustomerError as e:
        fail(str(e), EXIT_BAD_RECORDS)
    finally:
        cs.close()


def progress_bar(console: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

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


# One output option for the commands that print records (`--format`); `--json` stays, as
# each command's JSON form of before (README, Output for programs).
FORMATS = ("table", "json", "ndjson", "tsv")


def output_format(fmt: str | None, as_json: bool, json_form: str) -> str:
    """The format asked for: `--format` (any case), else `--json` as the command's
    `json_form` ("json" or "ndjson"), else a table."""
    if fmt is not None:
        f = fmt.strip().lower()
        if f not in FORMATS:
            fail(f"--format: {fmt!r} is not one of: {', '.join(FORMATS)}")
        if as_json and f != json_form:
            fail(f"--json is --format {json_form}; give one of them")
        return f
    return json_form if as_json else "table"


def _cell(value: str) -> str:
    """A field of a tab-separated line: tabs and line breaks inside it become spaces."""
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_tsv(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A header line, then one tab-separated line per row: for `cut -f`, `awk -F'\\t'`."""
    out = sys.stdout
    out.write("\t".join(columns) + "\n")
    for row in rows:
        out.write("\t".join(map(_cell, row)) + "\n")


def show_records(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    fmt: str,
    *,
    sections: Sequence[bool] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Records for people (`fmt` "table") or for `cut` and `awk` ("tsv"). A table on a
    terminal keeps identifier, path and time columns whole (they never wrap; values fold);
    written to anything else it is the title, the tab-separated lines and the notes, so that
    nothing is broken at a width. `sections[i]` ends a section after row i (terminal only)."""
    names = [c.name for c in columns]
    if fmt == "tsv":
        write_tsv(names, rows)
        return
    out = Console()
    if not sys.stdout.isatty():
        sys.stdout.write(title + "\n")
        write_tsv(names, rows)
        for n in notes:
            sys.stdout.write(n + "\n")
        return
    table = Table(title=title, header_style="bold")
    for c in columns:
        table.add_column(
            c.name,
            justify="right" if c.right else "left",
            no_wrap=c.whole,
            overflow="fold",
        )
    for i, row in enumerate(rows):
        table.add_row(*(Text(v) for v in row), end_section=bool(sections and sections[i]))
    out.print(table)
    for n in notes:
        out.print(n, markup=False, highlight=False, soft_wrap=True)


@dataclass(frozen=True, slots=True)
class Column:
    """A column of records: its name, whether it must stay whole (an identifier, a path, a
    time: never wrapped), and whether it is a number (right-aligned)."""

    name: str
    whole: bool = True
    right: bool = False


def number(n: int, people: bool) -> str:
    """A count for people (1,234) or for programs (1234)."""
    return f"{n:,}" if people else str(n)


def took(started: float, command: str) -> None:
    """A long command's last line, on stderr (stdout stays the answer): its elapsed time."""
    warn(f"custate {command}: done in {time.perf_counter() - started:.1f} s")


def record_rate() -> ProgressColumn:
    """A progress column: the records stored so far and their rate (the task's field
    `records`). rich.progress is imported when a bar is shown, not at start-up."""
    from rich.progress import ProgressColumn, Task

    class RecordRate(ProgressColumn):
        def render(self, task: Task) -> Text:
            n = task.fields.get("records", 0)
            elapsed = task.elapsed or 0.0
            rate = f", {n / elapsed:,.0f}/s" if elapsed > 0.5 else ""
            return Text(f"{n:,} records{rate}")

    return RecordRate()
