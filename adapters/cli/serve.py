"""`custate serve`: receive Voucherify webhooks and serve customer state over HTTP."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import fail, warn
from custate.adapters.cli.store_options import StoreOption

# The server's requests hand their records to one writer thread and wait for it: a short GIL
# switch interval keeps each hand-off from waiting out CPython's default (docs/DECISIONS.md).
SWITCH_INTERVAL = 0.0005
# What `pip install 'custate[server]'` adds (and what they bring).
SERVER_EXTRA = ("fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client")


@app.command(
    epilog=examples(
        "custate serve --port 8080",
        "custate serve --workers 2 --store postgresql://localhost/custate",
    )
)
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8080,
    store: StoreOption = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Server processes (uvicorn workers).")
    ] = 1,
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout",
            min=0.1,
            help="Seconds a client may take to send a request's headers; then the "
            "connection is closed.",
        ),
    ] = 10.0,
    project: Annotated[
        bool,
        typer.Option(
            "--project/--no-project",
            help="Run a projector worker in each process (--no-project: leave it to "
            "`custate project --follow` workers).",
        ),
    ] = True,
) -> None:
    """Serve POST /webhooks/voucherify, GET /customers/{id}/state, /customers,
    /customers/{id}/history, /healthz and /readyz (docs at /docs).

    Any number of serve processes may share one store; reads never wait for a catch-up.
    CUSTATE_WEBHOOK_SECRET: verify x-voucherify-signature; CUSTATE_MAX_BODY_BYTES: the
    body limit (default 1 MiB). GET /metrics: Prometheus metrics of each process;
    `custate --log-level info serve`: one log line per request."""
    from custate.adapters.api import StoreError
    from custate.adapters.cli.logging_options import uvicorn_config

    try:
        from custate.adapters.http import serve as run
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in SERVER_EXTRA:
            raise
        fail(f"custate serve needs {e.name}, in the server extra: pip install 'custate[server]'")

    sys.setswitchinterval(SWITCH_INTERVAL)  # this process is the server: see SWITCH_INTERVAL
    try:
        run(
            store,
            host,
            port,
            log=warn,
            workers=workers,
            project=project,
            header_timeout=header_timeout,
            log_config=uvicorn_config(),
        )
    except StoreError as e:
        fail(str(e))
