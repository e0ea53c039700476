"""The typer application. Commands live in their own modules and register here."""

from __future__ import annotations

import gc
import sys

import typer

app = typer.Typer(
    name="custate",
    help="Customer state from Voucherify customer activities: now, as of any time, and why.",
    no_args_is_help=True,
    add_completion=False,
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
    except Exception as e:
        from custate.adapters.api import store_fault

        message = store_fault(e)
        if message is None:
            raise
        print(f"custate: {message}", file=sys.stderr)
        sys.exit(EXIT_STORE)


@app.callback()
def _root() -> None:
    """Customer state from Voucherify customer activities: now, as of any time, and why."""
