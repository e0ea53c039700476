"""`custate changes`: the change feed (docs/CHANGES.md), a page or followed as written."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from custate.adapters.cli.app import app
from custate.adapters.cli.common import cut, fail, open_store
from custate.adapters.cli.store_options import JsonOption, StoreOption

if TYPE_CHECKING:
    from custate.adapters.api import ChangeRecord


def line(r: ChangeRecord) -> str:
    """One record as a line people read: position, customer, path, what changed, when, by
    which activity. Values are compact JSON; identifiers are printed whole."""
    before = orjson.dumps(r.before).decode()
    after = orjson.dumps(r.after).decode()
    when = r.to_json()["effective_at"]
    if r.until is not None:
        when += f"..{r.to_json()['until']}"
    tags = " correction" if r.correction else ""
    if r.cause != "activity":
        tags += f" {r.cause}"
    return (
        f"{r.position} {r.customer_id} {r.path} {r.op} {before} -> {after} "
        f"at {when} by {r.activity_id}{tags}"
    )


@app.command()
def changes(
    store: StoreOption = None,
    as_json: JsonOption = False,
    after: Annotated[
        int, typer.Option("--after", help="Records after this position (0: from the start).")
    ] = 0,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Only this customer's records.")
    ] = None,
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path", help="Only paths matching this glob (repeatable), e.g. 'segments.*'."
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep printing records as they are written.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many records.")] = 1000,
    poll: Annotated[
        float, typer.Option("--poll", help="With --follow: seconds between looks.")
    ] = 0.5,
    prune_before: Annotated[
        str | None,
        typer.Option(
            "--prune-before",
            help="Retention: delete the records recorded before TIME (ISO-8601 or a date).",
        ),
    ] = None,
    enable: Annotated[
        bool,
        typer.Option(
            "--enable",
            help="Make the store keep a change feed from now on (off by default: it costs "
            "catch-up throughput).",
        ),
    ] = False,
) -> None:
    """Print the change records of derived state (one a line; NDJSON with --json), after
    a position; with --follow, keep printing them as they are written (Ctrl-C ends)."""
    from custate.adapters.api import QueryError

    cs = open_store(store)
    out = sys.stdout
    try:
        if enable:
            cs.enable_change_feed()
            print("the store keeps a change feed from now on", file=sys.stderr)
            return
        if prune_before is not None:
            when = cut(prune_before, "--prune-before")
            assert when is not None
            gone, upto = cs.prune_changes(when)
            if as_json:
                out.buffer.write(orjson.dumps({"pruned": gone, "pruned_upto": upto}) + b"\n")
            else:
                print(f"pruned {gone} record(s); positions up to {upto} are gone")
            return
        if follow:
            records = cs.follow_changes(after, customer, path or None, poll=poll)
        else:
            records = iter(cs.changes(after, customer, path or None, limit).records)
        for r in records:
            if as_json:
                out.buffer.write(orjson.dumps(r.to_json()) + b"\n")
                out.buffer.flush() if follow else None
            else:
                print(line(r), flush=follow)
    except QueryError as e:
        fail(str(e))
    except KeyboardInterrupt:
        pass
    finally:
        cs.close()
