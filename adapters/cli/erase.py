"""`custate erase CUSTOMER`: erase a customer's personal data (GDPR Art. 17), or lift it."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import open_store
from custate.adapters.cli.store_options import JsonOption, StoreOption


@app.command(
    epilog=examples(
        "custate erase cust_123 --by dpo@example.com",
        "custate erase cust_123 --json",
        "custate erase cust_123 --lift --by dpo@example.com",
    )
)
def erase(
    customer: Annotated[str, typer.Argument(help="The customer id.", show_default=False)],
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who asked for it, kept in the erasure record."),
    ] = None,
    lift: Annotated[
        bool,
        typer.Option(
            "--lift",
            help="Lift the erasure instead: the customer's activities are stored as they "
            "come again (what was erased stays erased).",
        ),
    ] = False,
    no_vacuum: Annotated[
        bool,
        typer.Option(
            "--no-vacuum",
            help="Do not rewrite the database files (SQLite VACUUM, PostgreSQL VACUUM FULL "
            "of the rewritten tables); old bytes may then stay in free space.",
        ),
    ] = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Erase a customer's personal data (name, email, phone, address, metadata and the other
    profile fields, in every payload) from every place the store keeps it, and the old
    bytes from the database files. Points, tiers, segments, orders and the audit keep
    working; the profile reads as erased. The customer's later activities are erased on the
    way in until the erasure is lifted (--lift)."""
    from custate.adapters.api import UnknownCustomerError
    from custate.adapters.cli.common import fail

    cs = open_store(store, existing=True)
    try:
        if lift:
            try:
                record = cs.lift_erasure(customer, by)
            except UnknownCustomerError:
                fail(f"customer {customer}: no erasure to lift")
                raise  # unreachable
            out = record.to_json()
        else:
            report = cs.erase(customer, by, vacuum=not no_vacuum)
            out = report.to_json()
    finally:
        cs.close()
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(out) + b"\n")
        return
    if lift:
        typer.echo(f"customer {customer}: erasure lifted at {out['lifted_at']}")
        return
    rewritten = out["rewritten"]
    typer.echo(
        f"customer {customer}: erased at {out['erased_at']}"
        + (f" by {out['erased_by']}" if out["erased_by"] else "")
    )
    typer.echo(
        f"rewritten: {rewritten['activities']} activities, {rewritten['read_model_activities']} "
        f"read-model activities, {rewritten['rejects']} rejects, {rewritten['changes']} "
        f"change records, {rewritten['pull_queue']} pull-queue rows"
    )
    if out["published_changes"]:
        typer.echo(f"change feed: {out['published_changes']} records of the erasure published")
    typer.echo("purge: " + ("; ".join(out["purge"]) or "none"))
    for w in out["warnings"]:
        typer.echo(f"warning: {w}", err=True)
