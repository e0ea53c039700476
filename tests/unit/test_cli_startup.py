"""`custate --help` (and any command's `--help`) imports what printing help needs and none
of the store, server or HTTP-client stacks: a command imports those when it runs
(bench/README.md, CLI start-up)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from custate.adapters.cli import store_options
from custate.adapters.cli.audit import ADDED, REMOVED

HEAVY = (
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "eventsourcing",
    "httpx",
    "psycopg",
    "msgspec",
    "prometheus_client",
)
COMMANDS = (
    "demo",
    "ingest",
    "fold",
    "state",
    "history",
    "diff",
    "explain",
    "gaps",
    "report",
    "customers",
    "project",
    "rebuild",
    "rejects",
    "pull",
    "serve",
    "status",
    "erase",
    "migrate",
)

# In a fresh interpreter, as the console script starts: print the help of the program and of
# every command, then list what got imported.
SCRIPT = textwrap.dedent(
    """
    import contextlib, io, sys
    from custate.adapters.cli import app, main
    from custate.adapters.cli import commands
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for args in [["--help"], *([c, "--help"] for c in sys.argv[1:])]:
            try:
                app(args, prog_name="custate")
            except SystemExit as e:
                assert e.code == 0, (args, e.code)
    assert "Usage: custate" in out.getvalue()
    print("\\n".join(sorted(sys.modules)))
    """
)


def test_help_imports_no_store_server_or_client_library() -> None:
    ran = subprocess.run(
        [sys.executable, "-c", SCRIPT, *COMMANDS], capture_output=True, text=True, check=True
    )
    modules = set(ran.stdout.split())
    assert "custate.adapters.cli.serve" in modules  # the commands were registered
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"--help imported {heavy}"
    inner = sorted(
        m
        for m in modules
        if m.startswith(("custate.domain", "custate.projections", "custate.adapters.api"))
    )
    assert inner == [], f"--help imported {inner}"


def test_the_cli_copies_of_library_constants_agree() -> None:
    """The CLI declares a few of the library's constants itself so that declaring its options
    imports nothing heavy; they must stay the library's."""
    from custate.adapters.api import DEFAULT_BATCH
    from custate.domain.activity import INT_MAX, INT_MIN
    from custate.projections import audit

    assert (store_options.INT_MIN, store_options.INT_MAX) == (INT_MIN, INT_MAX)
    assert store_options.DEFAULT_BATCH == DEFAULT_BATCH
    from custate.adapters.pull import DEFAULT_CONCURRENCY
    from custate.adapters.voucherify import PAGE_LIMIT

    assert (store_options.PULL_CONCURRENCY, store_options.PULL_PAGE_LIMIT) == (
        DEFAULT_CONCURRENCY,
        PAGE_LIMIT,
    )
    assert (ADDED, REMOVED) == (audit.ADDED, audit.REMOVED)
