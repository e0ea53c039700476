"""`custate fold`: files in, each customer's state out, with no store."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from custate.adapters.cli.app import EXIT_BAD_RECORDS, app
from custate.adapters.cli.common import cut, fail, warn
from custate.adapters.readers import BadRecord, SourceError, check_readable, read_paths
from custate.domain import Activity, fold_all


@app.command()
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
) -> None:
    """Fold activity files into each customer's state, printed as JSON lines."""
    t = cut(as_of, "--as-of")
    try:
        check_readable(paths)
    except SourceError as e:
        fail(str(e))
    bad = 0
    seen: dict[str, tuple[bytes, str]] = {}
    activities: list[Activity] = []
    try:
        for item in read_paths(paths, customer):
            if isinstance(item, BadRecord):
                bad += 1
                warn(str(item))
                continue
            a = item.activity
            where = f"{item.source} {item.location}"
            if a.id in seen:
                first_content, first_where = seen[a.id]
                if a.content() != first_content:
                    bad += 1
                    warn(
                        f"{where}: id: conflict: {a.id} was first read at {first_where} "
                        "with different content; the first one is kept"
                    )
                continue
            seen[a.id] = (a.content(), where)
            activities.append(a)
    except SourceError as e:
        fail(str(e))
    if customer is not None:
        activities = [a for a in activities if a.customer_id == customer]
    out = sys.stdout.buffer
    for state in fold_all(activities, as_of=t).values():
        out.write(orjson.dumps(state.to_json()) + b"\n")
    out.flush()
    if bad:
        warn(f"custate: {bad} bad record(s); the rest were folded")
        raise typer.Exit(EXIT_BAD_RECORDS)
