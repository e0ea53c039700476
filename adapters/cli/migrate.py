"""`custate migrate`: bring the store's own tables to this custate's schema."""

from __future__ import annotations

import sys

import orjson
from rich.console import Console

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import open_store
from custate.adapters.cli.store_options import JsonOption, StoreOption


@app.command(epilog=examples("custate migrate", "custate migrate --json"))
def migrate(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Migrate the store's own tables (rejects, cursors, the change feed, settings) to this
    custate's schema. Every command does this when it opens a store; this one says what it
    did. A store written by a newer custate is refused (exit 3)."""
    cs = open_store(store, existing=True)
    try:
        m = cs.migration()
    finally:
        cs.close()
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(m) + b"\n")
        return
    found = m["from"] or "none (a store of the release before migrations, or a new one)"
    said = f"migrated from {found} to {m['to']}" if m["migrated"] else f"at {m['to']}, current"
    Console(soft_wrap=True).print(f"schema {said}", markup=False, highlight=False)
