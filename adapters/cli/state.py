"""`custate state`: one customer's state from the store, as of any time."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from custate.adapters.api import UnknownCustomerError
from custate.adapters.cli.app import EXIT_BAD_RECORDS, app
from custate.adapters.cli.common import cut, fail, open_store
from custate.adapters.cli.store_options import StoreOption


@app.command()
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
) -> None:
    """Print a customer's state as JSON: activities with created_at <= T, stored by K."""
    t = cut(as_of, "--as-of")
    k = cut(known_at, "--known-at")
    cs = open_store(store)
    try:
        s = cs.state(customer_id, as_of=t, known_at=k)
    except UnknownCustomerError as e:
        fail(str(e), EXIT_BAD_RECORDS)
        return
    finally:
        cs.close()
    sys.stdout.buffer.write(orjson.dumps(s.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
