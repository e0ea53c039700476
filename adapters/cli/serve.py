"""`custate serve`: receive Voucherify webhooks and serve customer state over HTTP."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from custate.adapters.cli.app import EXIT_STORE, EXIT_USAGE, app, examples
from custate.adapters.cli.common import fail, warn
from custate.adapters.cli.store_options import StoreOption

# The server's requests hand their records to one writer thread and wait for it: a short GIL
# switch interval keeps each hand-off from waiting out CPython's default (docs/DECISIONS.md).
SWITCH_INTERVAL = 0.0005
# What `pip install 'custate[server]'` adds (and what they bring).
SERVER_EXTRA = (
    "fastapi",
    "uvicorn",
    "starlette",
    "pydantic",
    "pydantic_settings",
    "fastapi_offline",
    "prometheus_client",
)


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
    api_tokens_file: Annotated[
        str | None,
        typer.Option(
            "--api-tokens-file",
            help="A file of bearer tokens, one a line, that the reads require (besides "
            "CUSTATE_API_TOKENS).",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve a non-loopback --host without API tokens or a webhook secret.",
        ),
    ] = False,
) -> None:
    """Serve POST /webhooks/voucherify, GET /customers/{id}/state, /customers,
    /customers/{id}/history, /healthz and /readyz (docs at /docs).

    Any number of serve processes may share one store; reads never wait for a catch-up.
    CUSTATE_WEBHOOK_SECRET: verify x-voucherify-signature; CUSTATE_API_TOKENS: bearer
    tokens (comma-separated) the reads require; CUSTATE_MAX_BODY_BYTES: the body limit
    (default 1MiB). Beyond loopback, tokens and a secret are required (or --insecure).
    GET /metrics: Prometheus metrics of each process; `custate --log-level info serve`:
    one log line per request."""
    from custate.adapters.api import StoreError, StoreUnavailableError
    from custate.adapters.cli.logging_options import uvicorn_config

    try:
        from custate.adapters.http import serve as run
        from custate.adapters.settings import SettingsError
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
            api_tokens_file=api_tokens_file,
            insecure=insecure,
        )
    except StoreError as e:  # unreachable, full, read-only: exit 3, like the other commands
        fail(str(e), EXIT_STORE if isinstance(e, StoreUnavailableError) else EXIT_USAGE)
    except SettingsError as e:  # a CUSTATE_* setting, or what exposing the host needs
        fail(str(e))
