"""The typer application. Commands live in their own modules and register here."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from typing import Annotated, NoReturn

import typer

import custate
from custate.adapters.cli.logging_options import LogFormatOption, LogLevelOption, setup_logging

app = typer.Typer(
    name="custate",
    help="Customer state from Voucherify customer activities: now, as of any time, and why.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
    pretty_exceptions_enable=False,
)

EXIT_OK = 0
EXIT_BAD_RECORDS = 1
EXIT_USAGE = 2
EXIT_STORE = 3  # the store failed: unreachable, read-only, full

# Collect the youngest generation every this many allocations, not CPython's 700: ingest,
# catch-up and audits of long histories allocate hundreds of thousands of short-lived,
# acyclic objects (parsed payloads, states), which the cyclic collector would otherwise
# walk again and again for nothing.
GC_THRESHOLD = 50_000


def main() -> None:
    """The `custate` program. It tunes the garbage collector for its own process (the
    library never does; an embedding service may do the same): see GC_THRESHOLD."""
    from custate.adapters.cli import commands  # noqa: F401  (registers the commands)

    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    try:
        app()
    except SystemExit:
        # typer answers a closed stdout (EPIPE) with exit 1, having wrapped the streams in
        # (its copy of) click's PacifyFlushWrapper: that exit is the reader leaving.
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":
            _reader_left()
        raise
    except BrokenPipeError:  # raised past typer's own handling
        _reader_left()
    except Exception as e:
        from custate.adapters.api import store_fault

        message = store_fault(e)
        if message is None:
            raise
        print(f"custate: {message}", file=sys.stderr)
        sys.exit(EXIT_STORE)


def _reader_left() -> NoReturn:
    """`custate ... | head`: the reader has what it wanted and left; that is not an error.
    Exit 0, quietly, with stdout pointed at /dev/null so that the interpreter's last flush
    has nowhere to fail."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
    raise SystemExit(EXIT_OK)


def examples(*commands: str) -> str:
    """A command's help epilog: example command lines, one a line, as typed."""
    return "Examples:\n\n" + "\n".join(f"  $ {c}" for c in commands)


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"custate {custate.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    log_format: LogFormatOption = "text",
    log_level: LogLevelOption = "warning",
) -> None:
    """Customer state from Voucherify customer activities: now, as of any time, and why."""
    setup_logging(log_format, log_level)
