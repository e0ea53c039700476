"""`custate state`: one customer's state from the store, as of any time."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from custate.adapters.cli.app import EXIT_BAD_RECORDS, app, examples
from custate.adapters.cli.common import customer_store, cut, fail, warn
from custate.adapters.cli.store_options import StoreOption


@app.command(
    epilog=examples(
        "custate state cust_1",
        "custate state cust_1 --as-of 2024-03-01",
        "custate state cust_1 --as-of 2024-03-01 --known-at 2024-03-15T12:00:00Z --verify",
    )
)
def state(
    customer_id: Annotated[str, typer.Argument(help="The Voucherify customer id (cust_...).")],
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Business time T: ISO date-time with zone, or a date."),
    ] = None,
    known_at: Annotated[
        str | None,
        typer.Option("--known-at", help="Record time K: what the store held then."),
    ] = None,
    store: StoreOption = None,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Recompute from the event store; exit 1 on any difference."),
    ] = False,
) -> None:
    """Print a customer's state as JSON: activities with created_at <= T, stored by K."""
    import orjson

    from custate.projections.diff import diff_states

    t = cut(as_of, "--as-of")
    k = cut(known_at, "--known-at")
    with customer_store(store) as cs:
        s = cs.state(customer_id, as_of=t, known_at=k)
        replayed = cs.replay(customer_id, t, k) if verify else None
    sys.stdout.buffer.write(orjson.dumps(s.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    if replayed is not None:
        changes = diff_states(s.to_json(), replayed.to_json())
        for c in changes:
            warn(f"verify: {c.path}: read model {c.before!r}, event store {c.after!r}")
        if changes:
            fail(f"verify: {len(changes)} difference(s) from the event store", EXIT_BAD_RECORDS)
        warn("verify: the read model agrees with the event store")
