"""`custate pull`: customers' activities from the Voucherify API into the store, resumably."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from custate.adapters.cli.app import EXIT_BAD_RECORDS, app, examples
from custate.adapters.cli.common import cut, fail, open_store, project_with_progress, warn
from custate.adapters.cli.store_options import (
    PULL_CONCURRENCY,
    PULL_PAGE_LIMIT,
    JsonOption,
    StoreOption,
)

if TYPE_CHECKING:
    from custate.adapters.api import Custate
    from custate.adapters.pull import BackfillReport, CustomerPull
    from custate.adapters.voucherify import VoucherifyConfig


def _customers_from_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text() if path != "-" else sys.stdin.read()
    except OSError as e:
        fail(f"{path}: cannot read: {e.strerror or e}")
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@app.command(
    epilog=examples(
        "custate pull --customer cust_1 --customer cust_2",
        "custate pull --known --since 2024-01-01",
        "custate pull --all --concurrency 8",
    )
)
def pull(
    customer: Annotated[
        list[str] | None,
        typer.Option("--customer", help="A customer id to pull (repeat for several)."),
    ] = None,
    customers_file: Annotated[
        str | None,
        typer.Option("--customers-file", help="A file of customer ids, one a line (- is stdin)."),
    ] = None,
    known: Annotated[
        bool, typer.Option("--known", help="Every customer already in the store.")
    ] = False,
    all_customers: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Backfill: every customer of the project (GET /v1/customers), resumably.",
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only activities created at or after T (start_date); with --all, only "
            "the customers updated after T.",
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", min=1, max=32, help="With --all: customers at once."),
    ] = PULL_CONCURRENCY,
    page_size: Annotated[
        int,
        typer.Option("--page-size", min=1, max=PULL_PAGE_LIMIT, help="Items per API page."),
    ] = PULL_PAGE_LIMIT,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="With --all: list the customers from the start again (the activity "
            "cursors stay, so what is stored is not fetched again).",
        ),
    ] = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
    no_project: Annotated[
        bool,
        typer.Option("--no-project", help="Only store; leave the read model to `custate project`."),
    ] = False,
) -> None:
    """Pull customers' activities from GET /v1/customers/{id}/activity into the store.

    Resumable: each customer's last stored activity is its cursor, so a rerun fetches only
    what is new. Credentials: CUSTATE_VOUCHERIFY_APP_ID, CUSTATE_VOUCHERIFY_APP_TOKEN; base
    URL: CUSTATE_VOUCHERIFY_URL (default https://api.voucherify.io).

    --all lists every customer of the project and pulls them --concurrency at a time; a
    429 pauses them all for its Retry-After. Killed, a re-run goes on where it stopped."""
    from custate.adapters.pull import pull_customer
    from custate.adapters.voucherify import ConfigError, VoucherifyClient, VoucherifyConfig

    chosen = sum([bool(customer), customers_file is not None, known, all_customers])
    if chosen != 1:
        fail("give exactly one of --customer ID..., --customers-file FILE, --known, --all")
    if restart and not all_customers:
        fail("--restart goes with --all")
    t = cut(since, "--since")
    since_text = t.isoformat().replace("+00:00", "Z") if t is not None else None
    try:
        config = VoucherifyConfig.from_env()
    except ConfigError as e:
        fail(str(e))
        return
    cs = open_store(store)
    if all_customers:
        _backfill(cs, config, since_text, concurrency, page_size, restart, as_json, no_project)
        return
    results: list[CustomerPull] = []
    try:
        if known:
            ids = cs.customer_ids()
        elif customers_file is not None:
            ids = _customers_from_file(customers_file)
        else:
            ids = list(customer or [])
        ids = list(dict.fromkeys(ids))
        cursors = cs.pull_cursors()
        err = Console(stderr=True)
        show = not as_json and err.is_terminal
        with (
            VoucherifyClient(
                config,
                page_limit=page_size,
                on_retry=lambda n, d, why: (
                    warn(f"  retry {n} in {d:.1f}s ({why})") if show else None
                ),
            ) as client,
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TextColumn("{task.fields[pages]} pages, {task.fields[stored]:,} new"),
                TimeElapsedColumn(),
                console=err,
                disable=not show,
            ) as progress,
        ):
            for cid in ids:
                task = progress.add_task(cid, total=None, pages=0, stored=0)

                def on_page(p: CustomerPull, task: TaskID = task) -> None:
                    progress.update(task, pages=p.pages, stored=p.report.accepted)

                r = pull_customer(cs, client, cursors, cid, since_text, on_page)
                progress.update(task, completed=1, total=1)
                results.append(r)
                _print_result(r, as_json)
        if not no_project:
            project_with_progress(cs, show_progress=not as_json)
    finally:
        cs.close()
    failed = [r for r in results if not r.ok]
    rejected = sum(r.report.rejected + r.report.conflicts for r in results)
    if not as_json:
        total = sum(r.report.accepted for r in results)
        dup = sum(r.report.duplicates for r in results)
        typer.echo(
            f"pulled {len(results)} customer(s): {total:,} new, {dup:,} already stored, "
            f"{rejected:,} rejected, {len(failed)} failed"
        )
    if failed or rejected:
        raise typer.Exit(EXIT_BAD_RECORDS)


def _print_result(r: CustomerPull, as_json: bool) -> None:
    if as_json:
        line = {
            "customer_id": r.customer_id,
            "ok": r.ok,
            "pages": r.pages,
            "cursor": r.cursor,
            "error": r.error,
            **r.report.to_json(),
        }
        sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
        sys.stdout.flush()
        return
    if r.error is not None:
        warn(f"custate: {r.error}")
    for p in r.report.problems:
        warn(f"{p.source} {p.location}: {p.field}: {p.reason}")
    typer.echo(
        f"{r.customer_id}: {r.pages} page(s), {r.report.accepted:,} new, "
        f"{r.report.duplicates:,} already stored" + ("" if r.ok else " (failed)")
    )


def _backfill(
    cs: Custate,
    config: VoucherifyConfig,
    since: str | None,
    concurrency: int,
    page_size: int,
    restart: bool,
    as_json: bool,
    no_project: bool,
) -> None:
    from custate.adapters.pull import backfill
    from custate.adapters.voucherify import VoucherifyClient

    err = Console(stderr=True)
    show = not as_json and err.is_terminal
    try:
        with (
            VoucherifyClient(config, page_limit=page_size) as client,
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[activities]:,} activities, {task.fields[dups]:,} known"),
                TextColumn("{task.fields[paused]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err,
                disable=not show,
            ) as progress,
        ):
            task: TaskID = progress.add_task(
                "customers", total=None, activities=0, dups=0, paused=""
            )

            def on_progress(r: BackfillReport) -> None:
                total = None if r.total is None else max(r.total, r.listed) + r.resumed
                progress.update(
                    task,
                    total=total,
                    completed=r.pulled + len(r.failed),
                    activities=r.activities.accepted,
                    dups=r.activities.duplicates,
                    paused="rate limited: paused" if client.gate.remaining() > 0 else "",
                )

            report = backfill(
                cs,
                client,
                concurrency=concurrency,
                since=since,
                restart=restart,
                progress=on_progress,
            )
        if not no_project:
            project_with_progress(cs, show_progress=not as_json)
    finally:
        cs.close()
    rejected = report.activities.rejected + report.activities.conflicts
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report.to_json()) + b"\n")
        sys.stdout.flush()
    else:
        for cid, why in sorted(report.failed.items()):
            warn(f"custate: {why}" if cid in why else f"custate: customer {cid}: {why}")
        for p in report.activities.problems:
            warn(f"{p.source} {p.location}: {p.field}: {p.reason}")
        if report.error is not None:
            warn(f"custate: the listing stopped: {report.error} (run again to go on)")
        a = report.activities
        resumed = f" (+{report.resumed:,} resumed)" if report.resumed else ""
        typer.echo(
            f"customers: {report.listed:,} listed{resumed}, {report.pulled:,} pulled, "
            f"{len(report.failed):,} failed"
        )
        typer.echo(
            f"activities: {a.accepted:,} stored, {a.duplicates:,} already stored, "
            f"{rejected:,} rejected"
        )
        typer.echo(
            f"elapsed {report.elapsed:.1f}s, {report.pages:,} pages, "
            f"{report.pauses} rate-limit pause(s), {report.retries} retries"
            + ("" if report.complete else "; listing not finished: run again to go on")
        )
    if not report.ok or rejected:
        raise typer.Exit(EXIT_BAD_RECORDS)
