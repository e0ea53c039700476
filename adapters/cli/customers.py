"""`custate customers`: who is in segment X, holds tier Gold, has over N points."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import (
    Column,
    fail,
    number,
    open_store,
    output_format,
    show_records,
    write_tsv,
)
from custate.adapters.cli.store_options import (
    INT_MAX,
    INT_MIN,
    FormatOption,
    JsonOption,
    StoreOption,
)

Filter = Annotated[str | None, typer.Option()]
TABLE_ROWS = 100
STATUSES = ("active", "deleted")


@app.command(
    epilog=examples(
        "custate customers --segment seg_vip",
        "custate customers --tier tier_gold --min-points 1000 --format tsv",
        "custate customers --status active --count",
    )
)
def customers(
    segment: Annotated[str | None, typer.Option(help="Member of this segment id.")] = None,
    tier: Annotated[str | None, typer.Option(help="Holds this tier id.")] = None,
    campaign: Annotated[
        str | None,
        typer.Option(help="In this loyalty campaign (with --tier or points: that campaign's)."),
    ] = None,
    min_points: Annotated[
        int | None,
        typer.Option("--min-points", min=INT_MIN, max=INT_MAX, help="At least N points."),
    ] = None,
    max_points: Annotated[
        int | None,
        typer.Option("--max-points", min=INT_MIN, max=INT_MAX, help="At most N points."),
    ] = None,
    status: Annotated[str | None, typer.Option(help="active or deleted (any case).")] = None,
    order_status: Annotated[
        str | None, typer.Option("--order-status", help="Has an order in this status (PAID, ...).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, max=INT_MAX, help="At most N customers.")
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(help="Start after this customer id (the last one of the previous page)."),
    ] = None,
    count: Annotated[bool, typer.Option("--count", help="Only how many customers match.")] = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
    fmt: FormatOption = None,
) -> None:
    """List customers matching every filter given, from the read model's indexes."""
    import orjson

    form = output_format(fmt, as_json, "ndjson")
    if status is not None:
        status = status.strip().lower()  # the store keeps them in lower case
        if status not in STATUSES:
            fail(f"--status: {status!r} is not one of: {', '.join(STATUSES)}")
    filters: dict[str, Any] = {
        "segment": segment,
        "tier": tier,
        "campaign": campaign,
        "min_points": min_points,
        "max_points": max_points,
        "status": status,
        "order_status": order_status.strip().upper() if order_status else None,
    }
    # A table is for people: without --limit it shows a screenful and says how many more
    # there are; the other formats (for programs) give every row.
    paged = limit is None and form == "table"
    shown = TABLE_ROWS + 1 if paged else limit
    more = False
    cs = open_store(store, existing=True)
    try:
        cs.project()
        if count:
            n = cs.count_customers(**filters)
        else:
            rows = cs.customers(**filters, limit=shown, after=after)
            more = paged and len(rows) > TABLE_ROWS
            if more:
                rows = rows[:TABLE_ROWS]
                n = cs.count_customers(**filters)
    finally:
        cs.close()
    out = sys.stdout.buffer
    if count:
        if form in ("json", "ndjson"):
            out.write(orjson.dumps({"count": n}) + b"\n")
        elif form == "tsv":
            write_tsv(["count"], [[str(n)]])
        else:
            Console().print(f"{n:,} customer(s)")
        return
    if form == "ndjson":
        for r in rows:
            out.write(orjson.dumps(r.to_json()) + b"\n")
        return
    if form == "json":
        out.write(orjson.dumps([r.to_json() for r in rows]) + b"\n")
        return
    title = f"{len(rows):,} customer(s)"
    if more:
        title = f"{len(rows):,} of {n:,} customers"
    people = form == "table" and sys.stdout.isatty()
    show_records(
        title,
        [
            Column("customer_id"),
            Column("status"),
            Column("points", right=True),
            Column("activity_count", right=True),
        ],
        [
            [r.customer_id, r.status, number(r.points, people), number(r.activity_count, people)]
            for r in rows
        ],
        form,
        notes=[f"next page: --after {rows[-1].customer_id}; all of them: --limit N or --format tsv"]
        if more
        else [],
    )
