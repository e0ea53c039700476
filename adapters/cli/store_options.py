"""Options shared by the commands that use a store."""

from __future__ import annotations

from typing import Annotated

import typer

# The range of an integer the store keeps (custate.domain.activity's INT_MIN, INT_MAX), here
# so that declaring an option does not import the domain (tests/unit/test_cli_startup.py).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# custate.adapters.api.DEFAULT_BATCH, for `ingest --batch-size`'s default, on the same terms.
DEFAULT_BATCH = 1000
# custate.adapters.pull.DEFAULT_CONCURRENCY and custate.adapters.voucherify.PAGE_LIMIT, for
# `pull --concurrency` and `--page-size`, on the same terms.
PULL_CONCURRENCY = 4
PULL_PAGE_LIMIT = 100

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store URL: sqlite:///PATH or postgresql://... "
        "(default: $CUSTATE_STORE, else sqlite:///custate.db).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for programs (see --format where there is one).")
]
FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        metavar="FORMAT",
        help="table (for people; when not a terminal, plain tab-separated lines under a title), "
        "json (one document), ndjson (one record a line) or tsv (a header, then a line each).",
        show_default=False,
    ),
]
