"""The typer application. Commands live in their own modules and register here."""

from __future__ import annotations

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


def main() -> None:
    from custate.adapters.cli import commands  # noqa: F401  (registers the commands)

    app()


@app.callback()
def _root() -> None:
    """Customer state from Voucherify customer activities: now, as of any time, and why."""
