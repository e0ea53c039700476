"""`custate fold`: files in, each customer's state out, with no store."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from custate.adapters.cli.app import EXIT_BAD_RECORDS, app, examples
from custate.adapters.cli.common import cut, fail, warn


@app.command(
    epilog=examples(
        "custate fold activities.ndjson",
        "custate fold export.json.gz --customer cust_1 --as-of 2024-03-01",
    )
)
def fold(
    paths: Annotated[list[str], typer.Argument(help="Activity files (any container); - is stdin.")],
    customer: Annotated[
        str | None,
        typer.Option(
            "--customer",
            help="Records that name no customer belong to ID; only ID's state is printed.",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Business-time cut: ISO date-time with zone, or a date."),
    ] = None,
    memory: Annotated[
        str,
        typer.Option(
            "--memory",
            metavar="SIZE",
            help="Hold activities in memory up to about SIZE (e.g. 512MB, 2GB); "
            "a larger input is folded from a temporary file, with the same output.",
        ),
    ] = "256MB",
) -> None:
    """Fold activity files into each customer's state, printed as JSON lines."""
    from custate.adapters.foldfiles import SpillError, fold_files, parse_size
    from custate.adapters.readers import SourceError, check_readable

    t = cut(as_of, "--as-of")
    try:
        budget = parse_size(memory)
    except ValueError as e:
        fail(f"--memory: {e}")
    try:
        check_readable(paths)
    except SourceError as e:
        fail(str(e))
    out = sys.stdout.buffer
    try:
        bad = fold_files(paths, out, warn, customer=customer, as_of=t, memory=budget)
    except (SourceError, SpillError) as e:
        fail(str(e))
    out.flush()
    if bad:
        warn(f"custate: {bad} bad record(s); the rest were folded")
        raise typer.Exit(EXIT_BAD_RECORDS)
