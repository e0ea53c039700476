"""`custate customers`: who is in segment X, holds tier Gold, has over N points."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import open_store
from custate.adapters.cli.store_options import INT_MAX, INT_MIN, JsonOption, StoreOption

Filter = Annotated[str | None, typer.Option()]
TABLE_ROWS = 100


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
    status: Annotated[str | None, typer.Option(help="active or deleted.")] = None,
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
) -> None:
    """List customers matching every filter given, from the read model's indexes."""
    import orjson

    if status is not None and status not in ("active", "deleted"):
        Console(stderr=True).print("custate: --status is active or deleted")
        raise typer.Exit(2)
    filters: dict[str, Any] = {
        "segment": segment,
        "tier": tier,
        "campaign": campaign,
        "min_points": min_points,
        "max_points": max_points,
        "status": status,
        "order_status": order_status.upper() if order_status else None,
    }
    # A table is for people: without --limit it shows a screenful and says how many more
    # there are; --json (for programs) gives every row.
    shown = limit if limit is not None or as_json else TABLE_ROWS + 1
    more = False
    cs = open_store(store)
    try:
        cs.project()
        if count:
            n = cs.count_customers(**filters)
        else:
            rows = cs.customers(**filters, limit=shown, after=after)
            more = len(rows) > TABLE_ROWS and limit is None and not as_json
            if more:
                rows = rows[:TABLE_ROWS]
                n = cs.count_customers(**filters)
    finally:
        cs.close()
    if count:
        if as_json:
            sys.stdout.buffer.write(orjson.dumps({"count": n}) + b"\n")
        else:
            Console().print(f"{n:,} customer(s)")
        return
    if as_json:
        out = sys.stdout.buffer
        for r in rows:
            out.write(orjson.dumps(r.to_json()) + b"\n")
        return
    title = f"{len(rows):,} customer(s)"
    if more:
        title = f"{len(rows):,} of {n:,} customers"
    table = Table(title=title, header_style="bold")
    for col, justify in (
        ("customer", "left"),
        ("status", "left"),
        ("points", "right"),
        ("activities", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r.customer_id, r.status, f"{r.points:,}", f"{r.activity_count:,}")
    console = Console()
    console.print(table)
    if more:
        console.print(
            f"next page: --after {rows[-1].customer_id}; all of them: --limit N or --json"
        )
