"""`custate forward`: the change feed POSTed to a URL in signed batches (adapters/forward.py)."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Annotated

import orjson
import typer

from custate.adapters.cli.app import app
from custate.adapters.cli.common import fail, open_store
from custate.adapters.cli.store_options import JsonOption, StoreOption


@app.command()
def forward(
    url: Annotated[str, typer.Option("--url", help="Where to POST the batches.")],
    store: StoreOption = None,
    as_json: JsonOption = False,
    path: Annotated[
        list[str] | None, typer.Option("--path", help="Only paths matching this glob.")
    ] = None,
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer.")] = None,
    secret: Annotated[
        str,
        typer.Option(
            "--secret",
            envvar="CUSTATE_FORWARD_SECRET",
            help="Sign each body: hex HMAC-SHA256 in x-custate-signature.",
            show_default=False,
        ),
    ] = "",
    name: Annotated[
        str | None, typer.Option("--name", help="The cursor's name (default: URL and globs).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep forwarding.")] = False,
    batch: Annotated[int, typer.Option("--batch", help="Records per POST.")] = 500,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per POST.")] = 10.0,
    attempts: Annotated[
        int, typer.Option("--attempts", help="Tries of a failing POST (not with --follow).")
    ] = 6,
    dead: Annotated[
        bool, typer.Option("--dead-letters", "--dead", help="List the dead letters.")
    ] = False,
    replay_dead: Annotated[
        bool, typer.Option("--replay", "--replay-dead", help="POST the dead letters again.")
    ] = False,
) -> None:
    """POST the change records after this forward's stored cursor to URL, in batches,
    signed, retried with backoff; a batch the receiver refuses (4xx) becomes a dead letter."""
    from custate.adapters.api import ForwardError, QueryError

    cs = open_store(store)
    stop = False

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    try:
        fw = cs.forwarder(
            url,
            secret=secret,
            paths=path or None,
            customer=customer,
            name=name,
            batch=batch,
            timeout=timeout,
            attempts=attempts,
        )
        if dead:
            for letter in fw.dead_letters():
                if as_json:
                    sys.stdout.buffer.write(orjson.dumps(letter.to_json()) + b"\n")
                else:
                    j = letter.to_json()
                    print(
                        f"{j['id']} positions {j['first_position']}..{j['last_position']} "
                        f"HTTP {j['status']} at {j['at']}: {j['error']}"
                    )
            return
        if replay_dead:
            report = fw.replay_dead()
        else:
            if follow:
                signal.signal(signal.SIGTERM, _stop)
            report = fw.run(follow=follow, should_stop=lambda: stop)
    except (ForwardError, QueryError) as e:
        fail(str(e), 1)
        return
    except KeyboardInterrupt:
        return
    finally:
        cs.close()
    j = report.to_json()
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(j) + b"\n")
    else:
        print(
            f"forwarded {j['records']} record(s) in {j['batches']} batch(es), "
            f"{j['dead']} dead letter(s), {j['retries']} retries; cursor {j['cursor']}"
        )
