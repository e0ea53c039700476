"""`custate rejects`: list rejected records, or export them for fixing and re-ingesting."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import Column, open_store, output_format, show_records
from custate.adapters.cli.store_options import FormatOption, JsonOption, StoreOption

if TYPE_CHECKING:
    from custate.adapters.api import StoredReject


@app.command(epilog=examples("custate rejects", "custate rejects --export rejected.ndjson"))
def rejects(
    store: StoreOption = None,
    as_json: JsonOption = False,
    fmt: FormatOption = None,
    include_resolved: Annotated[
        bool, typer.Option("--all", help="Also list rejects that were later resolved.")
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Write the rejected records to FILE as NDJSON."),
    ] = None,
) -> None:
    """List the records ingest rejected, with where they came from and why."""
    form = output_format(fmt, as_json, "ndjson")
    cs = open_store(store, existing=True)
    try:
        found = cs.rejects(include_resolved)
    finally:
        cs.close()
    if export is not None:
        with export.open("wb") as f:
            for r in found:
                f.write(_one_line(r.reject.raw) + b"\n")
        Console(stderr=True).print(f"wrote {len(found)} record(s) to {export}")
        return
    if form == "ndjson":
        for r in found:
            sys.stdout.buffer.write(orjson.dumps(r.to_json()) + b"\n")
        return
    if form == "json":
        sys.stdout.buffer.write(orjson.dumps([r.to_json() for r in found]) + b"\n")
        return
    _table(found, form)


def _one_line(raw: str) -> bytes:
    """Export as NDJSON: a record on one line goes out as written (re-encoding it would
    round integers beyond 64 bits); one over several lines is compacted if it is JSON, and
    else kept as written, its line breaks folded, for the user to mend."""
    if "\n" not in raw and "\r" not in raw:
        return raw.encode()
    try:
        return json.dumps(json.loads(raw), separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        return raw.replace("\r", " ").replace("\n", " ").encode()


def _table(found: list[StoredReject], form: str) -> None:
    if not found and form == "table":
        Console().print("No rejected records.")
        return
    show_records(
        f"{len(found)} rejected record(s)",
        [
            Column("id", right=True),
            Column("kind"),
            Column("source"),
            Column("location"),
            Column("activity_id"),
            Column("field"),
            Column("reason", whole=False),
        ],
        [
            [
                str(r.id),
                r.reject.kind + (" (resolved)" if r.resolved_at else ""),
                r.reject.source,
                r.reject.location,
                r.reject.activity_id or "",
                r.reject.field,
                r.reject.reason,
            ]
            for r in found
        ],
        form,
    )
