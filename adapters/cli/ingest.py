"""`custate ingest`: files into the store, idempotently, with a summary."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from custate.adapters.cli.app import EXIT_BAD_RECORDS, app, examples
from custate.adapters.cli.common import fail, open_store, project_with_progress, record_rate, took
from custate.adapters.cli.store_options import DEFAULT_BATCH, JsonOption, StoreOption

if TYPE_CHECKING:
    from custate.adapters.api import Custate, IngestReport


@app.command(
    epilog=examples(
        "custate ingest activities.ndjson",
        "custate ingest export/*.json.gz --store postgresql://localhost/custate",
        "cat activities.ndjson | custate ingest - --no-project",
    )
)
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Activity files (any container); - is stdin.")],
    customer: Annotated[
        str | None,
        typer.Option("--customer", help="The customer of records that name none."),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10_000, help="Activities per transaction.")
    ] = DEFAULT_BATCH,
    no_project: Annotated[
        bool,
        typer.Option("--no-project", help="Only store; leave the read model to `custate project`."),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Processes parsing NDJSON files (default: one per core; 0: none).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Append activities to the store: each once, however often it is delivered."""
    from custate.adapters.readers import SourceError, check_readable

    started = time.perf_counter()
    try:
        check_readable(paths)
    except SourceError as e:
        fail(str(e))
    cs = open_store(store)
    try:
        report = _run(cs, paths, customer, batch_size, workers, show_progress=not as_json)
        if not no_project:
            project_with_progress(cs, show_progress=not as_json)
    except SourceError as e:
        fail(str(e))
    finally:
        cs.close()
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        _print_summary(report)
    took(started, "ingest")
    if not report.ok:
        raise typer.Exit(EXIT_BAD_RECORDS)


def _run(
    cs: Custate,
    paths: list[str],
    customer: str | None,
    batch_size: int,
    workers: int | None,
    show_progress: bool,
) -> IngestReport:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    err = Console(stderr=True)
    if not (show_progress and err.is_terminal):
        return cs.ingest_paths(paths, customer, batch_size, project=False, workers=workers)
    # A bar over the bytes of the files (stdin has no size: then the count alone), with the
    # records stored and their rate beside it.
    total = sum(Path(p).stat().st_size for p in paths if p != "-" and Path(p).is_file())
    sized = total > 0 and "-" not in paths
    columns = (
        [TextColumn("ingesting"), BarColumn(), DownloadColumn(), TimeRemainingColumn()]
        if sized
        else [SpinnerColumn(), TextColumn("ingesting")]
    )
    with Progress(
        *columns,
        record_rate(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("ingest", total=total if sized else None, records=0)

        def stored(n: int) -> None:
            progress.update(task, records=progress.tasks[task].fields["records"] + n)

        def read(n: int) -> None:
            progress.advance(task, n)

        return cs.ingest_paths(
            paths,
            customer,
            batch_size,
            stored,
            project=False,
            workers=workers,
            read=read if sized else None,
        )


def _print_summary(report: IngestReport) -> None:
    out = Console()
    table = Table(title="custate ingest", show_header=True, header_style="bold")
    table.add_column("records")
    table.add_column("count", justify="right")
    table.add_row("read", f"{report.read:,}")
    table.add_row("accepted", f"{report.accepted:,}")
    table.add_row("duplicates (ignored)", f"{report.duplicates:,}")
    table.add_row("conflicts (rejected)", f"{report.conflicts:,}")
    table.add_row("invalid (rejected)", f"{report.rejected:,}")
    table.add_row("unrecognized types (stored)", f"{report.unrecognized:,}")
    if report.resolved:
        table.add_row("earlier rejects now resolved", f"{report.resolved:,}")
    out.print(table)
    err = Console(stderr=True, soft_wrap=True)  # one line per problem, greppable in a log
    for p in report.problems:
        err.print(f"{p.source} {p.location}: {p.field}: {p.reason}", markup=False, highlight=False)
    if not report.ok:
        err.print(
            "Rejected records are kept: `custate rejects` lists them, "
            "`custate rejects --export FILE` writes them out for fixing and re-ingesting."
        )
