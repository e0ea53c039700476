"""The program's log options: `--log-format text|json` and `--log-level` (global, before
the command), or $CUSTATE_LOG_FORMAT / $CUSTATE_LOG_LEVEL. The `custate` program sets up
its own process's logging from them (`adapters.logs.configure`); `serve` hands the same
set-up to uvicorn for each of its worker processes (`uvicorn_config`)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from custate.adapters import logs

LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar=logs.ENV_LOG_FORMAT,
        help="Log lines on stderr: text, or json (one JSON object a line).",
    ),
]
LogLevelOption = Annotated[
    str,
    typer.Option(
        "--log-level",
        envvar=logs.ENV_LOG_LEVEL,
        help="Least level logged: debug, info (one line per request, reject, catch-up), "
        "warning, error.",
    ),
]

_chosen: tuple[int, str] = (logging.WARNING, "text")


def setup_logging(fmt: str, level: str) -> None:
    """Check the options (a bad one is exit 2 naming it) and set up this process's
    logging from them."""
    global _chosen
    from custate.adapters.cli.common import fail

    f = fmt.strip().lower()
    if f not in logs.LOG_FORMATS:
        fail(f"--log-format: {fmt!r} is not one of: {', '.join(logs.LOG_FORMATS)}")
    try:
        n = logs.parse_level(level)
    except ValueError as e:
        fail(f"--log-level: {e}")
        raise  # unreachable
    _chosen = (n, f)
    logs.configure(n, f)


def log_format() -> str:
    """The log format chosen: `text` or `json`."""
    return _chosen[1]


def uvicorn_config() -> dict[str, Any]:
    """The chosen set-up, for uvicorn to apply in each server process."""
    return logs.uvicorn_config(*_chosen)
